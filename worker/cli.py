"""``prunekit worker``: the subcommand the worker app adds to the ``prunekit`` command.

The engine package never imports the apps built on it, so the ``prunekit`` command finds this
subcommand through the ``prunekit.commands`` entry-point group (see ``pyproject.toml``):
:func:`register` adds the subparser and its handler.  Celery is imported only when the command
runs, and a missing service extra gives one line instead of a traceback.

It also holds what ``prunekit serve`` (:mod:`service.cli`) shares with it, since the service
imports the worker and never the other way round: naming a bad setting in one line, and telling
a user without the service extra what to install.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Any

from prunekit.cli import EXIT_ERROR, EXIT_OK, needs_service_extra

WORKER_HELP = "run a Celery worker that executes queued jobs (needs PRUNEKIT_BROKER_URL)"

# Imported by `prunekit worker` before anything runs: all come with the service extra.
WORKER_MODULES = ("celery", "redis", "sqlalchemy")


def missing_module(modules: tuple[str, ...]) -> str | None:
    """The first of ``modules`` that cannot be imported (the service extra is not installed),
    or ``None``.  Only a missing module counts: any other import error is a bug and propagates."""
    for name in modules:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError:
            return name
    return None


def settings_problem(exc: Exception, prefix: str = "PRUNEKIT_") -> str:
    """One line naming every bad setting by its environment variable, e.g.
    ``PRUNEKIT_API_KEYS: keys must be at least 8 characters``.  Values are never repeated: they
    may be secrets (keys, passwords in URLs)."""
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        parts = []
        for e in exc.errors():
            loc = e.get("loc") or ("?",)
            msg = str(e.get("msg", "invalid")).removeprefix("Value error, ")
            parts.append(f"{prefix}{str(loc[0]).upper()}: {msg}")
        return "; ".join(dict.fromkeys(parts))
    import re

    # pydantic-settings' SettingsError: 'error parsing value for field "x" from source "..."'
    m = re.search(r'field "([^"]+)"', str(exc))
    if m:
        return f"{prefix}{m.group(1).upper()}: the value cannot be parsed"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def load_settings(cls: Any, command: str) -> Any:
    """``cls()`` from the environment, or ``None`` after one line on stderr saying which setting
    is wrong (instead of pydantic's traceback)."""
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    try:
        return cls()
    except (ValidationError, SettingsError) as exc:
        print(f"prunekit {command}: invalid configuration: {settings_problem(exc)}", file=sys.stderr)
        return None


def register(subparsers: Any) -> None:
    """Add ``worker`` to the ``prunekit`` command's ``subparsers`` (the entry point's target)."""
    p = subparsers.add_parser(
        "worker", help=WORKER_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run a Celery worker for PruneKit jobs.\n\n"
        "It must use the same PRUNEKIT_DATABASE_URL and artifact store as the API: the same\n"
        "PRUNEKIT_STORAGE_URL (s3://bucket/prefix: nothing else shared; its PRUNEKIT_DATA_DIR\n"
        "only holds scratch space), or without it the same PRUNEKIT_DATA_DIR (a shared volume).\n"
        "Start as many as you like; each runs --concurrency jobs at a time.",
    )
    p.add_argument("--concurrency", type=int, default=1, help="jobs run at once (default: 1)")
    p.add_argument("--loglevel", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--hostname", default=None, help="Celery node name (default: prunekit@<host>)")
    p.set_defaults(func=cmd_worker)


def cmd_worker(args: argparse.Namespace) -> int:
    if missing_module(WORKER_MODULES):
        return needs_service_extra("worker")
    from .settings import WorkerSettings

    settings = load_settings(WorkerSettings, "worker")
    if settings is None:
        return EXIT_ERROR
    if settings.embedded:
        print("prunekit worker needs PRUNEKIT_BROKER_URL (e.g. redis://localhost:6379/0); "
              "without a broker, `prunekit serve` runs jobs itself.", file=sys.stderr)
        return EXIT_ERROR
    os.environ["PRUNEKIT_WORKER_CONCURRENCY"] = str(args.concurrency)
    from .celery_app import app

    argv = ["worker", f"--concurrency={args.concurrency}", f"--loglevel={args.loglevel.upper()}",
            "-Q", settings.queue_name]
    if args.hostname:
        argv.append(f"--hostname={args.hostname}")
    app.worker_main(argv=argv)
    return EXIT_OK
