"""Capture passes that free channels in exported Hugging Face models: a ``@torch.no_grad()``
region (a rotary embedding's) kept by ``torch.export`` as ``higher_order.wrap_with_set_grad_enabled``
is inlined, so the channels that cross it are no longer kept by a barrier."""

from __future__ import annotations

import torch
import torch.nn as nn

import prunekit
from helpers import example, save_model
from prunekit.capture.passes import inline_grad_mode


class NoGradGate(nn.Module):
    """The gate is computed under ``no_grad`` from the projection, as a rotary table is."""

    def __init__(self) -> None:
        super().__init__()
        self.q = nn.Linear(8, 16)
        self.o = nn.Linear(16, 4)

    @torch.no_grad()
    def gate(self, h: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(h) * 2.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.q(x)
        return self.o(h * self.gate(h))


INPUTS = [{"shape": [1, 8]}]
HOP = torch.ops.higher_order.wrap_with_set_grad_enabled


def test_the_export_holds_the_region_and_the_pass_inlines_it_exactly(tmp_path):
    torch.manual_seed(0)
    path = save_model(NoGradGate(), "export", INPUTS, tmp_path / "m.pt2")
    gm = torch.export.load(str(path)).module()
    assert any(n.target is HOP for n in gm.graph.nodes)  # the premise
    x = example(INPUTS, 3, seed=1)[0]
    before = gm(x)
    assert inline_grad_mode(gm) == 1
    assert not any(n.target is HOP for n in gm.graph.nodes)
    assert not any(isinstance(m, torch.fx.GraphModule) for _, m in gm.named_children())
    assert torch.equal(gm(x), before)


def test_channels_cross_the_inlined_region(tmp_path):
    torch.manual_seed(0)
    path = save_model(NoGradGate(), "export", INPUTS, tmp_path / "m.pt2")
    res = prunekit.prune_to_dir(path, {"ratio": 0.5, "inputs": INPUTS}, tmp_path / "out")
    rep = res.report
    assert rep.check["passed"] and not rep.barriers, rep.barriers
    assert dict(res.model.named_parameters())["q.weight"].shape[0] == 8
    loaded = torch.export.load(str(res.artifacts["model.pt2"])).module()
    assert loaded(*example(INPUTS, 5, seed=2)).shape == (5, 4)
