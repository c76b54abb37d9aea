"""Housekeeping of job files that must never fail the caller: cleanup after a job ends, and the
sweep for files nothing will ever use (an upload whose API process died before the job was
recorded, a deletion the store was down for).  Failures are logged; the next sweep retries."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from prunekit.job_status import SUCCEEDED, TERMINAL

from ..layout import Layout
from .base import ObjectStore

if TYPE_CHECKING:
    from ..store import JobStore

log = logging.getLogger(__name__)


def discard_job_files(objects: ObjectStore, layout: Layout | None, job_id: str, *, artifacts: bool = False) -> None:
    """Delete a job's uploads (and artifacts) from the store and its scratch here; never raises."""
    if layout is not None:
        layout.remove_scratch(job_id)
    try:
        objects.remove_job(job_id, artifacts=artifacts)
    except Exception as exc:  # the store is down: the orphan sweep removes them later
        log.warning("could not delete the files of job %s: %s", job_id, exc)


def sweep_orphans(objects: ObjectStore, jobs: "JobStore", max_age: float) -> list[str]:
    """Remove what no job will read: unfinished uploads older than ``max_age``, and uploads older
    than that whose job was never recorded (its API process died mid-submission) or has finished
    (with whatever artifacts a job that did not succeed left: it has none to hand out).
    Returns a line per removal, for the log."""
    removed = [f"unfinished upload {name}" for name in objects.remove_abandoned(max_age)]
    old = [job_id for job_id, age in objects.upload_ages().items() if age > max_age]
    if old:
        statuses = jobs.statuses(old)
        for job_id in old:
            status = statuses.get(job_id)
            if status is None or status in TERMINAL:
                objects.remove_job(job_id, artifacts=status != SUCCEEDED)
                removed.append(f"uploads of job {job_id} ({'no record' if status is None else status})")
    return removed
