"""``prunekit serve``: the subcommand the HTTP service adds to the ``prunekit`` command.

The engine package never imports the apps built on it, so the ``prunekit`` command finds this
subcommand through the ``prunekit.commands`` entry-point group (see ``pyproject.toml``):
:func:`register` adds the subparser and its handler.  FastAPI and uvicorn are imported only when
the command runs, and a missing service extra gives one line instead of a traceback.
"""

from __future__ import annotations

import argparse
from typing import Any

from prunekit.cli import EXIT_ERROR, EXIT_OK, needs_service_extra
from worker.cli import load_settings, missing_module

SERVE_HELP = "run the HTTP API (embedded worker unless PRUNEKIT_BROKER_URL is set)"

# Imported by `prunekit serve` before anything runs: all come with the service extra.
SERVE_MODULES = ("fastapi", "uvicorn", "python_multipart", "sqlalchemy", "prometheus_client", "jinja2")


def register(subparsers: Any) -> None:
    """Add ``serve`` to the ``prunekit`` command's ``subparsers`` (the entry point's target)."""
    p = subparsers.add_parser(
        "serve", help=SERVE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run the PruneKit HTTP API.\n\n"
        "Without PRUNEKIT_BROKER_URL the server also runs the jobs itself (embedded mode: SQLite\n"
        "and a local folder under PRUNEKIT_DATA_DIR, no Redis needed). With a broker it only\n"
        "queues jobs, and `prunekit worker` processes run them. Uploads and artifacts live under\n"
        "PRUNEKIT_DATA_DIR, or in an S3-compatible bucket with PRUNEKIT_STORAGE_URL=s3://bucket/prefix.\n\n"
        "Without PRUNEKIT_API_KEYS only clients on this machine are served. See docs/service.md.",
    )
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default: 127.0.0.1; "
                   "use 0.0.0.0 in a container)")
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--workers", type=int, default=1,
                   help="API processes (needs a broker; embedded mode runs one)")
    p.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    if missing_module(SERVE_MODULES):
        return needs_service_extra("serve")
    from .settings import Settings

    if load_settings(Settings, "serve") is None:
        return EXIT_ERROR
    from .serve import serve

    serve(args.host, args.port, log_level=args.log_level, workers=args.workers)
    return EXIT_OK
