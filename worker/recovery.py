"""Recovery: keep the broker in step with the job store, which is the truth about every job.

Two things can leave a job that the store calls active without anyone working on it:

* **its worker died** (the whole worker process, not just a pool child): its message sits
  unacknowledged in Redis until the visibility timeout, which must exceed the longest job (about
  an hour by default).  Heartbeats say much sooner that nobody runs it: a running job silent for
  ``STALE_AFTER`` is put back to ``queued`` (or failed once its attempts are used up) and sent
  again at once;
* **the broker lost its message** (Redis restarted without persistence, a message dropped
  between the store write and the publish): the job stays ``queued`` forever.  A queued job that
  was last sent over ``RESEND_AFTER`` seconds ago and that the broker does not hold (not waiting
  in the queue's list, not recently delivered to a worker) is sent again.

The same resend is how a job whose attempt could not reach the artifact store runs again: that
attempt put it back to ``queued`` with a ``retry_at`` (its backoff) and its message was consumed,
so once the job is due, and last sent over ``RESEND_AFTER`` ago, the next sweep sends it.

:class:`Recovery` does both in one ``sweep()``.  It runs in every Celery worker (at start, then
every ``RECOVERY_INTERVAL`` seconds: :func:`start_worker_recovery`) and in the API's reaper, so
recovery does not depend on any one process.  Sweepers agree through the store: the right to send
a job is taken by a conditional ``UPDATE`` of its ``published_at`` (or by the requeue itself), so a
job is sent at most once per ``RESEND_AFTER`` however many sweepers run.  A duplicate that slips
through anyway (a message in flight between Redis and a worker when the sweep looked) is
harmless: :func:`worker.runner.run_job` claims the job first, and a message for a job that is
finished, or held by a live attempt, does nothing.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from .settings import WorkerSettings
from .storage import ObjectStore, open_store
from .storage.cleanup import discard_job_files
from .store import JobStore, StaleJob

log = logging.getLogger(__name__)

TASK_NAME = "prunekit.run_job"

# kombu's Redis transport: where a queue's messages wait, and where delivered ones are parked
# until acknowledged (see kombu.transport.redis: Channel.sep, PRIORITY_STEPS, unacked keys).
_PRIORITY_SEP = "\x06\x16"
_PRIORITY_STEPS = (3, 6, 9)
UNACKED_KEY, UNACKED_INDEX_KEY = "unacked", "unacked_index"


def send_job(app: Any, settings: WorkerSettings, job_id: str) -> None:
    """Publish one job's message (task id = job id, so revoke() can address it)."""
    app.send_task(
        TASK_NAME,
        args=[job_id],
        task_id=job_id,
        queue=settings.queue_name,
        soft_time_limit=settings.job_time_limit,
        time_limit=settings.job_time_limit + settings.job_time_limit_grace,
        retry=True,
        retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5},
    )


def _message_job_id(raw: Any) -> str | None:
    try:
        msg = json.loads(raw)
        if isinstance(msg, list):  # an unacked entry: [message, exchange, routing_key]
            msg = msg[0]
        return (msg.get("headers") or {}).get("id") or (msg.get("properties") or {}).get("correlation_id")
    except (ValueError, TypeError, AttributeError, IndexError):
        return None


class RedisBrokerView:
    """Which jobs a Redis broker holds a message for."""

    def __init__(self, url: str, queue_name: str, *, page: int = 500) -> None:
        self.url, self.queue_name, self.page = url, queue_name, page

    @staticmethod
    def supports(url: str | None) -> bool:
        return bool(url) and url.startswith(("redis://", "rediss://"))  # type: ignore[union-attr]

    def held(self, *, fresh_within: float) -> set[str]:
        """Job ids waiting in the queue, or delivered to a worker under ``fresh_within`` seconds
        ago and not acknowledged.  An older unacknowledged delivery of a job that is still
        queued was taken by a worker that never claimed it (it died first): not held.

        Raises ``redis.RedisError`` when Redis cannot be asked: then nothing is known.
        """
        import redis

        client = redis.Redis.from_url(self.url, socket_timeout=5, socket_connect_timeout=3)
        try:
            ids: set[str] = set()
            keys = [self.queue_name] + [f"{self.queue_name}{_PRIORITY_SEP}{p}" for p in _PRIORITY_STEPS]
            for key in keys:
                start = 0
                while True:
                    chunk = client.lrange(key, start, start + self.page - 1)
                    ids.update(i for i in map(_message_job_id, chunk) if i)
                    if len(chunk) < self.page:
                        break
                    start += self.page
            cutoff = time.time() - fresh_within
            fresh = {tag for tag, score in client.zrange(UNACKED_INDEX_KEY, 0, -1, withscores=True) if score >= cutoff}
            if fresh:
                tags = list(fresh)
                for tag, raw in zip(tags, client.hmget(UNACKED_KEY, tags)):
                    job_id = _message_job_id(raw) if raw is not None else None
                    if job_id:
                        ids.add(job_id)
            return ids
        finally:
            client.close()


@dataclass
class SweepReport:
    requeued: list[StaleJob] = field(default_factory=list)
    failed: list[StaleJob] = field(default_factory=list)
    resent: list[str] = field(default_factory=list)
    broker_checked: bool = False


class Recovery:
    """One process's recovery sweeper (see the module docstring)."""

    def __init__(
        self,
        settings: WorkerSettings,
        store: JobStore,
        publish: Callable[[str], None],
        *,
        broker: RedisBrokerView | None = None,
        objects: ObjectStore | None = None,
    ) -> None:
        self.settings, self.store, self.publish = settings, store, publish
        self.broker = broker
        if broker is None and RedisBrokerView.supports(settings.broker_url):
            self.broker = RedisBrokerView(settings.broker_url or "", settings.queue_name)
        self._objects = objects

    def sweep(self) -> SweepReport:
        s = self.settings
        report = SweepReport()
        for stale in self.store.recover_stale(stale_after=s.stale_after, max_attempts=s.job_max_attempts):
            if stale.outcome == "failed":
                report.failed.append(stale)
                log.warning("job %s failed: %s", stale.job_id, stale.message)
                discard_job_files(self.objects, None, stale.job_id)
                continue
            report.requeued.append(stale)
            log.warning("job %s %s; sending it again", stale.job_id, stale.message)
            # The requeue was our lease, and the dead worker's unacknowledged message must not
            # count as "held": send now.
            if not self._send(stale.job_id) and stale.published_at is not None:
                self.store.unmark_published(stale.job_id, stale.published_at)
        candidates = self.store.resend_candidates(older_than=s.resend_after)
        if not candidates or self.broker is None:
            return report
        held = self.broker.held(fresh_within=s.resend_after)  # raises if Redis is unreachable
        report.broker_checked = True
        for job_id in candidates:
            if job_id in held:
                continue
            stamp = self.store.mark_published(job_id, older_than=s.resend_after)
            if stamp is None:  # another sweeper sent it, or a worker claimed it meanwhile
                continue
            if self._send(job_id):
                report.resent.append(job_id)
                log.warning("job %s was queued but the broker had no message for it: sent again", job_id)
            else:
                self.store.unmark_published(job_id, stamp)
        return report

    @property
    def objects(self) -> ObjectStore:
        """The artifact store, opened at first use (most sweeps never need it)."""
        if self._objects is None:
            self._objects = open_store(self.settings)
        return self._objects

    def _send(self, job_id: str) -> bool:
        try:
            self.publish(job_id)
            return True
        except Exception as exc:  # the broker is down: the next sweep tries again
            log.warning("could not send job %s to the broker: %s", job_id, exc)
            return False


class RecoveryThread:
    """Runs :meth:`Recovery.sweep` at start and then every ``interval`` seconds."""

    def __init__(self, recovery: Recovery, interval: float, name: str = "prunekit-recovery") -> None:
        self.recovery, self.interval = recovery, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> "RecoveryThread":
        self._thread.start()
        return self

    def stop(self, timeout: float = 5) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            try:
                self.recovery.sweep()
            except Exception as exc:
                log.warning("recovery sweep failed: %s", exc)
            if self._stop.wait(self.interval):
                return


_worker_thread: RecoveryThread | None = None


def start_worker_recovery(app: Any, settings: WorkerSettings) -> RecoveryThread:
    """Start the sweeper of a Celery worker's main process (idempotent)."""
    global _worker_thread
    if _worker_thread is None:
        store = JobStore(settings.resolved_database_url)
        # Pool children forked later must not share this engine's connections.
        os.register_at_fork(after_in_child=lambda: store.engine.dispose(close=False))
        recovery = Recovery(settings, store, lambda job_id: send_job(app, settings, job_id))
        _worker_thread = RecoveryThread(recovery, settings.recovery_interval).start()
        log.info("recovery sweeps every %.0fs (stale after %.0fs, resend after %.0fs)",
                 settings.recovery_interval, settings.stale_after, settings.resend_after)
    return _worker_thread


def stop_worker_recovery() -> None:
    global _worker_thread
    if _worker_thread is not None:
        _worker_thread.stop()
        _worker_thread = None
