"""Measure how the service recovers from faults, with real processes.

The same stack as tests/service/test_faults.py, started with the test helpers
(``svc_helpers.start_fault_stack``: a private redis-server without persistence on a free port,
one Celery worker, uvicorn, SQLite), and the same faults, timed:

* **worker SIGKILL**: the whole worker (main process and pool child) killed mid-job, a new
  worker started at once; time from the kill until the job is requeued (heartbeats) and until it
  has succeeded;
* **Redis SIGKILL + restart without persistence** while one job runs and others are queued;
  time from the restart until every job has succeeded, and how many times each lost job was
  sent again;
* **API SIGKILL mid-upload**: time until a new API answers, the job accepted before the crash
  has finished, and the partial upload is gone.

The visibility timeout is 600 s throughout, so Redis's own redelivery never plays a part.
``--default-timing`` runs the first two with the shipped defaults (heartbeat 5 s, stale after
60 s, sweeps every 15 s, resend after 60 s) instead of the short test settings: minutes, not
seconds.

    .venv/bin/python bench/faults.py [--repeats 3] [--default-timing]

Writes ``bench/results/faults.json`` (``faults_default_timing.json`` with the flag).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests" / "service")]

from svc_helpers import KEY_A, SLOW_SPEC, TS_SPEC, FaultStack, start_fault_stack, submit, wait_for  # noqa: E402

DEFAULT_TIMING = dict(
    PRUNEKIT_HEARTBEAT_INTERVAL="5", PRUNEKIT_STALE_AFTER="60", PRUNEKIT_RECOVERY_INTERVAL="15",
    PRUNEKIT_REAPER_INTERVAL="15", PRUNEKIT_RESEND_AFTER="60",
)
FINAL = ("succeeded", "failed", "cancelled")


def _job(c: httpx.Client, job_id: str) -> dict:
    return c.get(f"/v1/jobs/{job_id}").json()


def _until(c: httpx.Client, job_id: str, statuses: tuple[str, ...], timeout: float) -> dict:
    return wait_for(lambda: (j := _job(c, job_id))["status"] in statuses and j, timeout,
                    f"job {job_id} to be {statuses}", interval=0.1)


def _logs(fs: FaultStack) -> str:
    assert fs.root is not None
    return "".join(p.read_text(errors="replace") for p in (fs.root / "logs").rglob("*.log"))


def worker_sigkill(fs: FaultStack, model: Path, timeout: float) -> dict:
    c = fs.client()
    job_id = submit(c, model, SLOW_SPEC).json()["id"]
    _until(c, job_id, ("running",), 60)
    time.sleep(1.0)
    assert fs.workers.current is not None
    fs.workers.current.kill_hard()
    t_kill = time.monotonic()
    fs.workers.start()
    t_worker = time.monotonic() - t_kill
    # Queued again (or already claimed by the new worker: that can take milliseconds).
    wait_for(lambda: (j := _job(c, job_id))["status"] == "queued" or j["attempts"] >= 2 or j["status"] in FINAL,
             timeout, "the job to be requeued", interval=0.05)
    t_requeue = time.monotonic() - t_kill
    done = _until(c, job_id, FINAL, timeout)
    m = re.search(rf"job {job_id} (requeued: .*? for (\d+(?:\.\d+)?) s)", _logs(fs))
    return {
        "status": done["status"], "attempts": done["attempts"],
        "new_worker_ready_s": round(t_worker, 2),
        "kill_to_requeued_s": round(t_requeue, 2),
        "measured_silence_s": float(m.group(2)) if m else None,
        "requeue_message": m.group(1) if m else None,
        "kill_to_succeeded_s": round(time.monotonic() - t_kill, 2),
        "job_run_s": round(sum((done.get("result") or {}).get("stage_seconds", {}).values()), 2),
    }


def redis_restart(fs: FaultStack, model: Path, queued_jobs: int, timeout: float) -> dict:
    assert fs.redis is not None
    c = fs.client()
    running = submit(c, model, SLOW_SPEC).json()["id"]
    _until(c, running, ("running",), 60)
    queued = [submit(c, model, TS_SPEC).json()["id"] for _ in range(queued_jobs)]
    with fs.redis.client() as r:
        in_redis_before = int(r.llen("prunekit"))
    fs.redis.kill_hard()
    fs.redis.start()
    t0 = time.monotonic()
    with fs.redis.client() as r:
        in_redis_after = int(r.llen("prunekit"))
    metrics = c.get("/metrics").text

    def all_back() -> bool:  # every lost job is in Redis again, or already taken by the worker
        with fs.redis.client() as r:  # type: ignore[union-attr]
            raw = r.lrange("prunekit", 0, -1) + list(r.hvals("unacked"))
        waiting = "".join(x.decode(errors="replace") for x in raw)
        return all(j in waiting or _job(c, j)["status"] != "queued" for j in queued)

    wait_for(all_back, timeout, "the lost jobs to be sent again", interval=0.1)
    t_resent = time.monotonic() - t0
    done_at, final = {}, {}
    for job_id in [running, *queued]:
        final[job_id] = _until(c, job_id, FINAL, timeout)
        done_at[job_id] = round(time.monotonic() - t0, 2)
    logs = _logs(fs)
    return {
        "jobs": 1 + queued_jobs, "queued_in_redis_before": in_redis_before, "queued_in_redis_after": in_redis_after,
        "metrics_after_restart": re.findall(r"^prunekit_(?:queue_depth|broker_queue_length) .*$", metrics, re.M),
        "statuses": sorted(j["status"] for j in final.values()),
        "attempts": sorted(j["attempts"] for j in final.values()),
        "restart_to_all_lost_jobs_resent_s": round(t_resent, 2),
        "restart_to_all_succeeded_s": max(done_at.values()),
        "sends_per_lost_job": [logs.count(f"job {j} was queued but the broker had no message for it") for j in queued],
    }


def api_mid_upload(fs: FaultStack, model: Path) -> dict:
    c = fs.client()
    before = submit(c, model, SLOW_SPEC).json()["id"]
    incoming = fs.data_dir / "uploads" / ".incoming"
    boundary, go_on, outcome = uuid.uuid4().hex, threading.Event(), {}

    def body() -> Any:
        yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"spec\"\r\n\r\n{json.dumps(TS_SPEC)}\r\n"
               f"--{boundary}\r\nContent-Disposition: form-data; name=\"model\"; filename=\"big.pt\"\r\n\r\n").encode()
        for _ in range(8):
            yield b"\0" * (256 << 10)
        go_on.wait(60)
        for _ in range(64):
            yield b"\0" * (256 << 10)
        yield f"\r\n--{boundary}--\r\n".encode()

    def upload() -> None:
        try:
            outcome["status"] = httpx.post(fs.url + "/v1/jobs", content=body(), timeout=30, headers={
                "Content-Type": f"multipart/form-data; boundary={boundary}", "Authorization": f"Bearer {KEY_A}"}
            ).status_code
        except httpx.HTTPError as exc:
            outcome["client_error"] = type(exc).__name__

    t = threading.Thread(target=upload)
    t.start()
    wait_for(lambda: any(p.stat().st_size > 0 for p in incoming.iterdir()), 30, "the upload to start")
    partial = list(incoming.iterdir())
    fs.api.kill_hard()
    t_kill = time.monotonic()
    go_on.set()
    t.join(60)
    fs.restart_api()
    t_api = time.monotonic() - t_kill
    done = _until(c, before, FINAL, 180)
    t_done = time.monotonic() - t_kill
    wait_for(lambda: not any(p.exists() for p in partial), 120, "the partial upload to be removed")
    jobs = c.get("/v1/jobs", params={"limit": 100}).json()["jobs"]
    return {
        **outcome, "new_api_answering_s": round(t_api, 2), "accepted_job": done["status"],
        "kill_to_accepted_job_finished_s": round(t_done, 2),
        "kill_to_partial_upload_removed_s": round(time.monotonic() - t_kill, 2),
        "jobs_from_the_broken_upload": sum(1 for j in jobs if j["input"]["filename"] == "big.pt"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3, help="worker kills to time")
    ap.add_argument("--queued", type=int, default=4, help="jobs queued when Redis is restarted")
    ap.add_argument("--default-timing", action="store_true", help="shipped recovery intervals, not short ones")
    args = ap.parse_args()

    import torch

    from prunekit.registry import build

    root = Path(tempfile.mkdtemp(prefix="prunekit-faults-"))
    model = root / "resnet_mini.pt"
    torch.jit.trace(build("zoo:resnet_mini"), torch.randn(1, 3, 32, 32)).save(str(model))
    overrides = dict(DEFAULT_TIMING) if args.default_timing else {}
    overrides["PRUNEKIT_INCOMING_MAX_AGE"] = "3"
    t0 = time.monotonic()
    fs = start_fault_stack(root, **overrides)
    timeout = 300 if args.default_timing else 120
    try:
        out: dict[str, Any] = {
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                        "torch": torch.__version__, "loadavg_start": os.getloadavg()},
            "settings": {k: v for k, v in fs.env.items() if k.startswith("PRUNEKIT_") and "KEY" not in k
                         and k not in ("PRUNEKIT_DATA_DIR", "PRUNEKIT_DATABASE_URL", "PRUNEKIT_BROKER_URL")},
            "stack_start_s": round(time.monotonic() - t0, 2),
            "worker_sigkill": [worker_sigkill(fs, model, timeout) for _ in range(args.repeats)],
            "redis_restart": redis_restart(fs, model, args.queued, timeout),
        }
        if not args.default_timing:
            out["api_mid_upload"] = api_mid_upload(fs, model)
        out["loadavg_end"] = os.getloadavg()
        out["total_s"] = round(time.monotonic() - t0, 1)
    finally:
        fs.close()
    name = "faults_default_timing.json" if args.default_timing else "faults.json"
    path = REPO / "bench" / "results" / name
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    print(f"wrote {path.relative_to(REPO)}")


if __name__ == "__main__":
    main()
