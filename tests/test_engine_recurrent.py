"""Recurrent layers prune through their fused ops: GRU, LSTM and RNN, every layout.

Hidden unit j goes from every gate block, from w_hh's columns, from the initial state and from
the next layer's inputs; the pruned model keeps the native fused op and runs at any batch size.
"""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import prunekit
from prunekit.registry import build, register

from helpers import save_model

HIDDEN = 24


class RecurrentNet(nn.Module):
    """Linear front-end → recurrent layer → linear head on every step (batch-first input)."""

    def __init__(self, kind: str, bidirectional: bool, num_layers: int, batch_first: bool, bias: bool = True):
        super().__init__()
        self.batch_first = batch_first
        self.inp = nn.Linear(6, 16)
        self.rnn = getattr(nn, kind)(16, HIDDEN, num_layers, batch_first=batch_first, bidirectional=bidirectional, bias=bias)
        self.head = nn.Linear(HIDDEN * (2 if bidirectional else 1), 5)

    def forward(self, x):
        h = F.relu(self.inp(x))
        if not self.batch_first:
            h = h.transpose(0, 1)
        out, _ = self.rnn(h)
        if not self.batch_first:
            out = out.transpose(0, 1)
        return self.head(out)


class ConvGRU(nn.Module):
    """A conv front-end over time feeding a GRU, its last step into a classifier."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(6, 20, 3, padding=1)
        self.bn = nn.BatchNorm1d(20)
        self.gru = nn.GRU(20, HIDDEN, batch_first=True)
        self.fc = nn.Linear(HIDDEN, 3)

    def forward(self, x):  # x: (batch, time, features)
        h = F.relu(self.bn(self.conv(x.transpose(1, 2)))).transpose(1, 2)
        out, _ = self.gru(h)
        return self.fc(out[:, -1])


CONFIGS = list(itertools.product(["GRU", "LSTM", "RNN"], [False, True], [1, 2], [True, False]))


def _name(kind, bi, layers, bf):
    return f"test:{kind.lower()}_{'bi' if bi else 'uni'}_{layers}l_{'bf' if bf else 'tf'}"


for _cfg in CONFIGS:
    register(_name(*_cfg), example_inputs=[{"shape": [1, 5, 6]}])(
        (lambda c: lambda: RecurrentNet(*c))(_cfg)
    )
register("test:conv_gru", example_inputs=[{"shape": [1, 5, 6]}])(ConvGRU)
register("test:gru_nobias", example_inputs=[{"shape": [1, 5, 6]}])(lambda: RecurrentNet("GRU", False, 1, True, bias=False))


def _rnn_of(model: nn.Module) -> nn.Module:
    for m in model.modules():
        if isinstance(m, torch.jit.ScriptModule) and m.original_name in ("GRU", "LSTM", "RNN"):
            return m
        if isinstance(m, nn.RNNBase):
            return m
    raise AssertionError("no recurrent module")


def _prune(tmp_path, name, upload, ratio, seq):
    torch.manual_seed(0)
    model = build(name)
    inputs = [{"shape": [1, seq, 6]}]
    path = save_model(model, upload, inputs, tmp_path / f"{upload}.pt")
    spec = {"ratio": ratio, "inputs": inputs, "architecture": name}
    return model, prunekit.prune_to_dir(path, spec, tmp_path / f"out_{upload}_{ratio}_{seq}")


@pytest.mark.parametrize("cfg", CONFIGS, ids=[_name(*c) for c in CONFIGS])
def test_every_layout_prunes_hidden_units(cfg, tmp_path):
    name = _name(*cfg)
    model, res = _prune(tmp_path, name, "state_dict", 0.5, 5)
    rep = res.report
    assert rep.check["passed"] and not rep.barriers
    out = prunekit.load_pruned(name, res.artifacts["state_dict.pt"], res.artifacts["manifest.json"])
    assert isinstance(out.rnn, type(model.rnn))  # still the native, fused module
    assert out.rnn.hidden_size == HIDDEN // 2
    assert out.rnn.input_size < 16  # the front-end's outputs went too
    shapes = {c.name: c.shape_after for c in rep.layers}
    gates = {"GRU": 3, "LSTM": 4, "RNN": 1}[cfg[0]]
    assert shapes["rnn.weight_hh_l0"] == [gates * out.rnn.hidden_size, out.rnn.hidden_size]
    assert list(out.rnn.weight_hh_l0.shape) == shapes["rnn.weight_hh_l0"]
    for batch, seq in [(1, 1), (3, 5), (2, 17)]:
        y = out(torch.randn(batch, seq, 6))
        assert y.shape == (batch, seq, 5)


@pytest.mark.parametrize("name", ["test:gru_bi_2l_bf", "test:lstm_uni_2l_tf", "test:conv_gru", "test:gru_nobias", "zoo:gru_classifier"])
@pytest.mark.parametrize("ratio", [0.25, 0.5])
@pytest.mark.parametrize("seq", [1, 5, 17])
def test_torchscript_uploads_across_lengths(name, ratio, seq, tmp_path):
    if name == "zoo:gru_classifier":
        seq_inputs = 16  # the GRU classifier takes 16 features
    else:
        seq_inputs = 6
    torch.manual_seed(0)
    model = build(name)
    inputs = [{"shape": [1, seq, seq_inputs]}]
    path = save_model(model, "traced", inputs, tmp_path / "m.pt")
    res = prunekit.prune_to_dir(path, {"ratio": ratio, "inputs": inputs}, tmp_path / "out")
    assert res.report.check["passed"] and res.report.check["batch_sizes"] == [1, 3]
    pruned = torch.jit.load(str(res.artifacts["model.pt"]))
    sd = pruned.state_dict()
    hh = [k for k in sd if "weight_hh_l0" in k][0]
    before = dict(model.state_dict())[hh]
    assert sd[hh].shape[1] == before.shape[1] - int(ratio * before.shape[1])
    after = {c.name: c.shape_after for c in res.report.layers}
    assert list(sd[hh].shape) == after[hh]
    assert any("weight_ih" in n for n in after), "input size should shrink with the front-end"
    y = pruned(torch.randn(3, seq, seq_inputs))
    assert y.shape[0] == 3


def test_gru_classifier_gets_smaller_and_still_runs():
    model = build("zoo:gru_classifier")
    res = prunekit.prune(model, {"ratio": 0.5, "inputs": [{"shape": [1, 5, 16]}]})
    w_ih = res.model.get_parameter("gru.weight_ih_l0")
    w_hh = res.model.get_parameter("gru.weight_hh_l0")
    assert w_hh.shape[1] < model.gru.hidden_size and w_ih.shape[1] < model.gru.input_size
    assert res.model(torch.randn(4, 9, 16)).shape == (4, 10)
    ops = {str(n.target) for n in res.model.graph.nodes}
    assert "aten.gru.input" in ops  # the fused op is kept
