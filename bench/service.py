"""Benchmark the HTTP service on loopback.

Measures, against a real API process started here:

* submit latency of a ~50 MB TorchScript model (upload streamed from disk, checked, queued);
* GET /v1/jobs/{id} throughput and latency (p50/p99) with 32 concurrent clients;
* the API process's peak RSS while a 1 GB upload streams in (generated on the fly, never held in
  memory on either side): it must stay flat, independent of the upload size.

By default the API runs in Celery mode against ``--broker`` with *no worker*, so only the API's
own work is measured (jobs stay queued and are deleted at the end).  ``--embedded`` measures the
broker-less mode instead; there each submitted job is cancelled at once so pruning does not
compete for the CPU.

    python bench/service.py [--broker redis://127.0.0.1:6379/6 | --embedded] [--quick]

Writes ``bench/results/service.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import httpx

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "service.json"
MiB = 1 << 20


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_api(env: dict[str, str], log: Path) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    with open(log, "wb") as f:
        proc = subprocess.Popen([sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port),
                                 "--log-level", "warning"], cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise SystemExit(f"API exited early:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)
    raise SystemExit("API did not start")


def _make_model(path: Path, target_mb: int = 50) -> dict:
    """A TorchScript model of ~target_mb: one square Linear layer."""
    import torch

    n = int((target_mb * MiB / 4) ** 0.5)
    model = torch.nn.Sequential(torch.nn.Linear(n, n), torch.nn.ReLU()).eval()
    torch.jit.trace(model, torch.randn(1, n)).save(str(path))
    return {"spec": {"ratio": 0.5, "inputs": [{"shape": [1, n]}]}, "size": path.stat().st_size}


def bench_submit(url: str, model: Path, spec: dict, runs: int, cancel: bool) -> dict:
    times = []
    ids = []
    with httpx.Client(base_url=url, timeout=None) as c:
        for _ in range(runs):
            with open(model, "rb") as f:
                t0 = time.perf_counter()
                r = c.post("/v1/jobs", files={"model": (model.name, f)}, data={"spec": json.dumps(spec)})
                dt = time.perf_counter() - t0
            assert r.status_code == 202, r.text
            ids.append(r.json()["id"])
            if cancel:
                c.delete(f"/v1/jobs/{ids[-1]}")
            times.append(dt)
    size = model.stat().st_size
    return {
        "file_bytes": size,
        "runs": runs,
        "latency_s": {"min": min(times), "median": statistics.median(times), "max": max(times)},
        "throughput_mib_s": size / MiB / statistics.median(times),
        "job_ids": ids,
    }


async def _status_load(url: str, job_id: str, clients: int, max_requests: int, max_seconds: float) -> dict:
    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + max_seconds
    counter = {"n": 0}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as c:
        async def one_client() -> None:
            nonlocal errors
            while counter["n"] < max_requests and time.perf_counter() < stop_at:
                counter["n"] += 1
                t0 = time.perf_counter()
                r = await c.get(f"/v1/jobs/{job_id}")
                latencies.append(time.perf_counter() - t0)
                if r.status_code != 200:
                    errors += 1

        # warm-up
        for _ in range(20):
            await c.get(f"/v1/jobs/{job_id}")
        t0 = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(clients)))
        wall = time.perf_counter() - t0
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))]

    return {
        "clients": clients,
        "requests": len(latencies),
        "errors": errors,
        "wall_s": wall,
        "requests_per_s": len(latencies) / wall,
        "latency_ms": {"p50": pct(50) * 1000, "p90": pct(90) * 1000, "p99": pct(99) * 1000,
                       "max": latencies[-1] * 1000},
    }


def _multipart_stream(total: int, boundary: str, spec: dict) -> Iterator[bytes]:
    """A multipart body with a ``total``-byte model part, produced 1 MiB at a time."""
    yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"spec\"\r\n\r\n{json.dumps(spec)}\r\n"
           f"--{boundary}\r\nContent-Disposition: form-data; name=\"model\"; filename=\"huge.pt\"\r\n"
           "Content-Type: application/octet-stream\r\n\r\n").encode()
    # A legacy torch.save pickle header, so the upload is accepted as a state-dict.
    first = b"\x80\x02" + b"\0" * (MiB - 2)
    chunk = b"\0" * MiB
    sent = 0
    while sent < total:
        n = min(MiB, total - sent)
        yield (first if sent == 0 else chunk)[:n]
        sent += n
    yield f"\r\n--{boundary}--\r\n".encode()


def bench_big_upload(url: str, api_pid: int, total: int) -> dict:
    import psutil

    proc = psutil.Process(api_pid)
    baseline = proc.memory_info().rss
    samples: list[int] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            try:
                samples.append(proc.memory_info().rss)
            except psutil.Error:
                return
            time.sleep(0.05)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    boundary = "prunekitbench"
    spec = {"architecture": "zoo:resnet_mini", "ratio": 0.5}
    t0 = time.perf_counter()
    with httpx.Client(base_url=url, timeout=None) as c:
        r = c.post("/v1/jobs", content=_multipart_stream(total, boundary, spec),
                   headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        wall = time.perf_counter() - t0
        done.set()
        t.join()
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        c.delete(f"/v1/jobs/{job_id}")  # cancel (it never runs in the broker mode: no worker)
        c.delete(f"/v1/jobs/{job_id}")  # delete, with its 1 GB upload
    peak = max(samples) if samples else baseline
    return {
        "upload_bytes": total,
        "wall_s": wall,
        "throughput_mib_s": total / MiB / wall,
        "rss_mib": {"baseline": baseline / MiB, "peak": peak / MiB, "growth": (peak - baseline) / MiB},
        "samples": len(samples),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--broker", default="redis://127.0.0.1:6379/6", help="Redis for the Celery-mode API")
    mode.add_argument("--embedded", action="store_true", help="measure the broker-less mode")
    ap.add_argument("--quick", action="store_true", help="smaller run (CI smoke): 3 submits, 2000 requests, 256 MB")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()

    runs = 3 if args.quick else 5
    status_requests = 2000 if args.quick else 10000
    big = (256 if args.quick else 1024) * MiB

    work = Path(tempfile.mkdtemp(prefix="prunekit-bench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRUNEKIT_")}
    env.update(PYTHONPATH=str(REPO), PRUNEKIT_DATA_DIR=str(work / "data"), PRUNEKIT_MAX_UPLOAD_BYTES=str(2 << 30))
    if not args.embedded:
        import redis

        redis.Redis.from_url(args.broker).flushdb()
        env["PRUNEKIT_BROKER_URL"] = args.broker
    load_before = os.getloadavg()
    model = work / "linear50mb.pt"
    info = _make_model(model)
    api, url = _start_api(env, work / "api.log")
    try:
        submit = bench_submit(url, model, info["spec"], runs, cancel=args.embedded)
        status = asyncio.run(_status_load(url, submit["job_ids"][0], 32, status_requests, 20.0))
        upload = bench_big_upload(url, api.pid, big)
    finally:
        os.killpg(api.pid, signal.SIGTERM)
        api.wait(20)
        if not args.embedded:
            import redis

            redis.Redis.from_url(args.broker).flushdb()
    import shutil

    shutil.rmtree(work, ignore_errors=True)
    submit.pop("job_ids")
    result: dict[str, Any] = {
        "mode": "embedded" if args.embedded else "celery (API only, no worker)",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                    # Other work on the machine skews every number: record how busy it was.
                    "load_average_1m": {"before": load_before[0], "after": os.getloadavg()[0]}},
        "submit_50mb": submit,
        "status_get": status,
        "upload_1gb" if big >= 1 << 30 else "upload_big": upload,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"PruneKit service on loopback ({result['mode']}, {os.cpu_count()} CPUs)")
    table.add_column("measure")
    table.add_column("value", justify="right")
    lat = submit["latency_s"]
    table.add_row(f"submit {submit['file_bytes'] / MiB:.0f} MiB model: median latency",
                  f"{lat['median'] * 1000:.0f} ms")
    table.add_row("  min / max", f"{lat['min'] * 1000:.0f} / {lat['max'] * 1000:.0f} ms")
    table.add_row("  upload throughput", f"{submit['throughput_mib_s']:.0f} MiB/s")
    table.add_row(f"GET job, {status['clients']} clients: requests/s", f"{status['requests_per_s']:.0f}")
    table.add_row("  p50 / p99 latency",
                  f"{status['latency_ms']['p50']:.1f} / {status['latency_ms']['p99']:.1f} ms")
    table.add_row("  requests (errors)", f"{status['requests']} ({status['errors']})")
    table.add_row(f"{upload['upload_bytes'] / MiB:.0f} MiB upload: API RSS baseline → peak",
                  f"{upload['rss_mib']['baseline']:.0f} → {upload['rss_mib']['peak']:.0f} MiB")
    table.add_row("  RSS growth", f"{upload['rss_mib']['growth']:.1f} MiB")
    table.add_row("  upload throughput", f"{upload['throughput_mib_s']:.0f} MiB/s")
    Console().print(table)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
