"""Run one job: the part shared by the Celery task and the embedded worker.

Both execution modes call :func:`run_job` with a job id and nothing else: everything the job
needs (its spec, where its upload is) is read from the job store, which keeps messages small and
makes a redelivered message harmless.  The function

* claims the job (idempotent: a finished or cancelled job is left alone, a job still held by a
  live attempt is reported ``busy``, attempts are counted and capped),
* downloads the job's uploads from the artifact store (:mod:`worker.storage`: a local folder or
  an S3 bucket) into a private scratch folder, and calls :func:`prunekit.api.prune_to_dir` on
  those local files, reporting progress to the store (throttled) and checking, at every progress
  call, whether the job was cancelled or ran out of time,
* uploads the artifacts under keys that name the attempt (so a dead or superseded attempt can
  never overwrite the files of the one recorded), records the outcome (which makes them the
  job's), then removes what earlier attempts of the job left behind.

The artifact store being unreachable is not the job's fault: the attempt is given back to the
queue (``requeued``) while attempts remain, to run again once a backoff has passed
(:meth:`~worker.settings.WorkerSettings.storage_retry_wait`, recorded as the job's ``retry_at``:
the embedded dispatcher starts it, or a recovery sweep sends it to the broker, when it is due),
and fails with ``storage_unavailable`` after the last, saying what failed.  The job's messages
name the step and the cause but not the store's address (that goes to the worker's log).

User errors (:class:`prunekit.errors.PruneKitError`) keep their code and message; anything else is
recorded as ``internal_error`` with a single line, and the traceback goes to the worker's log.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import socket
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

from prunekit.artifacts import ARTIFACT_ORDER, MODEL_FORMATS

from .layout import Layout
from .settings import WorkerSettings
from .storage import (
    ObjectMissing,
    ObjectStore,
    StorageUnavailable,
    artifact_key,
    attempt_prefix,
    open_store,
    upload_key,
)
from .storage.cleanup import discard_job_files
from .store import CANCELLED, SUCCEEDED, TERMINAL, JobStore, silence, utcnow

log = logging.getLogger(__name__)

TIME_LIMIT = "time_limit"
INTERNAL_ERROR = "internal_error"
STORAGE_UNAVAILABLE = "storage_unavailable"
REQUEUED = "requeued"


class JobCancelled(BaseException):
    """Raised from the progress callback: the job was cancelled or taken over; stop now.

    A ``BaseException`` (like ``KeyboardInterrupt``) so that an ``except Exception`` in the engine,
    which turns failures into user-facing errors, cannot swallow it.
    """


class JobTimeLimit(BaseException):
    """Raised from the progress callback when the job's deadline has passed (see JobCancelled)."""


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


class Progress:
    """The engine's progress callback: throttled store writes, cancellation and deadline checks.

    A write happens on every stage change and otherwise at most every ``interval`` seconds, so
    an engine that reports per layer does not hammer the database.  A background heartbeat
    keeps the job visibly alive through long stages; if the store says the job is no longer
    ours (cancelled, or superseded by a redelivery) the next callback raises.
    """

    def __init__(self, store: JobStore, job_id: str, attempt: int, settings: WorkerSettings) -> None:
        self.store, self.job_id, self.attempt = store, job_id, attempt
        self.interval = settings.progress_interval
        self.deadline = time.monotonic() + settings.job_time_limit
        self.time_limit = settings.job_time_limit
        self.heartbeat_interval = settings.heartbeat_interval
        self.stages_seen: list[str] = []
        self._stage: str | None = None
        self._stage_started = time.monotonic()
        self._seconds: dict[str, float] = {}
        self._last_write = 0.0
        self._lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{job_id[:8]}", daemon=True)

    def __enter__(self) -> "Progress":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_interval):
            try:
                if not self.store.heartbeat(self.job_id, self.attempt):
                    self._lost.set()
                    return
            except Exception:  # a database hiccup must not kill the job; the next beat retries
                log.warning("heartbeat for job %s failed", self.job_id, exc_info=True)

    def check(self) -> None:
        if self._lost.is_set():
            raise JobCancelled()
        if time.monotonic() > self.deadline:
            raise JobTimeLimit()

    def _close_stage(self, now: float) -> None:
        if self._stage is not None:
            self._seconds[self._stage] = self._seconds.get(self._stage, 0.0) + now - self._stage_started
        self._stage_started = now

    def timings(self) -> dict[str, float]:
        """Seconds spent in each stage so far (the current one up to now), for the job result:
        where a slow job spent its time is the first thing its owner asks."""
        self._close_stage(time.monotonic())
        return {stage: round(sec, 3) for stage, sec in self._seconds.items()}

    def __call__(self, stage: str, fraction: float, message: str = "") -> None:
        self.check()
        now = time.monotonic()
        new_stage = stage != self._stage
        if not new_stage and now - self._last_write < self.interval:
            return
        if new_stage:
            self._close_stage(now)
            self._stage = stage
            self.stages_seen.append(stage)
        self._last_write = now
        percent = round(100.0 * min(1.0, max(0.0, float(fraction))), 1)
        if not self.store.progress(self.job_id, self.attempt, str(stage), percent, str(message or stage)):
            self._lost.set()
            raise JobCancelled()


def _reduction(before: Any, after: Any) -> dict:
    out: dict[str, Any] = {"before": before, "after": after, "reduction_percent": None}
    if isinstance(before, (int, float)) and isinstance(after, (int, float)) and before:
        out["reduction_percent"] = round(100.0 * (1.0 - after / before), 2)
    return out


def summarize_report(report: dict, artifacts: list[dict]) -> dict:
    """The job ``result``: the headline numbers of the engine's report (the full report is the
    ``report.json`` artifact)."""
    names = [a["name"] for a in artifacts]
    fmt = next((MODEL_FORMATS[n] for n in names if n in MODEL_FORMATS), None)
    check = report.get("check") or {}
    return {
        "output_format": fmt,
        "params": _reduction(report.get("params_before"), report.get("params_after")),
        "macs": _reduction(report.get("macs_before"), report.get("macs_after")),
        "file_size": _reduction(report.get("file_size_before"), report.get("file_size_after")),
        "check": {
            "max_abs": check.get("max_abs"),
            "max_rel": check.get("max_rel"),
            "passed": check.get("passed"),
        },
        "warnings": [str(w) for w in report.get("warnings") or []],
        "artifacts": names,
        "evaluation": report.get("evaluation"),
        "sparsity": ({k: v for k, v in report["sparsity"].items() if k != "layers"} if report.get("sparsity") else None),
        "target": report.get("target"),
        "inputs": report.get("inputs"),
        "from_zeros": report.get("from_zeros"),
        "normalized_dims": report.get("normalized_dims"),
        "sweep": ({"parameter": report["sweep"]["parameter"], "selected": report["sweep"]["selected"],
                   "rows": [{k: r.get(k) for k in ("value", "ok", "sparsity", "macs_fraction", "accuracy", "loss")}
                            for r in report["sweep"]["rows"]]} if report.get("sweep") else None),
    }


def one_line(text: str, limit: int = 300) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _collect_artifacts(out_dir: Path, engine_artifacts: dict) -> list[dict]:
    """Describe every file the engine wrote (copying in any it wrote elsewhere)."""
    for path in (engine_artifacts or {}).values():
        p = Path(path)
        if p.is_file() and p.resolve().parent != out_dir.resolve():
            shutil.copy2(p, out_dir / p.name)
    files = sorted(p for p in out_dir.iterdir() if p.is_file() and not p.name.startswith("."))
    order = {n: i for i, n in enumerate(ARTIFACT_ORDER)}
    files.sort(key=lambda p: (order.get(p.name, len(order)), p.name))
    return [{"name": p.name, "size": p.stat().st_size, "sha256": sha256_file(p)} for p in files]


def _out_of_memory_message() -> str:
    from .limits import applied_memory_limit, describe

    return (f"the job ran out of memory: it needed more than its limit of {describe(applied_memory_limit())} "
            "(PRUNEKIT_JOB_MEMORY_LIMIT)")


def _fetch(objects: ObjectStore, job_id: str, record: dict | None, in_dir: Path) -> Path | None:
    """Download one of the job's uploads into scratch, named as the engine expects it."""
    if not record:
        return None
    # Records of older versions name no key: their file sat under its stored name.
    key = record.get("key") or upload_key(job_id, record["path"])
    dest = in_dir / record["path"]
    objects.fetch(key, dest)
    return dest


def _store_artifacts(objects: ObjectStore, job_id: str, attempt: int, out_dir: Path, artifacts: list[dict]) -> None:
    for a in artifacts:
        a["key"] = artifact_key(job_id, attempt, a["name"])
        objects.put_file(a["key"], out_dir / a["name"], sha256=a["sha256"])


def _drop_other_attempts(objects: ObjectStore, job_id: str, attempt: int) -> None:
    """Remove what earlier (dead, superseded, or cut off from the store) attempts of the job
    uploaded: complete objects and unfinished multipart uploads alike.  Only earlier numbers can
    exist, since a later attempt would have fenced this one off before it recorded its result."""
    for earlier in range(1, attempt):
        objects.delete_prefix(attempt_prefix(job_id, earlier))


_URL = re.compile(r":?\s*\"?\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s\"]*\"?")


def _store_cause(exc: StorageUnavailable) -> str:
    """The store's error for the job's owner: one line, without the store's address."""
    return one_line(_URL.sub("", str(exc)), 200)


def run_job(
    job_id: str,
    settings: WorkerSettings,
    *,
    store: JobStore | None = None,
    objects: ObjectStore | None = None,
    timeout_exceptions: tuple[type[BaseException], ...] = (),
) -> str:
    """Run ``job_id`` once.  Returns the claim outcome, ``requeued``, or the job's final status.

    ``timeout_exceptions`` are the host's own time-limit exceptions (Celery's soft limit), which
    are recorded like our deadline: code ``time_limit``.
    """
    from prunekit import api
    from prunekit.errors import MemoryLimit, PruneKitError, bounded, is_out_of_memory
    from prunekit.spec import parse_spec

    store = store or JobStore(settings.resolved_database_url)
    layout = Layout(settings.data_dir)
    objects = objects or open_store(settings, layout)
    claim = store.claim(
        job_id, worker=worker_name(), max_attempts=settings.job_max_attempts, stale_after=settings.stale_after
    )
    if claim.outcome != "claimed":
        log.info("job %s not run: %s", job_id, claim.outcome)
        if claim.outcome in ("done", "exhausted"):  # finished: drop whatever a lost attempt left
            discard_job_files(objects, layout, job_id)
        return claim.outcome
    attempt, job = claim.attempt, claim.job
    assert job is not None
    log.info("job %s attempt %d started", job_id, attempt)

    t_start = time.monotonic()
    scratch = layout.work_dir(job_id) / f"attempt-{attempt}-{uuid.uuid4().hex[:8]}"
    in_dir, out_dir = scratch / "in", scratch / "out"
    in_dir.mkdir(parents=True)
    out_dir.mkdir(parents=True)

    def fail(code: str, message: str) -> str:
        message = bounded(message)  # stored, logged and sent with every status read
        store.fail(job_id, code, message, attempt=attempt)
        log.info("job %s attempt %d failed: %s: %s", job_id, attempt, code, message)
        return store.status_of(job_id) or "missing"

    phase = "downloading the job's files"
    try:
        with Progress(store, job_id, attempt, settings) as progress:
            progress("load", 0.0, "fetching the model")
            model_path = _fetch(objects, job_id, job.input, in_dir)
            inputs_path = _fetch(objects, job_id, job.input.get("inputs"), in_dir)
            calibration_path = _fetch(objects, job_id, job.input.get("calibration"), in_dir)
            progress("load", 0.0, "reading the model")
            spec = parse_spec(job.spec)
            result = api.prune_to_dir(
                model_path, spec, out_dir, inputs_path=inputs_path, progress=progress,
                calibration_path=calibration_path,
            )
            progress.check()
            artifacts = _collect_artifacts(out_dir, getattr(result, "artifacts", {}) or {})
            report = result.report.to_dict() if hasattr(result.report, "to_dict") else dict(result.report or {})
            summary = summarize_report(report, artifacts)
            summary["stages"] = progress.stages_seen
            summary["stage_seconds"] = progress.timings()
            if not any(a["name"] in MODEL_FORMATS for a in artifacts):
                return fail(INTERNAL_ERROR, "the engine finished without writing a model artifact")
            # Still ours?  A fresh heartbeat also keeps any redelivery from claiming it meanwhile.
            if not store.heartbeat(job_id, attempt):
                raise JobCancelled()
            phase = "storing the artifacts"
            _store_artifacts(objects, job_id, attempt, out_dir, artifacts)
            if not store.succeed(job_id, attempt, result=summary, artifacts=artifacts):
                objects.delete_prefix(attempt_prefix(job_id, attempt))
                raise JobCancelled()
            log.info("job %s attempt %d succeeded", job_id, attempt)
            try:
                _drop_other_attempts(objects, job_id, attempt)
            except StorageUnavailable as exc:  # leftovers go with the job when it is deleted
                log.warning("job %s: could not remove earlier attempts' artifacts: %s", job_id, exc)
            return SUCCEEDED
    except JobCancelled:
        status = store.status_of(job_id)
        log.info("job %s attempt %d stopped: job is now %s", job_id, attempt, status)
        if status == CANCELLED:
            discard_job_files(objects, layout, job_id)
        return status or "missing"
    except JobTimeLimit:
        return fail(TIME_LIMIT, f"the job exceeded its time limit of {settings.job_time_limit}s")
    except StorageUnavailable as exc:
        log.warning("job %s attempt %d: the artifact store is unreachable (%s): %s", job_id, attempt, phase, exc)
        if attempt < settings.job_max_attempts:
            wait = settings.storage_retry_wait(attempt)
            if store.requeue(job_id, attempt, retry_at=utcnow() + timedelta(seconds=wait),
                             message=f"requeued: the artifact store was unreachable while {phase} (attempt "
                             f"{attempt} of {settings.job_max_attempts}); trying again "
                             f"{f'in {silence(wait)}' if wait > 0 else 'at once'}"):
                log.info("job %s requeued: next attempt in %.1fs at the earliest", job_id, wait)
                return REQUEUED
        span = (utcnow() - job.started_at).total_seconds() if job.started_at else time.monotonic() - t_start
        return fail(STORAGE_UNAVAILABLE, f"the artifact store was unreachable while {phase} on attempt {attempt} of "
                    f"{settings.job_max_attempts}, the last, {silence(span)} after the job started: {_store_cause(exc)}")
    except ObjectMissing as exc:
        return fail(INTERNAL_ERROR, f"the job's upload {exc} is missing from the artifact store")
    except PruneKitError as exc:
        if is_out_of_memory(exc):  # the engine wrapped a failed allocation as its own error
            return fail(MemoryLimit.code, _out_of_memory_message())
        if isinstance(exc.__context__, timeout_exceptions) or time.monotonic() - t_start > settings.job_time_limit:
            # The host's soft time limit fired inside the engine, which wrapped it as its own error.
            return fail(TIME_LIMIT, f"the job exceeded its time limit of {settings.job_time_limit}s")
        return fail(exc.code, str(exc) or exc.code)
    except timeout_exceptions:
        return fail(TIME_LIMIT, f"the job exceeded its time limit of {settings.job_time_limit}s")
    except Exception as exc:
        if is_out_of_memory(exc):
            return fail(MemoryLimit.code, _out_of_memory_message())
        log.exception("job %s attempt %d crashed", job_id, attempt)
        text = str(exc).replace(str(layout.root), "<data>")
        return fail(INTERNAL_ERROR, one_line(f"unexpected {type(exc).__name__} while pruning: {text}"))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        status = store.status_of(job_id)
        if status in TERMINAL:
            # Finished: the uploads and any scratch left by earlier, killed attempts can go; so can
            # any artifacts of a job that did not succeed (it has none to hand out).
            discard_job_files(objects, layout, job_id, artifacts=status != SUCCEEDED)
