"""Embedded mode: run jobs without a broker, in child processes supervised by the API process.

With no ``BROKER_URL`` the job store doubles as the queue: a dispatcher thread starts the oldest
queued jobs, each in its own process (so a crash, a runaway allocation or a hard time limit can
be dealt with by killing it, and the API's event loop never waits on the engine).  The child runs
the very same :func:`worker.runner.run_job` as the Celery task.  A job its attempt gave back
because the artifact store was unreachable is started again only once its ``retry_at`` has come.

The dispatcher watches its children: a cancelled job's process is terminated, one past its hard
time limit is killed and failed, and one that died without recording an outcome is requeued
(or failed once its attempts are used up).  Embedded mode assumes a single API process.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import threading
import time
from dataclasses import dataclass
from typing import Any

from prunekit.preload import MODULES as PRUNE_MODULES

from .layout import Layout
from .settings import WorkerSettings
from .storage import open_store
from .storage.cleanup import discard_job_files
from .store import CANCELLED, RUNNING, WORKER_LOST, JobStore

log = logging.getLogger(__name__)


def _child_main(job_id: str, settings_json: str) -> None:
    """Entry point of a job process (spawned/forkserver: nothing inherited but arguments)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s [job] %(name)s: %(message)s")
    from .limits import apply_memory_limit
    from .runner import run_job

    settings = WorkerSettings.model_validate_json(settings_json)
    apply_memory_limit(settings, settings.embedded_concurrency)
    run_job(job_id, settings)


def settings_for_child(settings: WorkerSettings) -> str:
    """The settings as JSON for a job process, secrets included (pydantic masks them)."""
    data = json.loads(settings.model_dump_json())
    if settings.s3_secret_access_key is not None:
        data["s3_secret_access_key"] = settings.s3_secret_access_key.get_secret_value()
    return json.dumps(data)


# Imported once in the fork server, so that every job process starts with them loaded.
PRELOAD = ["torch", "prunekit", "prunekit.api", "worker.runner", *PRUNE_MODULES]  # see prunekit/preload.py


def _context() -> Any:
    try:
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(PRELOAD)
        return ctx
    except ValueError:  # platforms without forkserver
        return mp.get_context("spawn")


def _warm_up() -> None:
    """Start the fork server now, in the background, rather than when the first job arrives:
    importing torch and the engine takes seconds, which the first job would otherwise spend
    queued.  A failure here only means the first job starts it (and says why)."""
    try:
        from multiprocessing import forkserver

        t0 = time.monotonic()
        forkserver.ensure_running()
        # ensure_running returns once the server is started; a first fork waits for its imports.
        ctx = mp.get_context("forkserver")
        p = ctx.Process(target=_noop, name="prunekit-warm-up", daemon=True)
        p.start()
        p.join(120)
        log.info("job processes ready (engine preloaded in %.1fs)", time.monotonic() - t0)
    except Exception as exc:
        log.warning("could not pre-start the job process server: %s", exc)


def _noop() -> None:
    return None


@dataclass
class _Running:
    job_id: str
    process: Any
    started: float


class EmbeddedWorker:
    """Starts queued jobs in child processes, ``concurrency`` at a time."""

    def __init__(self, settings: WorkerSettings, store: JobStore, *, poll_interval: float = 1.0) -> None:
        self.settings = settings
        self.store = store
        self.poll_interval = poll_interval
        self.concurrency = settings.embedded_concurrency
        self._ctx = _context()
        self._running: dict[str, _Running] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._settings_json = settings_for_child(settings)
        self.layout = Layout(settings.data_dir)
        self.objects = open_store(settings, self.layout)

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        if self._ctx.get_start_method() == "forkserver":
            threading.Thread(target=_warm_up, name="prunekit-warm-up", daemon=True).start()
        self._recover()
        self._thread = threading.Thread(target=self._loop, name="prunekit-embedded-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout)
        for r in list(self._running.values()):
            # Jobs interrupted by shutdown go back to the queue for the next start.
            r.process.terminate()
            r.process.join(5)
            if r.process.is_alive():
                r.process.kill()
            self._after_exit(r, shutting_down=True)
        self._running.clear()

    def notify(self) -> None:
        """A job was queued or cancelled: look now rather than at the next poll."""
        self._wake.set()

    @property
    def busy(self) -> int:
        return len(self._running)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- the loop -----------------------------------------------------------------------------

    def _recover(self) -> None:
        """Jobs left ``running`` by a previous server process lost their process: retry them."""
        for job_id in self.store.ids_with_status(RUNNING, limit=10_000):
            job = self.store.get(job_id)
            if job is None:
                continue
            if job.attempts >= self.settings.job_max_attempts:
                self.store.fail(job_id, WORKER_LOST, "the server stopped while the job was running "
                                f"(attempt {job.attempts} of {self.settings.job_max_attempts})")
            else:
                self.store.requeue(job_id, job.attempts)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._tick()
            except Exception:
                log.exception("embedded worker: dispatcher iteration failed")
            self._wake.wait(self.poll_interval)
            self._wake.clear()

    def _tick(self) -> None:
        hard_limit = self.settings.job_time_limit + self.settings.job_time_limit_grace
        for r in list(self._running.values()):
            if not r.process.is_alive():
                r.process.join()
                self._after_exit(r)
                continue
            status = self.store.status_of(r.job_id)
            if status in (CANCELLED, None):
                log.info("job %s cancelled: terminating its process", r.job_id)
                self._kill(r)
                discard_job_files(self.objects, self.layout, r.job_id)
            elif time.monotonic() - r.started > hard_limit:
                log.warning("job %s passed its hard time limit: killing its process", r.job_id)
                self.store.fail(r.job_id, "time_limit",
                                f"the job exceeded its time limit of {self.settings.job_time_limit}s")
                self._kill(r)
                discard_job_files(self.objects, self.layout, r.job_id)
        free = self.concurrency - len(self._running)
        if free <= 0:
            return
        # Due ones only: a job waiting out its backoff after the artifact store was unreachable
        # (its retry_at) starts at the first poll after that time.
        for job_id in self.store.due_queued(limit=free + len(self._running)):
            if free <= 0:
                break
            if job_id in self._running:
                continue
            proc = self._ctx.Process(
                target=_child_main, args=(job_id, self._settings_json), name=f"prunekit-job-{job_id[:8]}",
                daemon=True,
            )
            proc.start()
            self._running[job_id] = _Running(job_id, proc, time.monotonic())
            free -= 1

    def _kill(self, r: _Running) -> None:
        r.process.terminate()
        r.process.join(5)
        if r.process.is_alive():
            r.process.kill()
            r.process.join(5)
        self._after_exit(r)

    def _after_exit(self, r: _Running, *, shutting_down: bool = False) -> None:
        """A job process ended: if it left the job running, it died without a word."""
        self._running.pop(r.job_id, None)
        job = self.store.get(r.job_id)
        if job is None or job.status != RUNNING:
            return
        if shutting_down or job.attempts < self.settings.job_max_attempts:
            log.warning("job %s: process exited (code %s) mid-run; requeueing", r.job_id, r.process.exitcode)
            self.store.requeue(r.job_id, job.attempts)
            self._wake.set()
        else:
            self.store.fail(
                r.job_id,
                WORKER_LOST,
                f"the job's process died (exit code {r.process.exitcode}) on each of its "
                f"{job.attempts} attempt(s)",
            )
