"""The status path: ``GET /v1/jobs/{id}`` (with ETags) and ``GET /v1/jobs/{id}/events`` (SSE).

Pipelines poll these in loops, so they are built to cost little: one batched read of the job's
owner, status and version per request (:mod:`service.heads`), the body rendered once per version
(:mod:`service.bodies`), a 304 without any body when the poller's ETag is still current, and for
clients that would rather be told, a server-sent event stream (:mod:`service.events`).
"""

from __future__ import annotations

import re

from typing import Annotated

import anyio
from fastapi import APIRouter, Depends, Header, Request, Response
from fastapi.responses import StreamingResponse

from .. import schemas
from ..auth import tenant_for
from ..bodies import Body, BodyCache, etag_matches, etag_of
from ..errors import ApiError
from ..events import job_events
from ..heads import HeadReader
from .jobs import _ERRORS, _valid_id, job_view

_EVENT_ID = re.compile(r"[0-9]{1,18}")  # an event id we sent: a job's version

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

Tenant = Annotated[str, Depends(tenant_for)]
# Clients may keep the body, but must ask again each time; never a shared cache (per tenant).
CACHE_CONTROL = "private, no-cache"


async def _head_or_404(request: Request, job_id: str, tenant: str):  # type: ignore[no-untyped-def]
    heads: HeadReader = request.app.state.heads
    head = await heads.get(job_id) if _valid_id(job_id) else None
    if head is None or head.tenant != tenant:  # another tenant's job does not exist for this one
        raise ApiError(404, "not_found", f"no job {job_id!r}")
    return head


def _renderer(request: Request):  # type: ignore[no-untyped-def]
    """``await render(job_id)``: the job's current body (cached per version), None if gone."""
    store, bodies = request.app.state.store, request.app.state.bodies

    def render_now(job_id: str) -> Body | None:
        job = store.get(job_id)
        if job is None:
            return None
        body = Body(job.version or 0, job.status, job_view(request, job).model_dump_json().encode())
        bodies.put(job_id, body)
        return body

    async def render(job_id: str, version: int | None = None) -> Body | None:
        cached = bodies.get(job_id, version) if version is not None else None
        return cached or await anyio.to_thread.run_sync(render_now, job_id)

    return render


# The poll route takes its key and If-None-Match from the request itself rather than through
# typed dependencies: FastAPI's per-request resolution of a dependency and a header parameter
# cost about as much as the rest of the request together (bench/README.md, "Status path").
# The OpenAPI document lists both all the same.
_POLL_PARAMETERS = [
    {"name": "If-None-Match", "in": "header", "required": False, "schema": {"type": "string"},
     "description": "An ETag from an earlier answer: 304 while it is still the job's current one."},
]


@router.get(
    "/{job_id}",
    response_model=schemas.Job,
    summary="Get a job",
    description="Status, progress (stage, percent, message), timestamps, input, and the result or error. "
    "The response carries an `ETag`; send it back in `If-None-Match` and the answer is an empty 304 "
    "for as long as nothing about the job changed (progress included). To be told of changes "
    "instead of polling, follow `/v1/jobs/{id}/events`.",
    responses={
        200: {"headers": {"ETag": {"description": "Names this version of the job.", "schema": {"type": "string"}}}},
        304: {"description": "Not modified: the `If-None-Match` ETag is still the job's current one."},
        **_ERRORS,
    },
    openapi_extra={"parameters": _POLL_PARAMETERS},
)
async def get_job(request: Request, job_id: str) -> Response:
    tenant = await tenant_for(request)
    head = await _head_or_404(request, job_id, tenant)
    bodies: BodyCache = request.app.state.bodies
    cached = bodies.get(job_id, head.version)
    etag = etag_of(head.version)
    if etag_matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers={"ETag": etag, "Cache-Control": CACHE_CONTROL,
                                                  "Vary": "Authorization"})
    body = cached or await _renderer(request)(job_id)
    if body is None:  # deleted between the two reads
        raise ApiError(404, "not_found", f"no job {job_id!r}")
    return Response(body.json, media_type="application/json",
                    headers={"ETag": body.etag, "Cache-Control": CACHE_CONTROL, "Vary": "Authorization"})


@router.get(
    "/{job_id}/events",
    summary="Follow a job (server-sent events)",
    description="A `text/event-stream` of the job: a `job` event (the same JSON as `GET /v1/jobs/{id}`, "
    "`id:` its version) at once and after every change of status or progress, then `end` once the job "
    "succeeded, failed or was cancelled, and the stream closes. `gone`: the job was deleted. "
    "`timeout`: the stream reached its time limit (`PRUNEKIT_EVENTS_MAX_SECONDS`); reconnect, sending "
    "`Last-Event-ID`, to go on without repeats. A `: keep-alive` comment line is sent when nothing "
    "happened for a while. Changes are seen within `PRUNEKIT_EVENTS_INTERVAL` seconds.",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/event-stream": {"schema": {"type": "string"}}},
              "description": "The event stream."},
        **_ERRORS,
        503: {"model": schemas.ErrorResponse, "description": "This process serves as many streams as it may."},
    },
)
async def job_events_route(
    request: Request,
    job_id: str,
    tenant: Tenant,
    last_event_id: Annotated[str | None, Header(description="The `id` of the last event received.")] = None,
) -> StreamingResponse:
    await _head_or_404(request, job_id, tenant)
    settings = request.app.state.settings
    slots = request.app.state.stream_slots
    slots.check()
    # ASCII digits, bounded: str.isdigit() accepts '²' and int() refuses 5,000 digits (both were 500s)
    last_seen = int(last_event_id.strip()) if last_event_id and _EVENT_ID.fullmatch(last_event_id.strip()) else None
    stream = job_events(
        job_id=job_id, tenant=tenant, heads=request.app.state.heads, render=_renderer(request),
        last_seen=last_seen, interval=settings.events_interval, heartbeat=settings.events_heartbeat,
        max_seconds=settings.events_max_seconds, slots=slots,
    )
    return StreamingResponse(stream, media_type="text/event-stream", headers={
        "Cache-Control": "no-cache, no-transform",
        "X-Accel-Buffering": "no",  # nginx: pass each event on at once
        "Vary": "Authorization",
    })
