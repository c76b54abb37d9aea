"""The FastAPI application factory.

``create_app()`` wires settings, the job store, the artifact store (local folders or S3), the
job queue (Celery or embedded) and the routes together; the lifespan starts and stops the
background parts (the embedded worker, the reaper of lost jobs and abandoned uploads).  Uvicorn
calls it with ``factory=True``.
"""

from __future__ import annotations

import gc
import logging
import threading

import anyio
from contextlib import asynccontextmanager
from typing import AsyncIterator

from fastapi import FastAPI

from prunekit import __version__
from worker.layout import Layout
from worker.storage import ObjectStore, StorageUnavailable, open_store
from worker.storage.cleanup import discard_job_files, sweep_orphans
from worker.store import JobStore

from . import docs
from .bodies import BodyCache
from .errors import install_error_handlers
from .events import StreamSlots
from .heads import HeadReader
from .metrics import Metrics
from .queue import JobQueue, make_queue
from .routes import health, jobs, status
from .settings import Settings
from .ui import pages as ui_pages
from .ui.reports import Reports

log = logging.getLogger(__name__)

DESCRIPTION = """
Structured pruning as a service. Upload a TorchScript, torch.export or state-dict model with a
pruning spec; a worker prunes it, checks the result against the original, and leaves the smaller
model to download.

Authenticate with `Authorization: Bearer <key>` (keys are configured with `PRUNEKIT_API_KEYS`).
Errors always look like `{"error": {"code": ..., "message": ..., "details": [...]}}`.

A dashboard of your jobs is at [/ui](/ui); this reference is also at [/redoc](/redoc).
"""


class Reaper:
    """Periodic housekeeping of jobs whose worker vanished.

    In Celery mode it first runs the queue's recovery (worker.recovery: a job silent for
    STALE_AFTER is requeued and sent again, or failed once its attempts are used up; a queued job
    the broker lost is sent again); then, in both modes, it fails what nothing will run any more
    (JobStore.reap), and it removes uploads abandoned half-way by an API process that died, and
    uploads no job will read (:func:`worker.storage.cleanup.sweep_orphans`).
    """

    def __init__(self, settings: Settings, store: JobStore, layout: Layout, objects: ObjectStore,
                 queue: JobQueue | None = None) -> None:
        self.settings, self.store, self.layout, self.queue = settings, store, layout, queue
        self.objects = objects
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
            discard_job_files(self.objects, self.layout, job_id)
        try:
            for what in sweep_orphans(self.objects, self.store, s.incoming_max_age):
                log.warning("removed the %s (untouched for %.0fs: nothing will read it)", what, s.incoming_max_age)
        except StorageUnavailable as exc:
            log.warning("orphan sweep skipped: %s", exc)
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
    objects = open_store(settings, layout)
    store = JobStore(settings.resolved_database_url)
    queue = make_queue(settings, store)
    reaper = Reaper(settings, store, layout, objects, queue)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not settings.tenants_by_key:
            log.warning(
                "PRUNEKIT_API_KEYS is not set: only requests from this machine (loopback) are accepted. "
                "Set PRUNEKIT_API_KEYS=\"key=tenant,...\" to serve other clients."
            )
        log.info("PruneKit service: %s mode, artifacts in %s, scratch in %s", queue.mode, objects.describe(),
                 layout.root)
        try:
            await anyio.to_thread.run_sync(objects.check)
        except StorageUnavailable as exc:  # keep serving: /readyz says so until the store is back
            log.error("the artifact store is unreachable: %s", exc)
        queue.start()
        reaper.start()
        # The process holds a few hundred thousand long-lived objects from its imports (torch's
        # among them). Left in the collector's generations, every full collection walks them all:
        # a pause of ~100 ms that lands on whichever requests are in flight (the status path's
        # p99). Freezing them after start-up leaves the collector only what requests allocate.
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            reaper.stop()
            queue.stop()
            store.dispose()
            objects.close()

    app = FastAPI(
        title="PruneKit",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # served by .docs from local assets (FastAPI's own load them from a CDN)
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.layout = layout
    app.state.objects = objects
    app.state.store = store
    app.state.queue = queue
    app.state.reaper = reaper
    app.state.metrics = Metrics(store, queue)
    app.state.heads = HeadReader(store)
    app.state.bodies = BodyCache()
    app.state.stream_slots = StreamSlots(settings.events_max_streams)
    app.state.reports = Reports(objects)
    install_error_handlers(app)
    app.include_router(status.router)
    app.include_router(jobs.router)
    app.include_router(health.router)
    app.include_router(docs.router)
    app.include_router(ui_pages.router)
    docs.document_fixups(app)
    return app
