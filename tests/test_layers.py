"""The engine package sits at the bottom: ``prunekit`` imports neither ``service`` nor ``worker``.

The apps' subcommands (``serve``, ``worker``) join the ``prunekit`` command through the
``prunekit.commands`` entry-point group.  These tests hold the dependency direction in place and
check what a user sees when the apps cannot be loaded: without the service extra, or without the
entry points, ``prunekit serve`` says in one line what to install instead of a traceback.

The import checks run in a fresh interpreter with a ``sys.meta_path`` blocker, so a module that
reached up into an app (at import time, however indirectly) is caught even if the app is installed.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
APPS = ("service", "worker")
HINT = "needs the service extra: pip install -e '.[service]' in the PruneKit checkout"

# Run in a subprocess: block the top-level packages named in argv[1], then run argv[2] (code).
_BLOCKER = r"""
import importlib.abc, sys
BLOCKED = set(sys.argv[1].split(","))
ASKED = []
already = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
assert not already, f"imported before the blocker: {already}"

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            ASKED.append(name)
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)", name=name)
        return None

sys.meta_path.insert(0, Block())
exec(compile(sys.argv[2], "<test>", "exec"))
"""

_IMPORT_ALL = r"""
import importlib, pkgutil
import prunekit
names = sorted(m.name for m in pkgutil.walk_packages(prunekit.__path__, "prunekit."))
for name in names:
    importlib.import_module(name)
leaked = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
assert not ASKED and not leaked, f"asked for {ASKED}, imported {leaked}"
print(len(names), "modules")
"""

_RUN_CLI = r"""
from prunekit.cli import main
sys.exit(main(sys.argv[3:]))
"""


def _python(blocked: tuple[str, ...], code: str, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRUNEKIT_")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return subprocess.run([sys.executable, "-c", _BLOCKER, ",".join(blocked), code, *args],
                          capture_output=True, text=True, timeout=300, cwd=REPO, env=env)


def _one_line(out: subprocess.CompletedProcess) -> str:
    assert out.returncode not in (0, None), out
    assert "Traceback" not in out.stderr, out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, out.stderr
    return lines[0]


def test_no_prunekit_file_imports_an_app() -> None:
    """Read every file: no ``import service``/``worker`` statement, even inside a function."""
    offenders = []
    for path in sorted((REPO / "prunekit").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                roots = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                roots = [node.module.split(".")[0]]
            else:
                continue
            offenders += [f"{path.relative_to(REPO)}:{node.lineno}" for root in roots if root in APPS]
    assert not offenders, offenders


def test_every_prunekit_module_imports_with_the_apps_unimportable() -> None:
    out = _python(APPS, _IMPORT_ALL)
    assert out.returncode == 0, out.stderr[-4000:]
    assert "modules" in out.stdout


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_without_the_service_extra_the_command_says_what_to_install(command: str) -> None:
    args = [command, "--port", "1"] if command == "serve" else [command]
    out = _python(("fastapi", "uvicorn", "celery"), _RUN_CLI, *args)
    assert _one_line(out) == f"prunekit {command} {HINT}"


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_without_the_apps_the_command_says_what_to_install(command: str) -> None:
    """The entry points are there but their packages cannot be imported: a stand-in command."""
    out = _python(APPS, _RUN_CLI, command, "--host", "0.0.0.0")
    assert _one_line(out) == f"prunekit {command} {HINT}"


def test_help_lists_serve_and_worker_with_their_own_text() -> None:
    out = _python((), _RUN_CLI, "--help")
    assert out.returncode == 0, out.stderr
    assert "run the HTTP API (embedded worker" in out.stdout
    assert "run a Celery worker that executes queued jobs" in out.stdout
    assert "needs the service extra" not in out.stdout


def test_help_without_the_apps_still_lists_serve_and_worker() -> None:
    out = _python(APPS, _RUN_CLI, "--help")
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr and not out.stderr.strip(), out.stderr
    for line in ("run the HTTP API (needs the service extra)",
                 "run a Celery worker that executes queued jobs (needs the service extra)"):
        assert line in " ".join(out.stdout.split()), out.stdout


def test_without_the_entry_points(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A ``prunekit`` installed without the apps' entry points: the same stand-ins."""
    from prunekit import cli

    monkeypatch.setattr(cli, "_command_entry_points", lambda: [])
    for command in ("serve", "worker"):
        assert cli.main([command, "--port", "8000"]) != 0
        err = capsys.readouterr().err
        assert err.strip() == f"prunekit {command} {HINT}", err
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--help"])
    assert exit_.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "serve run the HTTP API (needs the service extra)" in out, out
    # Other arguments are still checked where the command is real.
    with pytest.raises(SystemExit) as exit_:
        cli.main(["architectures", "--bogus"])
    assert exit_.value.code == 2


def test_the_entry_points_are_installed() -> None:
    from prunekit.cli import _command_entry_points

    assert {ep.name: ep.value for ep in _command_entry_points()} == {
        "serve": "service.cli:register", "worker": "worker.cli:register"}
