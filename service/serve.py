"""Run the API with uvicorn (what ``prunekit serve`` and ``python -m service`` do)."""

from __future__ import annotations

import logging

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def serve(host: str = "127.0.0.1", port: int = 8000, *, log_level: str = "info", workers: int = 1) -> None:
    import uvicorn

    from .settings import Settings

    settings = Settings()  # validate the configuration before anything starts
    if workers > 1 and settings.embedded:
        raise SystemExit(
            "--workers > 1 needs PRUNEKIT_BROKER_URL: in embedded mode one process supervises the jobs"
        )
    logging.basicConfig(level=log_level.upper(), format=LOG_FORMAT)
    uvicorn.run(
        "service.app:create_app",
        factory=True,
        host=host,
        port=port,
        log_level=log_level.lower(),
        workers=workers,
        proxy_headers=True,
        timeout_graceful_shutdown=15,
    )
