"""The Celery task: a thin wrapper around :func:`worker.runner.run_job`.

The worker's main process also runs the recovery sweeper (:mod:`worker.recovery`), started when
the worker is ready: it requeues jobs whose worker stopped sending heartbeats and sends again
queued jobs the broker lost.
"""

from __future__ import annotations

import logging
import os

from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import worker_ready, worker_shutdown

from .celery_app import app, settings
from .recovery import TASK_NAME, start_worker_recovery, stop_worker_recovery
from .runner import run_job
from .storage import ObjectStore, open_store
from .store import JobStore

log = logging.getLogger(__name__)

__all__ = ["TASK_NAME", "run_job_task"]

_stores: tuple[int, JobStore, ObjectStore] | None = None


def _process_stores() -> tuple[JobStore, ObjectStore]:
    """One job store (connection pool) and one artifact-store client per process: neither may
    cross a fork."""
    global _stores
    if _stores is None or _stores[0] != os.getpid():
        _stores = (os.getpid(), JobStore(settings.resolved_database_url), open_store(settings))
    return _stores[1], _stores[2]


@app.task(name=TASK_NAME, bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=None)
def run_job_task(self, job_id: str) -> str:  # type: ignore[no-untyped-def]
    store, objects = _process_stores()
    outcome = run_job(
        job_id, settings, store=store, objects=objects, timeout_exceptions=(SoftTimeLimitExceeded,)
    )
    if outcome == "busy":
        # A duplicate delivery (an early redelivery, or a re-send that crossed a worker's pick-up)
        # while a live attempt heartbeats: drop it.  Should that attempt die, recovery requeues
        # the job and sends it again once its heartbeat is STALE_AFTER old.
        log.info("job %s is held by a live attempt; this delivery is dropped", job_id)
    elif outcome == "deferred":
        # A message that came before the job's retry_at (its last attempt could not reach the
        # artifact store): drop it; a recovery sweep sends the job again once it is due.
        log.info("job %s waits out its retry backoff; this delivery is dropped", job_id)
    return outcome


@worker_ready.connect
def _start_recovery(**_: object) -> None:
    start_worker_recovery(app, settings)


@worker_shutdown.connect
def _stop_recovery(**_: object) -> None:
    stop_worker_recovery()
