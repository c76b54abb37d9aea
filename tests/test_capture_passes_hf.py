"""Capture passes that free channels in exported Hugging Face models: a ``@torch.no_grad()``
region (a rotary embedding's) kept by ``torch.export`` as ``higher_order.wrap_with_set_grad_enabled``
is inlined, so the channels that cross it are no longer kept by a barrier.  With the pass off (a
test-only switch), the region stands for any barrier: it keeps channels with its reason, and over
a whole model it leaves nothing to prune (a clean refusal, once an IndexError in plan.py)."""

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


class NoGradTail(nn.Module):
    """``a`` and ``b`` outside any region; ``c`` (and, with ``whole``, all of it) under ``no_grad``."""

    def __init__(self, whole: bool) -> None:
        super().__init__()
        self.whole = whole
        self.a, self.b, self.c = nn.Linear(8, 16), nn.Linear(16, 16), nn.Linear(16, 4)

    def tail(self, x: torch.Tensor) -> torch.Tensor:
        return self.c(torch.relu(self.b(torch.relu(self.a(x))))) if self.whole else self.c(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.whole:
            x = self.b(torch.relu(self.a(x)))
        with torch.no_grad():
            return self.tail(x)


def test_a_barrier_over_every_channel_is_nothing_to_prune_not_a_crash(tmp_path, monkeypatch):
    """With the pass off (as before it existed), the region is a barrier.  Over the whole model it
    pins every channel: find_groups met no unpinned component and indexed an empty array
    (IndexError in plan.py); now the job is refused as nothing to prune, naming the barrier."""
    import prunekit.capture.dispatch as dispatch
    from prunekit.errors import InvalidSpec

    monkeypatch.setattr(dispatch, "inline_grad_mode", lambda gm: 0)
    torch.manual_seed(0)
    path = save_model(NoGradTail(whole=True), "export", INPUTS, tmp_path / "m.pt2")
    assert any(n.target is HOP for n in torch.export.load(str(path)).module().graph.nodes)  # the premise
    try:
        prunekit.prune(path, {"ratio": 0.5, "inputs": INPUTS})
    except InvalidSpec as exc:
        assert "nothing to prune" in str(exc) and "wrap_with_set_grad_enabled" in str(exc), exc
    else:
        raise AssertionError("a model with every channel pinned pruned")


def test_a_barrier_over_part_keeps_those_channels_with_the_reason(tmp_path, monkeypatch):
    import prunekit.capture.dispatch as dispatch

    monkeypatch.setattr(dispatch, "inline_grad_mode", lambda gm: 0)
    torch.manual_seed(0)
    path = save_model(NoGradTail(whole=False), "export", INPUTS, tmp_path / "m.pt2")
    res = prunekit.prune(path, {"ratio": 0.5, "inputs": INPUTS})
    rep = res.report
    assert rep.check["passed"], rep.check
    params = dict(res.model.named_parameters())
    assert params["a.weight"].shape[0] == 8 and params["b.weight"].shape == (16, 8)  # a's channels go
    kept = {k["param"]: k["reason"] for k in rep.to_dict()["kept"]}
    assert "wrap_with_set_grad_enabled" in kept["b.weight"], kept  # b's output enters the region
    assert any("wrap_with_set_grad_enabled" in str(b) for b in rep.barriers), rep.barriers
