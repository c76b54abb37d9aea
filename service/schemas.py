"""Response models: the public JSON shapes, also what the OpenAPI document shows."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from prunekit.job_status import JobStatus

ModelFormat = Literal["torchscript", "export", "state_dict", "checkpoint"]


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable machine-readable error code, e.g. invalid_spec.")
    message: str = Field(description="What went wrong, for people.")
    details: list[Any] = Field(default_factory=list, description="E.g. [{path, message}] for a bad spec.")


class ErrorResponse(BaseModel):
    error: ErrorDetail


class Progress(BaseModel):
    stage: str | None = Field(None, description="queued, starting, load, capture, analyse, rank, remove, "
                                                "check, export, done.")
    percent: float = Field(0.0, description="Overall progress, 0 to 100.")
    message: str | None = None
    updated_at: datetime | None = None


class InputsFile(BaseModel):
    filename: str | None = None
    size: int
    sha256: str


class JobInput(BaseModel):
    format: ModelFormat = Field(description="Detected from the uploaded bytes.")
    filename: str | None = None
    size: int
    sha256: str
    inputs: InputsFile | None = Field(None, description="The example-inputs file, if one was uploaded.")
    calibration: InputsFile | None = Field(None, description="The calibration-data file, if one was uploaded.")


class Reduction(BaseModel):
    before: float | int | None = None
    after: float | int | None = None
    reduction_percent: float | None = None


class CheckResult(BaseModel):
    max_abs: float | None = Field(None, description="Largest absolute output deviation from the masked original.")
    max_rel: float | None = Field(None, description="Largest relative output deviation.")
    passed: bool | None = None


class JobResult(BaseModel):
    output_format: ModelFormat | None = None
    params: Reduction
    macs: Reduction
    file_size: Reduction
    check: CheckResult
    warnings: list[str] = Field(default_factory=list)
    artifacts: list[str] = Field(default_factory=list, description="Names under /v1/jobs/{id}/artifacts.")
    stages: list[str] = Field(default_factory=list, description="Engine stages the job went through, in order.")
    stage_seconds: dict[str, float] = Field(
        default_factory=dict, description="Wall-clock seconds the worker spent in each stage."
    )
    evaluation: dict[str, Any] | None = Field(
        None, description="With calibration data: loss/accuracy of the original and the pruned model on the held-out part."
    )
    sparsity: dict[str, Any] | None = Field(None, description="Unstructured: target and sparsity reached (overall).")
    target: dict[str, Any] | None = Field(None, description="A MAC/params target: requested and reached.")
    sweep: dict[str, Any] | None = Field(None, description="A sweep: the setting selected and one row per setting.")
    inputs: dict[str, Any] | None = Field(
        None, description="Input channels (dim 'in'): each consumer's subselection (narrow or gather), reordered "
        "streams, or what the constrained mode removed as well.")
    from_zeros: dict[str, Any] | None = Field(
        None, description="from_zeros: channels found with only zero weights, removed, and groups kept.")
    normalized_dims: dict[str, Any] | None = Field(
        None, description="normalized_dims prune: the ops whose statistics now run over the kept channels, the "
        "reference the check used, and how much the output changed vs the upload (output_change: max_rel, rel_l2).")


class JobError(BaseModel):
    code: str
    message: str


class Job(BaseModel):
    id: str
    status: JobStatus
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    attempts: int = Field(0, description="Times a worker started this job (redeliveries included).")
    progress: Progress
    input: JobInput
    spec: dict[str, Any] = Field(description="The validated spec, defaults filled in.")
    result: JobResult | None = Field(None, description="Set when the job succeeded.")
    error: JobError | None = Field(None, description="Set when the job failed or was cancelled.")
    links: dict[str, str] = Field(default_factory=dict)


class JobList(BaseModel):
    jobs: list[Job]
    next_cursor: str | None = Field(None, description="Pass as ?cursor= for the next page; null on the last.")


class Artifact(BaseModel):
    name: str
    filename: str = Field(description="The file name a download is saved under.")
    size: int
    sha256: str
    url: str


class ArtifactList(BaseModel):
    job_id: str
    artifacts: list[Artifact]


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Check(BaseModel):
    ok: bool
    detail: str = Field("", description="What was checked and how it went, e.g. 'artifact store: ok'; "
                                         "with a valid API key also the path or the error.")


class Readiness(BaseModel):
    status: Literal["ready", "unavailable"]
    mode: Literal["embedded", "celery"]
    checks: dict[str, Check]
