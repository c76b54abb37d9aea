"""The status path through real processes: ETags and 304s, server-sent events, the client's wait
on them (and its fallback to polling), and several API processes in broker mode."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import httpx
import pytest

from prunekit.client import Client
from svc_helpers import (
    KEY_A,
    KEY_B,
    PY,
    REPO,
    SLOW_SPEC,
    TENANT_A,
    TS_SPEC,
    Models,
    RedisServer,
    Stack,
    base_env,
    free_port,
    start_api,
    submit,
    wait_for,
)

pytestmark = pytest.mark.timeout(300)


def _events(resp: httpx.Response) -> Iterator[tuple[str, str | None, str]]:
    """(event, id, data) as they arrive; comments as ("comment", None, text)."""
    name, event_id, data = None, None, []
    for line in resp.iter_lines():
        if not line:
            if name:
                yield name, event_id, "\n".join(data)
            name, event_id, data = None, None, []
        elif line.startswith(":"):
            yield "comment", None, line
        else:
            field, _, value = line.partition(": ")
            if field == "event":
                name = value
            elif field == "id":
                event_id = value
            elif field == "data":
                data.append(value)


def _revalidate(client: httpx.Client, url: str, header: Callable[[str], str]) -> tuple[httpx.Response, str]:
    """GET ``url`` with ``If-None-Match: header(current ETag)``.  A running job may move between
    reading its ETag and asking again (a 200 carrying another ETag): then ask again with the new
    one.  A 200 that carries the very ETag that was sent is a real mismatch and is returned."""
    for _ in range(20):
        etag = client.get(url).headers["etag"]
        resp = client.get(url, headers={"If-None-Match": header(etag)})
        if resp.status_code != 200 or resp.headers["etag"] == etag:
            return resp, etag
    raise AssertionError("the job never held still for two requests")


def test_etag_gives_304_until_the_job_changes(stack: Stack, models: Models) -> None:
    a, b = stack.client(KEY_A), stack.client(KEY_B)
    job = submit(a, models.ts, SLOW_SPEC).json()
    url = f"/v1/jobs/{job['id']}"
    first = a.get(url)
    assert first.status_code == 200 and first.headers["etag"].startswith('"')
    assert "no-cache" in first.headers["cache-control"] and "private" in first.headers["cache-control"]
    same, etag = _revalidate(a, url, lambda e: e)
    assert same.status_code == 304 and same.content == b"" and same.headers["etag"] == etag
    assert _revalidate(a, url, lambda e: f'"nope", W/{e}')[0].status_code == 304
    assert a.get(url, headers={"If-None-Match": '"nope"'}).status_code == 200
    # Another tenant learns nothing, ETag or not.
    other = b.get(url, headers={"If-None-Match": etag})
    assert other.status_code == 404 and other.json()["error"]["code"] == "not_found"
    assert b.get(url, headers={"If-None-Match": "*"}).status_code == 404

    assert a.delete(url).status_code == 202  # cancelled: a change, so the old ETag no longer matches
    after = a.get(url, headers={"If-None-Match": etag})
    assert after.status_code == 200 and after.json()["status"] == "cancelled"
    assert after.headers["etag"] != etag
    assert a.get(url, headers={"If-None-Match": after.headers["etag"]}).status_code == 304
    assert a.delete(url).status_code == 204
    assert a.get(url, headers={"If-None-Match": after.headers["etag"]}).status_code == 404


def test_events_stream_a_job_to_its_end(stack: Stack, models: Models) -> None:
    a, b = stack.client(KEY_A), stack.client(KEY_B)
    job = submit(a, models.ts, TS_SPEC).json()
    url = f"/v1/jobs/{job['id']}/events"
    assert b.get(url).status_code == 404  # tenant-checked before any stream starts
    assert a.get("/v1/jobs/" + "0" * 32 + "/events").status_code == 404
    events = []
    with a.stream("GET", url, timeout=httpx.Timeout(120, connect=10)) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        assert "no-cache" in resp.headers["cache-control"]
        for event in _events(resp):
            events.append(event)
    jobs = [(int(i), json.loads(d)) for name, i, d in events if name == "job"]
    assert jobs, events
    versions = [v for v, _ in jobs]
    assert versions == sorted(set(versions)), versions  # each change once, in order
    assert jobs[-1][1]["status"] == "succeeded" and jobs[-1][1]["result"]["params"]["after"] > 0
    assert any(j["status"] == "running" for _, j in jobs), [j["status"] for _, j in jobs]
    assert events[-1][0] == "end" and json.loads(events[-1][2])["status"] == "succeeded"
    # The final event is the same document GET serves, under the ETag's version.
    got = a.get(f"/v1/jobs/{job['id']}")
    assert got.json() == jobs[-1][1] and got.headers["etag"].rstrip('"').endswith(f".{versions[-1]}")
    # Reconnecting after the last event: nothing repeated, the stream just ends.
    with a.stream("GET", url, headers={"Last-Event-ID": str(versions[-1])}) as resp:
        assert [e[0] for e in _events(resp)] == ["end"]


def test_client_wait_follows_the_events(stack: Stack, models: Models) -> None:
    """With a poll interval of 10 minutes, wait() can only finish in time through the stream."""
    with Client(stack.url, api_key=KEY_A) as client:
        job = client.submit(models.ts, TS_SPEC)
        seen: list[tuple[str, str | None]] = []
        t0 = time.monotonic()
        done = client.wait(job["id"], timeout=240, poll_interval=600,
                           on_progress=lambda j: seen.append((j["status"], j["progress"]["stage"])))
        assert done["status"] == "succeeded", done
        assert time.monotonic() - t0 < 240
        assert seen[-1] == ("succeeded", "done") and len(seen) >= 2, seen


@pytest.fixture
def lone_api(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """An API in broker mode on a private Redis that no worker reads: its jobs stay queued.
    Event streams are short (2 s), beat often and are limited to one per process."""
    redis = RedisServer(tmp_path / "redis").start()
    env = base_env(
        PRUNEKIT_BROKER_URL=redis.url(0),
        PRUNEKIT_DATA_DIR=str(tmp_path / "data"),
        PRUNEKIT_DATABASE_URL=f"sqlite:///{tmp_path / 'jobs.db'}",
        PRUNEKIT_API_KEYS=f"{KEY_A}={TENANT_A}",
        PRUNEKIT_EVENTS_INTERVAL="0.1",
        PRUNEKIT_EVENTS_HEARTBEAT="0.3",
        PRUNEKIT_EVENTS_MAX_SECONDS="2",
        PRUNEKIT_EVENTS_MAX_STREAMS="1",
    )
    try:
        api, url = start_api(env, tmp_path / "api.log")
    except BaseException:
        redis.stop()
        raise
    try:
        yield url, tmp_path
    finally:
        api.stop()
        redis.stop()


def test_events_beat_time_out_resume_and_are_limited(lone_api: tuple[str, Path], models: Models) -> None:
    url, _ = lone_api
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY_A}"}, timeout=30) as a:
        job = submit(a, models.ts, TS_SPEC).json()
        events_url = f"/v1/jobs/{job['id']}/events"
        t0 = time.monotonic()
        with a.stream("GET", events_url) as resp:
            events = list(_events(resp))
        took = time.monotonic() - t0
        kinds = [e[0] for e in events]
        assert kinds[0] == "job" and kinds[-1] == "timeout" and kinds.count("comment") >= 3, kinds
        assert 1.5 < took < 15, took
        last = events[0][1]
        with a.stream("GET", events_url, headers={"Last-Event-ID": last}) as resp:
            kinds = [e[0] for e in _events(resp)]
        assert "job" not in kinds and kinds[-1] == "timeout", kinds  # nothing it had seen again

        # One stream per process here: a second is refused, and wait() polls instead.
        with a.stream("GET", events_url) as held:
            assert held.status_code == 200
            refused = a.get(events_url)
            assert refused.status_code == 503 and refused.json()["error"]["code"] == "too_many_streams"
            with Client(url, api_key=KEY_A) as client:
                with pytest.raises(TimeoutError, match="still queued"):
                    client.wait(job["id"], timeout=1.5, poll_interval=0.2)
                cancel = threading.Timer(1.0, lambda: httpx.delete(
                    f"{url}/v1/jobs/{job['id']}", headers={"Authorization": f"Bearer {KEY_A}"}, timeout=30))
                cancel.start()
                done = client.wait(job["id"], timeout=60, poll_interval=0.2)
                cancel.join()
                assert done["status"] == "cancelled"


def test_several_api_processes_share_only_the_store(stack: Stack, models: Models, tmp_path: Path) -> None:
    """`--workers 2` in broker mode: two processes behind one port, the job store, broker and
    data folder of the Celery stack as their only shared state."""
    import psutil

    port = free_port()
    log = tmp_path / "api2.log"
    with open(log, "wb") as f:
        proc = subprocess.Popen([PY, "-m", "service", "--port", str(port), "--workers", "2"], cwd=REPO,
                                env=stack.env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        def ready() -> bool:
            try:
                return httpx.get(url + "/healthz", timeout=1).status_code == 200 and len(
                    psutil.Process(proc.pid).children()) >= 2
            except (httpx.HTTPError, psutil.Error):
                return False

        wait_for(ready, 90, "two API processes to answer")
        with Client(url, api_key=KEY_A) as client:
            job = client.submit(models.ts, TS_SPEC)
            done = client.wait(job["id"], timeout=240, poll_interval=600)  # events, from either process
            assert done["status"] == "succeeded", done
        # Any process answers for any job, and ETags agree between them (one version, one body).
        c = stack.client(KEY_A)
        assert c.get(f"/v1/jobs/{job['id']}").json() == done  # through the stack's own API too
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY_A}"}) as h:
            tags = {h.get(f"/v1/jobs/{job['id']}", headers={"Connection": "close"}).headers["etag"]
                    for _ in range(8)}
            assert len(tags) == 1
            assert h.get(f"/v1/jobs/{job['id']}", headers={"If-None-Match": tags.pop()}).status_code == 304
    finally:
        import os
        import signal

        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def test_embedded_mode_refuses_several_processes(tmp_path: Path) -> None:
    env = base_env(PRUNEKIT_DATA_DIR=str(tmp_path / "data"))
    r = subprocess.run([PY, "-m", "service", "--port", str(free_port()), "--workers", "2"], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert "PRUNEKIT_BROKER_URL" in r.stderr and "Traceback" not in r.stderr, r.stderr

