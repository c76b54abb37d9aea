"""The check and the artifact proof run at batch sizes other than the capture's (``CAPTURE_BATCH``).

A graph or a written file that holds the capture's batch as a constant runs at that batch, and
computes the right thing there; only another batch shows it.  Batch 1 alone does not always: a
slice whose end is the capture's batch clamps to the one row there is.  And the proof runs the
file once, at the check's largest batch: were that the capture's batch, a file traced with the
batch baked into a reshape would be handed out.  So the check's batches are 1 and one above the
capture's batch, and both kinds of bake fail the job here."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn as nn

import prunekit
from prunekit import api
from prunekit.capture import CAPTURE_BATCH
from prunekit.errors import CheckFailed, ExportFailed
from prunekit.io import export as export_mod

INPUTS = [{"shape": [1, 6, 8, 8]}]


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(6, 16, 3), nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 8, 3),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10)).eval()


def test_the_check_batches_avoid_the_capture_batch():
    class Cap:
        dynamic_batch = True
        example = (torch.zeros(CAPTURE_BATCH, 3),)

    batches = api._check_batches(Cap())
    assert 1 in batches and max(batches) > CAPTURE_BATCH


def test_a_written_file_with_the_capture_batch_baked_in_is_not_handed_out(tmp_path, monkeypatch):
    real = export_mod.to_torchscript

    class Baked(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x).reshape(CAPTURE_BATCH, -1)  # traced: the batch becomes a constant

    def baked(gm, example):
        assert example[0].shape[0] == CAPTURE_BATCH  # the writer traces at the capture's batch
        return torch.jit.trace(Baked(real(gm, example)), example, check_trace=False, strict=False)

    monkeypatch.setattr(export_mod, "to_torchscript", baked)
    src = tmp_path / "m.pt"
    torch.jit.save(torch.jit.trace(_model(), torch.randn(2, 6, 8, 8)), str(src))
    with pytest.raises(ExportFailed, match="computes something else") as err:
        prunekit.prune_to_dir(src, {"ratio": 0.5, "inputs": INPUTS}, tmp_path / "out")
    b = int(re.search(r"at batch (\d+)", str(err.value)).group(1))
    assert b != CAPTURE_BATCH
    assert not (tmp_path / "out" / "model.pt").exists()


def test_a_capture_that_cuts_its_output_to_the_capture_batch_fails_the_check(monkeypatch):
    """``out[:2]`` is right at batch 2 and, clamped, at batch 1: wrong at any larger batch."""
    real = api.capture

    def cut(*a, **k):
        cap = real(*a, **k)
        g = cap.gm.graph
        out = next(n for n in g.nodes if n.op == "output")
        with g.inserting_before(out):
            sliced = tuple(g.call_function(torch.ops.aten.slice.Tensor, (o, 0, 0, CAPTURE_BATCH)) for o in out.args[0])
        out.args = (sliced,)
        cap.gm.recompile()
        return cap

    monkeypatch.setattr(api, "capture", cut)
    with pytest.raises(CheckFailed, match="does not match the uploaded model") as err:
        prunekit.prune(_model(), {"ratio": 0.5, "inputs": INPUTS})
    assert int(re.search(r"at batch (\d+)", str(err.value)).group(1)) > CAPTURE_BATCH
