"""torchbind classes in a TorchScript upload: only the packed parameters real layers hold.

TorchScript code can build any registered torchbind class (``torch.classes.NS.NAME``, which the
serializer writes ``__torch__.torch.classes.NS.NAME.__new__(...)``) and call its methods, and a
``__setstate__`` does so inside ``torch.jit.load``.  ``_nnapi.Compilation.init`` makes torch
``dlopen`` an NNAPI library; ``profiling``, ``c10d`` and ``dist_rpc`` classes switch profilers and
build process groups.  The control shows torch alone runs such code at load; PruneKit refuses it
by name in the source, in the pickles, and in the loaded graphs, and still loads a quantized model.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from crafted import edit_setstate, honest_stateful_ts, rewrite_zip
from prunekit.errors import UnsafeModelFile
from prunekit.io.loading import load_model
from prunekit.io.safety.ts_audit import audit_torchscript_module

NNAPI = "__torch__.torch.classes._nnapi.Compilation"
PROFILE = "__torch__.torch.classes.profiling._ScriptProfile"
PAYLOADS = {
    "nnapi_dlopen": f"_c = {NNAPI}.__new__({NNAPI})\n    _0 = (_c).__init__()\n    _1 = (_c).init(self.scale, [self.scale])",
    "profiler": f"_p = {PROFILE}.__new__({PROFILE})\n    _0 = (_p).__init__()\n    _1 = (_p).enable()",
    "eager_spelling": "_p = torch.classes.profiling._ScriptProfile()",
    "getattr_spelling": '_p = getattr(torch.classes, "profiling")._ScriptProfile()',
}


def _quantized(path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)).eval()
        q = torch.ao.quantization.quantize_dynamic(m, {nn.Linear}, dtype=torch.qint8)
        torch.jit.script(q).save(str(path))
    return path


def test_control_torch_alone_builds_a_torchbind_class_at_load(tmp_path: Path) -> None:
    path = edit_setstate(honest_stateful_ts(tmp_path / "h.pt"), tmp_path / "evil.pt", PAYLOADS["nnapi_dlopen"])
    with pytest.raises(RuntimeError, match="libneuralnetworks"):  # it reached NNAPI's dlopen
        torch.jit.load(str(path))


@pytest.mark.parametrize("payload", sorted(PAYLOADS))
def test_a_torchbind_class_outside_the_allowlist_is_refused_before_load(payload: str, tmp_path: Path) -> None:
    path = edit_setstate(honest_stateful_ts(tmp_path / "h.pt"), tmp_path / "evil.pt", PAYLOADS[payload])
    with pytest.raises(UnsafeModelFile, match="torchbind class torch.classes.(_nnapi|profiling)"):
        load_model(path)


def test_a_pickle_restoring_a_class_outside_the_allowlist_is_refused(tmp_path: Path) -> None:
    def edit(name: str, data: bytes) -> bytes:
        if name.endswith("/data.pkl"):
            old = b"c__torch__.torch.classes.quantized\nLinearPackedParamsBase\n"
            assert old in data
            return data.replace(old, b"c__torch__.torch.classes.aten\nOpaqueObject\n")
        return data

    path = rewrite_zip(_quantized(tmp_path / "q.pt"), tmp_path / "evil.pt", edit)
    with pytest.raises(UnsafeModelFile, match="data.pkl restores __torch__.torch.classes.aten.OpaqueObject"):
        load_model(path)


def test_a_loaded_graph_using_a_class_outside_the_allowlist_is_refused(tmp_path: Path) -> None:
    class Profiles(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            p = torch.classes.profiling._ScriptProfile()
            p.enable()
            return x

    with pytest.raises(UnsafeModelFile, match="profiling._ScriptProfile"):
        audit_torchscript_module(torch.jit.script(Profiles()))


def test_an_honest_quantized_model_loads(tmp_path: Path) -> None:
    loaded = load_model(_quantized(tmp_path / "q.pt"))
    assert loaded.format == "torchscript"
    with torch.no_grad():
        assert loaded.module(torch.randn(2, 8)).shape == (2, 4)
