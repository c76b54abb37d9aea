"""Security headers of every HTML page the API serves (the dashboard and the API docs).

The pages show what users uploaded (file names, specs, error texts), so on top of escaping
everything in the templates, a Content-Security-Policy makes sure that even text that slipped
through could never run: scripts only from this server's own files (plus, for the docs pages,
the exact hash of their one inline start-up script), nothing fetched from anywhere else, no
framing, no plugins, no form posting elsewhere.
"""

from __future__ import annotations

import base64
import hashlib
import re

_INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.S)

# The dashboard: no inline script or style at all; SVG charts are drawn with attributes.
DASHBOARD_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; font-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)


def html_headers(csp: str = DASHBOARD_CSP) -> dict[str, str]:
    return {
        "Content-Security-Policy": csp,
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "no-referrer",
        "Cross-Origin-Opener-Policy": "same-origin",
    }


def docs_csp(html: bytes) -> str:
    """For Swagger UI / ReDoc pages: their inline start-up scripts by hash, their inline styles
    (both libraries set style attributes), data: images (Swagger's icons) and blob: workers."""
    hashes = " ".join(
        f"'sha256-{base64.b64encode(hashlib.sha256(m.group(1)).digest()).decode()}'"
        for m in _INLINE_SCRIPT.finditer(html)
    )
    return (
        f"default-src 'none'; script-src 'self' {hashes}; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; font-src 'self' data:; worker-src 'self' blob:; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )
