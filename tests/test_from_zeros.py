"""from_zeros: a model masked by torch.nn.utils.prune comes out physically smaller and equal to the
upload; channels that still carry a value although their weights are zero are kept, and said so."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.utils.prune as tprune

import prunekit
from helpers import example, save_model
from prunekit.errors import InvalidSpec

INPUTS = [{"shape": [1, 3, 8, 8]}]


class Net(nn.Module):
    def __init__(self, bn: bool = False, act: type[nn.Module] = nn.ReLU) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(16) if bn else nn.Identity()
        self.act = act()
        self.c2 = nn.Conv2d(16, 8, 3, padding=1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(self.c2(self.act(self.bn(self.c1(x)))).mean((2, 3)))


def _masked(**kw) -> Net:
    torch.manual_seed(0)
    m = Net(**kw).eval()
    tprune.ln_structured(m.c1, "weight", amount=0.5, n=2, dim=0)
    tprune.remove(m.c1, "weight")  # the masks made permanent: zeros in an ordinary tensor
    return m


def test_ln_structured_masks_come_out_physically_smaller_and_equal_to_the_upload(tmp_path):
    model = _masked()
    zero_rows = int((model.c1.weight.flatten(1).abs().sum(1) == 0).sum())
    assert zero_rows == 8
    path = save_model(model, "traced", INPUTS, tmp_path / "m.pt")
    res = prunekit.prune_to_dir(path, {"from_zeros": True, "inputs": INPUTS}, tmp_path / "out")
    out = torch.jit.load(str(tmp_path / "out" / "model.pt"))
    assert dict(out.named_parameters())["c1.weight"].shape[0] == 16 - zero_rows
    assert dict(out.named_parameters())["c2.weight"].shape[1] == 16 - zero_rows
    assert res.report.from_zeros["removed"] == zero_rows and res.report.params_after < res.report.params_before
    for b in (1, 5):
        x = example(INPUTS, b, seed=b)
        assert torch.allclose(out(*x), model(*x), rtol=1e-6, atol=1e-6)  # the upload itself, not a masked copy


def test_a_zero_row_behind_a_live_batchnorm_is_kept_and_the_error_says_what_to_mask():
    model = _masked(bn=True)
    with pytest.raises(InvalidSpec, match="BatchNorm shift is not zero"):
        prunekit.prune(model, {"from_zeros": True, "inputs": INPUTS})
    dead = model.c1.weight.flatten(1).abs().sum(1) == 0
    with torch.no_grad():  # mask the BatchNorm too: now the channels emit exactly zero
        model.bn.weight[dead] = 0
        model.bn.bias[dead] = 0
    res = prunekit.prune(model, {"from_zeros": True, "inputs": INPUTS})
    assert res.report.from_zeros["removed"] == int(dead.sum())
    x = example(INPUTS, 3)
    assert torch.allclose(res.model(*x), model(*x), rtol=1e-6, atol=1e-6)


def test_zero_weights_before_an_op_that_maps_zero_elsewhere_are_not_removed():
    with pytest.raises(InvalidSpec, match="sigmoid maps 0 elsewhere"):
        prunekit.prune(_masked(act=nn.Sigmoid), {"from_zeros": True, "inputs": INPUTS})


def test_from_zeros_adds_to_a_ratio_and_the_check_still_holds():
    model = _masked()
    only_ratio = prunekit.prune(model, {"ratio": 0.25, "inputs": INPUTS})
    both = prunekit.prune(model, {"ratio": 0.25, "from_zeros": True, "inputs": INPUTS})
    assert both.report.params_after < only_ratio.report.params_after
    assert both.report.check["passed"] and both.report.from_zeros["removed"] == 8


def test_from_zeros_is_a_structured_field():
    with pytest.raises(InvalidSpec, match="from_zeros"):
        prunekit.parse_spec({"method": "unstructured", "sparsity": 0.5, "from_zeros": True})


def test_the_group_by_group_proof_is_bounded():
    """A model with many zero groups that fail together is tried a bounded number of times."""
    from prunekit.prune.from_zeros import exact

    calls = []

    def unchanged(rs):
        calls.append(rs)
        return len(rs) == 1 and next(iter(rs)) % 2 == 0  # even singletons pass alone

    candidates = {f"g{i:03d}": {i} for i in range(100)}
    accepted, kept = exact(candidates, unchanged, most=10)
    assert len(calls) == 1 + 10 + 1  # all at once, ten groups alone, the survivors together
    # 0, 2, 4, 6, 8 pass alone but not together: nothing is removed, every group is kept
    assert accepted == set() and len(kept) == 100


def test_zero_input_columns_free_the_producer_channels_no_reader_wants():
    """ln_structured on the *consumer's* input dim: c1's channels are read by nobody any more."""
    torch.manual_seed(0)
    model = Net().eval()
    tprune.ln_structured(model.c2, "weight", amount=0.25, n=1, dim=1)
    tprune.remove(model.c2, "weight")
    dead = (model.c2.weight.transpose(0, 1).flatten(1) == 0).all(1)
    assert int(dead.sum()) == 4
    res = prunekit.prune(model, {"from_zeros": True, "inputs": INPUTS})
    after = dict(res.model.named_parameters())
    assert after["c1.weight"].shape[0] == 12 and after["c2.weight"].shape[1] == 12
    assert res.report.inputs["zero_columns"] == 4
    assert res.report.inputs["gathers"] == res.report.inputs["narrows"] == 0
    x = example(INPUTS, 3)
    assert torch.allclose(res.model(*x), model(*x), rtol=1e-6, atol=1e-6)


def test_a_zero_column_of_a_stream_others_still_read_is_left_alone():
    """The residual stream's other readers keep the channel: no subselection for a zero column."""
    from prunekit.registry import build

    torch.manual_seed(0)
    model = build("zoo:resnet_mini").eval()
    with torch.no_grad():
        model.layer1[1].conv1.weight[:, 5] = 0
    with pytest.raises(InvalidSpec, match="from_zeros"):
        prunekit.prune(model, {"from_zeros": True, "inputs": [{"shape": [1, 3, 32, 32]}]})
