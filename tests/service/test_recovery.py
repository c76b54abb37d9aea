"""Recovery sweeps (worker.recovery) against a real, private Redis and a real SQLite job store.

No worker runs here: these tests look at what a sweep leaves in the store and in the broker's
queue (the very messages Celery would consume), which the end-to-end fault suite
(test_faults.py) cannot observe so precisely.  They pin the properties recovery relies on:
a silent job is requeued with the silence it really had, a lost message is sent again exactly
once however many sweepers run, a job the broker still holds is never sent again, a job waiting
out its retry backoff is sent once it is due and not before, and a broker that is down loses
nothing.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Iterator

import pytest

from svc_helpers import RedisServer
from worker.celery_app import make_app
from worker.recovery import Recovery, send_job
from worker.settings import WorkerSettings
from worker.store import JobStore

pytestmark = pytest.mark.timeout(120)

QUEUE = "prunekit"


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("recovery-redis")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def env(redis_server: RedisServer, tmp_path: Path) -> Iterator[tuple[WorkerSettings, JobStore]]:
    if not redis_server.ping():  # a test below restarts it
        redis_server.start()
    with redis_server.client() as r:
        r.flushall()
    settings = WorkerSettings(
        broker_url=redis_server.url(), database_url=f"sqlite:///{tmp_path / 'jobs.db'}", data_dir=tmp_path / "data",
        stale_after=0.4, resend_after=0.6, job_max_attempts=2,
    )
    store = JobStore(settings.resolved_database_url)
    try:
        yield settings, store
    finally:
        store.dispose()


def _recovery(settings: WorkerSettings, store: JobStore) -> Recovery:
    app = make_app(settings)
    return Recovery(settings, store, lambda job_id: send_job(app, settings, job_id))


def _new(store: JobStore, job_id: str) -> None:
    store.create(job_id=job_id, tenant="t", input={"format": "torchscript", "size": 1, "sha256": "0" * 64,
                                                    "path": "model.pt"}, spec={"ratio": 0.5})


def _queued_ids(server: RedisServer) -> Counter:
    with server.client() as r:
        return Counter(json.loads(m)["headers"]["id"] for m in r.lrange(QUEUE, 0, -1))


def _seconds(message: str) -> float:
    m = re.search(r"for (\d+(?:\.\d+)?) s\b", message)
    assert m, message
    return float(m.group(1))


def test_silent_job_is_requeued_then_failed_with_the_measured_silence(
        env: tuple[WorkerSettings, JobStore], redis_server: RedisServer) -> None:
    settings, store = env
    job = "a" * 32
    _new(store, job)
    assert store.claim(job, worker="w1", max_attempts=2, stale_after=0.4).attempt == 1
    time.sleep(1.5)  # the worker "died": no heartbeat for 1.5 s, well past stale_after (0.4 s)
    recovery = _recovery(settings, store)

    report = recovery.sweep()
    assert [s.job_id for s in report.requeued] == [job] and not report.failed
    row = store.get(job)
    assert row is not None and row.status == "queued" and row.attempts == 1
    silent = _seconds(row.progress_message or "")
    assert 1.4 <= silent < 5, row.progress_message  # what was measured, not the 0.4 s setting
    assert "attempt 1 of 2" in (row.progress_message or "")
    assert _queued_ids(redis_server) == Counter({job: 1})  # sent again at once
    # The superseded attempt is fenced off: it can neither beat nor finish the job.
    assert not store.heartbeat(job, 1)
    assert not store.succeed(job, 1, result={}, artifacts=[])

    assert recovery.sweep().requeued == []  # nothing silent any more, nothing sent twice
    assert _queued_ids(redis_server) == Counter({job: 1})

    assert store.claim(job, worker="w2", max_attempts=2, stale_after=0.4).attempt == 2
    time.sleep(1.0)
    report = recovery.sweep()
    assert [s.job_id for s in report.failed] == [job]
    row = store.get(job)
    assert row is not None and row.status == "failed" and row.error_code == "worker_lost"
    assert 0.9 <= _seconds(row.error_message or "") < 5, row.error_message
    assert "attempt 2 of 2" in (row.error_message or "")


def test_lost_message_is_sent_again_exactly_once(env: tuple[WorkerSettings, JobStore],
                                                 redis_server: RedisServer) -> None:
    settings, store = env
    held, lost = "b" * 32, "c" * 32
    _new(store, held)
    _new(store, lost)
    send_job(make_app(settings), settings, held)  # the API published only this one
    # Three sweepers (a worker, another worker, the API), each with its own store connection.
    sweepers = [_recovery(settings, JobStore(settings.resolved_database_url)) for _ in range(3)]
    time.sleep(0.8)  # both are now older than resend_after
    fresh = "d" * 32
    _new(store, fresh)  # just submitted: its publish may still be under way

    barrier = threading.Barrier(len(sweepers))
    reports = []

    def run(r: Recovery) -> None:
        barrier.wait()
        reports.append(r.sweep())

    threads = [threading.Thread(target=run, args=(r,)) for r in sweepers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(j for rep in reports for j in rep.resent) == [lost]
    assert _queued_ids(redis_server) == Counter({held: 1, lost: 1})

    time.sleep(0.8)  # past resend_after again
    resent = sweepers[0].sweep().resent + sweepers[1].sweep().resent
    # held and lost wait in the queue: not sent again.  fresh never was (as if the API died
    # between writing the job and publishing it): sent now, once.
    assert resent == [fresh]
    assert _queued_ids(redis_server) == Counter({held: 1, lost: 1, fresh: 1})

    with redis_server.client() as r:
        r.flushall()  # Redis restarted without persistence
    time.sleep(0.7)
    report = sweepers[2].sweep()
    assert report.broker_checked
    assert _queued_ids(redis_server) == Counter({held: 1, lost: 1, fresh: 1})
    for s in sweepers:
        s.store.dispose()


def test_job_given_back_for_the_store_is_sent_once_when_due(env: tuple[WorkerSettings, JobStore],
                                                           redis_server: RedisServer) -> None:
    """An attempt that could not reach the artifact store requeues its job with a ``retry_at`` and
    its message is consumed: sweepers send the job again once it is due, exactly once between
    them, and never while it waits (however long ago it was last sent)."""
    from datetime import timedelta

    from worker.store import utcnow

    settings, store = env
    job = "f" * 32
    _new(store, job)
    send_job(make_app(settings), settings, job)
    with redis_server.client() as r:
        r.delete(QUEUE)  # a worker took the message, ran attempt 1 and acknowledged it
    assert store.claim(job, worker="w1", max_attempts=2, stale_after=0.4).attempt == 1
    wait = 2.5
    assert store.requeue(job, 1, retry_at=utcnow() + timedelta(seconds=wait), message="requeued: store down")
    sweepers = [_recovery(settings, JobStore(settings.resolved_database_url)) for _ in range(3)]
    t0 = time.monotonic()
    sent_at = None
    while time.monotonic() - t0 < wait + 5:
        barrier = threading.Barrier(len(sweepers))
        resent: list[str] = []

        def run(r: Recovery) -> None:
            barrier.wait()
            resent.extend(r.sweep().resent)

        threads = [threading.Thread(target=run, args=(r,)) for r in sweepers]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        if resent:
            assert resent == [job], resent  # one sweeper of three sent it
            sent_at = time.monotonic() - t0
            break
        assert _queued_ids(redis_server) == Counter()
        time.sleep(0.1)
    assert sent_at is not None, "the job was never sent again"
    # Not before its retry_at (the sweeps ran every ~0.1 s and it was long past resend_after).
    assert wait - 0.1 <= sent_at < wait + 2, sent_at
    assert _queued_ids(redis_server) == Counter({job: 1})
    time.sleep(0.8)
    assert all(s.sweep().resent == [] for s in sweepers)  # the broker holds it: not sent twice
    assert store.claim(job, worker="w2", max_attempts=2, stale_after=0.4).attempt == 2
    for s in sweepers:
        s.store.dispose()


def test_broker_down_loses_nothing(env: tuple[WorkerSettings, JobStore], redis_server: RedisServer) -> None:
    settings, store = env
    job = "e" * 32
    _new(store, job)
    store.claim(job, worker="w1", max_attempts=2, stale_after=0.4)
    time.sleep(0.8)
    recovery = _recovery(settings, store)
    redis_server.kill_hard()
    import redis

    with pytest.raises(redis.RedisError):
        recovery.sweep()  # requeued in the store, but neither sent nor checkable
    row = store.get(job)
    assert row is not None and row.status == "queued"
    assert store.published_at(job) is None  # the failed send gave the right to send back

    redis_server.start()  # same port, empty
    report = recovery.sweep()
    assert report.resent == [job]
    assert _queued_ids(redis_server) == Counter({job: 1})
