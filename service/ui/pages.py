"""``/ui``: the dashboard's pages, fragments and static files.

Authentication is the API's own: a key entered once is kept in the tab's ``sessionStorage`` and
sent as ``Authorization: Bearer`` by the page's script; no key ever travels in a URL or a cookie.
A browser cannot send that header when it navigates, so the pages themselves (``/ui``,
``/ui/jobs/{id}``) are empty shells that hold no data; the script fetches the tenant's data as
HTML *fragments* rendered here by Jinja2 (``/ui/fragments/...``, authenticated exactly like
``/v1``), and inserts them.  Without configured keys the API serves loopback clients as tenant
``local``, and so do the fragments: no key is asked for.

Everything a user wrote (file names, specs, error texts, layer names) is escaped by the
templates' autoescaping; the Content-Security-Policy (:mod:`service.csp`) allows no inline
script, so nothing that slipped through could run either.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from prunekit.artifacts import download_name
from prunekit.job_status import ACTIVE
from worker.storage import legacy_artifact_key
from worker.store import Job

from ..auth import tenant_for
from ..csp import html_headers
from ..errors import ApiError
from ..routes.jobs import _decode_cursor, _encode_cursor, _valid_id
from ..storage import content_disposition
from . import charts

HERE = Path(__file__).parent
STATIC = {"app.js": "text/javascript", "style.css": "text/css", "favicon.svg": "image/svg+xml"}
PAGE_SIZE = 50

router = APIRouter(prefix="/ui", include_in_schema=False)
Tenant = Annotated[str, Depends(tenant_for)]


def _size(n: Any) -> str:
    if not isinstance(n, (int, float)):
        return "–"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _count(n: Any) -> str:
    if not isinstance(n, (int, float)):
        return "–"
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.2f} {suffix}"
    return f"{n:g}"


def _when(t: datetime | None) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S UTC") if t else "–"


def _seconds(s: Any) -> str:
    if not isinstance(s, (int, float)):
        return "–"
    return f"{s:.2f} s" if s < 60 else f"{s // 60:.0f} min {s % 60:.0f} s"


@lru_cache(maxsize=1)
def _env() -> Environment:
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(default=True),
                      trim_blocks=True, lstrip_blocks=True)
    env.filters.update(size=_size, count=_count, when=_when, seconds=_seconds)
    env.globals.update(static=_static_url)
    return env


@lru_cache(maxsize=None)
def _static_file(name: str) -> tuple[bytes, str]:
    data = (HERE / "static" / name).read_bytes()
    return data, hashlib.sha256(data).hexdigest()[:12]


def _static_url(name: str) -> str:
    return f"/ui/static/{name}?v={_static_file(name)[1]}"


def _html(template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    body = _env().get_template(template).render(**context)
    headers = html_headers()
    headers["Cache-Control"] = "no-store"
    return HTMLResponse(body, status_code=status_code, headers=headers)


def _job_name(job: Job) -> str:
    return job.input.get("filename") or f"{job.input.get('format', 'model')} upload"


# -- pages (no data: shells the script fills) --------------------------------------------------

@router.get("", response_class=HTMLResponse)
async def jobs_page() -> HTMLResponse:
    return _html("page.html", page="jobs", title="Jobs", fragment="/ui/fragments/jobs", job_id=None)


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
async def job_page(job_id: str) -> HTMLResponse:
    if not _valid_id(job_id):
        raise ApiError(404, "not_found", f"no job {job_id!r}")
    return _html("page.html", page="job", title=f"Job {job_id[:8]}", fragment=f"/ui/fragments/jobs/{job_id}",
                 job_id=job_id)


@router.get("/static/{name}")
async def static(name: str) -> Response:
    if name not in STATIC:
        raise ApiError(404, "not_found", f"no file {name!r}")
    data, _ = _static_file(name)
    return Response(data, media_type=STATIC[name], headers={
        "Cache-Control": "public, max-age=31536000, immutable", "X-Content-Type-Options": "nosniff"})


# -- fragments (authenticated like the API) ---------------------------------------------------

@router.get("/fragments/jobs", response_class=HTMLResponse)
async def jobs_fragment(
    request: Request, tenant: Tenant,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> HTMLResponse:
    before = _decode_cursor(cursor) if cursor else None
    store = request.app.state.store
    jobs = await anyio.to_thread.run_sync(lambda: store.list(tenant, limit=PAGE_SIZE + 1, before_seq=before))
    page, more = jobs[:PAGE_SIZE], len(jobs) > PAGE_SIZE
    rows = [{
        "id": j.id, "name": _job_name(j), "format": j.input.get("format"), "status": j.status,
        "stage": j.progress_stage, "percent": j.progress_percent, "message": j.progress_message,
        "created": j.created_at, "duration": j.duration_s,
        "params": (j.result or {}).get("params") if j.status == "succeeded" else None,
        "error": j.error_message if j.status in ("failed", "cancelled") else None,
    } for j in page]
    return _html("jobs.html", tenant=tenant, jobs=rows, active=any(j.status in ACTIVE for j in page),
                 older=f"/ui/fragments/jobs?cursor={_encode_cursor(page[-1].seq)}" if more and page else None,
                 newer=cursor is not None)


@router.get("/fragments/jobs/{job_id}", response_class=HTMLResponse)
async def job_fragment(request: Request, job_id: str, tenant: Tenant) -> HTMLResponse:
    store, reports = request.app.state.store, request.app.state.reports
    job: Job | None = await anyio.to_thread.run_sync(
        lambda: store.get(job_id, tenant=tenant) if _valid_id(job_id) else None)
    if job is None:
        raise ApiError(404, "not_found", f"no job {job_id!r}")
    report_error = None
    try:
        report = await anyio.to_thread.run_sync(reports.get, job)
    except Exception as exc:  # too large: the page says so instead of the charts
        report, report_error = None, str(exc)
    result = job.result if job.status == "succeeded" else None
    artifacts = [{
        "name": a["name"], "size": a.get("size"), "sha256": a.get("sha256", ""),
        "filename": download_name(job.input.get("filename"), a["name"]),
        "url": f"/v1/jobs/{job.id}/artifacts/{a['name']}",
    } for a in (job.artifacts or [])] if job.status == "succeeded" else []
    sweep = (report or {}).get("sweep") or (result or {}).get("sweep")
    return _html(
        "job.html", tenant=tenant, job=job, name=_job_name(job), active=job.status in ACTIVE,
        version=job.version or 0, result=result, report=report, report_error=report_error, artifacts=artifacts,
        spec_text=json.dumps(job.spec, indent=2, sort_keys=True),
        layer_chart=charts.layer_chart(report), stage_chart=charts.stage_chart((result or {}).get("stage_seconds")),
        sweep_plot=charts.sweep_plot(sweep), sweep=sweep,
    )


@router.get("/fragments/jobs/{job_id}/presigned/{name}")
async def presigned_link(request: Request, job_id: str, name: str, tenant: Tenant) -> Response:
    """Where the browser itself may fetch an artifact, when the store presigns downloads.

    With ``PRUNEKIT_S3_PRESIGN`` the download route answers 307 to the store, which a script's
    fetch cannot follow under the dashboard's CSP (and would need the bucket's CORS); the page
    asks here instead and navigates to the URL. ``{"url": null}``: no presigning, use the route.
    """
    store, objects = request.app.state.store, request.app.state.objects
    job: Job | None = await anyio.to_thread.run_sync(
        lambda: store.get(job_id, tenant=tenant) if _valid_id(job_id) else None)
    meta = next((a for a in (job.artifacts or []) if a["name"] == name), None) if job else None
    if job is None or job.status != "succeeded" or meta is None:
        raise ApiError(404, "not_found", f"job {job_id} has no artifact {name!r}")
    key = meta.get("key") or legacy_artifact_key(job.id, name)
    url = await anyio.to_thread.run_sync(lambda: objects.presigned_get(
        key, expires=request.app.state.settings.s3_presign_expiry,
        disposition=content_disposition(download_name(job.input.get("filename"), name)),
        content_type="application/json" if name.endswith(".json") else "application/octet-stream"))
    return Response(json.dumps({"url": url}), media_type="application/json", headers={"Cache-Control": "no-store"})
