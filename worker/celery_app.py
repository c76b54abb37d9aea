"""The Celery application (``celery -A worker.celery_app worker``, or ``prunekit worker``).

Delivery settings are chosen so that a job survives a worker that dies mid-run:

* ``acks_late`` + ``task_reject_on_worker_lost``: the message is acknowledged only after the job
  has finished, and requeued if the child process running it is killed;
* a whole worker host killed with SIGKILL never acknowledges; its job's heartbeats stop, and the
  recovery sweeps (worker.recovery, started in worker.tasks) requeue and re-send it after
  ``stale_after``.  Redis's own redelivery after ``visibility_timeout`` (restore sweep every
  ``restore_interval`` seconds; kombu's default would be ~100 s) is only a backstop;
* ``worker_prefetch_multiplier=1``: a busy worker does not sit on queued jobs others could run.

The job store, not Celery's result backend, holds job state, so results are ignored here.
"""

from __future__ import annotations

import logging
import os

from celery import Celery
from celery.signals import worker_process_init

from .settings import WorkerSettings


def make_app(settings: WorkerSettings) -> Celery:
    """A Celery app configured from ``settings`` (the API builds its own to publish with)."""
    app = Celery("prunekit", broker=settings.broker_url or "memory://", include=["worker.tasks"])
    app.conf.update(_config(settings))
    return app


def _config(settings: WorkerSettings) -> dict:
    return dict(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_store_errors_even_if_ignored=False,
        task_default_queue=settings.queue_name,
        task_serializer="json",
        accept_content=["json"],
        task_soft_time_limit=settings.job_time_limit,
        task_time_limit=settings.job_time_limit + settings.job_time_limit_grace,
        broker_connection_retry_on_startup=True,
        broker_transport_options={
            "visibility_timeout": settings.resolved_visibility_timeout,
            "unacked_restore_interval": settings.resolved_restore_interval,
            "unacked_restore_throttle": 1,
            "socket_timeout": 30,
            "socket_connect_timeout": 5,
        },
        # A pruning job allocates a lot; recycling children returns that memory to the system.
        worker_max_tasks_per_child=20,
    )


log = logging.getLogger(__name__)
settings = WorkerSettings()
app = make_app(settings)
celery = app  # ``celery -A worker.celery_app`` looks for ``app`` or ``celery``


@worker_process_init.connect
def _share_cores(**_: object) -> None:
    """Split the machine's cores between pool children instead of oversubscribing them."""
    import torch

    concurrency = int(os.environ.get("PRUNEKIT_WORKER_CONCURRENCY", "0")) or app.conf.worker_concurrency or 1
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, concurrency)))


def _concurrency() -> int:
    """Pool children of this worker (Celery's default is one per core)."""
    return int(os.environ.get("PRUNEKIT_WORKER_CONCURRENCY", "0")) or app.conf.worker_concurrency or os.cpu_count() or 1


@worker_process_init.connect
def _preload_engine(**_: object) -> None:
    """Import what a job imports lazily (torch.export, the TorchScript converter) when the pool
    child starts, not inside its first job (``prunekit/preload.py``)."""
    from prunekit.preload import preload

    log.info("engine modules imported in %.1fs", preload())


@worker_process_init.connect
def _limit_memory(**_: object) -> None:
    """Each pool child gets its share of the machine's memory (see ``worker/limits.py``)."""
    from .limits import apply_memory_limit

    apply_memory_limit(settings, _concurrency())
