"""Run the API with uvicorn (what ``prunekit serve`` and ``python -m service`` do)."""

from __future__ import annotations

import logging

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def serve(host: str = "127.0.0.1", port: int = 8000, *, log_level: str = "info", workers: int = 1) -> None:
    import uvicorn
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    from worker.cli import settings_problem

    from .settings import Settings

    try:
        settings = Settings()  # validate the configuration before anything starts
    except (ValidationError, SettingsError) as exc:  # one line, not pydantic's traceback
        raise SystemExit(f"invalid configuration: {settings_problem(exc)}") from None
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
