"""The check runs the model *as uploaded*, not only the graph captured from it.

A scripted model whose forward raises came back ``succeeded`` with a model that does not raise:
the capture dropped the ``raise``, and the pruned graph was compared with the captured graph
only.  Now the upload runs on the example before capture (raising there is a clear capture
error) and on the check's inputs (a capture that differs from it fails the check).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn as nn

import prunekit
from prunekit.verify.check import compare_with_upload
from prunekit.errors import CaptureFailed, CheckFailed
from prunekit.io.inputs import from_specs


class AlwaysRaises(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        if y.dim() == 4:
            raise ValueError("this model refuses every input")
        return y


class RaisesAboveBatchOne(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.out = nn.Conv2d(8, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.size(0) > 1:
            raise ValueError("batch must be 1")
        return self.out(self.conv(x).relu())


def _scripted(module: nn.Module, path: Path) -> Path:
    torch.jit.script(module.eval()).save(str(path))
    return path


def test_an_upload_that_always_raises_is_a_capture_error(tmp_path: Path) -> None:
    model = _scripted(AlwaysRaises(), tmp_path / "raises.pt")
    with pytest.raises(CaptureFailed) as err:
        prunekit.prune(model, {"ratio": 0.5, "inputs": [{"shape": [1, 3, 16, 16]}]})
    assert "raises on the example inputs" in str(err.value) and "refuses every input" in str(err.value)


def test_an_upload_that_raises_at_the_specs_batch_is_a_capture_error(tmp_path: Path) -> None:
    model = _scripted(RaisesAboveBatchOne(), tmp_path / "batch1.pt")
    with pytest.raises(CaptureFailed) as err:
        prunekit.prune(model, {"ratio": 0.5, "inputs": [{"shape": [4, 3, 16, 16]}]})
    assert "batch must be 1" in str(err.value) and "[4, 3, 16, 16]" in str(err.value)


def test_an_upload_that_takes_only_batch_one_gives_no_model_that_takes_more(tmp_path: Path) -> None:
    """Captured at its own batch: whatever comes back was checked against the upload at every
    batch it claims to take."""
    model = _scripted(RaisesAboveBatchOne(), tmp_path / "batch1.pt")
    try:
        res = prunekit.prune(model, {"ratio": 0.5, "inputs": [{"shape": [1, 3, 16, 16]}]})
    except CheckFailed as exc:  # the capture took batch 3, the upload does not: refused
        assert "raises at batch 3" in str(exc) and "batch must be 1" in str(exc)
        return
    assert not res.report.dynamic_batch
    assert res.report.check["upload_batch_sizes"] == [1]


def test_a_captured_graph_that_differs_from_the_upload_fails_the_check() -> None:
    sigs = from_specs([{"shape": [1, 4]}])
    upload = nn.Linear(4, 3).eval()
    wrong = nn.Linear(4, 3).eval()  # other weights: as if the capture had lost an op
    assert compare_with_upload(upload, upload, sigs, [1, 3], 0, 1e-4) == 0.0
    with pytest.raises(CheckFailed) as err:
        compare_with_upload(upload, wrong, sigs, [1, 3], 0, 1e-4)
    assert "differs from the uploaded model" in str(err.value) and "batch 1" in str(err.value)


def test_the_report_records_the_comparison_with_the_upload(tmp_path: Path) -> None:
    from crafted import SPEC, honest_pt2

    res = prunekit.prune(honest_pt2(tmp_path / "small.pt2"), SPEC)
    assert res.report.check["upload_batch_sizes"] == [1, 3]
    assert res.report.check["upload_max_rel"] <= 1e-4


def test_a_pt2_given_the_wrong_shape_says_which_input_and_shape(tmp_path: Path) -> None:
    from crafted import honest_pt2

    with pytest.raises(CaptureFailed) as err:
        prunekit.prune(honest_pt2(tmp_path / "small.pt2"), {"ratio": 0.5, "inputs": [{"shape": [1, 3, 32, 32]}]})
    text = str(err.value)
    assert err.value.code == "capture_failed"
    assert "inputs.0" in text and "[*, 3, 16, 16]" in text and "[1, 3, 32, 32]" in text
    assert "graph" not in text.lower() or len(text) < 300  # one line, no dumped graph


class FixedLength(nn.Module):
    """Takes one sequence length only, and says so by raising (scripted: the capture specialises
    the branch away, so only the upload refuses the other length)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(4, 8, 3, padding=1)
        self.out = nn.Conv1d(8, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.size(2) != 16:
            raise ValueError("length must be 16")
        return self.out(self.conv(x).relu())


def test_dims_the_upload_does_not_take_are_named_not_blamed_on_a_lost_part(tmp_path: Path) -> None:
    model = _scripted(FixedLength(), tmp_path / "fixed.pt")
    with pytest.raises((CheckFailed, CaptureFailed)) as err:
        prunekit.prune(model, {"ratio": 0.5, "inputs": [{"shape": [1, 4, 16], "dims": [2]}]})
    text = str(err.value)
    assert "length must be 16" in text and "does not take these input sizes" in text
    assert "inputs[i].dims" in text
