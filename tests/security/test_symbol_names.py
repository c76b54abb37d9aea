"""Messages speak of the user's dims ("batch", ``inputs.0.shape[2]``), not of torch's symbols (``s22``)."""

from __future__ import annotations

import torch

from prunekit.io.inputs import from_specs
from prunekit.io.loading import LoadedModel
from prunekit.capture import capture, humanize_symbols, symbol_names

from crafted import Small


def test_symbols_of_a_captured_graph_are_named_after_the_users_dims() -> None:
    sigs = from_specs([{"shape": [2, 3, 16, 16]}])
    module = Small().eval()
    cap = capture(LoadedModel("state_dict", 0, module=module, param_names={n for n, _ in module.named_parameters()}), sigs)
    names = symbol_names(cap.gm)
    assert list(names.values()) == ["batch"]
    sym = next(iter(names))
    assert humanize_symbols(f"Guard failed: {sym} <= 64 and {sym}*2 > 1", names) == "Guard failed: batch <= 64 and batch*2 > 1"
    assert humanize_symbols("s999 stays s999", names) == "s999 stays s999"  # unknown symbols are left alone


def test_torchscript_dims_beyond_the_batch_are_named_by_input_and_axis() -> None:
    sigs = from_specs([{"shape": [2, 3, 16, 16]}])
    ts = torch.jit.trace(Small().eval(), torch.randn(2, 3, 16, 16))
    cap = capture(LoadedModel("torchscript", 0, module=ts, param_names={n for n, _ in ts.named_parameters()}), sigs)
    names = set(symbol_names(cap.gm).values())
    assert "batch" in names and names <= {"batch", "inputs.0.shape[1]", "inputs.0.shape[2]", "inputs.0.shape[3]"}
