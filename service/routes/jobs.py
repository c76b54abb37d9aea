"""``/v1/jobs``: submit, list, download from and cancel/delete pruning jobs.

``GET /v1/jobs/{id}`` and its event stream, the paths pollers hit, are in :mod:`.status`.
"""

from __future__ import annotations

import base64
import binascii
import logging
import uuid
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, StreamingResponse

from prunekit.artifacts import download_name
from prunekit.errors import InvalidCalibration, InvalidModelFile, InvalidSpec, UnknownArchitecture
from prunekit.registry import get_architecture, list_architectures
from prunekit.spec import Spec, parse_spec
from worker.storage import ObjectMissing, ObjectStore, legacy_artifact_key, upload_key
from worker.storage.cleanup import discard_job_files
from worker.store import ACTIVE, CANCELLED, FAILED, SUCCEEDED, Job, JobStore

from .. import schemas
from ..auth import tenant_for
from ..errors import ApiError
from ..formats import CHECKPOINT, EAGER_FORMATS, EXPORT, STATE_DICT, detect, is_safetensors
from ..queue import JobQueue
from ..storage import content_disposition, stored_model_name
from ..uploads import ReceivedForm, receive_multipart

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

Tenant = Annotated[str, Depends(tenant_for)]

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": schemas.ErrorResponse, "description": "Missing or invalid API key."},
    404: {"model": schemas.ErrorResponse, "description": "No such job for this tenant."},
}

_SUBMIT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["model", "spec"],
                    "properties": {
                        "model": {
                            "type": "string",
                            "format": "binary",
                            "description": "TorchScript (.pt), torch.export (.pt2), a state-dict "
                            "(torch.save or safetensors; needs spec.architecture), or a checkpoint: a zip or tar "
                            "(optionally gz/bz2/xz) of a folder with config.json and model.safetensors (or "
                            "model.safetensors.index.json and its shards); the architecture is the config's "
                            "(hf:), checked as data, never code.",
                        },
                        "spec": {"type": "string", "description": "The pruning spec as JSON text."},
                        "inputs": {
                            "type": "string",
                            "format": "binary",
                            "description": "Safetensors file of example inputs. TorchScript and .pt2 "
                            "uploads need it or spec.inputs; state-dicts may use their architecture's "
                            "defaults.",
                        },
                        "calibration": {
                            "type": "string",
                            "format": "binary",
                            "description": "Safetensors file of calibration data: `inputs` (batch first; or "
                            "inputs named after the model's arguments, or inputs.0, inputs.1, ...) and optional "
                            "`targets`. Needed by importance taylor/gradprobe/wanda, recalibrate_bn and sweep; "
                            "with it every report has an evaluation on the held-out part.",
                        },
                    },
                }
            }
        },
    }
}


def _store(request: Request) -> JobStore:
    return request.app.state.store


def _objects(request: Request) -> ObjectStore:
    return request.app.state.objects


def _queue(request: Request) -> JobQueue:
    return request.app.state.queue


def job_view(request: Request, job: Job) -> schemas.Job:
    """Store record → public resource."""
    inp = job.input
    inputs = inp.get("inputs")
    error = None
    if job.error_code and job.status in (FAILED, CANCELLED):
        error = schemas.JobError(code=job.error_code, message=job.error_message or job.error_code)
    links = {"self": f"/v1/jobs/{job.id}"}
    if job.status == SUCCEEDED:
        links["artifacts"] = f"/v1/jobs/{job.id}/artifacts"
    return schemas.Job(
        id=job.id,
        status=job.status,  # type: ignore[arg-type]
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        attempts=job.attempts,
        progress=schemas.Progress(
            stage=job.progress_stage,
            percent=job.progress_percent,
            message=job.progress_message,
            updated_at=job.progress_at,
        ),
        input=schemas.JobInput(
            format=inp["format"],
            filename=inp.get("filename"),
            size=inp["size"],
            sha256=inp["sha256"],
            inputs=schemas.InputsFile(**{k: inputs[k] for k in ("filename", "size", "sha256")}) if inputs else None,
            calibration=(schemas.InputsFile(**{k: inp["calibration"][k] for k in ("filename", "size", "sha256")})
                         if inp.get("calibration") else None),
        ),
        spec=job.spec,
        result=schemas.JobResult.model_validate(job.result) if job.result and job.status == SUCCEEDED else None,
        error=error,
        links=links,
    )


def _get_job(request: Request, job_id: str, tenant: str) -> Job:
    job = _store(request).get(job_id, tenant=tenant) if _valid_id(job_id) else None
    if job is None:
        raise ApiError(404, "not_found", f"no job {job_id!r}")
    return job


def _valid_id(job_id: str) -> bool:
    return len(job_id) == 32 and all(c in "0123456789abcdef" for c in job_id)


def _encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"v1:{seq}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        version, _, seq = raw.partition(":")
        if version != "v1":
            raise ValueError
        return int(seq)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ApiError(422, "invalid_cursor", "the cursor is not one this server handed out") from None


def _validate_submission(form: ReceivedForm, objects: ObjectStore) -> tuple[Spec, str, str]:
    """Check the upload before anything is queued: spec, model format, architecture, inputs.

    Runs in a worker thread: it reads the heads (and zip directories) of the uploads back from
    the artifact store, never the whole files.  Returns (spec, format, container).
    """
    model = form.files.get("model")
    if model is None:
        raise ApiError(422, "invalid_request", "the 'model' file is missing from the form",
                       [{"path": "model", "message": "field required"}])
    if "spec" not in form.fields:
        raise ApiError(422, "invalid_spec", "the 'spec' field is missing from the form",
                       [{"path": "spec", "message": "field required"}])
    try:
        spec = parse_spec(form.fields["spec"])
    except InvalidSpec as exc:
        details = getattr(exc, "details", None) or [{"path": "(spec)", "message": str(exc)}]
        raise ApiError(422, exc.code, str(exc), details) from None
    try:
        with objects.open_read(model.key) as f:
            fmt, container = detect(f)
    except InvalidModelFile as exc:
        raise ApiError(422, exc.code, str(exc), [{"path": "model", "message": str(exc)}]) from None
    config = _checkpoint_config(objects, model.key, container) if fmt == CHECKPOINT else None
    if fmt == CHECKPOINT and not (spec.architecture or "hf:").startswith("hf:"):
        config = None  # another architecture named: config.json is not read (as the engine does)
    if fmt == CHECKPOINT and (spec.architecture or "hf:").startswith("hf:") and config is not None:
        try:
            spec_arch = get_architecture(spec.architecture or "hf:", config)
        except (InvalidSpec, UnknownArchitecture) as exc:  # InvalidConfig is an InvalidSpec
            raise ApiError(422, exc.code, str(exc), getattr(exc, "details", None)
                           or [{"path": "config.json", "message": str(exc)}]) from None
        if not spec.inputs and not spec_arch.example_inputs and "inputs" not in form.files:
            raise ApiError(422, "invalid_spec", f"invalid spec: inputs: {spec_arch.name} has no default example inputs; "
                           'add inputs: [{"shape": [...], "dtype": ...}] to the spec',
                           [{"path": "inputs", "message": f"required: {spec_arch.name} has no default example inputs"}])
    if fmt == STATE_DICT and not spec.architecture:
        raise ApiError(
            422, "architecture_required",
            "the model file is a state-dict (weights without code): name its architecture in "
            "spec.architecture. Registered: " + ", ".join(list_architectures()),
            [{"path": "architecture", "message": "required for state-dict uploads"}],
        )
    if spec.architecture and not (fmt == CHECKPOINT and spec.architecture.startswith("hf:")):
        try:
            get_architecture(spec.architecture)
        except UnknownArchitecture as exc:
            raise ApiError(
                422, exc.code, str(exc),
                [{"path": "architecture", "message": "not registered", "registered": list_architectures()}],
            ) from None
    out_fmt = fmt if spec.output_format == "same" else spec.output_format
    if spec.input_channels and not spec.constrained and out_fmt in EAGER_FORMATS:
        raise ApiError(
            422, "invalid_spec",
            "channels: dim 'in' needs a graph output: a state-dict output runs the architecture's own forward, "
            "which cannot read a subset of its input; set output_format to torchscript or export, or constrained: true",
            [{"path": "output_format", "message": "state_dict cannot subselect inputs"},
             {"path": "channels", "message": "dim 'in' entries need a graph output"}],
        )
    inputs = form.files.get("inputs")
    if inputs is not None and not _is_safetensors(objects, inputs.key):
        raise ApiError(422, "invalid_inputs_file", "the 'inputs' file is not a safetensors file",
                       [{"path": "inputs", "message": "expected safetensors"}])
    calibration = form.files.get("calibration")
    if calibration is not None:
        _check_calibration(objects, calibration.key)
    elif spec.needs_data:
        raise ApiError(422, "invalid_calibration",
                       f"calibration: {', '.join(spec.needs_data)} need calibration data; upload a safetensors "
                       "file with 'inputs' (and optional 'targets') in the 'calibration' field",
                       [{"path": "calibration", "message": "required by " + ", ".join(spec.needs_data)}])
    if inputs is None and calibration is None and fmt != CHECKPOINT:
        _require_example_inputs(spec, fmt)
    return spec, fmt, container


def _checkpoint_config(objects: ObjectStore, key: str, container: str) -> dict | None:
    """A checkpoint archive's ``config.json`` (zip: read from its directory and that one member,
    with ranged reads from the store; a tar is read by the job only), or a 422 naming what is
    wrong with the archive."""
    from prunekit.errors import LimitExceeded, UnsafeModelFile
    from prunekit.io.checkpoint import peek_config
    from prunekit.limits import current

    try:
        with objects.open_read(key) as f:
            return peek_config(f, container, current())
    except (InvalidModelFile, UnsafeModelFile, LimitExceeded) as exc:
        raise ApiError(422, exc.code, str(exc), [{"path": "model", "message": str(exc)}]) from None


def _is_safetensors(objects: ObjectStore, key: str) -> bool:
    with objects.open_read(key) as f:
        return is_safetensors(f)


def _check_calibration(objects: ObjectStore, key: str) -> None:
    """The calibration file is readable safetensors with inputs; whether it fits the model is
    the worker's to find (it fails the job naming the field)."""
    from prunekit.data.calibration import split_inputs
    from prunekit.io.formats import safetensors_header

    bad = ApiError(422, "invalid_calibration", "calibration: the file is not a safetensors file",
                   [{"path": "calibration", "message": "expected safetensors"}])
    try:  # the header only: the request never loads the tensors (the worker does)
        with objects.open_read(key) as f:
            if not is_safetensors(f):
                raise bad
            keys = [k for k in safetensors_header(f) if k != "__metadata__"]
    except (InvalidModelFile, ValueError, UnicodeDecodeError):
        raise bad from None
    try:
        split_inputs(dict.fromkeys(keys), None)
    except InvalidCalibration as exc:
        raise ApiError(422, exc.code, str(exc), exc.details) from None


def _require_example_inputs(spec: Spec, fmt: str) -> None:
    """Refuse, before queueing, a job the engine would fail for want of example inputs.

    Mirrors ``prunekit.api._signatures`` exactly: an inputs file, ``spec.inputs``, or (for
    state-dicts only, the one format whose loaded model knows its architecture) the registered
    architecture's default ``example_inputs``.  A TorchScript or ``.pt2`` upload gets no defaults
    even when the spec names an architecture, and a ``.pt2`` archive's own input signature is not
    used as example inputs by the engine either.
    """
    if spec.inputs:
        return
    if fmt == STATE_DICT:
        if spec.architecture and get_architecture(spec.architecture).example_inputs:
            return
        why = f"architecture {spec.architecture!r} registers no default example inputs"
    elif fmt == EXPORT:
        why = "a torch.export (.pt2) upload needs example inputs to be pruned and checked"
    else:
        why = "a TorchScript upload carries no example inputs"
    raise ApiError(
        422, "invalid_spec",
        f"invalid spec: inputs: the spec gives no example inputs and {why}; add "
        'inputs: [{"shape": [...], "dtype": ...}] to the spec or upload an inputs file (safetensors)',
        [{"path": "inputs", "message": f"required: {why}"}],
    )


@router.post(
    "",
    status_code=202,
    response_model=schemas.Job,
    summary="Submit a pruning job",
    description="Upload a model (multipart field `model`), a spec (`spec`, JSON text) and optionally "
    "example inputs (`inputs`, safetensors) and calibration data (`calibration`, safetensors). The upload is streamed to the artifact store and checked (size, "
    "format, spec, architecture) before the job is queued. Answers 202 with the job and a "
    "`Location` header; poll it until `status` is succeeded, failed or cancelled.",
    responses={
        **_ERRORS,
        413: {"model": schemas.ErrorResponse, "description": "Upload larger than PRUNEKIT_MAX_UPLOAD_BYTES."},
        408: {"model": schemas.ErrorResponse, "description": "The upload stalled for PRUNEKIT_UPLOAD_IDLE_SECONDS or took longer than PRUNEKIT_UPLOAD_MAX_SECONDS."},
        415: {"model": schemas.ErrorResponse, "description": "Not multipart/form-data."},
        422: {"model": schemas.ErrorResponse, "description": "Bad model file, spec, architecture, inputs or calibration file."},
        503: {"model": schemas.ErrorResponse, "description": "The job queue (`queue_unavailable`) or the "
              "artifact store (`storage_unavailable`) is unreachable."},
    },
    openapi_extra=_SUBMIT_BODY,
)
async def submit_job(request: Request, tenant: Tenant) -> JSONResponse:
    settings = request.app.state.settings
    objects = _objects(request)
    metrics = request.app.state.metrics
    job_id = uuid.uuid4().hex  # known before the upload: the files stream to their final keys

    def open_sink(field: str):  # type: ignore[no-untyped-def]
        key = upload_key(job_id, field)
        return key, objects.begin_upload(key)

    try:
        form = await receive_multipart(
            request,
            open_sink,
            file_fields={"model", "inputs", "calibration"},
            text_fields={"spec"},
            max_file_bytes=settings.max_upload_bytes,
            max_text_bytes=settings.max_spec_bytes,
            chunk_bytes=settings.upload_chunk_bytes,
            idle_seconds=settings.upload_idle_seconds,
            max_seconds=settings.upload_max_seconds,
        )
        try:
            spec, fmt, container = await anyio.to_thread.run_sync(_validate_submission, form, objects)
        except ApiError as exc:
            metrics.rejected.labels(exc.code).inc()
            raise
        model = form.files["model"]
        model_name = stored_model_name(fmt, container)
        # "path": the file name a worker gives its local copy; "key": where it is in the store.
        record: dict[str, Any] = {
            "format": fmt,
            "filename": model.filename,
            "size": model.size,
            "sha256": model.sha256,
            "path": model_name,
            "key": model.key,
            "inputs": None,
        }
        for field, name in (("inputs", "inputs.safetensors"), ("calibration", "calibration.safetensors")):
            if field in form.files:
                f = form.files[field]
                record[field] = {"filename": f.filename, "size": f.size, "sha256": f.sha256, "path": name,
                                 "key": f.key}
        store = _store(request)
        job = await anyio.to_thread.run_sync(
            lambda: store.create(job_id=job_id, tenant=tenant, input=record, spec=spec.model_dump(mode="json"))
        )
        try:
            await anyio.to_thread.run_sync(_queue(request).submit, job_id)
        except Exception as exc:
            log.error("could not queue job %s: %s", job_id, exc)
            store.delete_any(job_id)
            raise ApiError(503, "queue_unavailable", "the job queue is unreachable; try again later") from None
    except BaseException:
        with anyio.CancelScope(shield=True):  # also when the client went away mid-request
            await anyio.to_thread.run_sync(lambda: discard_job_files(objects, None, job_id, artifacts=True))
        raise
    metrics.submitted.inc()
    metrics.upload_bytes.inc(model.size)
    log.info("job %s queued for tenant %s (%s, %d bytes)", job_id, tenant, fmt, model.size)
    body = job_view(request, job).model_dump(mode="json")
    return JSONResponse(body, status_code=202, headers={"Location": f"/v1/jobs/{job_id}"})


@router.get(
    "",
    response_model=schemas.JobList,
    summary="List your jobs",
    description="The caller's jobs, newest first. Follow `next_cursor` for older ones.",
    responses={401: _ERRORS[401], 422: {"model": schemas.ErrorResponse}},
)
def list_jobs(
    request: Request,
    tenant: Tenant,
    status: Annotated[schemas.JobStatus | None, Query(description="Only jobs with this status.")] = None,
    limit: Annotated[int, Query(ge=1, le=100, description="Page size.")] = 20,
    cursor: Annotated[str | None, Query(description="Opaque cursor from a previous page.")] = None,
) -> schemas.JobList:
    before = _decode_cursor(cursor) if cursor else None
    jobs = _store(request).list(tenant, status=status, limit=limit + 1, before_seq=before)
    page, more = jobs[:limit], len(jobs) > limit
    return schemas.JobList(
        jobs=[job_view(request, j) for j in page],
        next_cursor=_encode_cursor(page[-1].seq) if more and page else None,
    )


def _artifacts_of(request: Request, job: Job) -> list[schemas.Artifact]:
    if job.status != SUCCEEDED:
        raise ApiError(409, "no_artifacts", f"the job is {job.status}: artifacts exist only for succeeded jobs")
    out = []
    for a in job.artifacts or []:
        url = str(request.url_for("download_artifact", job_id=job.id, name=a["name"]))
        out.append(schemas.Artifact(
            name=a["name"], filename=download_name(job.input.get("filename"), a["name"]),
            size=a["size"], sha256=a["sha256"], url=url,
        ))
    return out


@router.get(
    "/{job_id}/artifacts",
    response_model=schemas.ArtifactList,
    summary="List a job's artifacts",
    responses={**_ERRORS, 409: {"model": schemas.ErrorResponse, "description": "The job has not succeeded."}},
)
def list_artifacts(request: Request, job_id: str, tenant: Tenant) -> schemas.ArtifactList:
    job = _get_job(request, job_id, tenant)
    return schemas.ArtifactList(job_id=job.id, artifacts=_artifacts_of(request, job))


@router.get(
    "/{job_id}/artifacts/{name}",
    name="download_artifact",
    summary="Download an artifact",
    description="Streams the file. `X-Content-SHA256` (hex) and `Repr-Digest` (RFC 9530) carry its "
    "SHA-256; `Content-Disposition` names it after the upload, e.g. `resnet-pruned.pt`. With an S3 "
    "artifact store and `PRUNEKIT_S3_PRESIGN=true` the answer is instead a 307 redirect to a "
    "presigned URL of the object, valid for `PRUNEKIT_S3_PRESIGN_EXPIRY` seconds, with the same "
    "digest headers (verify the bytes against them).",
    response_class=FileResponse,
    responses={
        200: {"content": {"application/octet-stream": {}}, "description": "The artifact."},
        **_ERRORS,
        307: {"description": "Presigned download URL in `Location` (S3 store with presigning on)."},
        409: {"model": schemas.ErrorResponse, "description": "The job has not succeeded."},
        410: {"model": schemas.ErrorResponse, "description": "The artifact is no longer stored."},
        503: {"model": schemas.ErrorResponse, "description": "The artifact store is unreachable."},
    },
)
def download_artifact(request: Request, job_id: str, name: str, tenant: Tenant) -> Response:
    job = _get_job(request, job_id, tenant)  # tenancy first: nothing is looked up for another tenant
    if job.status != SUCCEEDED:
        raise ApiError(409, "no_artifacts", f"the job is {job.status}: artifacts exist only for succeeded jobs")
    meta = next((a for a in job.artifacts or [] if a["name"] == name), None)
    if meta is None:  # only names the worker recorded: no path ever comes from the client
        names = ", ".join(a["name"] for a in job.artifacts or [])
        raise ApiError(404, "not_found", f"job {job_id} has no artifact {name!r} (it has: {names})")
    objects = _objects(request)
    key = meta.get("key") or legacy_artifact_key(job.id, meta["name"])
    digest = base64.b64encode(bytes.fromhex(meta["sha256"])).decode()
    media = "application/json" if name.endswith(".json") else "application/octet-stream"
    disposition = content_disposition(download_name(job.input.get("filename"), name))
    headers = {
        "Content-Disposition": disposition,
        "X-Content-SHA256": meta["sha256"],
        "Repr-Digest": f"sha-256=:{digest}:",
        "Digest": f"sha-256={digest}",
        "ETag": f'"{meta["sha256"]}"',
        "Cache-Control": "private, max-age=31536000, immutable",
    }
    gone = ApiError(410, "gone", f"artifact {name!r} is no longer in the artifact store")
    path = objects.local_path(key)
    if path is not None:
        return FileResponse(path, media_type=media, headers=headers)
    url = objects.presigned_get(key, expires=request.app.state.settings.s3_presign_expiry,
                                disposition=disposition, content_type=media)
    if url is not None:  # the store serves the bytes; the digest headers still come from us
        headers["Cache-Control"] = "private, no-store"
        headers.pop("ETag")
        return RedirectResponse(url, status_code=307, headers=headers)
    size = objects.size(key)
    if size is None:
        raise gone
    try:
        chunks = objects.stream(key)
    except ObjectMissing:
        raise gone from None
    headers["Content-Length"] = str(size)
    return StreamingResponse(chunks, media_type=media, headers=headers)


@router.delete(
    "/{job_id}",
    summary="Cancel or delete a job",
    description="A queued or running job is cancelled (its worker is stopped): 202 with the job. "
    "A finished job is deleted together with its files: 204.",
    status_code=204,
    responses={
        202: {"model": schemas.Job, "description": "The job was cancelled."},
        204: {"description": "The finished job and its files were deleted."},
        **_ERRORS,
        503: {"model": schemas.ErrorResponse, "description": "The artifact store is unreachable: nothing was deleted."},
    },
)
async def delete_job(request: Request, job_id: str, tenant: Tenant) -> Response:
    job = await anyio.to_thread.run_sync(_get_job, request, job_id, tenant)
    store, objects = _store(request), _objects(request)
    if job.status in ACTIVE:
        cancelled = await anyio.to_thread.run_sync(store.cancel, job.id)
        if cancelled:
            try:
                await anyio.to_thread.run_sync(_queue(request).cancel, job.id)
            except Exception as exc:  # the runner also stops at its next progress call
                log.warning("could not signal the cancellation of job %s to the workers: %s", job.id, exc)
            # The upload is no longer needed (artifacts never appear for a cancelled job).
            await anyio.to_thread.run_sync(lambda: discard_job_files(objects, None, job.id))
            log.info("job %s cancelled by tenant %s", job.id, tenant)
        if not cancelled:  # it finished in the meantime: do not delete what the caller never saw
            raise ApiError(409, "conflict", "the job finished before it could be cancelled; "
                           "DELETE it again to remove it")
        job = await anyio.to_thread.run_sync(_get_job, request, job_id, tenant)
        return JSONResponse(job_view(request, job).model_dump(mode="json"), status_code=202)
    # Files first: with the store down this answers 503 and changes nothing (no orphaned objects).
    await anyio.to_thread.run_sync(objects.remove_job, job.id)
    if await anyio.to_thread.run_sync(store.delete, job.id):
        log.info("job %s deleted by tenant %s", job.id, tenant)
    return Response(status_code=204)
