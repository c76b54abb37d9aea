"""Input channels of one consumer (seed 003): the consumer reads a subselection, the producer and
its other readers keep every channel, and the result equals the upload with those columns zeroed."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

import prunekit
from helpers import example, save_model
from prunekit.errors import InvalidSpec
from prunekit.registry import build

INPUTS = [{"shape": [1, 3, 32, 32]}]
CONSUMER = "layer1.1.conv1.weight"  # reads the residual stream of layer1, which layer1.1's add and layer2 read too


def _resnet() -> nn.Module:
    torch.manual_seed(0)
    m = build("zoo:resnet_mini").eval()
    with torch.no_grad():  # non-trivial BN statistics, so a wrong subselection shows
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.5, 0.5)
                mod.running_var.uniform_(0.5, 2.0)
    return m


def _zeroed(model: nn.Module, param: str, columns: list[int]) -> nn.Module:
    ref = copy.deepcopy(model)
    with torch.no_grad():
        dict(ref.named_parameters())[param][:, columns] = 0
    return ref


def test_seed_003_case_removes_one_consumers_input_column_only():
    model = _resnet()
    res = prunekit.prune(model, {"channels": [{"param": CONSUMER, "channels": [5], "dim": "in"}], "inputs": INPUTS})
    w = dict(model.named_parameters())[CONSUMER]
    r = res.report
    assert r.params_before - r.params_after == w.shape[0] * w.shape[2] * w.shape[3]  # exactly that column
    after = dict(res.model.named_parameters())
    assert tuple(after[CONSUMER].shape) == (w.shape[0], w.shape[1] - 1, *w.shape[2:])
    assert torch.equal(after[CONSUMER], torch.cat([w[:, :5], w[:, 6:]], 1))
    for name, p in model.named_parameters():  # the producer and every other reader keep all channels
        if name != CONSUMER:
            assert after[name].shape == p.shape, name
    ref = _zeroed(model, CONSUMER, [5])
    for b in (1, 4):
        x = example(INPUTS, b, seed=b)
        assert torch.allclose(res.model(*x), ref(*x), rtol=1e-5, atol=1e-5)
        assert not torch.allclose(res.model(*x), model(*x), rtol=1e-5, atol=1e-5)  # the column mattered
    # reordered: channel 5 moved to the end of the stream, so the consumer reads a narrow
    assert r.inputs["gathers"] == 0 and r.inputs["narrows"] == 1 and r.check["passed"]
    assert r.inputs["reordered"][0]["contiguous_after"] == 1
    plain = prunekit.prune(model, {"pruned_inputs": [[CONSUMER, 5]], "reorder_inputs": False, "inputs": INPUTS})
    assert plain.report.inputs["gathers"] == 1 and plain.report.inputs["reordered"] == []
    assert torch.allclose(plain.model(*x), ref(*x), rtol=1e-5, atol=1e-5)


STREAM_READERS = ("layer1.0.conv1.weight", "layer1.1.conv1.weight", "layer2.0.conv1.weight")  # one residual stream


def _subselect_ops(model) -> dict[str, int]:
    ops = [str(n.target) for n in model.graph.nodes]
    return {"gathers": ops.count("aten.index_select.default"), "narrows": ops.count("aten.slice.Tensor")}


def test_three_readers_of_one_stream_need_no_gather_once_reordered():
    model = _resnet()
    drops = ([5], [5, 6], [5, 6, 7])  # nested: one order keeps every reader's inputs contiguous
    spec = {"channels": [{"param": p, "channels": d, "dim": "in"} for p, d in zip(STREAM_READERS, drops)],
            "inputs": INPUTS}
    res = prunekit.prune(model, spec)
    assert res.report.inputs["gathers"] == 0 and res.report.inputs["narrows"] == 3
    assert _subselect_ops(res.model)["gathers"] == 0
    ref = copy.deepcopy(model)
    with torch.no_grad():
        for p, d in zip(STREAM_READERS, drops):
            dict(ref.named_parameters())[p][:, d] = 0
    x = example(INPUTS, 4, seed=3)
    assert torch.allclose(res.model(*x), ref(*x), rtol=1e-5, atol=1e-5)
    before = sum(p.numel() for p in model.parameters())
    cols = sum(len(d) * dict(model.named_parameters())[p][:, 0].numel() for p, d in zip(STREAM_READERS, drops))
    assert res.report.params_after == before - cols


def test_without_a_contiguous_order_the_fewest_gathers_remain():
    model = _resnet()
    drops = ([1], [2], [3])  # three disjoint drops: a run's complement is a prefix plus a suffix, two at most
    spec = {"channels": [{"param": p, "channels": d, "dim": "in"} for p, d in zip(STREAM_READERS, drops)],
            "inputs": INPUTS}
    res = prunekit.prune(model, spec)
    assert res.report.inputs["gathers"] == 1 and res.report.inputs["narrows"] == 2
    assert res.report.check["passed"]


def test_constrained_mode_removes_the_channel_from_the_producer_and_every_reader():
    model = _resnet()
    res = prunekit.prune(model, {"pruned_inputs": [[CONSUMER, 5]], "constrained": True, "inputs": INPUTS})
    info = res.report.inputs
    assert info["mode"] == "constrained" and info["channels"] == 1
    assert "layer2.0.conv1.weight" in info["also_removed_from"] and "layer1.0.conv2.weight" in info["also_removed_from"]
    after = dict(res.model.named_parameters())
    assert after[CONSUMER].shape[1] == 15 and after["layer1.0.conv2.weight"].shape[0] == 15
    assert _subselect_ops(res.model)["gathers"] == 0 and res.report.check["passed"]


def test_a_contiguous_run_of_kept_channels_is_a_narrow_and_the_tuple_form_is_the_same_spec():
    model = _resnet()
    as_tuples = prunekit.prune(model, {"pruned_inputs": [[CONSUMER, 0], [CONSUMER, 1], [CONSUMER, 15]], "inputs": INPUTS})
    as_entries = prunekit.prune(model, {"channels": [{"param": CONSUMER, "channels": [15, 0, 1], "dim": "in"}],
                                        "inputs": INPUTS})
    assert as_tuples.report.inputs["narrows"] == 1 and as_tuples.report.inputs["gathers"] == 0
    assert as_tuples.report.inputs["consumers"][0]["kept"] == 13
    assert as_tuples.report.params_after == as_entries.report.params_after
    ops = {str(n.target) for n in as_tuples.model.graph.nodes}
    assert "aten.index_select.default" not in ops and "aten.slice.Tensor" in ops
    x = example(INPUTS, 3)
    assert torch.allclose(as_tuples.model(*x), _zeroed(model, CONSUMER, [0, 1, 15])(*x), rtol=1e-5, atol=1e-5)


def test_input_channels_with_output_pruning_export_and_reload(tmp_path):
    model = _resnet()
    path = save_model(model, "traced", INPUTS, tmp_path / "m.pt")
    spec = {"ratio": 0.25, "pruned_inputs": [[CONSUMER, 3], ["layer2.0.conv1.weight", 7]], "inputs": INPUTS}
    res = prunekit.prune_to_dir(path, spec, tmp_path / "out")
    assert res.report.check["passed"] and res.report.inputs["check_max_rel"] <= 1e-4
    assert res.report.params_after < res.report.params_before
    loaded = torch.jit.load(str(tmp_path / "out" / "model.pt"))
    x = example(INPUTS, 5, seed=9)
    assert torch.allclose(loaded(*x), res.model(*x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("entry, words", [
    ({"param": CONSUMER, "channels": [16], "dim": "in"}, "has 16 input channels; index 16 is out of range"),
    ({"param": CONSUMER, "channels": list(range(16)), "dim": "in"}, "every input channel"),
    ({"param": "layer1.1.bn1.weight", "channels": [0], "dim": "in"}, "dim 'in' removes input channels of a"),
    ({"param": "no.such.weight", "channels": [0], "dim": "in"}, "no.such.weight"),
])
def test_bad_input_channel_entries_name_the_field(entry, words):
    with pytest.raises(InvalidSpec) as err:
        prunekit.prune(_resnet(), {"channels": [entry], "inputs": INPUTS})
    assert "channels" in str(err.value) and words in str(err.value)


def test_a_state_dict_output_cannot_subselect_and_says_which_formats_can(tmp_path):
    path = save_model(_resnet(), "state_dict", INPUTS, tmp_path / "w.pt")
    spec = {"architecture": "zoo:resnet_mini", "pruned_inputs": [[CONSUMER, 5]], "inputs": INPUTS}
    with pytest.raises(InvalidSpec, match="output_format torchscript or export"):
        prunekit.prune_to_dir(path, spec, tmp_path / "out")
    res = prunekit.prune_to_dir(path, dict(spec, output_format="torchscript"), tmp_path / "out_ts")
    assert res.report.inputs["gathers"] + res.report.inputs["narrows"] == 1


def test_negative_pruned_inputs_are_refused_by_the_spec():
    with pytest.raises(InvalidSpec, match="pruned_inputs"):
        prunekit.parse_spec({"pruned_inputs": [[CONSUMER, -1]], "inputs": INPUTS})


def test_a_channel_no_reader_wants_goes_from_its_producer():
    """The only reader of conv1's output drops channel 2: no subselection, the producer loses it."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3), nn.Flatten(), nn.Linear(4 * 4 * 4, 2)).eval()
    x_spec = [{"shape": [1, 3, 8, 8]}]
    res = prunekit.prune(model, {"pruned_inputs": [["2.weight", 2]], "inputs": x_spec})
    after = dict(res.model.named_parameters())
    assert after["0.weight"].shape[0] == 7 and after["0.bias"].shape[0] == 7 and after["2.weight"].shape[1] == 7
    assert res.report.inputs["removed_outright"] == [{"param": "0.weight", "channels": [2]}]
    assert res.report.inputs["gathers"] == res.report.inputs["narrows"] == 0
    x = example(x_spec, 3)
    assert torch.allclose(res.model(*x), _zeroed(model, "2.weight", [2])(*x), rtol=1e-5, atol=1e-6)


def test_a_channel_another_op_still_reads_is_subselected_not_removed():
    """conv1's output feeds conv2 and a channel sum: dropping channel 2 at conv2 must keep it for the sum."""

    class TwoReaders(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c1, self.c2 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 4, 3, padding=1)

        def forward(self, x):
            h = torch.relu(self.c1(x))
            return self.c2(h).mean((2, 3)) + h.sum(1).mean((1, 2), keepdim=False).unsqueeze(1)

    torch.manual_seed(0)
    model = TwoReaders().eval()
    x_spec = [{"shape": [1, 3, 8, 8]}]
    res = prunekit.prune(model, {"pruned_inputs": [["c2.weight", 2]], "inputs": x_spec})
    assert res.report.inputs["removed_outright"] == []
    assert dict(res.model.named_parameters())["c1.weight"].shape[0] == 8
    x = example(x_spec, 3)
    assert torch.allclose(res.model(*x), _zeroed(model, "c2.weight", [2])(*x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("drops, runs", [
    ([{5}, {5, 6}, {5, 6, 7}, {0, 5, 6, 7}], 4),        # nested, plus one at the other end: all runs
    ([{1}, {2}, {3}], 2),                                # disjoint: a run's complement is a prefix plus a suffix
    ([{i, i + 40} for i in range(0, 36, 3)], 2),         # 12 overlapping-free pairs: too many classes to try all
])
def test_best_order_makes_the_most_kept_sets_runs(drops, runs):
    from prunekit.prune.reorder import best_order, contiguous

    channels = list(range(96))
    kept = [set(channels) - d for d in drops]
    order, score = best_order(channels, kept)
    assert sorted(order) == channels and score == runs
    assert sum(contiguous(order, k) for k in kept) == runs
