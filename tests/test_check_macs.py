"""The report's MACs are counted on passes the job runs anyway (``api._check_macs``): the capture's
in the upload comparison, the pruned graph's in the check, each at the first check batch.  They
must be exactly what :func:`prunekit.metrics.count_macs` counts on the captured upload and on the
pruned model at the report's shapes, for every kind of op the counter knows (convolutions,
matmuls and SDPA, the fused recurrent ops of the custom mapping), also where the job goes on
with another graph than the capture (subselected inputs); where a shape depends on the input
values, or the counter cannot follow a pass, ``count_macs`` must still be what counts."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import prunekit
from helpers import example, save_model
from prunekit import api
from prunekit.metrics import MacCounter, count_macs
from prunekit.registry import build, register
from prunekit.verify import check as check_mod


class SdpaNet(nn.Module):
    """Explicit matmuls (q @ k^T, a bmm) beside F.scaled_dot_product_attention."""

    def __init__(self, dim: int = 32, heads: int = 4):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.mix = nn.Linear(dim, dim)
        self.head = nn.Linear(dim, 6)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(x).reshape(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, t, d)
        x = x + self.proj(a)
        m = self.mix(x)
        scores = torch.softmax(m @ x.transpose(1, 2) / d ** 0.5, -1)
        return self.head((scores @ m).mean(1))


class RecurrentPair(nn.Module):
    """An LSTM and a GRU (the counter's custom mapping) between linear layers."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(6, 16)
        self.lstm = nn.LSTM(16, 24, batch_first=True, bidirectional=True)
        self.gru = nn.GRU(48, 20, batch_first=True)
        self.fc = nn.Linear(20, 3)

    def forward(self, x):
        h, _ = self.lstm(F.relu(self.inp(x)))
        h, _ = self.gru(h)
        return self.fc(h[:, -1])


register("test:macs_sdpa", example_inputs=[{"shape": [1, 7, 32]}])(SdpaNet)
register("test:macs_recurrent", example_inputs=[{"shape": [1, 5, 6]}])(RecurrentPair)

CASES = [  # (architecture, inputs)
    ("zoo:resnet_mini", [{"shape": [1, 3, 32, 32]}]),
    ("zoo:mobilenetv2_mini", [{"shape": [1, 3, 32, 32]}]),
    ("zoo:vit_mini", [{"shape": [1, 3, 32, 32]}]),
    ("zoo:mha_transformer", [{"shape": [1, 10, 32]}]),
    ("test:macs_sdpa", [{"shape": [1, 7, 32]}]),
    ("test:macs_recurrent", [{"shape": [1, 5, 6]}]),
]


@pytest.fixture
def macs_calls(monkeypatch):
    """How many times the job fell back to ``count_macs``."""
    calls: list = []

    def counted(module, inputs):
        calls.append(module)
        return count_macs(module, inputs)

    monkeypatch.setattr(api, "count_macs", counted)
    return calls


def _one(inputs, seed: int = 0):
    return example(inputs, 1, seed=seed)


def _captured(model, inputs):
    """The upload as the job captures it: what ``count_macs`` counted ``before`` on until now
    (an eager ``nn.MultiheadAttention`` takes a fused fast path the counter does not see)."""
    from prunekit.capture import capture
    from prunekit.io.inputs import from_specs
    from prunekit.spec import parse_spec

    return capture(api._load_any(model, parse_spec({"inputs": inputs, "ratio": 0.5})), from_specs(inputs)).gm


@pytest.mark.parametrize("arch,inputs", CASES, ids=[c[0] for c in CASES])
def test_macs_from_the_check_equal_count_macs(arch, inputs, macs_calls):
    torch.manual_seed(0)
    model = build(arch)
    res = prunekit.prune(model, {"ratio": 0.5, "inputs": inputs})
    r = res.report
    assert macs_calls == []  # both figures came from the check's passes
    assert r.macs_before == count_macs(_captured(model, inputs), _one(inputs))
    assert r.macs_after == count_macs(res.model, _one(inputs))
    assert 0 < r.macs_after < r.macs_before


def test_torchscript_upload_macs_equal_count_macs(tmp_path, macs_calls):
    torch.manual_seed(0)
    model = build("test:macs_recurrent")
    inputs = [{"shape": [1, 5, 6]}]
    path = save_model(model, "traced", inputs, tmp_path / "m.pt")
    res = prunekit.prune_to_dir(path, {"ratio": 0.5, "inputs": inputs}, tmp_path / "out")
    assert macs_calls == []
    assert res.report.macs_before == count_macs(model, _one(inputs))
    assert res.report.macs_after == count_macs(res.model, _one(inputs)) < res.report.macs_before


def test_subselected_inputs_count_the_upload_not_the_subselected_graph(macs_calls):
    """With ``dim: in`` the job goes on with the subselected graph: ``before`` must still be the
    upload's capture, as the upload comparison counted it before the inputs stage."""
    torch.manual_seed(0)
    model = build("zoo:resnet_mini").eval()
    inputs = [{"shape": [1, 3, 32, 32]}]
    res = prunekit.prune(model, {"channels": [{"param": "layer1.1.conv1.weight", "channels": [5, 6], "dim": "in"}],
                                 "inputs": inputs})
    assert macs_calls == []
    assert res.report.inputs["narrows"] + res.report.inputs["gathers"] == 1  # the subselection happened
    assert res.report.macs_before == count_macs(model, _one(inputs))
    assert res.report.macs_after == count_macs(res.model, _one(inputs)) < res.report.macs_before


def test_renormalised_statistics_count_the_upload(macs_calls):
    from test_normalized_dims import INPUTS, _model

    model = _model()
    res = prunekit.prune(model, {"ratio": 0.5, "inputs": INPUTS, "normalized_dims": "prune"})
    assert res.report.normalized_dims["function_changed"]
    assert macs_calls == []
    assert res.report.macs_before == count_macs(model, _one(INPUTS))
    assert res.report.macs_after == count_macs(res.model, _one(INPUTS))


class Selective(nn.Module):
    """A row selection by value (``nonzero``): how many rows the head multiplies depends on the input."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(8, 16)
        self.b = nn.Linear(16, 16)
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        h = self.b(F.relu(self.a(x)))
        rows = h.reshape(-1, 16)
        picked = rows[rows.sum(1) > 0]
        return self.head(picked).sum(0, keepdim=True) + h.mean(1) @ self.head.weight.T


def test_value_dependent_shapes_count_on_the_reports_inputs(macs_calls):
    torch.manual_seed(0)
    model = Selective().eval()
    inputs = [{"shape": [1, 12, 8]}]
    res = prunekit.prune(model, {"ratio": 0.5, "inputs": inputs})
    assert len(macs_calls) == 2
    assert res.report.macs_before == count_macs(model, _one(inputs))
    assert res.report.macs_after == count_macs(res.model, _one(inputs))


def test_a_pass_the_counter_cannot_follow_falls_back(monkeypatch, macs_calls):
    class Broken(MacCounter):
        def __enter__(self):
            raise RuntimeError("no formula")

    monkeypatch.setattr(check_mod, "MacCounter", Broken)
    torch.manual_seed(0)
    model = build("zoo:resnet_mini")
    inputs = [{"shape": [1, 3, 32, 32]}]
    res = prunekit.prune(model, {"ratio": 0.5, "inputs": inputs})
    assert len(macs_calls) == 2 and res.report.check["passed"]
    assert res.report.macs_before == count_macs(model, _one(inputs))
