"""``normalized_dims: prune``: channels a LayerNorm / RMSNorm / one-group GroupNorm / mean takes
statistics over may go; the pruned model equals the reference that takes those statistics over the
kept channels (not the plain masked original), and the report says how much the function changed."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn

import prunekit
from prunekit.analysis.walk import analyse
from prunekit.prune.removal import Removal
from prunekit.prune.surgery import apply
from prunekit.verify.check import compare_outputs
from prunekit.verify.masked import masked_original

from helpers import save_model


class _Block(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.ln = nn.LayerNorm(d)
        self.fc1, self.fc2 = nn.Linear(d, 2 * d), nn.Linear(2 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(torch.relu(self.fc1(self.ln(x))))


class _RMSNorm(nn.Module):  # written out, as Hugging Face models write theirs: a mean over the width
    def __init__(self, d: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(1 + 0.1 * torch.randn(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)


class Normalised(nn.Module):
    def __init__(self, d: int = 32) -> None:
        super().__init__()
        self.inp = nn.Linear(16, d)
        self.b1, self.b2 = _Block(d), _Block(d)
        self.rms = _RMSNorm(d)
        self.gn = nn.GroupNorm(1, d)
        self.head = nn.Linear(d, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.rms(self.b2(self.b1(self.inp(x))))
        return self.head(self.gn(h.unsqueeze(-1)).squeeze(-1))


INPUTS = [{"shape": [1, 16]}]


def _model() -> nn.Module:
    torch.manual_seed(0)
    m = Normalised().eval()
    with torch.no_grad():  # non-trivial affine parameters, so they must follow their channels
        for mod in m.modules():
            if isinstance(mod, (nn.LayerNorm, nn.GroupNorm)):
                mod.weight.normal_(1.0, 0.2)
                mod.bias.normal_(0.0, 0.2)
    return m


def test_prune_mode_removes_the_residual_width_and_checks_against_the_kept_statistics():
    model = _model()
    keep = prunekit.prune(model, {"ratio": 0.5, "inputs": INPUTS})
    prune = prunekit.prune(model, {"ratio": 0.5, "inputs": INPUTS, "normalized_dims": "prune"})
    assert keep.report.normalized_dims is None
    kept_names = {k["param"] for k in keep.report.kept}
    assert "inp.weight" in kept_names  # keep: the residual width stays
    assert "inp.weight" not in {k["param"] for k in prune.report.kept}
    assert prune.report.params_after < keep.report.params_after
    assert prune.report.check["passed"] and prune.report.check["max_rel"] < 1e-5
    nd = prune.report.normalized_dims
    assert nd["mode"] == "prune" and nd["function_changed"]
    # two layer norms, the RMS mean and the one-group group norm now run over fewer channels
    assert nd["ops_renormalised"] == 4
    assert 0.0 < nd["output_change"]["rel_l2"] < 10 and nd["output_change"]["max_rel"] > 1e-3
    shapes = {c.name: c.shape_after for c in prune.report.layers}
    assert shapes["b1.ln.weight"] == [16] and shapes["gn.weight"] == [16]
    x = torch.randn(4, 16)
    assert prune.model(x).shape == (4, 5)


def test_the_plain_masked_original_would_not_match():
    """The new reference is what makes the check pass: without its kept statistics the masked
    original differs from the pruned model, so the check really tests the renormalisation."""
    model = _model()
    x = torch.randn(2, 16)
    gm = torch.export.export(model, (x,), dynamic_shapes=({0: torch.export.Dim("b")},), strict=False).module()
    a = analyse(gm, (x,), (torch.randn(3, 16),), normalized_dims="prune")
    assert {"layer_norm", "layer_norm_1", "mean", "group_norm"} <= set(a.renormalised)
    roots = a.atoms.roots()
    residual = a.attr_labels["inp.weight"][0]
    removal = Removal.of({int(roots[i]) for i in residual[:10]}, roots)
    pruned = apply(gm, a, removal)
    ref = masked_original(gm, a, removal)
    with torch.no_grad():
        assert compare_outputs(ref(x), pruned(x)).max_rel < 1e-5
        a.renormalised.clear()  # the masked original of keep mode
        plain = masked_original(gm, a, removal)
        assert compare_outputs(plain(x), pruned(x)).max_rel > 1e-2


def test_keep_mode_is_unchanged_by_default_and_refuses_unknown_values():
    with pytest.raises(prunekit.PruneKitError, match="normalized_dims"):
        prunekit.prune(_model(), {"ratio": 0.5, "inputs": INPUTS, "normalized_dims": "drop"})


@pytest.mark.parametrize("arch", ["zoo:vit_mini", "timm:convnext_atto"])
def test_state_dict_outputs_rebuild_with_the_pruned_norm_widths(tmp_path, arch):
    from prunekit.registry import build, get_architecture

    torch.manual_seed(0)
    model = build(arch)
    inputs = [{"shape": [1, 3, 32, 32]}] if arch.startswith("zoo") else [{"shape": [1, 3, 64, 64]}]
    src = save_model(model, "state_dict", inputs, tmp_path / "w.pt")
    spec = {"architecture": arch, "ratio": 0.5, "inputs": inputs, "normalized_dims": "prune"}
    res = prunekit.prune_to_dir(src, spec, tmp_path / "out")
    assert res.report.check["passed"] and res.report.normalized_dims["function_changed"]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    rebuilt = prunekit.load_pruned(arch, tmp_path / "out" / "state_dict.pt", manifest)
    norms = [m for m in rebuilt.modules() if isinstance(m, nn.LayerNorm)]
    assert norms and all(tuple(m.normalized_shape) == tuple(m.weight.shape) for m in norms)
    assert any(m.weight.shape[0] < get_architecture(arch).factory().state_dict()[n + ".weight"].shape[0]
               for n, m in rebuilt.named_modules() if isinstance(m, nn.LayerNorm))
    x = torch.randn(2, *inputs[0]["shape"][1:])
    with torch.no_grad():
        assert torch.allclose(rebuilt(x), res.model(x), atol=1e-4, rtol=1e-4)


def test_output_change_reuses_the_checks_pruned_outputs(monkeypatch):
    """The pruned model already ran on the check's inputs: output_change takes its outputs from
    the check instead of running it again, and reports exactly what running it gives."""
    from prunekit.verify import check as check_mod

    seen: dict = {}
    orig = check_mod.output_change

    def spy(upload, pruned, *args):
        calls: list = []
        got = orig(upload, lambda *x: calls.append(1) or pruned(*x), *args)
        seen["calls"], seen["fresh"] = len(calls), orig(upload, pruned, *args[:-1])  # without the kept outputs
        return got

    monkeypatch.setattr(check_mod, "output_change", spy)
    res = prunekit.prune(_model(), {"ratio": 0.5, "inputs": INPUTS, "normalized_dims": "prune"})
    assert seen["calls"] == 0
    assert res.report.normalized_dims["output_change"] == seen["fresh"]
    assert seen["fresh"]["batch_sizes"] == res.report.check["batch_sizes"]
