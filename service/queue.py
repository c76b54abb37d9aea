"""How the API hands jobs to workers: through Celery, or to the embedded worker.

Both implement the same small interface, chosen once at startup from ``BROKER_URL``, so the
routes never care which mode they run in.  Methods that talk to a broker block; routes call them
from a worker thread.  ``recover()`` is the API's share of recovery (see :mod:`worker.recovery`):
in Celery mode the reaper calls it at every sweep.
"""

from __future__ import annotations

import logging
from typing import Protocol

from worker.recovery import Recovery, SweepReport, send_job
from worker.settings import WorkerSettings
from worker.store import JobStore

log = logging.getLogger(__name__)


class JobQueue(Protocol):
    mode: str

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def submit(self, job_id: str) -> None: ...
    def cancel(self, job_id: str) -> None: ...
    def check(self) -> None: ...
    def depth(self) -> int | None: ...
    def recover(self) -> SweepReport | None: ...


class EmbeddedQueue:
    """Jobs run in processes supervised by this API process (no broker, no Redis)."""

    mode = "embedded"

    def __init__(self, settings: WorkerSettings, store: JobStore) -> None:
        from worker.embedded import EmbeddedWorker

        self._worker = EmbeddedWorker(settings, store)

    def start(self) -> None:
        self._worker.start()

    def stop(self) -> None:
        self._worker.stop()

    def submit(self, job_id: str) -> None:
        self._worker.notify()

    def cancel(self, job_id: str) -> None:
        self._worker.notify()  # the dispatcher sees the cancelled status and ends the process

    def check(self) -> None:
        if not self._worker.alive:
            raise RuntimeError("the embedded worker's dispatcher thread is not running")

    def depth(self) -> int | None:
        return None

    def recover(self) -> SweepReport | None:
        return None  # the embedded supervisor watches its own job processes


class CeleryQueue:
    """Jobs are Celery messages; ``prunekit worker`` processes run them."""

    mode = "celery"

    def __init__(self, settings: WorkerSettings, store: JobStore | None = None) -> None:
        from worker.celery_app import make_app

        self.settings = settings
        self.app = make_app(settings)
        self.recovery = Recovery(settings, store, self.submit) if store is not None else None

    def start(self) -> None:
        return None

    def stop(self) -> None:
        self.app.close()

    def submit(self, job_id: str) -> None:
        # task_id = job id: revoke() can then address the job's task directly.
        send_job(self.app, self.settings, job_id)

    def cancel(self, job_id: str) -> None:
        # A queued task is dropped when it arrives; a running one has its process terminated.
        # The runner also stops on its own at the next progress call (the store says cancelled).
        self.app.control.revoke(job_id, terminate=True, signal="SIGTERM")

    def check(self) -> None:
        with self.app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)

    def depth(self) -> int | None:
        """Messages waiting in the broker queue (Redis only)."""
        url = self.settings.broker_url or ""
        if not url.startswith(("redis://", "rediss://")):
            return None
        import redis

        client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        try:
            return int(client.llen(self.settings.queue_name))
        finally:
            client.close()

    def recover(self) -> SweepReport | None:
        """Requeue jobs whose worker went silent, send again those the broker lost."""
        return self.recovery.sweep() if self.recovery is not None else None


def make_queue(settings: WorkerSettings, store: JobStore) -> JobQueue:
    return EmbeddedQueue(settings, store) if settings.embedded else CeleryQueue(settings, store)
