"""TorchScript capture quirks: size arithmetic that tracing turns into tensors."""

from __future__ import annotations

import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F

import prunekit

from helpers import load_output


class WindowPadNet(nn.Module):
    """Pads its feature map up to a multiple of the window, shifts it and pools per window (as Swin).

    Traced, ``(win - W % win) % win`` is recorded as tensor arithmetic on sizes ending in
    ``aten::Int``; converted naively it becomes a data-dependent size the retrace cannot guard on.
    """

    def __init__(self, win: int = 4) -> None:
        super().__init__()
        self.win = win
        self.stem = nn.Conv2d(3, 24, 3, padding=1)
        self.mix = nn.Conv2d(24, 32, 1)
        self.head = nn.Linear(32, 5)

    def forward(self, x):
        x = F.relu(self.stem(x))
        h, w = x.shape[-2], x.shape[-1]
        pad_h, pad_w = (self.win - h % self.win) % self.win, (self.win - w % self.win) % self.win
        x = torch.roll(F.pad(x, (0, pad_w, 0, pad_h)), shifts=(-1, -1), dims=(2, 3))  # shifted windows
        b, c, hp, wp = x.shape
        x = x.view(b, c, hp // self.win, self.win, wp // self.win, self.win).amax(dim=(3, 5))
        return self.head(F.relu(self.mix(x)).mean(dim=(2, 3)))


def test_traced_size_arithmetic_modulo_is_folded(tmp_path):
    torch.manual_seed(0)
    model = WindowPadNet().eval()
    x = torch.randn(2, 3, 30, 30)  # 30 is not a multiple of the window: the padding is real
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ts = torch.jit.trace(model, x, check_trace=False)
    assert "aten::remainder" in {n.kind() for n in ts.inlined_graph.nodes()}  # the premise
    torch.jit.save(ts, str(tmp_path / "m.pt"))

    result = prunekit.prune_to_dir(tmp_path / "m.pt", {"ratio": 0.5, "inputs": [{"shape": [1, 3, 30, 30]}]},
                                   tmp_path / "out")
    rep = result.report
    assert rep.check["passed"] and not rep.barriers, rep.barriers
    assert any("paddings" in w for w in rep.warnings), rep.warnings
    shapes = {n: tuple(p.shape) for n, p in result.model.named_parameters()}
    assert shapes["stem.weight"][0] == 12 and shapes["mix.weight"] == (16, 12, 1, 1)

    loaded = load_output(result.artifacts["model.pt"], "torchscript")
    with torch.no_grad():
        for batch in (1, 4):
            assert loaded(torch.randn(batch, 3, 30, 30)).shape == (batch, 5)


def _stack_traces(graph) -> list[str]:
    return [n.meta["stack_trace"] for n in graph.nodes if n.op == "call_function" and n.meta.get("stack_trace")]


def test_eager_capture_records_stack_traces_only_where_they_live_on(tmp_path, monkeypatch):
    """A state-dict upload's nodes carry the model's source lines into an export archive (and
    into the graph ``prune`` hands back); for any other output nobody reads them, so the capture
    does not pay for recording them."""
    from prunekit.registry import build

    from helpers import save_model

    src = save_model(build("zoo:mlp"), "state_dict", [{"shape": [1, 700]}], tmp_path / "w.pt")
    spec = {"architecture": "zoo:mlp", "ratio": 0.5}
    res = prunekit.prune_to_dir(src, {**spec, "output_format": "export"}, tmp_path / "pt2")
    written = torch.export.load(str(res.artifacts["model.pt2"]))
    assert any("zoo/mlp.py" in t for t in _stack_traces(written.graph)), _stack_traces(written.graph)[:2]
    assert _stack_traces(prunekit.prune(src, spec).model.graph)  # the graph handed back

    import prunekit.api as api

    seen = {}
    real = api.capture

    def spy(*args, **kwargs):
        cap = real(*args, **kwargs)
        seen["traces"] = _stack_traces(cap.gm.graph)
        return cap

    monkeypatch.setattr(api, "capture", spy)
    res = prunekit.prune_to_dir(src, spec, tmp_path / "sd")
    assert res.report.output_format == "state_dict" and res.report.check["passed"]
    assert seen["traces"] == []
