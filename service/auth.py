"""Who is calling: ``Authorization: Bearer <key>`` mapped to a tenant.

Keys come from ``PRUNEKIT_API_KEYS="key1=tenantA,key2=tenantB"``.  Every job belongs to the
tenant that created it and is invisible (404, not 403) to every other tenant, so ids cannot be
probed.  With no keys configured the service is meant for one person on one machine: requests
from loopback addresses are served as tenant ``local``, anything else gets 401.
"""

from __future__ import annotations

import ipaddress

from fastapi import Request

from .errors import ApiError
from .settings import Settings, key_digest

LOCAL_TENANT = "local"
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="prunekit"'}


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return host == "localhost"


async def tenant_for(request: Request) -> str:
    """FastAPI dependency returning the caller's tenant, or raising 401.

    ``async`` on purpose: it does no I/O, and a sync dependency would cost every request a hop
    through the thread pool.
    """
    settings: Settings = request.app.state.settings
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if not settings.tenants_by_key:
        host = request.client.host if request.client else None
        if is_loopback(host):
            return LOCAL_TENANT
        raise ApiError(
            401,
            "unauthorized",
            "this server has no API keys configured and only accepts requests from the local machine; "
            "set PRUNEKIT_API_KEYS to serve other clients",
            headers=_CHALLENGE,
        )
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "unauthorized", "missing API key: send 'Authorization: Bearer <key>'", headers=_CHALLENGE)
    tenant = _tenant_of(settings, token)
    if tenant is None:
        raise ApiError(401, "unauthorized", "invalid API key", headers=_CHALLENGE)
    return tenant


def _tenant_of(settings: Settings, token: str) -> str | None:
    return settings.tenants_by_digest.get(key_digest(token))


def has_valid_key(request: Request) -> bool:
    """Whether the request carries one of the configured API keys (never true with none configured).

    For the unauthenticated operations endpoints, which show details (paths, errors) only to
    key holders: with no keys configured nobody has proven anything, loopback or not (a reverse
    proxy on the same host makes every client look local).
    """
    settings: Settings = request.app.state.settings
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return (bool(settings.tenants_by_key) and scheme.lower() == "bearer" and bool(token.strip())
            and _tenant_of(settings, token) is not None)
