"""The job store on PostgreSQL, and one real job through an API whose store is PostgreSQL.

Runs only when ``PRUNEKIT_TEST_POSTGRES_URL`` is set (CI sets it, e.g.
postgresql://postgres@127.0.0.1:5432/test).  When it is set, an unreachable server is a failure,
never a skip.  Each run works in a schema of its own, dropped afterwards.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest

from prunekit.client import Client
from svc_helpers import TS_SPEC, Models, base_env, pg_schema, start_api
from test_service_units import (
    exercise_retry_backoff,
    exercise_store,
    exercise_upgrade_and_recovery,
    exercise_versions,
)
from worker.store import JobStore

PG_URL = os.environ.get("PRUNEKIT_TEST_POSTGRES_URL")

pytestmark = [
    pytest.mark.skipif(not PG_URL, reason="set PRUNEKIT_TEST_POSTGRES_URL to run the PostgreSQL tests"),
    pytest.mark.timeout(300),
]


@pytest.fixture
def pg_schema_url() -> Iterator[str]:
    assert PG_URL
    with pg_schema(PG_URL) as url:
        yield url


def test_store_state_machine_postgres(pg_schema_url: str) -> None:
    store = JobStore(pg_schema_url)
    try:
        assert store.engine.dialect.name == "postgresql"
        exercise_store(store)
        exercise_versions(store)
    finally:
        store.dispose()


def test_store_retry_backoff_postgres(pg_schema_url: str) -> None:
    store = JobStore(pg_schema_url)
    try:
        exercise_retry_backoff(store)
    finally:
        store.dispose()


def test_store_upgrade_and_recovery_postgres(pg_schema_url: str) -> None:
    exercise_upgrade_and_recovery(JobStore(pg_schema_url))


def test_job_through_api_with_postgres_store(pg_schema_url: str, models: Models, tmp_path: Path) -> None:
    env = base_env(PRUNEKIT_DATA_DIR=str(tmp_path / "data"), PRUNEKIT_DATABASE_URL=pg_schema_url)
    api, url = start_api(env, tmp_path / "api.log")
    try:
        with Client(url) as client:
            job = client.submit(models.ts, TS_SPEC)
            done = client.wait(job["id"], timeout=180)
            assert done["status"] == "succeeded", done
            assert client.list(status="succeeded")["jobs"][0]["id"] == job["id"]
    finally:
        api.stop()
    store = JobStore(pg_schema_url)
    try:
        assert store.get(job["id"]) is not None  # it really lived in PostgreSQL
    finally:
        store.dispose()
