"""The JSON body of a job, rendered once per version, and the ETag that names it.

A job's public representation changes only when its row's ``version`` does (see
:mod:`worker.store`), so the API renders it (store read, pydantic model, JSON) once per version
and keeps the bytes: a poller asking again gets the same bytes, or a 304 when it sends the ETag
back.  The cache is per process and only ever a shortcut: every request first reads the current
version from the store, so several API processes never serve each other's stale copies.

The ETag is ``"<schema>.<version>"``: ``<schema>`` is a digest of the job's JSON schema, so a
deployment whose representation changed never answers 304 to an ETag of the old one.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from dataclasses import dataclass

from . import schemas

_SCHEMA = hashlib.sha256(json.dumps(schemas.Job.model_json_schema(), sort_keys=True).encode()).hexdigest()[:8]


def etag_of(version: int) -> str:
    return f'"{_SCHEMA}.{version}"'


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110 weak comparison against an ``If-None-Match`` list (``*`` matches anything)."""
    if not if_none_match:
        return False
    for candidate in if_none_match.split(","):
        candidate = candidate.strip()
        if candidate == "*":
            return True
        if candidate.startswith("W/"):
            candidate = candidate[2:]
        if candidate == etag:
            return True
    return False


@dataclass(frozen=True)
class Body:
    version: int
    status: str
    json: bytes

    @property
    def etag(self) -> str:
        return etag_of(self.version)


class BodyCache:
    """The last rendered body of the most recently asked-for jobs (LRU, bounded in bytes).

    Filled from worker threads (rendering happens there) and read on the event loop: a lock."""

    def __init__(self, max_bytes: int = 32 << 20) -> None:
        self.max_bytes = max_bytes
        self._bodies: OrderedDict[str, Body] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, job_id: str, version: int) -> Body | None:
        with self._lock:
            body = self._bodies.get(job_id)
            if body is None or body.version != version:
                return None
            self._bodies.move_to_end(job_id)
            return body

    def put(self, job_id: str, body: Body) -> None:
        with self._lock:
            self._drop(job_id)
            if len(body.json) > self.max_bytes:
                return
            self._bodies[job_id] = body
            self._bytes += len(body.json)
            while self._bytes > self.max_bytes:
                _, dropped = self._bodies.popitem(last=False)
                self._bytes -= len(dropped.json)

    def _drop(self, job_id: str) -> None:
        old = self._bodies.pop(job_id, None)
        if old is not None:
            self._bytes -= len(old.json)
