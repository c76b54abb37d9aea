"""Slow uploads (slowloris) against a real API over a real socket.

Before the upload's time bounds, a client that sent the start of a job and then nothing (or a
byte now and then) held its connection and an open upload in the artifact store for as long as it
liked: uvicorn bounds the idle time between requests, not within a request's body.  Now the API
answers 408 ``upload_timeout`` after ``PRUNEKIT_UPLOAD_IDLE_SECONDS`` without bytes, or after
``PRUNEKIT_UPLOAD_MAX_SECONDS`` in all, drops the partial upload and keeps serving.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest

BOUNDARY = "slowboundary"


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from svc_helpers import base_env, start_api

    root = tmp_path_factory.mktemp("slowapi")
    proc, url = start_api(base_env(PRUNEKIT_DATA_DIR=str(root / "data"), PRUNEKIT_UPLOAD_IDLE_SECONDS="2",
                                   PRUNEKIT_UPLOAD_MAX_SECONDS="6"), root / "api.log")
    try:
        yield url, root / "data"
    finally:
        proc.stop()


def _start_upload(url: str, declared: int = 10_000) -> socket.socket:
    """Headers and the start of a model part: the rest is up to the caller."""
    u = urlparse(url)
    sock = socket.create_connection((u.hostname, u.port), timeout=30)
    head = (f"POST /v1/jobs HTTP/1.1\r\nHost: {u.hostname}\r\n"
            f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {declared}\r\n\r\n")
    part = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"spec\"\r\n\r\n{json.dumps({'ratio': 0.5})}\r\n"
            f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"model\"; filename=\"m.pt2\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\nPK")
    sock.sendall(head.encode() + part.encode())
    return sock


def _answer(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def _partials(data_dir: Path) -> list[Path]:
    return [p for p in data_dir.rglob("*.part") if p.is_file()]


def test_an_upload_that_stops_sending_is_answered_408_and_dropped(api) -> None:  # type: ignore[no-untyped-def]
    url, data_dir = api
    t0 = time.monotonic()
    with _start_upload(url) as sock:
        answer = _answer(sock)  # the server answers: the client is still "uploading"
    took = time.monotonic() - t0
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"upload_timeout" in answer and b"PRUNEKIT_UPLOAD_IDLE_SECONDS" in answer
    assert 1.5 < took < 10, took
    assert not _partials(data_dir)
    assert httpx.get(url + "/healthz").status_code == 200


def test_an_upload_that_trickles_is_answered_408_at_its_time_limit(api) -> None:  # type: ignore[no-untyped-def]
    url, data_dir = api
    t0 = time.monotonic()
    with _start_upload(url) as sock:
        sock.settimeout(1.0)
        answer = b""
        while time.monotonic() - t0 < 20:
            try:
                sock.sendall(b"x")  # one byte a second: never idle for 2 s
            except OSError:
                pass
            try:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                answer += chunk
                if answer.rstrip().endswith(b"}"):
                    break
            except socket.timeout:
                continue
    took = time.monotonic() - t0
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"still arriving after 6 seconds" in answer
    assert 5 < took < 12, took
    assert not _partials(data_dir)
    assert httpx.get(url + "/healthz").status_code == 200
