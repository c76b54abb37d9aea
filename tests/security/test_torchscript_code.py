"""TorchScript sources that reach outside the tensor world are refused before ``torch.jit.load``.

``torch.jit.load`` compiles ``code/__torch__/*.py`` with TorchScript's compiler (no Python), but
TorchScript can call ``aten::from_file`` (map any server file into a tensor, writably) and
``aten::save`` (write one), and a class's ``__setstate__`` runs during the load itself.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

import prunekit
from prunekit.errors import UnsafeModelFile
from prunekit.io.loading import load_model
from prunekit.io.safety.ts_audit import audit_torchscript_module

from crafted import SPEC, edit_setstate, edit_ts_source, honest_stateful_ts, honest_ts, setstate_payloads, ts_payloads


@pytest.fixture(scope="module")
def honest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return honest_ts(tmp_path_factory.mktemp("ts") / "small.pt")


@pytest.mark.parametrize("payload", sorted(ts_payloads(Path("/nonexistent"))))
def test_crafted_source_is_refused_before_it_is_compiled(payload: str, honest: Path, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    evil = edit_ts_source(honest, tmp_path / f"{payload}.pt", ts_payloads(marker)[payload])
    with pytest.raises(UnsafeModelFile) as err:
        load_model(evil)
    assert "code/__torch__/crafted.py" in str(err.value) and "not loaded" in str(err.value)
    assert not marker.exists()


def test_control_torch_compiles_and_runs_a_file_op(honest: Path, tmp_path: Path) -> None:
    """The payloads are live: torch loads the crafted archive and its forward writes a file."""
    marker = tmp_path / "marker"
    evil = edit_ts_source(honest, tmp_path / "evil.pt", ts_payloads(marker)["forward_writes_a_file"])
    code = (f"import torch\nm = torch.jit.load({str(evil)!r})\n"
            "m(torch.randn(2, 3, 16, 16))\n")
    subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=300)
    assert marker.exists()


def test_graph_audit_refuses_a_file_op_the_text_scan_did_not_see(tmp_path: Path) -> None:
    """Second line: after loading, every compiled method is checked op by op."""
    class Reads(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + torch.from_file("/etc/hostname", False, 1, dtype=torch.uint8).float()

    with pytest.raises(UnsafeModelFile) as err:
        audit_torchscript_module(torch.jit.script(Reads()))
    assert "aten::from_file" in str(err.value)


def test_honest_scripted_and_traced_models_still_prune(honest: Path, tmp_path: Path) -> None:
    res = prunekit.prune(honest, SPEC)
    assert res.report.check["passed"]
    from crafted import Small

    traced = tmp_path / "traced.pt"
    torch.jit.trace(Small().eval(), torch.randn(2, 3, 16, 16)).save(str(traced))
    assert prunekit.prune(traced, SPEC).report.check["passed"]


@pytest.fixture(scope="module")
def stateful(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return honest_stateful_ts(tmp_path_factory.mktemp("ts") / "stateful.pt")


@pytest.mark.parametrize("payload", sorted(setstate_payloads(Path("/nonexistent"))))
def test_setstate_payload_is_live_in_torch(payload: str, stateful: Path, tmp_path: Path) -> None:
    """Control: plain ``torch.jit.load`` of each crafted archive writes the file while it loads."""
    marker = tmp_path / "marker"
    evil = edit_setstate(stateful, tmp_path / "evil.pt", setstate_payloads(marker)[payload])
    subprocess.run([sys.executable, "-c", f"import torch; torch.jit.load({str(evil)!r})"],
                   capture_output=True, timeout=300)
    assert marker.exists()


@pytest.mark.parametrize("payload", sorted(setstate_payloads(Path("/nonexistent"))))
def test_op_reached_by_getattr_or_alias_is_refused_before_load(payload: str, stateful: Path, tmp_path: Path) -> None:
    """``getattr(ops, "aten").save`` and ``a = ops.aten; a.save`` reach the op as surely as
    ``torch.save``; in ``__setstate__`` they would run before the loaded graphs are audited."""
    marker = tmp_path / "marker"
    evil = edit_setstate(stateful, tmp_path / "evil.pt", setstate_payloads(marker)[payload])
    with pytest.raises(UnsafeModelFile) as err:
        load_model(evil)
    assert "not loaded" in str(err.value)
    assert not marker.exists()


def test_honest_stateful_module_still_loads(stateful: Path) -> None:
    loaded = load_model(stateful)
    assert loaded.module(torch.ones(1, 3, 2, 2)).shape == (1, 3, 2, 2)
