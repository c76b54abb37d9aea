"""The API documentation pages, served entirely from this server (they work offline).

FastAPI's own ``/docs`` and ``/redoc`` load Swagger UI and ReDoc from a CDN, so behind a firewall
or on a laptop without network they are blank.  Here the same pages point at copies of the
assets that the ``fastapi-offline`` package ships (Swagger UI 5, ReDoc 2; a dependency of the
service extra, used for its files only), served under ``/docs/assets/``, with a
Content-Security-Policy that admits nothing else.

The OpenAPI document is also corrected in one place: FastAPI describes its own 422 shape
(``HTTPValidationError``) for every route with parameters, while this API answers every error,
422 included, as ``ErrorResponse``.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response

from .csp import docs_csp, html_headers
from .errors import ApiError

router = APIRouter(include_in_schema=False)

ASSETS = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "redoc.standalone.js": "text/javascript",
    "favicon.png": "image/png",
}


@lru_cache(maxsize=1)
def _asset_dir() -> Path | None:
    try:
        return Path(str(resources.files("fastapi_offline") / "static"))
    except ModuleNotFoundError:
        return None


@lru_cache(maxsize=None)
def _asset(name: str) -> tuple[bytes, str]:
    folder = _asset_dir()
    if folder is None or name not in ASSETS:
        raise FileNotFoundError(name)
    data = (folder / name).read_bytes()
    return data, hashlib.sha256(data).hexdigest()[:12]


def _url(request: Request, name: str) -> str:
    """A versioned URL, so the long cache lifetime below never serves a stale copy."""
    _, digest = _asset(name)
    return f"{request.scope.get('root_path', '')}/docs/assets/{name}?v={digest}"


def _page(html: HTMLResponse) -> HTMLResponse:
    body = bytes(html.body)
    return HTMLResponse(body, headers=html_headers(docs_csp(body)))


def _urls(request: Request, *names: str) -> list[str]:
    try:
        return [_url(request, n) for n in names]
    except FileNotFoundError:
        raise ApiError(503, "docs_unavailable", "the API docs' assets are not installed (pip install "
                       "fastapi-offline, part of the service extra); the OpenAPI document is at "
                       "/openapi.json") from None


def _openapi_url(request: Request) -> str:
    return f"{request.scope.get('root_path', '')}{request.app.openapi_url}"


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    js, css, icon = _urls(request, "swagger-ui-bundle.js", "swagger-ui.css", "favicon.png")
    return _page(get_swagger_ui_html(
        openapi_url=_openapi_url(request), title=f"{request.app.title} - API docs",
        swagger_js_url=js, swagger_css_url=css, swagger_favicon_url=icon,
        swagger_ui_parameters={"tryItOutEnabled": False},
    ))


@router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    js, icon = _urls(request, "redoc.standalone.js", "favicon.png")
    return _page(get_redoc_html(
        openapi_url=_openapi_url(request), title=f"{request.app.title} - API reference",
        redoc_js_url=js, redoc_favicon_url=icon, with_google_fonts=False,
    ))


@router.get("/docs/assets/{name}")
async def asset(name: str) -> Response:
    try:
        data, _ = _asset(name)
    except FileNotFoundError:
        raise ApiError(404, "not_found", f"no docs asset {name!r}") from None
    return Response(data, media_type=ASSETS[name], headers={
        "Cache-Control": "public, max-age=31536000, immutable", "X-Content-Type-Options": "nosniff"})


def document_fixups(app: FastAPI) -> None:
    """Make the OpenAPI document say what 422s really look like (see the module docstring), and
    that ``/v1`` takes a bearer key (the auth dependency reads the header itself, so FastAPI
    cannot know; with the scheme declared, Swagger UI's Authorize button sends it)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        for path in schema.get("paths", {}).values():
            for op in path.values():
                resp = op.get("responses", {}).get("422")
                if resp and "HTTPValidationError" in str(resp):
                    op["responses"]["422"] = {
                        "description": "Invalid request (a parameter or field named in `details`).",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}},
                    }
        for name in ("HTTPValidationError", "ValidationError"):
            if name not in str(schema.get("paths")):
                schema.get("components", {}).get("schemas", {}).pop(name, None)
        schema.setdefault("components", {})["securitySchemes"] = {"apiKey": {
            "type": "http", "scheme": "bearer",
            "description": "A key of PRUNEKIT_API_KEYS. Without configured keys, loopback clients need none."}}
        for path, ops in schema.get("paths", {}).items():
            if path.startswith("/v1/"):
                for op in ops.values():
                    op["security"] = [{"apiKey": []}]
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
