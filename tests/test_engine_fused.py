"""Transformers traced in inference mode record fused kernels; they must still prune.

Under ``torch.no_grad()`` in eval mode, ``nn.MultiheadAttention`` and ``nn.TransformerEncoderLayer``
take their fast path and a trace holds one ``aten._native_multi_head_attention`` /
``aten._transformer_encoder_layer_fwd`` per layer. Without the decomposition pass those would be
barriers and only the layers around them could shrink.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn as nn

import prunekit
from prunekit.errors import CaptureFailed
from prunekit.registry import build

from helpers import example, load_output


class Encoder(nn.Module):
    def __init__(self, norm_first: bool, activation: str, with_mask: bool, causal: bool = False) -> None:
        super().__init__()
        self.with_mask, self.causal = with_mask, causal
        self.embed = nn.Linear(12, 48)
        layer = nn.TransformerEncoderLayer(48, 4, 96, dropout=0.0, activation=activation,
                                           batch_first=True, norm_first=norm_first)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(48, 6)

    def forward(self, x, pad=None):
        causal = None
        if self.causal:  # with a padding mask too, the fast path gets one merged (B, heads, L, S) mask
            causal = torch.triu(torch.full((x.shape[1], x.shape[1]), float("-inf")), diagonal=1)
        return self.head(self.encoder(self.embed(x), mask=causal, src_key_padding_mask=pad)[:, 0])


def _trace_in_inference_mode(model: nn.Module, args: tuple, path) -> list[str]:
    model.eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ts = torch.jit.trace(model, args, check_trace=False)
    torch.jit.save(ts, str(path))
    return [n.kind() for n in ts.inlined_graph.nodes()]


def _padding_mask(batch: int, seq: int) -> torch.Tensor:
    pad = torch.zeros(batch, seq, dtype=torch.bool)
    pad[1:, seq - 2:] = True
    return pad


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_traced_fast_path_encoder_prunes_heads_and_ffn(norm_first, activation, tmp_path):
    torch.manual_seed(0)
    model = Encoder(norm_first, activation, with_mask=False)
    x = torch.randn(2, 9, 12)
    kinds = _trace_in_inference_mode(model, (x,), tmp_path / "enc.pt")
    assert "aten::_transformer_encoder_layer_fwd" in kinds  # the premise: the fused kernel is there

    result = prunekit.prune_to_dir(tmp_path / "enc.pt", {"ratio": 0.5, "inputs": [{"shape": [1, 9, 12]}]},
                                   tmp_path / "out")
    rep = result.report
    assert rep.check["passed"] and not rep.barriers, rep.barriers
    assert any("decomposed" in w for w in rep.warnings), rep.warnings
    assert rep.params_after < 0.6 * rep.params_before
    widths = {name: tuple(p.shape) for name, p in result.model.named_parameters()}
    for i in (0, 1):  # the feed-forward hidden layer and the packed q/k/v projection both shrank
        assert widths[f"encoder.layers.{i}.linear1.weight"][0] < 96, widths
        assert widths[f"encoder.layers.{i}.self_attn.in_proj_weight"][0] < 3 * 48, widths

    loaded = load_output(result.artifacts["model.pt"], "torchscript")
    assert sum(p.numel() for p in loaded.parameters()) == rep.params_after
    with torch.no_grad():
        for batch in (1, 5):
            y = loaded(torch.randn(batch, 9, 12))
            assert y.shape == (batch, 6) and torch.isfinite(y).all()


@pytest.mark.parametrize("causal", [False, True])
def test_traced_fast_path_encoder_with_a_padding_mask(causal, tmp_path):
    torch.manual_seed(1)
    model = Encoder(norm_first=False, activation="relu", with_mask=True, causal=causal)
    x = torch.randn(3, 8, 12)
    kinds = _trace_in_inference_mode(model, (x, _padding_mask(3, 8)), tmp_path / "enc.pt")
    assert "aten::_transformer_encoder_layer_fwd" in kinds
    # The example inputs as a safetensors file, in argument order (a bool mask among them).
    from safetensors.torch import save_file

    save_file({"input_0": x, "input_1": _padding_mask(3, 8)}, str(tmp_path / "inputs.safetensors"))
    result = prunekit.prune_to_dir(tmp_path / "enc.pt", {"ratio": 0.5}, tmp_path / "out",
                                   inputs_path=tmp_path / "inputs.safetensors")
    rep = result.report
    assert rep.check["passed"] and not rep.barriers, rep.barriers
    assert any("decomposed" in w for w in rep.warnings), rep.warnings
    assert rep.params_after < 0.6 * rep.params_before
    loaded = load_output(result.artifacts["model.pt"], "torchscript")
    with torch.no_grad():
        y = loaded(torch.randn(4, 8, 12), _padding_mask(4, 8))
    assert y.shape == (4, 6) and torch.isfinite(y).all()


def test_traced_fast_path_multihead_attention_prunes(tmp_path):
    torch.manual_seed(0)
    model = build("zoo:mha_transformer")
    inputs = [{"shape": [1, 10, 32], "dtype": "float32"}]
    kinds = _trace_in_inference_mode(model, example(inputs, 2), tmp_path / "mha.pt")
    assert "aten::_native_multi_head_attention" in kinds

    result = prunekit.prune_to_dir(tmp_path / "mha.pt", {"ratio": 0.5, "inputs": inputs}, tmp_path / "out")
    rep = result.report
    assert rep.check["passed"] and not rep.barriers, rep.barriers
    # The attention itself shrank: its packed input projection lost rows, not just the FFN.
    in_proj = [p for n, p in result.model.named_parameters() if n.endswith("in_proj_weight")]
    assert in_proj and all(p.shape[0] < 3 * 32 for p in in_proj)
    loaded = load_output(result.artifacts["model.pt"], "torchscript")
    with torch.no_grad():
        ref = model(*example(inputs, 3, seed=3))
        y = loaded(*example(inputs, 3, seed=3))
    assert y.shape == ref.shape


def test_nested_tensor_fast_path_names_the_problem(tmp_path):
    """The encoder's nested-tensor path cannot be converted; the error says what to do instead."""
    torch.manual_seed(0)
    model = Encoder(norm_first=False, activation="relu", with_mask=True)
    model.encoder.enable_nested_tensor = True
    model.encoder.use_nested_tensor = True
    kinds = _trace_in_inference_mode(model, (torch.randn(2, 8, 12), _padding_mask(2, 8)), tmp_path / "enc.pt")
    if "aten::_nested_tensor_from_mask" not in kinds:
        pytest.fail(f"premise: the trace should take the nested-tensor path, got {sorted(set(kinds))}")
    spec = {"ratio": 0.5, "inputs": [{"shape": [1, 8, 12]}, {"shape": [1, 8], "dtype": "bool"}]}
    with pytest.raises(CaptureFailed, match="enable_nested_tensor=False"):
        prunekit.prune(tmp_path / "enc.pt", spec)


@pytest.mark.parametrize("broken", ["differs", "raises"])
def test_a_decomposition_that_does_not_reproduce_the_kernel_keeps_it_whole(broken, tmp_path, monkeypatch):
    """The TorchScript conversion opens fused calls before its retrace, each checked on the
    values it takes at the example: a decomposition that computes something else (or fails)
    leaves every fused call in place, a barrier, and the report says why; the job still passes."""
    from prunekit.capture import fused

    real = fused.DECOMPOSITIONS[torch.ops.aten._native_multi_head_attention.default]

    def wrong(*args, **kwargs):
        if broken == "raises":
            raise RuntimeError("no")
        out, weights = real(*args, **kwargs)
        return out + 1.0, weights

    monkeypatch.setitem(fused.DECOMPOSITIONS, torch.ops.aten._native_multi_head_attention.default, wrong)
    torch.manual_seed(0)
    model = build("zoo:mha_transformer")
    inputs = [{"shape": [1, 10, 32], "dtype": "float32"}]
    _trace_in_inference_mode(model, example(inputs, 2), tmp_path / "mha.pt")
    result = prunekit.prune_to_dir(tmp_path / "mha.pt", {"ratio": 0.5, "inputs": inputs}, tmp_path / "out")
    rep = result.report
    why = "its decomposition did not reproduce it" if broken == "differs" else "could not be decomposed: RuntimeError"
    assert f"fused aten._native_multi_head_attention.default kept whole ({why})" in rep.warnings, rep.warnings
    assert not any("decomposed into" in w for w in rep.warnings), rep.warnings
    assert any("_native_multi_head_attention" in b["op"] for b in rep.barriers), rep.barriers
    assert rep.check["passed"]
    in_proj = [p for n, p in result.model.named_parameters() if n.endswith("in_proj_weight")]
    assert in_proj and all(p.shape[0] == 3 * 32 for p in in_proj)  # the attention kept whole
