"""Scripted uploads with control flow: specialised to the example, refused where that would lie.

Each model is scripted (``torch.jit.script``, so every ``if`` stays an ``if``), pruned at 0.5 and
the written TorchScript is loaded back and run at batch 3 and another sequence length than the
example's: the specialisation must keep the batch (and every size the model allows) free.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import prunekit
from prunekit.errors import CaptureFailed


class MHABlock(nn.Module):
    """A post-norm attention block on ``nn.MultiheadAttention`` with a classifier head."""

    def __init__(self, d: int = 64, heads: int = 8):
        super().__init__()
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.norm = nn.LayerNorm(d)
        self.ff = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))
        self.head = nn.Linear(d, 10)

    def forward(self, x):
        y, _ = self.attn(x, x, x, need_weights=False)
        x = self.norm(x + y)
        return self.head(x + self.ff(x)).mean(1)


class ValueBranch(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(8, 16)
        self.b = nn.Linear(16, 4)

    def forward(self, x):
        h = self.a(x)
        if bool(h.sum() > 0):  # on the values: no example decides this for every input
            h = h.relu()
        return self.b(h)


class BatchBranch(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(8, 16)
        self.b = nn.Linear(16, 4)

    def forward(self, x):
        h = self.a(x)
        if x.size(0) == 1:
            h = h * 2.0
        return self.b(h)


class ShapeFlagsAndLoop(nn.Module):
    """Branches on rank, an optional argument and a flag, and a loop with a constant trip count."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(8, 32)
        self.mid = nn.Linear(32, 32)
        self.out = nn.Linear(32, 4)
        self.residual = True

    def forward(self, x, scale: torch.Tensor | None = None):
        if x.dim() == 2:
            x = x.unsqueeze(1)
        h = self.inp(x).relu()
        for _ in range(3):
            h = h + self.mid(h).relu() if self.residual else self.mid(h).relu()
        if scale is not None:
            h = h * scale
        return self.out(h).mean(1)


def _prune_scripted(model: nn.Module, shape: list[int], tmp_path):
    torch.manual_seed(0)
    model = model.eval()
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(model), str(path))
    return prunekit.prune_to_dir(path, {"ratio": 0.5, "inputs": [{"shape": shape}]}, tmp_path / "out")


def _loaded(result) -> torch.jit.ScriptModule:
    return torch.jit.load(str(result.artifacts["model.pt"]))


@pytest.mark.parametrize("seq", [7, 13])
def test_transformer_encoder_scripted_prunes_and_keeps_batch_and_length_free(tmp_path, seq):
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(64, 8, 128, batch_first=True)
    model = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
    result = _prune_scripted(model, [1, 10, 64], tmp_path)
    rep = result.report
    assert rep.check["passed"] and rep.params_after < 0.7 * rep.params_before
    assert not rep.barriers
    assert any("control flow was specialised" in w for w in rep.warnings)
    pruned = _loaded(result)
    x = torch.randn(3, seq, 64)
    assert pruned(x).shape == (3, seq, 64)
    widths = {name: p.shape for name, p in pruned.named_parameters()}
    assert widths["layers.0.linear1.weight"][0] < 128


def test_multihead_attention_block_scripted_prunes_heads(tmp_path):
    result = _prune_scripted(MHABlock(), [1, 10, 64], tmp_path)
    rep = result.report
    assert rep.check["passed"] and not rep.barriers
    pruned = _loaded(result)
    assert pruned(torch.randn(3, 5, 64)).shape == (3, 10)
    qkv = dict(pruned.named_parameters())["attn.in_proj_weight"]
    assert qkv.shape[0] < 3 * 64  # query/key/value rows of whole heads went


def test_torchvision_vision_transformer_scripted_prunes_and_runs_at_batch_3(tmp_path):
    """torchvision's ViT code as scripted users upload it (vit_b_32's class and patch size, with
    fewer and narrower layers so the test stays fast: the control flow is the same code).
    The full vit_b_32 scripted at 224x224 was run the same way: 88.2M -> 45.7M parameters,
    check passed at batch 1 and 3, 91 s on this machine."""
    from prunekit.providers.torchvision_models import import_torchvision

    import_torchvision()  # torchvision without its compiled ops (installed by `make test`)
    from torchvision.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    model = VisionTransformer(image_size=64, patch_size=32, num_layers=2, num_heads=4, hidden_dim=64,
                              mlp_dim=128, num_classes=10)
    result = _prune_scripted(model, [1, 3, 64, 64], tmp_path)
    rep = result.report
    assert rep.check["passed"] and 3 in rep.check["batch_sizes"]
    assert rep.params_after < 0.9 * rep.params_before  # the patch embedding (kept width) dominates here
    pruned = _loaded(result)
    assert pruned(torch.randn(3, 3, 64, 64)).shape == (3, 10)
    mlp = dict(pruned.named_parameters())["encoder.layers.encoder_layer_0.mlp.0.weight"]
    assert mlp.shape[0] < 128


def test_shape_branches_optional_arguments_and_constant_loops_are_specialised(tmp_path):
    torch.manual_seed(0)
    model = ShapeFlagsAndLoop().eval()
    result = _prune_scripted(model, [1, 5, 8], tmp_path)
    assert result.report.check["passed"]
    pruned = _loaded(result)
    x = torch.randn(3, 6, 8)
    assert pruned(x).shape == model(x).shape == (3, 4)


def test_branch_on_tensor_values_is_refused_with_its_source_line(tmp_path):
    with pytest.raises(CaptureFailed) as err:
        _prune_scripted(ValueBranch(), [1, 8], tmp_path)
    message = str(err.value)
    assert "tensor values" in message and "test_scripted_control_flow.py" in message
    assert "bool(h.sum() > 0)" in message and "torch.jit.trace" in message


def test_branch_on_the_batch_size_is_refused_not_specialised(tmp_path):
    with pytest.raises(CaptureFailed) as err:
        _prune_scripted(BatchBranch(), [1, 8], tmp_path)
    message = str(err.value)
    assert "batch size" in message and "x.size(0) == 1" in message


def test_scalar_size_ops_stay_symbolic_in_the_converted_graph():
    from prunekit.capture.passes import scalar_ops_to_python

    gm = torch.fx.symbolic_trace(nn.Identity())
    graph = torch.fx.Graph()
    x = graph.placeholder("x")
    b = graph.call_function(torch.ops.aten.sym_size.int, (x, 0))
    t = graph.call_function(torch.ops.aten.mul.int, (b, 4))
    u = graph.call_function(torch.ops.aten.view.default, (x, [t, -1]))
    graph.output(u)
    gm = torch.fx.GraphModule(gm, graph)
    assert scalar_ops_to_python(gm) == 1  # the int multiply; the view takes a tensor and stays
    assert [n.target for n in gm.graph.nodes if n.op == "call_function"][1] is __import__("operator").mul
