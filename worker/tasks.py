"""The Celery task: a thin wrapper around :func:`worker.runner.run_job`."""

from __future__ import annotations

import logging
import os

from celery.exceptions import SoftTimeLimitExceeded

from .celery_app import app, settings
from .runner import run_job
from .store import JobStore

log = logging.getLogger(__name__)

TASK_NAME = "prunekit.run_job"

_store: tuple[int, JobStore] | None = None


def _process_store() -> JobStore:
    """One store (connection pool) per process: pools must not cross a fork."""
    global _store
    if _store is None or _store[0] != os.getpid():
        _store = (os.getpid(), JobStore(settings.resolved_database_url))
    return _store[1]


@app.task(name=TASK_NAME, bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=None)
def run_job_task(self, job_id: str) -> str:  # type: ignore[no-untyped-def]
    outcome = run_job(
        job_id, settings, store=_process_store(), timeout_exceptions=(SoftTimeLimitExceeded,)
    )
    if outcome == "busy":
        # Another attempt still heartbeats (an early redelivery): look again once it could be dead.
        log.info("job %s is held by a live attempt; checking again in %.0fs", job_id, settings.stale_after)
        raise self.retry(countdown=settings.stale_after)
    return outcome
