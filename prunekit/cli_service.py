"""Client subcommands of the ``prunekit`` CLI: submit, status, wait, download, jobs, cancel.

They talk to a PruneKit server over HTTP with :mod:`prunekit.client` and nothing else, so they
live in the engine package.  The server-side commands (``serve``, ``worker``) belong to the apps
(:mod:`service.cli`, :mod:`worker.cli`) and join the command through the ``prunekit.commands``
entry-point group: this package never imports ``service`` or ``worker``.

``prunekit.cli`` calls :func:`register` with its subparsers and dispatches with
``args.func(args)``.

Exit codes: 0 success, 1 the job failed or was cancelled, 2 usage or service error.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from .artifacts import REPORT_NAME
from .cli import EXIT_ERROR, EXIT_JOB_FAILED, EXIT_OK
from .job_status import ACTIVE, CANCELLED, FAILED, QUEUED, STATUSES, SUCCEEDED

DEFAULT_SERVER = "http://127.0.0.1:8000"
ID_HELP = "a job id, or a unique prefix of one (as `prunekit jobs` lists them)"
_HEX = frozenset("0123456789abcdef")


def _client_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--server", default=None, metavar="URL",
                   help=f"PruneKit server (default: $PRUNEKIT_SERVER or {DEFAULT_SERVER})")
    p.add_argument("--api-key", default=None, metavar="KEY",
                   help="API key sent as 'Authorization: Bearer KEY' (default: $PRUNEKIT_API_KEY)")
    p.add_argument("--json", action="store_true", help="print the raw JSON instead of a summary")


def register(subparsers: Any) -> None:
    """Add the client subcommands to ``subparsers`` (from ``parser.add_subparsers()``)."""
    fmt = argparse.RawDescriptionHelpFormatter

    p = subparsers.add_parser(
        "submit", help="upload a model and a spec to a server as a new job", formatter_class=fmt,
        description="Submit a pruning job.\n\nexample:\n"
        "  prunekit submit resnet.pt --spec '{\"ratio\": 0.3, \"inputs\": [{\"shape\": [1,3,224,224]}]}' "
        "--wait -o resnet-pruned.pt\n"
        "  prunekit submit my-llama/ --spec '{\"ratio\": 0.3}' --wait -o my-llama-pruned/   # a checkpoint folder",
    )
    p.add_argument("model", type=Path, help="model file: TorchScript, .pt2, a state-dict, or a checkpoint folder "
                   "(config.json + model.safetensors; sent as a zip) or a zip/tar of one")
    p.add_argument("--spec", required=True, help="the spec: a JSON file or inline JSON text")
    p.add_argument("--inputs", type=Path, default=None, help="example inputs (.safetensors)")
    p.add_argument("--calibration", type=Path, default=None,
                   help="calibration data (.safetensors: 'inputs' and optional 'targets')")
    p.add_argument("--wait", action="store_true", help="wait for the job, showing progress")
    p.add_argument("-o", "--output", type=Path, default=None,
                   help="with --wait: download the pruned model here (a file, or a folder for all artifacts)")
    _client_args(p)
    p.set_defaults(func=cmd_submit)

    p = subparsers.add_parser("status", help="show a job", description="Show a job's status, progress and result.")
    p.add_argument("job_id", metavar="ID", help=ID_HELP)
    _client_args(p)
    p.set_defaults(func=cmd_status)

    p = subparsers.add_parser("wait", help="wait for a job with a progress bar",
                              description="Follow a job until it finishes; exit 0 if it succeeded, 1 otherwise.")
    p.add_argument("job_id", metavar="ID", help=ID_HELP)
    p.add_argument("--timeout", type=float, default=None, help="give up after this many seconds")
    _client_args(p)
    p.set_defaults(func=cmd_wait)

    p = subparsers.add_parser(
        "download", help="download a finished job's artifacts",
        description="Download the pruned model (default), one named artifact (--name), or with -o\n"
        "pointing at a folder, every artifact (model, manifest, report). SHA-256 is verified.",
        formatter_class=fmt,
    )
    p.add_argument("job_id", metavar="ID", help=ID_HELP)
    p.add_argument("-o", "--output", type=Path, required=True, help="a file, or a folder (all artifacts)")
    p.add_argument("--name", default=None, help=f"one artifact by name (e.g. {REPORT_NAME})")
    _client_args(p)
    p.set_defaults(func=cmd_download)

    p = subparsers.add_parser("jobs", help="list your jobs",
                              description="List your jobs, newest first, with their full ids (other commands also "
                              "take a unique prefix of one).")
    p.add_argument("--status", choices=list(STATUSES))
    p.add_argument("--limit", type=int, default=20)
    _client_args(p)
    p.set_defaults(func=cmd_jobs)

    p = subparsers.add_parser("cancel", help="cancel a job (or delete a finished one)",
                              description="Cancel a queued or running job; a finished job is deleted with its files.")
    p.add_argument("job_id", metavar="ID", help=ID_HELP)
    _client_args(p)
    p.set_defaults(func=cmd_cancel)


# -- client commands -------------------------------------------------------------------------


def _client(args: argparse.Namespace) -> Any:
    from .client import Client

    server = args.server or os.environ.get("PRUNEKIT_SERVER") or DEFAULT_SERVER
    key = args.api_key or os.environ.get("PRUNEKIT_API_KEY") or None
    return Client(server, api_key=key)


def resolve_id(client: Any, job_id: str) -> str:
    """A full job id as given; a shorter hex string names the one job of the caller's whose id
    starts with it (ServiceError ``not_found`` for none, ``ambiguous_id`` for several)."""
    from .client import ServiceError

    ident = job_id.strip().lower()
    if not ident or not set(ident) <= _HEX or len(ident) > 32:
        raise ServiceError(0, "invalid_id", f"{job_id!r} is not a job id or a prefix of one (hex digits)")
    if len(ident) == 32:
        return ident
    matches = [j["id"] for j in client.iter_jobs() if j["id"].startswith(ident)]
    if not matches:
        raise ServiceError(404, "not_found", f"none of your jobs has an id starting with {ident!r}")
    if len(matches) > 1:
        shown = ", ".join(matches[:5]) + (", ..." if len(matches) > 5 else "")
        raise ServiceError(0, "ambiguous_id", f"{ident!r} is the start of {len(matches)} job ids ({shown}); "
                           "give more characters")
    return matches[0]


def _console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


def _fail(err: Exception) -> int:
    from .client import ServiceError

    console = _console()
    if isinstance(err, ServiceError):
        console.print(f"[red]error:[/red] {err.message} [dim]({err.code})[/dim]")
        for d in err.details:
            if isinstance(d, dict) and "path" in d:
                console.print(f"  [bold]{d['path']}[/bold]: {d.get('message', '')}")
    else:
        console.print(f"[red]error:[/red] {err}")
    return EXIT_ERROR


def _summary(job: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    colors = {SUCCEEDED: "green", FAILED: "red", CANCELLED: "yellow"}
    status = job["status"]
    console.print(f"job [bold]{job['id']}[/bold]: [{colors.get(status, 'cyan')}]{status}[/]")
    prog = job.get("progress") or {}
    if status in ACTIVE:
        console.print(f"  {prog.get('stage')} {prog.get('percent', 0):.0f}% {prog.get('message') or ''}")
    inp = job["input"]
    console.print(f"  input: {inp.get('filename')} ({inp['format']}, {inp['size']} bytes)")
    if job.get("error"):
        console.print(f"  [red]{job['error']['code']}[/red]: {job['error']['message']}")
    res = job.get("result")
    if res:
        table = Table(show_header=True, header_style="bold")
        for col in ("", "before", "after", "reduction"):
            table.add_column(col, justify="right" if col else "left")
        for key in ("params", "macs", "file_size"):
            r = res[key]
            red = f"{r['reduction_percent']:.1f}%" if r.get("reduction_percent") is not None else "-"
            table.add_row(key, f"{r.get('before')}", f"{r.get('after')}", red)
        console.print(table)
        chk = res.get("check") or {}
        console.print(f"  check: max_abs={chk.get('max_abs')} max_rel={chk.get('max_rel')} passed={chk.get('passed')}")
        for w in res.get("warnings") or []:
            console.print(f"  [yellow]warning:[/yellow] {w}")
        console.print(f"  artifacts: {', '.join(res.get('artifacts') or [])}")


def _follow(client: Any, job_id: str, timeout: float | None) -> dict:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("[bold]{task.fields[stage]:<9}"), BarColumn(), TextColumn("{task.percentage:>5.1f}%"),
                  TextColumn("{task.fields[message]}"), TimeElapsedColumn(), console=_console()) as bar:
        task = bar.add_task("job", total=100, stage=QUEUED, message="")

        def update(job: dict) -> None:
            p = job.get("progress") or {}
            bar.update(task, completed=p.get("percent") or 0, stage=p.get("stage") or job["status"],
                       message=(p.get("message") or "")[:60])

        return client.wait(job_id, timeout=timeout, on_progress=update)


def _checkpoint_output(client: Any, job_id: str) -> bool:
    """A checkpoint is a folder (model.safetensors, config.json, manifest.json): all of it goes to ``-o``."""
    from .artifacts import MODEL_FORMATS

    return any(MODEL_FORMATS.get(a["name"]) == "checkpoint" for a in client.artifacts(job_id))


def _download(client: Any, job_id: str, output: Path, name: str | None) -> list[Path]:
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  console=_console()) as bar:
        tasks: dict[str, Any] = {}

        def cb(n: str, done: int, total: int) -> None:
            if n not in tasks:
                tasks[n] = bar.add_task(n, total=total)
            bar.update(tasks[n], completed=done)

        if name is None and (output.is_dir() or str(output).endswith(os.sep) or _checkpoint_output(client, job_id)):
            return client.download_all(job_id, output, on_progress=cb)
        return [client.download(job_id, name, output, on_progress=lambda d, t: cb(name or "model", d, t))]


def _finish(job: dict, args: argparse.Namespace) -> int:
    if args.json:
        print(json.dumps(job, indent=2))
    else:
        _summary(job)
    return EXIT_OK if job["status"] in (SUCCEEDED, *ACTIVE) else EXIT_JOB_FAILED


def cmd_submit(args: argparse.Namespace) -> int:
    from .client import ServiceError

    if not (args.model.is_file() or (args.model / "config.json").is_file()):
        return _fail(FileNotFoundError(f"no such model file or checkpoint folder: {args.model}"))
    if args.output and not args.wait:
        return _fail(ValueError("-o/--output needs --wait"))
    try:
        with _client(args) as client:
            job = client.submit(args.model, args.spec, inputs=args.inputs, calibration=args.calibration)
            if not args.json:
                _console().print(f"submitted job [bold]{job['id']}[/bold]")
            if args.wait:
                job = client.wait(job["id"]) if args.json else _follow(client, job["id"], None)
                if job["status"] == SUCCEEDED and args.output:
                    for path in _download(client, job["id"], args.output, None):
                        _console().print(f"saved {path}")
            return _finish(job, args)
    except (ServiceError, OSError, ValueError) as exc:
        return _fail(exc)


def cmd_status(args: argparse.Namespace) -> int:
    from .client import ServiceError

    try:
        with _client(args) as client:
            return _finish(client.get(resolve_id(client, args.job_id)), args)
    except ServiceError as exc:
        return _fail(exc)


def cmd_wait(args: argparse.Namespace) -> int:
    from .client import ServiceError

    try:
        with _client(args) as client:
            job_id = resolve_id(client, args.job_id)
            job = client.wait(job_id, timeout=args.timeout) if args.json else _follow(client, job_id, args.timeout)
            _finish(job, args)
            return EXIT_OK if job["status"] == SUCCEEDED else EXIT_JOB_FAILED
    except (ServiceError, TimeoutError) as exc:
        return _fail(exc)


def cmd_download(args: argparse.Namespace) -> int:
    from .client import ServiceError

    try:
        with _client(args) as client:
            paths = _download(client, resolve_id(client, args.job_id), args.output, args.name)
        for path in paths:
            print(path)
        return EXIT_OK
    except (ServiceError, OSError) as exc:
        return _fail(exc)


def cmd_jobs(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Column, Table

    from .client import ServiceError

    try:
        with _client(args) as client:
            page = client.list(status=args.status, limit=args.limit)
    except ServiceError as exc:
        return _fail(exc)
    if args.json:
        print(json.dumps(page, indent=2))
        return EXIT_OK
    # Ids in full, whatever the terminal's width (they are pasted into the other commands).
    table = Table(Column("id", no_wrap=True, min_width=32), "status", "stage", "input", "created")
    for j in page["jobs"]:
        table.add_row(j["id"], j["status"], f"{j['progress'].get('stage')} {j['progress'].get('percent', 0):.0f}%",
                      j["input"].get("filename") or "", j["created_at"])
    Console().print(table)
    return EXIT_OK


def cmd_cancel(args: argparse.Namespace) -> int:
    from .client import ServiceError

    try:
        with _client(args) as client:
            job_id = resolve_id(client, args.job_id)
            job = client.delete(job_id)
    except ServiceError as exc:
        return _fail(exc)
    print(f"job {job_id} " + ("cancelled" if job else "deleted"))
    return EXIT_OK
