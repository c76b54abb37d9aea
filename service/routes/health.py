"""Liveness, readiness and metrics: unauthenticated, for orchestrators and scrapers.

Anyone may ask, so what they answer says nothing about the deployment: readiness names each
check generically; paths and error texts go to the log, and to callers with a valid API key.
"""

from __future__ import annotations

import logging
from typing import Callable

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from worker.storage import StorageUnavailable

from .. import schemas
from ..auth import has_valid_key

log = logging.getLogger(__name__)

router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=schemas.Health, summary="Liveness: the process answers")
async def healthz() -> schemas.Health:
    return schemas.Health()


def _check_storage(request: Request) -> tuple[bool, str]:
    """The artifact store takes writes (local: a real write, mounts can be read-only; S3: the
    bucket answers to our credentials)."""
    objects = request.app.state.objects
    try:
        objects.check()
        return True, objects.describe()
    except StorageUnavailable as exc:
        return False, str(exc)


def _probe(call: Callable[[], object]) -> tuple[bool, str]:
    try:
        call()
        return True, ""
    except Exception as exc:
        return False, f"{type(exc).__name__}: {exc}"[:200]


@router.get(
    "/readyz",
    response_model=schemas.Readiness,
    summary="Readiness: job store, artifact store and broker (or embedded worker) reachable",
    description="Needs no key. Each check's `detail` is a generic line (`artifact store: ok`); "
    "with a valid API key it also carries where the store is (folder, or bucket and endpoint) and any error text.",
    responses={503: {"model": schemas.Readiness, "description": "A dependency is unreachable."}},
)
def readyz(request: Request) -> JSONResponse:
    queue = request.app.state.queue
    name = "broker" if queue.mode == "celery" else "worker"
    probes = {
        "job_store": ("job store", "unreachable", _probe(request.app.state.store.ping)),
        "artifacts": ("artifact store", "unreachable", _check_storage(request)),
        name: ("broker" if name == "broker" else "job supervisor", "unreachable", _probe(queue.check)),
    }
    detailed = has_valid_key(request)
    checks: dict[str, schemas.Check] = {}
    for key, (label, failure, (ok, detail)) in probes.items():
        line = f"{label}: {'ok' if ok else failure}"
        if not ok:  # the details for operators, who may not hold a key
            log.warning("readiness: %s (%s)", line, detail)
        if detailed and detail:
            line = f"{line} ({detail})"
        checks[key] = schemas.Check(ok=ok, detail=line)
    ok = all(c.ok for c in checks.values())
    body = schemas.Readiness(status="ready" if ok else "unavailable", mode=queue.mode, checks=checks)
    return JSONResponse(body.model_dump(mode="json"), status_code=200 if ok else 503)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response,
            responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
