"""The FastAPI application factory.

``create_app()`` wires settings, the job store, the file layout, the job queue (Celery or
embedded) and the routes together; the lifespan starts and stops the background parts (the
embedded worker, the reaper of lost jobs).  Uvicorn calls it with ``factory=True``.
"""

from __future__ import annotations

import logging
import threading
from contextlib import asynccontextmanager
from typing import AsyncIterator

from fastapi import FastAPI

from prunekit import __version__
from worker.layout import Layout
from worker.store import JobStore

from .errors import install_error_handlers
from .metrics import Metrics
from .queue import JobQueue, make_queue
from .routes import health, jobs
from .settings import Settings

log = logging.getLogger(__name__)

DESCRIPTION = """
Structured pruning as a service. Upload a TorchScript, torch.export or state-dict model with a
pruning spec; a worker prunes it, checks the result against the original, and leaves the smaller
model to download.

Authenticate with `Authorization: Bearer <key>` (keys are configured with `PRUNEKIT_API_KEYS`).
Errors always look like `{"error": {"code": ..., "message": ..., "details": [...]}}`.
"""


class Reaper:
    """Periodic housekeeping of jobs whose worker vanished.

    In Celery mode it first runs the queue's recovery (worker.recovery: a job silent for
    STALE_AFTER is requeued and sent again, or failed once its attempts are used up; a queued job
    the broker lost is sent again); then, in both modes, it fails what nothing will run any more
    (JobStore.reap), and it removes uploads abandoned half-way by an API process that died.
    """

    def __init__(self, settings: Settings, store: JobStore, layout: Layout, queue: JobQueue | None = None) -> None:
        self.settings, self.store, self.layout, self.queue = settings, store, layout, queue
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="prunekit-reaper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def sweep(self) -> list[str]:
        s = self.settings
        if self.queue is not None:
            try:
                self.queue.recover()
            except Exception as exc:  # e.g. the broker is down: reaping below still applies
                log.warning("recovery sweep failed: %s", exc)
        reaped = self.store.reap(
            stale_after=s.stale_after, lost_after=s.resolved_lost_after, max_attempts=s.job_max_attempts
        )
        for job_id in reaped:
            log.warning("job %s failed: its worker stopped sending heartbeats", job_id)
            self.layout.remove_job_files(job_id, artifacts=False)
        for name in self.layout.remove_abandoned_incoming(s.incoming_max_age):
            log.warning("removed the partial upload %s (untouched for %.0fs: its API process died)",
                        name, s.incoming_max_age)
        return reaped

    def _run(self) -> None:
        while True:  # a first sweep at startup: jobs lost while no API was running are found now
            try:
                self.sweep()
            except Exception:
                log.exception("reaper sweep failed")
            if self._stop.wait(self.settings.reaper_interval):
                return


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    layout = Layout(settings.data_dir)
    layout.ensure()
    store = JobStore(settings.resolved_database_url)
    queue = make_queue(settings, store)
    reaper = Reaper(settings, store, layout, queue)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not settings.tenants_by_key:
            log.warning(
                "PRUNEKIT_API_KEYS is not set: only requests from this machine (loopback) are accepted. "
                "Set PRUNEKIT_API_KEYS=\"key=tenant,...\" to serve other clients."
            )
        log.info("PruneKit service: %s mode, data in %s", queue.mode, layout.root)
        queue.start()
        reaper.start()
        try:
            yield
        finally:
            reaper.stop()
            queue.stop()
            store.dispose()

    app = FastAPI(
        title="PruneKit",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.layout = layout
    app.state.store = store
    app.state.queue = queue
    app.state.reaper = reaper
    app.state.metrics = Metrics(store, queue)
    install_error_handlers(app)
    app.include_router(jobs.router)
    app.include_router(health.router)
    return app
