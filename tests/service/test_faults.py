"""Fault injection with real processes: every job ends succeeded or failed, none lost or stuck.

A stack of its own (svc_helpers.start_fault_stack): a private ``redis-server`` without
persistence on a free port (the shared Redis on 6379 is never touched), a real Celery worker
process and a real uvicorn API, with short heartbeat and sweep intervals.  The visibility timeout
stays long (600 s), so Redis's own redelivery can never be what rescues a job within these
tests' bounds: recovery has to come from heartbeats and the job store (worker.recovery).

Faults: duplicate deliveries of one job, the whole worker SIGKILLed mid-job (main process and
pool child), Redis SIGKILLed and restarted empty with jobs queued and one running, and the API
SIGKILLed mid-upload.  Each test bounds the time to recover well below what the old behaviour
(waiting out the visibility timeout, or forever for a lost message) would take.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from svc_helpers import SLOW_SPEC, TS_SPEC, FaultStack, Models, WorkerPool, start_fault_stack, submit, wait_for, wait_job
from worker.celery_app import make_app
from worker.recovery import send_job
from worker.settings import WorkerSettings

pytestmark = pytest.mark.timeout(240)

STALE_AFTER = 5.0  # svc_helpers.FAULT_ENV
INCOMING_MAX_AGE = 3.0


@pytest.fixture(scope="module")
def faults(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultStack]:
    fs = start_fault_stack(tmp_path_factory.mktemp("faults"), PRUNEKIT_INCOMING_MAX_AGE=str(INCOMING_MAX_AGE))
    fs.submitted = []  # type: ignore[attr-defined]
    try:
        yield fs
    finally:
        fs.close()


@pytest.fixture
def fs(faults: FaultStack) -> FaultStack:
    """The fault stack with every part running (a previous test may have killed one)."""
    assert faults.redis is not None
    if not faults.redis.ping():
        faults.redis.start()
    faults.workers.ensure()
    if not faults.api.alive():
        faults.restart_api()
    return faults


def _submit(fs: FaultStack, models: Models, spec: dict) -> str:
    r = submit(fs.client(), models.ts, spec)
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    fs.submitted.append(job_id)  # type: ignore[attr-defined]
    return job_id


def _publisher(fs: FaultStack):  # type: ignore[no-untyped-def]
    settings = WorkerSettings(broker_url=fs.env["PRUNEKIT_BROKER_URL"])
    app = make_app(settings)
    return lambda job_id: send_job(app, settings, job_id)


def _logs(fs: FaultStack) -> str:
    assert fs.root is not None
    return "".join(p.read_text(errors="replace") for p in sorted((fs.root / "logs").rglob("*.log")))


def _queue_length(fs: FaultStack) -> int:
    assert fs.redis is not None
    with fs.redis.client() as r:
        return int(r.llen("prunekit"))


def _poll(client: httpx.Client, job_id: str, timeout: float) -> list[tuple[float, dict]]:
    """(monotonic time, job) at every change of status or message, until the job finishes."""
    seen: list[tuple[float, dict]] = []
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/v1/jobs/{job_id}").json()
        key = (job["status"], job["progress"]["message"], job["attempts"])
        if not seen or key != (seen[-1][1]["status"], seen[-1][1]["progress"]["message"], seen[-1][1]["attempts"]):
            seen.append((time.monotonic(), job))
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return seen
        assert time.monotonic() < deadline, f"job {job_id} still {job['status']} after {timeout}s: {job}"
        time.sleep(0.05)


def test_duplicate_deliveries_run_the_job_once(fs: FaultStack, models: Models) -> None:
    # A second, idle worker: duplicates reach it while the first worker is running the job.
    assert fs.root is not None
    second = WorkerPool(fs.env, fs.root / "logs" / "second")
    second.generation = 100
    second.start()
    try:
        c = fs.client()
        job_id = _submit(fs, models, SLOW_SPEC)
        job, _ = wait_job(c, job_id, 60, until=("running", "succeeded", "failed"))
        assert job["status"] == "running", job
        publish = _publisher(fs)
        publish(job_id)
        publish(job_id)
        done, _ = wait_job(c, job_id, 120)
        publish(job_id)  # and once more after it finished
        wait_for(lambda: _logs(fs).count(f"job {job_id} not run: done") >= 1, 30, "the late duplicate to be seen")
        # Stop the second worker only once every delivery has returned (and been acknowledged): a
        # task still cleaning up when its worker is stopped is redelivered, which is not a duplicate.
        wait_for(lambda: _logs(fs).count(f"Task prunekit.run_job[{job_id}] succeeded in") >= 4, 30,
                 "every delivery to return")
    finally:
        second.stop()
    assert done["status"] == "succeeded", done
    assert done["attempts"] == 1, done  # three extra deliveries, one run
    logs = _logs(fs)
    busy, late = logs.count(f"job {job_id} not run: busy"), logs.count(f"job {job_id} not run: done")
    assert busy + late == 3, (busy, late)
    assert busy >= 1, "no duplicate arrived while the job was running"
    names = [a["name"] for a in c.get(f"/v1/jobs/{job_id}/artifacts").json()["artifacts"]]
    assert names.count("model.pt") == 1
    assert c.get(f"/v1/jobs/{job_id}/artifacts/model.pt").status_code == 200


def test_whole_worker_sigkill_is_rerun_within_the_stale_window(fs: FaultStack, models: Models) -> None:
    c = fs.client()
    job_id = _submit(fs, models, SLOW_SPEC)
    job, _ = wait_job(c, job_id, 60, until=("running", "succeeded", "failed"))
    assert job["status"] == "running" and job["attempts"] == 1, job
    time.sleep(1.0)  # well inside the run (the slow spec takes ~10 s here)

    assert fs.workers.current is not None
    fs.workers.current.kill_hard()  # main process and pool child: no goodbye, no requeue
    t_kill = time.monotonic()
    fs.workers.start()
    seen = _poll(c, job_id, 90)
    t_done, done = seen[-1]

    assert done["status"] == "succeeded", done
    assert done["attempts"] == 2, done
    # The requeue (status queued) may last only milliseconds before the new worker claims it.
    rerun = [t for t, j in seen if j["status"] == "queued" or j["attempts"] >= 2]
    assert rerun, [(j["status"], j["progress"]["message"]) for _, j in seen]
    # Heartbeats, not the 600 s visibility timeout, brought it back: a few seconds past STALE_AFTER.
    assert rerun[0] - t_kill < STALE_AFTER + 8, rerun[0] - t_kill
    m = re.search(rf"job {job_id} requeued: the worker running attempt 1 of 3 sent no heartbeat for "
                  r"(\d+(?:\.\d+)?) s", _logs(fs))
    assert m, _logs(fs)[-3000:]
    assert STALE_AFTER <= float(m.group(1)) < STALE_AFTER + 8  # the measured silence
    assert t_done - t_kill < 60
    assert c.get(f"/v1/jobs/{job_id}/artifacts/model.pt").status_code == 200
    work = fs.data_dir / "work" / job_id
    wait_for(lambda: not work.exists(), 30, "the killed attempt's scratch space to be removed")


def test_redis_restart_without_persistence_loses_no_job(fs: FaultStack, models: Models) -> None:
    assert fs.redis is not None
    c = fs.client()
    running = _submit(fs, models, SLOW_SPEC)
    job, _ = wait_job(c, running, 60, until=("running", "succeeded", "failed"))
    assert job["status"] == "running", job
    queued = [_submit(fs, models, TS_SPEC) for _ in range(3)]
    assert _queue_length(fs) == 3  # the three queued jobs wait in Redis...

    fs.redis.kill_hard()
    fs.redis.start()  # same port, nothing saved: every message is gone
    t_restart = time.monotonic()
    with fs.redis.client() as r:
        assert r.llen("prunekit") == 0 and r.hlen("unacked") == 0  # ...and now they do not

    finished = {}
    for job_id in [running, *queued]:
        done, _ = wait_job(c, job_id, 120)
        finished[job_id] = (time.monotonic() - t_restart, done)
    for job_id, (_, done) in finished.items():
        assert done["status"] == "succeeded", done
        assert done["attempts"] == 1, done  # re-sent messages that crossed a delivery did nothing
    assert max(t for t, _ in finished.values()) < 90
    logs = _logs(fs)
    for job_id in queued:
        sends = logs.count(f"job {job_id} was queued but the broker had no message for it")
        assert 1 <= sends <= 3, (job_id, sends)  # sent again, and not flooded
    # Any duplicate left in the queue is consumed and dropped: nothing waits for ever.
    wait_for(lambda: _queue_length(fs) == 0, 60, "duplicates to drain from the queue")


def _stalled_upload(url: str, boundary: str, go_on: threading.Event, outcome: dict) -> None:
    def body() -> Iterator[bytes]:
        yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"spec\"\r\n\r\n"
               f"{json.dumps(TS_SPEC)}\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"model\"; "
               f"filename=\"big.pt\"\r\nContent-Type: application/octet-stream\r\n\r\n").encode()
        for _ in range(8):
            yield b"\0" * (256 << 10)
        go_on.wait(60)  # the API is killed here, half-way through the file
        for _ in range(64):
            yield b"\0" * (256 << 10)
            time.sleep(0.01)
        yield f"\r\n--{boundary}--\r\n".encode()

    try:
        r = httpx.post(url + "/v1/jobs", content=body(), timeout=30,
                       headers={"Content-Type": f"multipart/form-data; boundary={boundary}",
                                "Authorization": "Bearer alice-key-0123456789"})
        outcome["status"] = r.status_code
    except httpx.HTTPError as exc:
        outcome["error"] = type(exc).__name__


def test_api_killed_mid_upload(fs: FaultStack, models: Models) -> None:
    c = fs.client()
    before = _submit(fs, models, SLOW_SPEC)  # accepted before the crash: must still finish
    incoming = fs.data_dir / "uploads" / ".incoming"
    go_on, outcome = threading.Event(), {}
    t = threading.Thread(target=_stalled_upload, args=(fs.url, uuid.uuid4().hex, go_on, outcome))
    t.start()
    try:
        wait_for(lambda: any(p.stat().st_size > 0 for p in incoming.iterdir()), 30,
                 "the upload to be half-way in", proc=fs.api)
        partial = [p for p in incoming.iterdir()]
        fs.api.kill_hard()
    finally:
        go_on.set()
        t.join(60)
    assert "error" in outcome, outcome  # the client saw the connection die, not a 202
    assert partial and all(p.exists() for p in partial)

    t_kill = time.monotonic()
    fs.restart_api()
    done, _ = wait_job(c, before, 120)
    assert done["status"] == "succeeded", done
    # The half-written upload became no job, and its file is removed once untouched for long enough.
    ids = {j["id"] for j in c.get("/v1/jobs", params={"limit": 100}).json()["jobs"]}
    assert ids == set(fs.submitted), (ids, fs.submitted)  # type: ignore[attr-defined]
    wait_for(lambda: not any(p.exists() for p in partial), INCOMING_MAX_AGE + 20,
             "the abandoned partial upload to be removed")
    assert time.monotonic() - t_kill < 120
    after = _submit(fs, models, TS_SPEC)
    done, _ = wait_job(c, after, 60)
    assert done["status"] == "succeeded", done


def test_no_job_lost_or_stuck(fs: FaultStack) -> None:
    """After all the faults above: every job the API accepted has finished, with a reason."""
    c = fs.client()
    jobs = c.get("/v1/jobs", params={"limit": 100}).json()["jobs"]
    assert {j["id"] for j in jobs} == set(fs.submitted) and len(jobs) >= 7  # type: ignore[attr-defined]
    for j in jobs:
        assert j["status"] in ("succeeded", "failed"), j
        if j["status"] == "failed":
            assert j["error"]["code"] and j["error"]["message"], j
    metrics = c.get("/metrics").text
    assert re.search(r"^prunekit_queue_depth 0(\.0)?$", metrics, re.M), metrics
    assert re.search(r'^prunekit_jobs\{status="running"\} 0(\.0)?$', metrics, re.M), metrics
