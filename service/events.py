"""Server-sent events of one job: its representation each time it changes, until it ends.

``GET /v1/jobs/{id}/events`` answers ``text/event-stream``::

    retry: 2000

    event: job
    id: 7
    data: {"id": "...", "status": "running", "progress": {"stage": "check", ...}, ...}

    : keep-alive

    event: end
    data: {"status": "succeeded"}

Each ``job`` event carries the same JSON as ``GET /v1/jobs/{id}``; its ``id`` is the job's
version, so a client that reconnects with ``Last-Event-ID`` is sent nothing it has already seen.
The stream ends by itself: after the event of a finished job (``end``), when the job is deleted
(``gone``), or after ``PRUNEKIT_EVENTS_MAX_SECONDS`` (``timeout``; reconnect to go on).  A comment
line every ``PRUNEKIT_EVENTS_HEARTBEAT`` seconds keeps proxies from closing an idle stream.

Changes are found by reading the job's version from the store every
``PRUNEKIT_EVENTS_INTERVAL`` seconds.  Every stream of a process wakes on the same tick, so their
reads fall into one batch (:class:`service.heads.HeadReader`): one small query per tick, however
many clients listen, and it works unchanged with several API processes and any job store.
"""

from __future__ import annotations

import asyncio
import json
from typing import AsyncIterator, Awaitable, Callable

from prunekit.job_status import TERMINAL

from .bodies import Body
from .errors import ApiError
from .heads import HeadReader

RETRY_MS = 2000


class StreamSlots:
    """How many event streams this process holds open, against its limit."""

    def __init__(self, limit: int) -> None:
        self.limit, self.open = limit, 0

    def check(self) -> None:
        """Refuse a new stream (503) when this process serves as many as it may."""
        if self.open >= self.limit:
            raise ApiError(503, "too_many_streams",
                           f"this server process already serves {self.limit} event streams; poll "
                           "GET /v1/jobs/{id} instead, or try again later", headers={"Retry-After": "5"})


def _event(name: str, data: bytes, event_id: int | None = None) -> bytes:
    head = f"event: {name}\n" + (f"id: {event_id}\n" if event_id is not None else "")
    return head.encode() + b"data: " + data + b"\n\n"


async def job_events(
    *,
    job_id: str,
    tenant: str,
    heads: HeadReader,
    render: Callable[[str, int], Awaitable[Body | None]],
    last_seen: int | None,
    interval: float,
    heartbeat: float,
    max_seconds: float,
    slots: StreamSlots,
) -> AsyncIterator[bytes]:
    """The stream's bytes, counted in ``slots`` while they flow (the client going away cancels
    the generator, which ends it here too)."""
    loop = asyncio.get_running_loop()
    started = last_beat = loop.time()
    slots.open += 1
    try:
        yield f"retry: {RETRY_MS}\n\n".encode()
        while True:
            head = await heads.get(job_id)
            if head is None or head.tenant != tenant:
                yield _event("gone", json.dumps({"id": job_id, "reason": "the job was deleted"}).encode())
                return
            if head.version != last_seen:
                body = await render(job_id, head.version)
                if body is None:
                    yield _event("gone", json.dumps({"id": job_id, "reason": "the job was deleted"}).encode())
                    return
                yield _event("job", body.json, body.version)
                last_seen, status = body.version, body.status
                last_beat = loop.time()
            else:
                status = head.status
            if status in TERMINAL:
                yield _event("end", json.dumps({"id": job_id, "status": status}).encode())
                return
            now = loop.time()
            if now - started >= max_seconds:
                yield _event("timeout", json.dumps({"id": job_id, "reconnect": True}).encode())
                return
            if now - last_beat >= heartbeat:
                yield b": keep-alive\n\n"
                last_beat = now
            # Sleep to the next multiple of the interval: all streams read on the same tick.
            await asyncio.sleep(interval - (loop.time() % interval))
    finally:
        slots.open -= 1
