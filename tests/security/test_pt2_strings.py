"""Every string of a ``.pt2`` archive that torch would parse is checked before torch sees it.

Each payload is an honest ``torch.export.save`` archive with one string replaced; each would run
a shell command (creating ``marker``) or call outside the tensor world if torch were handed it.
The controls show the payloads are live: torch itself, given the same file, runs them.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import prunekit
from prunekit.errors import UnsafeModelFile
from prunekit.io.loading import load_model

from crafted import SPEC, edit_model_json, honest_pt2, pt2_payloads


@pytest.fixture(scope="module")
def honest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return honest_pt2(tmp_path_factory.mktemp("pt2") / "small.pt2")


PAYLOADS = sorted(pt2_payloads(Path("/nonexistent")))


@pytest.mark.parametrize("payload", PAYLOADS)
def test_crafted_string_is_refused_before_torch_parses_it(payload: str, honest: Path, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    evil = edit_model_json(honest, tmp_path / f"{payload}.pt2", pt2_payloads(marker)[payload])
    with pytest.raises(UnsafeModelFile) as err:
        load_model(evil)
    assert "export archive" in str(err.value) and "models/model.json" in str(err.value)
    assert not marker.exists()
    # and the engine's entry point says the same, with the stable code
    with pytest.raises(UnsafeModelFile) as err2:
        prunekit.prune(evil, SPEC)
    assert err2.value.code == "unsafe_model_file"
    assert not marker.exists()


def test_the_honest_archive_still_loads_and_prunes(honest: Path) -> None:
    res = prunekit.prune(honest, SPEC)
    assert res.report.check["passed"] and res.report.params_after < res.report.params_before
    assert res.report.check["upload_max_rel"] is not None


@pytest.mark.parametrize("payload", ["sym_size", "guards", "input_name"])
def test_control_torch_alone_runs_the_payload(payload: str, honest: Path, tmp_path: Path) -> None:
    """Without PruneKit's audit the payload runs: the attack is real, and the refusal above is
    what stops it (torch.export.load parses expr_str; ExportedProgram.module() execs guards and
    the source fx generates from the values' names)."""
    marker = tmp_path / "marker"
    evil = edit_model_json(honest, tmp_path / "evil.pt2", pt2_payloads(marker)[payload])
    code = (f"import torch\ntry:\n    torch.export.load({str(evil)!r}).module()(torch.randn(2, 3, 16, 16))\n"
            "except Exception:\n    pass\n")
    subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=300)
    assert marker.exists()
