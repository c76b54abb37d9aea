"""Benchmark the HTTP service on loopback.

Measures, against real API processes started here:

* **the status path** with a real load generator (``wrk``, C, one thread; ``apt-get install wrk``):
  ``GET /v1/jobs/{id}`` of a succeeded job carrying a real report summary (200, full body),
  the same with ``If-None-Match`` (304 when nothing changed), and ``GET /healthz`` as the
  floor of what the framework can serve, at 32 and 256 connections, in the same run.
  ``--compare PATH`` runs every measurement against an API started from another checkout too
  (e.g. a worktree of the commit before a change), interleaved with this one, so both see the
  same load on a shared machine;
* submit latency of a ~50 MB TorchScript model (upload streamed from disk, checked, queued);
* the API process's peak RSS while a 1 GB upload streams in (generated on the fly, never held in
  memory on either side): it must stay flat, independent of the upload size.

The APIs run in Celery mode against ``--broker`` with *no worker*, so only the API's own work is
measured; the status job is made to look succeeded by writing its record through the job store.

    python bench/service.py [--broker redis://127.0.0.1:6379/6] [--api-workers 2]
                            [--compare /tmp/base] [--status-only] [--repeat 3] [--quick]

Writes ``bench/results/service.json`` (``--out``) and prints tables.  On a shared machine the
absolute figures move with the load; the ratios to ``/healthz`` in the same run move less.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
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
API_KEY, TENANT = "bench-key-0123456789", "bench"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_api(repo: Path, env: dict[str, str], log: Path, workers: int = 1) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    env = dict(env, PYTHONPATH=str(repo))
    with open(log, "wb") as f:
        proc = subprocess.Popen([sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port),
                                 "--log-level", "warning", "--workers", str(workers)],
                                cwd=repo, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
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


def _stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _make_model(path: Path, target_mb: int = 50) -> dict:
    """A TorchScript model of ~target_mb: one square Linear layer."""
    import torch

    n = int((target_mb * MiB / 4) ** 0.5)
    model = torch.nn.Sequential(torch.nn.Linear(n, n), torch.nn.ReLU()).eval()
    torch.jit.trace(model, torch.randn(1, n)).save(str(path))
    return {"spec": {"ratio": 0.5, "inputs": [{"shape": [1, n]}]}, "size": path.stat().st_size}


# -- the status path ---------------------------------------------------------------------------

def _real_result(work: Path) -> tuple[Path, dict, list[dict]]:
    """Prune the reference resnet_mini once: its upload, and the summary and artifact list a
    worker would record (so the status body has the size and shape of a real one)."""
    import torch

    import prunekit
    from prunekit.registry import build
    from worker.runner import summarize_report

    model = work / "resnet_mini.pt"
    torch.jit.trace(build("zoo:resnet_mini"), torch.randn(1, 3, 32, 32)).save(str(model))
    out = work / "pruned"
    result = prunekit.prune_to_dir(model, {"ratio": 0.5, "inputs": [{"shape": [1, 3, 32, 32]}]}, out)
    artifacts = [{"name": p.name, "size": p.stat().st_size, "sha256": "0" * 64} for p in sorted(out.iterdir())]
    summary = summarize_report(result.report.to_dict(), artifacts)
    summary["stages"] = list(result.report.timings)
    summary["stage_seconds"] = dict(result.report.timings)
    return model, summary, artifacts


def _succeeded_job(url: str, db_url: str, model: Path, summary: dict, artifacts: list[dict]) -> str:
    """Submit through the API (no worker runs it), then record it as succeeded in the store."""
    from worker.store import JobStore

    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60) as c:
        with open(model, "rb") as f:
            r = c.post("/v1/jobs", files={"model": (model.name, f)},
                       data={"spec": json.dumps({"ratio": 0.5, "inputs": [{"shape": [1, 3, 32, 32]}]})})
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
    store = JobStore(db_url)
    try:
        claim = store.claim(job_id, worker="bench", max_attempts=3, stale_after=60)
        assert claim.outcome == "claimed", claim
        assert store.succeed(job_id, claim.attempt, result=summary, artifacts=artifacts)
    finally:
        store.dispose()
    return job_id


_LUA = r"""
wrk.method = "GET"
%(headers)s
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\nWRKJSON {"requests": %%d, "duration_us": %%d, "bytes": %%d, ' ..
    '"errors": {"connect": %%d, "read": %%d, "write": %%d, "status": %%d, "timeout": %%d}, ' ..
    '"latency_us": {"p50": %%d, "p90": %%d, "p99": %%d, "max": %%d, "mean": %%.1f}}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
"""


def _wrk(url: str, headers: dict[str, str], connections: int, seconds: float, work: Path) -> dict:
    script = work / f"wrk-{time.monotonic_ns()}.lua"
    lines = "\n".join(f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in headers.items())
    script.write_text(_LUA % {"headers": lines})
    load = os.getloadavg()[0]
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "10s", "-s", str(script), url]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("WRKJSON ")), None)
    if proc.returncode != 0 or line is None:
        raise SystemExit(f"wrk failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    raw = json.loads(line[len("WRKJSON "):])
    errors = sum(raw["errors"].values())
    lat = {k: round(v / 1000.0, 2) for k, v in raw["latency_us"].items()}
    return {"connections": connections, "seconds": raw["duration_us"] / 1e6, "requests": raw["requests"],
            "requests_per_s": round(raw["requests"] / (raw["duration_us"] / 1e6), 1),
            "bytes_per_response": round(raw["bytes"] / max(1, raw["requests"])),
            "errors": errors, "error_kinds": raw["errors"], "latency_ms": lat, "load_1m": round(load, 2)}


def _status_targets(url: str, job_id: str) -> dict[str, tuple[str, dict[str, str]]]:
    """The three requests, with the ETag of the job as the server reports it (none: old server)."""
    auth = {"Authorization": f"Bearer {API_KEY}"}
    r = httpx.get(f"{url}/v1/jobs/{job_id}", headers=auth, timeout=10)
    assert r.status_code == 200 and r.json()["status"] == "succeeded", r.text
    etag = r.headers.get("etag")
    targets = {
        "healthz": (f"{url}/healthz", {}),
        "job": (f"{url}/v1/jobs/{job_id}", auth),
    }
    if etag:
        again = httpx.get(f"{url}/v1/jobs/{job_id}", headers={**auth, "If-None-Match": etag}, timeout=10)
        assert again.status_code == 304, (again.status_code, again.text)
        targets["job_304"] = (f"{url}/v1/jobs/{job_id}", {**auth, "If-None-Match": etag})
    return targets


def bench_status(apis: dict[str, tuple[str, str]], connections: list[int], seconds: float, repeat: int,
                 work: Path) -> dict:
    """Every (API, request, connections) ``repeat`` times, interleaved; the median run of each."""
    targets = {label: _status_targets(url, job_id) for label, (url, job_id) in apis.items()}
    runs: dict[str, dict[str, dict[str, list[dict]]]] = {}
    for label, named in targets.items():  # warm-up: first requests pay for imports and caches
        for _, (u, h) in named.items():
            _wrk(u, h, 32, 2, work)
    for rep in range(repeat):
        for conns in connections:
            for label, named in targets.items():
                for what, (u, h) in named.items():
                    res = _wrk(u, h, conns, seconds, work)
                    runs.setdefault(label, {}).setdefault(what, {}).setdefault(str(conns), []).append(res)
                    print(f"  [{rep + 1}/{repeat}] {label:>7} {what:>8} c={conns:<4} "
                          f"{res['requests_per_s']:8.0f} req/s  p50 {res['latency_ms']['p50']:6.2f} ms  "
                          f"p99 {res['latency_ms']['p99']:7.2f} ms  errors {res['errors']}  load {res['load_1m']}",
                          flush=True)
    out: dict[str, Any] = {}
    for label, whats in runs.items():
        out[label] = {}
        for what, by_conns in whats.items():
            out[label][what] = {}
            for conns, rs in by_conns.items():
                med = sorted(rs, key=lambda r: r["requests_per_s"])[len(rs) // 2]
                out[label][what][conns] = {"median_run": med, "runs": rs}
        hz = out[label]["healthz"]
        for what in out[label]:
            for conns, entry in out[label][what].items():
                entry["ratio_to_healthz"] = round(
                    entry["median_run"]["requests_per_s"] / hz[conns]["median_run"]["requests_per_s"], 3)
    return out


# -- uploads -----------------------------------------------------------------------------------

def bench_submit(url: str, model: Path, spec: dict, runs: int) -> dict:
    times = []
    ids = []
    with httpx.Client(base_url=url, timeout=None, headers={"Authorization": f"Bearer {API_KEY}"}) as c:
        for _ in range(runs):
            with open(model, "rb") as f:
                t0 = time.perf_counter()
                r = c.post("/v1/jobs", files={"model": (model.name, f)}, data={"spec": json.dumps(spec)})
                dt = time.perf_counter() - t0
            assert r.status_code == 202, r.text
            ids.append(r.json()["id"])
            times.append(dt)
        for job_id in ids:  # cancel, then delete with the upload
            c.delete(f"/v1/jobs/{job_id}")
            c.delete(f"/v1/jobs/{job_id}")
    size = model.stat().st_size
    return {
        "file_bytes": size,
        "runs": runs,
        "latency_s": {"min": min(times), "median": statistics.median(times), "max": max(times)},
        "throughput_mib_s": size / MiB / statistics.median(times),
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
    with httpx.Client(base_url=url, timeout=None, headers={"Authorization": f"Bearer {API_KEY}"}) as c:
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


# -- main --------------------------------------------------------------------------------------

def _env(work: Path, name: str, broker: str) -> tuple[dict[str, str], str]:
    """Each API its own data folder and job store; the broker is shared (no worker reads it)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRUNEKIT_")}
    (work / name).mkdir(parents=True, exist_ok=True)
    db_url = f"sqlite:///{work / name / 'jobs.db'}"
    env.update(PRUNEKIT_DATA_DIR=str(work / name / "data"), PRUNEKIT_DATABASE_URL=db_url,
               PRUNEKIT_MAX_UPLOAD_BYTES=str(2 << 30), PRUNEKIT_API_KEYS=f"{API_KEY}={TENANT}",
               PRUNEKIT_BROKER_URL=broker, OMP_NUM_THREADS="1")
    return env, db_url


def _print_status(status: dict, labels: list[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Status path (wrk, 1 thread; median of the runs)")
    for col in ("API", "request", "conns", "req/s", "p50 ms", "p99 ms", "÷ healthz", "errors"):
        table.add_column(col, justify="right" if col not in ("API", "request") else "left")
    for label in labels:
        for what, by_conns in status[label].items():
            for conns, entry in by_conns.items():
                m = entry["median_run"]
                table.add_row(label, what, conns, f"{m['requests_per_s']:.0f}", f"{m['latency_ms']['p50']:.2f}",
                              f"{m['latency_ms']['p99']:.2f}", f"{entry['ratio_to_healthz']:.2f}", str(m["errors"]))
    Console().print(table)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--broker", default="redis://127.0.0.1:6379/6",
                    help="Redis for the Celery-mode APIs (flushed before and after)")
    ap.add_argument("--api-workers", type=int, default=1, help="API processes (uvicorn --workers)")
    ap.add_argument("--compare", type=Path, help="another checkout to measure side by side (its API runs "
                    "from there with the same settings)")
    ap.add_argument("--compare-label", default="before")
    ap.add_argument("--label", default="after")
    ap.add_argument("--connections", default="32,256")
    ap.add_argument("--seconds", type=float, default=8.0, help="length of each wrk run")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each measurement (the median is reported)")
    ap.add_argument("--status-only", action="store_true", help="skip the upload measurements")
    ap.add_argument("--quick", action="store_true", help="short runs (CI smoke): 3 s, 1 repeat, 256 MB upload")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    if args.quick:
        args.seconds, args.repeat = 3.0, 1
    connections = [int(c) for c in args.connections.split(",")]

    import redis

    work = Path(tempfile.mkdtemp(prefix="prunekit-bench-"))
    trees = {args.label: REPO}
    if args.compare:
        trees[args.compare_label] = args.compare.resolve()
    load_before = os.getloadavg()
    apis: dict[str, tuple[subprocess.Popen, str, str]] = {}
    result: dict[str, Any] = {}
    try:
        print("pruning the reference model for a real status body ...", flush=True)
        model, summary, artifacts = _real_result(work)
        redis.Redis.from_url(args.broker).flushdb()
        for label, tree in trees.items():
            env, db_url = _env(work, label, args.broker)
            proc, url = _start_api(tree, env, work / f"api-{label}.log", args.api_workers)
            apis[label] = (proc, url, db_url)
        jobs = {label: (url, _succeeded_job(url, db_url, model, summary, artifacts))
                for label, (_, url, db_url) in apis.items()}
        body = httpx.get(f"{jobs[args.label][0]}/v1/jobs/{jobs[args.label][1]}",
                         headers={"Authorization": f"Bearer {API_KEY}"}).content
        print(f"status body: {len(body)} bytes; measuring ...", flush=True)
        result["status"] = bench_status(jobs, connections, args.seconds, args.repeat, work)
        result["status_body_bytes"] = len(body)
        if not args.status_only:
            proc, url, _ = apis[args.label]
            big_model = work / "linear50mb.pt"
            info = _make_model(big_model)
            result["submit_50mb"] = bench_submit(url, big_model, info["spec"], 3 if args.quick else 5)
            big = (256 if args.quick else 1024) * MiB
            key = "upload_1gb" if big >= 1 << 30 else "upload_big"
            if args.api_workers == 1:  # the RSS of one process: meaningful with one
                result[key] = bench_big_upload(url, proc.pid, big)
    finally:
        for proc, _, _ in apis.values():
            _stop(proc)
        redis.Redis.from_url(args.broker).flushdb()
        shutil.rmtree(work, ignore_errors=True)
    result = {
        "mode": "celery (API only, no worker)",
        "api_workers": args.api_workers,
        "trees": {label: str(tree) for label, tree in trees.items()},
        "load_generator": subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout.split("\n")[0]
        .strip() + ", 1 thread",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                    # Other work on the machine skews every number: record how busy it was.
                    "load_average_1m": {"before": load_before[0], "after": os.getloadavg()[0]}},
        **result,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    _print_status(result["status"], list(trees))
    if "submit_50mb" in result:
        s = result["submit_50mb"]
        print(f"submit {s['file_bytes'] / MiB:.0f} MiB: median {s['latency_s']['median'] * 1000:.0f} ms "
              f"({s['throughput_mib_s']:.0f} MiB/s)")
    for key in ("upload_1gb", "upload_big"):
        if key in result:
            u = result[key]
            print(f"{u['upload_bytes'] / MiB:.0f} MiB upload: API RSS {u['rss_mib']['baseline']:.0f} → "
                  f"{u['rss_mib']['peak']:.0f} MiB ({u['throughput_mib_s']:.0f} MiB/s)")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
