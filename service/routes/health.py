"""Liveness, readiness and metrics: unauthenticated, for orchestrators and scrapers."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .. import schemas

router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=schemas.Health, summary="Liveness: the process answers")
async def healthz() -> schemas.Health:
    return schemas.Health()


def _check_data_dir(request: Request) -> schemas.Check:
    """The artifact folder exists and is writable (a real write: mounts can be read-only)."""
    folder = request.app.state.layout.artifacts
    probe = folder / f".ready-{uuid.uuid4().hex}"
    try:
        probe.write_bytes(b"ok")
        probe.unlink()
        return schemas.Check(ok=True, detail=str(folder))
    except OSError as exc:
        return schemas.Check(ok=False, detail=f"{folder}: {exc.strerror or exc}")


@router.get(
    "/readyz",
    response_model=schemas.Readiness,
    summary="Readiness: job store, artifact folder and broker (or embedded worker) reachable",
    responses={503: {"model": schemas.Readiness, "description": "A dependency is unreachable."}},
)
def readyz(request: Request) -> JSONResponse:
    checks: dict[str, schemas.Check] = {}
    try:
        request.app.state.store.ping()
        checks["job_store"] = schemas.Check(ok=True)
    except Exception as exc:
        checks["job_store"] = schemas.Check(ok=False, detail=type(exc).__name__)
    checks["artifacts"] = _check_data_dir(request)
    queue = request.app.state.queue
    name = "broker" if queue.mode == "celery" else "worker"
    try:
        queue.check()
        checks[name] = schemas.Check(ok=True)
    except Exception as exc:
        checks[name] = schemas.Check(ok=False, detail=f"{type(exc).__name__}: {exc}"[:200])
    ok = all(c.ok for c in checks.values())
    body = schemas.Readiness(status="ready" if ok else "unavailable", mode=queue.mode, checks=checks)
    return JSONResponse(body.model_dump(mode="json"), status_code=200 if ok else 503)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response,
            responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
