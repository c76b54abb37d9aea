"""Pruning with calibration data: the criteria must matter, the refusals must name the field.

Each test builds a model whose right answer is known by construction (a channel the data never
activates, a weight whose gradient must grow when it shrinks, BatchNorm statistics that are wrong
on purpose) and checks the engine finds it.
"""

from __future__ import annotations

import io
import math

import pytest
import torch
import torch.nn as nn

import prunekit
from prunekit.errors import InvalidCalibration
from prunekit.prune import importance as imp


def _mlp_with_dead_channel(seed: int = 0) -> tuple[nn.Module, dict]:
    """Hidden channel 0 has by far the largest weights, but its bias keeps it below zero for every
    (non-negative) input: the data never activates it, so removing it changes nothing."""
    g = torch.Generator().manual_seed(seed)
    m = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    with torch.no_grad():
        m[0].weight.copy_(torch.randn(8, 4, generator=g) * 0.3)
        m[0].bias.zero_()
        m[0].weight[0] = -5.0
        m[0].bias[0] = -1.0
        m[2].weight.copy_(torch.randn(3, 8, generator=g) * 0.3)
        m[2].weight[:, 0] = 5.0
    x = torch.rand(64, 4, generator=g)
    y = m(x).argmax(1)
    return m.eval(), {"inputs": x, "targets": y}


def _removed_rows(before: torch.Tensor, after: torch.Tensor) -> list[int]:
    """Which rows of ``before`` are missing from ``after`` (rows are distinct here)."""
    kept = [i for i in range(before.shape[0]) if any(torch.equal(before[i], r) for r in after)]
    return [i for i in range(before.shape[0]) if i not in kept]


def _first_weight(model: nn.Module, rows: int | None = None) -> torch.Tensor:
    ws = [p for n, p in model.named_parameters() if p.dim() == 2]
    return ws[0].detach()


def test_taylor_removes_the_channel_the_data_never_activates_and_l2_keeps_it():
    model, cal = _mlp_with_dead_channel()
    spec = {"ratio": 0.125, "holdout": 0.25, "batch_size": 16}
    by_l2 = prunekit.prune(model, {**spec, "importance": "l2"}, calibration=cal)
    by_taylor = prunekit.prune(model, {**spec, "importance": "taylor"}, calibration=cal)
    w = model[0].weight.detach()
    assert 0 not in _removed_rows(w, _first_weight(by_l2.model))
    assert _removed_rows(w, _first_weight(by_taylor.model)) == [0]
    ev = by_taylor.report.evaluation
    assert ev["original"]["accuracy"] == 1.0 and ev["pruned"]["accuracy"] == 1.0  # the dead channel cost nothing
    assert ev["samples"] == 16


def _probe_case(x1_used: bool):
    """y = w·x with w = [0.1, 1.0]; targets are exactly w·x, so the loss and its gradient are 0.
    Scaling w1 to 0.01 leaves a residual −0.09·x1: its gradient grows from 0 unless x1 is always 0."""
    m = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        m.weight.copy_(torch.tensor([[0.1, 1.0]]))
    g = torch.Generator().manual_seed(1)
    x = torch.rand(32, 2, generator=g) + 0.5
    if not x1_used:
        x[:, 0] = 0.0
    with torch.no_grad():
        t = m(x)
    return m.eval(), {"inputs": x, "targets": t}


@pytest.mark.parametrize("x1_used, pruned", [(False, True), (True, False)])
def test_gradprobe_restores_a_weight_whose_gradient_grows(x1_used, pruned):
    model, cal = _probe_case(x1_used)
    spec = {"method": "unstructured", "sparsity": 0.5, "importance": "gradprobe", "loss": "mse", "holdout": 0.0,
            "batch_size": 8}
    res = prunekit.prune(model, spec, calibration=cal)
    w = [p for p in res.model.parameters() if p.dim() == 2][0].detach().reshape(-1)
    details = res.report.importance_details["gradprobe"]
    assert details["candidates"] == 1
    assert float(w[1]) == 1.0                        # never a candidate
    assert (float(w[0]) == 0.0) is pruned             # the candidate: zeroed only if its gradient did not grow
    assert details["pruned"] == (1 if pruned else 0)
    assert res.report.sparsity["reached"] == (0.5 if pruned else 0.0)
    assert res.report.sparsity["target"] == 0.5


def test_gradprobe_threshold_lets_a_growing_gradient_be_pruned():
    model, cal = _probe_case(True)
    # relative growth from 0 is infinite: no finite threshold prunes it ...
    spec = {"method": "unstructured", "sparsity": 0.5, "importance": "gradprobe", "loss": "mse", "holdout": 0.0,
            "batch_size": 8, "gradient_threshold": 1e6}
    assert prunekit.prune(model, spec, calibration=cal).report.importance_details["gradprobe"]["pruned"] == 0
    # ... but from a non-zero gradient a threshold above the growth does
    with torch.no_grad():
        cal["targets"] = cal["targets"] + 0.5
    res = prunekit.prune(model, spec, calibration=cal)
    assert res.report.importance_details["gradprobe"]["pruned"] == 1


def test_gradprobe_probes_at_the_factor_asked():
    """The probe scales (never zeros) the candidates: at factor 0.1 and 0.9 the second gradient
    record differs, so the decision can too.  Checked on the recorded evidence directly."""
    from prunekit.data.calibration import load_calibration
    from prunekit.data.evidence import max_abs_gradients
    import torch.fx as fx

    model, cal = _probe_case(True)
    gm = fx.symbolic_trace(model)
    c = load_calibration(cal, holdout=0.0, batch_size=8, loss="mse")
    scale = {"weight": torch.tensor([[0.1, 1.0]])}
    before = max_abs_gradients(gm, c, names={"weight"})
    after = max_abs_gradients(gm, c, names={"weight"}, scale=scale)
    assert float(before["weight"][0, 0]) == pytest.approx(0.0, abs=1e-6)
    x = c.inputs[0][c.train_index]
    expect = (2 * (-0.09) * x[:, 0] * x[:, 0]).abs()  # |∂L/∂w1| per sample-mean batch, at w1 = 0.01
    assert float(after["weight"][0, 0]) > 0.05 * float(expect.mean())
    assert torch.equal(dict(gm.named_parameters())["weight"].detach(), torch.tensor([[0.1, 1.0]]))  # restored


def test_wrong_shaped_calibration_is_refused_naming_the_field():
    model, cal = _mlp_with_dead_channel()
    bad = {"inputs": torch.rand(32, 5), "targets": cal["targets"][:32]}
    with pytest.raises(InvalidCalibration) as e:
        prunekit.prune(model, {"ratio": 0.25, "inputs": [{"shape": [2, 4]}], "importance": "taylor"}, calibration=bad)
    assert "calibration.inputs" in str(e.value) and "[5]" in str(e.value) and "[4]" in str(e.value)
    assert e.value.details[0]["path"] == "calibration.inputs"
    assert e.value.code == "invalid_calibration"


@pytest.mark.parametrize("cal, field, words", [
    ({"inputs": torch.rand(32, 4), "targets": torch.full((32,), 7)}, "calibration.targets", "out of range"),
    ({"inputs": torch.rand(32, 4), "targets": torch.zeros(31, dtype=torch.long)}, "calibration.targets", "one row per sample"),
    ({"inputs": torch.rand(32, 4), "labels": torch.zeros(32)}, "calibration.labels", "unknown key"),
    ({"inputs": torch.full((32, 4), float("nan"))}, "calibration.inputs", "NaN"),
    (b"not a safetensors file", "calibration", "not a readable .safetensors"),
])
def test_bad_calibration_files_name_their_field(cal, field, words):
    model, _ = _mlp_with_dead_channel()
    with pytest.raises(InvalidCalibration) as e:
        prunekit.prune(model, {"ratio": 0.25, "importance": "taylor", "batch_size": 8}, calibration=cal)
    assert e.value.details[0]["path"] == field and words in str(e.value)


def test_too_few_samples_for_the_batches_asked_names_num_batches():
    model, cal = _mlp_with_dead_channel()
    with pytest.raises(InvalidCalibration) as e:
        prunekit.prune(model, {"ratio": 0.25, "importance": "taylor", "batch_size": 16, "num_batches": 10},
                       calibration=cal)
    assert e.value.details[0]["path"] == "num_batches" and "lower num_batches" in str(e.value)


def test_data_criteria_without_data_say_what_is_missing():
    model, _ = _mlp_with_dead_channel()
    for spec in ({"ratio": 0.25, "importance": "taylor"}, {"ratio": 0.25, "recalibrate_bn": True},
                 {"method": "unstructured", "sparsity": 0.5, "importance": "wanda"}):
        with pytest.raises(InvalidCalibration) as e:
            prunekit.prune(model, {**spec, "inputs": [{"shape": [2, 4]}]})
        assert e.value.details[0]["path"] == "calibration"


class _Cnn(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.conv2, self.bn2 = nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.fc(x.mean((2, 3)))


def _cnn_data(n: int = 48):
    torch.manual_seed(0)
    m = _Cnn().eval()
    with torch.no_grad():  # statistics that describe nothing the data does
        for bn in (m.bn1, m.bn2):
            bn.running_mean.fill_(3.0)
            bn.running_var.fill_(9.0)
    x = torch.randn(n, 1, 8, 8)
    return m, {"inputs": x, "targets": torch.randint(0, 10, (n,))}


def test_recalibrate_bn_writes_the_statistics_the_pruned_model_sees():
    model, cal = _cnn_data()
    spec = {"ratio": 0.25, "recalibrate_bn": True, "holdout": 0.0, "batch_size": 48, "num_batches": 1}
    res = prunekit.prune(model, spec, calibration=cal)
    kept_bn1 = [i for i in range(8)
                if any(torch.equal(model.conv1.weight[i], w) for w in dict(res.model.named_parameters())["conv1.weight"])]
    assert len(kept_bn1) == 6
    with torch.no_grad():
        z = model.conv1(cal["inputs"])[:, kept_bn1]
    buffers = dict(res.model.named_buffers())
    assert torch.allclose(buffers["bn1.running_mean"], z.mean((0, 2, 3)), atol=1e-5)
    assert torch.allclose(buffers["bn1.running_var"], z.var((0, 2, 3), unbiased=True), rtol=1e-4)
    assert res.report.batch_norm["batch_norms"] == 2
    # the check passed against the original with the same new statistics
    assert res.report.check["passed"]


def test_target_macs_is_met_within_one_group():
    model, cal = _cnn_data()
    res = prunekit.prune(model, {"target": {"macs": 0.5}, "inputs": [{"shape": [2, 1, 8, 8]}]})
    t = res.report.target
    assert t["met"] and t["reached"] <= 0.5
    frac = res.report.macs_after / res.report.macs_before
    assert frac == pytest.approx(t["reached"], abs=1e-6)
    # one more channel of any group would have been enough: not far below the target
    assert frac > 0.5 - 0.15
    res_p = prunekit.prune(model, {"target": {"params": 0.6}, "inputs": [{"shape": [2, 1, 8, 8]}]})
    assert res_p.report.params_after / res_p.report.params_before <= 0.6


def test_unstructured_magnitude_and_the_2_4_pattern_leave_exact_zeros(tmp_path):
    model, cal = _cnn_data()
    path = tmp_path / "m.pt"
    torch.jit.save(torch.jit.trace(model, torch.randn(2, 1, 8, 8)), str(path))
    res = prunekit.prune_to_dir(path, {"method": "unstructured", "pattern": "2:4", "inputs": [{"shape": [2, 1, 8, 8]}]},
                                tmp_path / "out")
    loaded = torch.jit.load(str(tmp_path / "out" / "model.pt"))
    mats = {n: p for n, p in loaded.named_parameters() if p.dim() >= 2}
    assert mats and all(tuple(p.shape) == tuple(dict(model.named_parameters())[n].shape) for n, p in mats.items())
    for n, p in mats.items():
        rows = p.detach().reshape(p.shape[0], -1)
        cols = rows.shape[1] - rows.shape[1] % 4
        blocks = rows[:, :cols].reshape(rows.shape[0], -1, 4)
        assert ((blocks == 0).sum(-1) >= 2).all(), n
    assert res.report.sparsity["reached"] >= 0.45
    assert res.report.sparsity["pattern"] == "2:4"


def test_wanda_uses_the_input_norms():
    """Two inputs, one always 100× larger: WANDA keeps its weights although they are smaller."""
    m = nn.Linear(2, 4, bias=False)
    with torch.no_grad():
        m.weight.copy_(torch.tensor([[1.0, 0.1]] * 4) * torch.arange(1, 5).view(4, 1))
    x = torch.rand(64, 2) * torch.tensor([1.0, 100.0])
    spec = {"method": "unstructured", "sparsity": 0.5, "holdout": 0.0, "batch_size": 16}
    by_magnitude = prunekit.prune(m, {**spec, "importance": "magnitude"}, calibration={"inputs": x})
    by_wanda = prunekit.prune(m, {**spec, "importance": "wanda"}, calibration={"inputs": x})
    wm = [p for p in by_magnitude.model.parameters()][0].detach()
    ww = [p for p in by_wanda.model.parameters()][0].detach()
    assert (wm[:, 1] == 0).all() and (wm[:, 0] != 0).all()
    assert (ww[:, 0] == 0).all() and (ww[:, 1] != 0).all()
    assert by_wanda.report.evaluation is None  # no holdout: nothing to evaluate on


def test_sweep_returns_one_row_per_setting_and_a_png(tmp_path):
    from PIL import Image

    model, cal = _mlp_with_dead_channel()
    path = tmp_path / "m.pt"
    torch.jit.save(torch.jit.script(model), str(path))
    from safetensors.torch import save_file

    save_file(cal, str(tmp_path / "cal.safetensors"))
    settings = [0.1, 0.3, 0.6]
    res = prunekit.prune_to_dir(path, {"sweep": {"sparsity": settings}, "method": "unstructured", "batch_size": 16},
                                tmp_path / "out", calibration_path=tmp_path / "cal.safetensors")
    sweep = res.report.sweep
    assert [r["value"] for r in sweep["rows"]] == settings
    assert all(r["ok"] and r["accuracy"] is not None for r in sweep["rows"])
    reached = [r["sparsity"] for r in sweep["rows"]]
    assert reached == sorted(reached) and reached[-1] > reached[0]
    with Image.open(tmp_path / "out" / "sweep.png") as im:
        im.verify()
        assert im.format == "PNG"
    assert {"sweep.json", "sweep.png", "model.pt", "report.json"} <= set(res.artifacts)
    chosen = sweep["rows"][[r["value"] for r in sweep["rows"]].index(sweep["selected"])]
    assert res.report.sparsity["reached"] == pytest.approx(chosen["sparsity"])
    assert chosen["accuracy_drop"] <= 0.01 or sweep["warnings"]


def test_a_criterion_of_ones_own_plugs_in_like_the_builtins():
    class Largest(imp.Importance):
        """Keeps the smallest channels (a criterion no built-in has), to prove which one ran."""

        name = "test_inverse_l2"

        def channels(self, inp):
            return -inp.channel_totals(inp.tensors, lambda rows: rows.pow(2).sum(1))

    imp.register(Largest)
    try:
        model, cal = _mlp_with_dead_channel()
        res = prunekit.prune(model, {"ratio": 0.125, "importance": "test_inverse_l2", "inputs": [{"shape": [2, 4]}]})
        assert _removed_rows(model[0].weight.detach(), _first_weight(res.model)) == [0]  # the largest went
        assert "test_inverse_l2" in imp.criterion_names("structured")
    finally:
        imp.unregister("test_inverse_l2")
    assert "test_inverse_l2" not in imp.criterion_names()


def test_loss_none_reports_agreement_with_the_original():
    model, cal = _mlp_with_dead_channel()
    res = prunekit.prune(model, {"ratio": 0.25, "importance": "taylor", "batch_size": 16},
                         calibration={"inputs": cal["inputs"]})
    ev = res.report.evaluation
    assert ev["loss_fn"] == "none" and 0.0 <= ev["pruned"]["agreement"] <= 1.0
    assert ev["pruned"]["relative_error"] >= 0.0
    assert res.report.calibration["loss"] == "none"


def test_the_readme_criterion_example_runs():
    """prunekit/README.md's Fisher criterion, as written there."""
    import re
    from pathlib import Path

    text = Path(prunekit.__file__).with_name("README.md").read_text()
    block = re.search(r"```python\n(from prunekit.prune import importance\n.*?)```", text, re.S).group(1)
    scope: dict = {}
    exec(compile(block, "README.md", "exec"), scope)  # our own documentation, not an upload
    try:
        model, cal = _mlp_with_dead_channel()
        res = prunekit.prune(model, {"ratio": 0.125, "importance": "fisher", "batch_size": 16}, calibration=cal)
        assert _removed_rows(model[0].weight.detach(), _first_weight(res.model)) == [0]  # no gradient: no Fisher score
    finally:
        imp.unregister("fisher")


def test_a_probe_that_restores_channels_still_meets_the_target():
    """A probing criterion restores candidates; the target search goes on without them."""
    seen: list[set[int]] = []

    class KeepsTheFirstTwo(imp.Importance):
        """Restores the two lowest-numbered channels of the first candidate set it is shown."""

        name = "test_restoring_probe"

        def channels(self, inp):
            return inp.channel_totals(inp.tensors, lambda rows: rows.pow(2).sum(1))

        def probe_channels(self, inp, candidates):
            seen.append(set(candidates))
            return set(candidates) - set(sorted(seen[0])[:2])

    imp.register(KeepsTheFirstTwo)
    try:
        model, _ = _cnn_data()
        res = prunekit.prune(model, {"target": {"macs": 0.5}, "importance": "test_restoring_probe",
                                     "inputs": [{"shape": [2, 1, 8, 8]}]})
    finally:
        imp.unregister("test_restoring_probe")
    assert len(seen) >= 2  # the first round's survivors missed the target
    restored = set(sorted(seen[0])[:2])
    assert not restored & seen[-1]  # a restored channel is never proposed again
    t = res.report.target
    assert t["met"] and t["reached"] <= 0.5
