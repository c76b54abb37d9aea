"""The torch internals PruneKit patches are still there (prunekit/torch_compat.py).

A torch upgrade that removes one must fail here, by name, not silently disable a patch (for the
unpickling patch that would mean unpickling uploads with ``weights_only=False``).
"""

import pytest
import torch

from prunekit import torch_compat
from prunekit.errors import UnsafeModelFile


def test_every_patched_piece_exists_in_this_torch() -> None:
    torch_compat.check()


def test_a_missing_piece_fails_loudly_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(torch._C, "_pickle_load_obj")
    with pytest.raises(torch_compat.TorchInternalsChanged, match="_pickle_load_obj"):
        torch_compat.check()


def test_untrusted_unpickling_forces_weights_only_and_restores_torch(tmp_path) -> None:
    import os

    class Runs:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (os.getcwd, ())

    path = tmp_path / "obj.pt"
    torch.save({"x": Runs()}, path)
    real_load = torch.load

    def refuse(*_a, **_k):
        raise UnsafeModelFile("refused")

    with torch_compat.untrusted_unpickling(refuse):
        with pytest.raises(Exception, match="Weights only load failed|Unsupported"):
            torch.load(path, weights_only=False)  # the caller's False is overridden
        with pytest.raises(UnsafeModelFile):
            torch._C._pickle_load_obj(b"")
    assert torch.load is real_load


def test_restated_converter_init_sorts_the_state_dict_like_torch_by_name() -> None:
    """capture/torchscript.py restates TS2EPConverter.__init__ (sorting by name, not by pairwise
    value comparison): every field but the parameter/buffer split must be what torch's sets, the
    split must name exactly the parameters, and both converters must give the same program."""
    import torch.nn as nn
    from torch._export.converter import TS2EPConverter

    from prunekit.capture.torchscript import _converter_class

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.bn = nn.BatchNorm2d(4)  # fresh: running_var equals weight (torch calls it a parameter)
            self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 4)
            self.register_buffer("scale", torch.full((4,), 2.0))

        def forward(self, x):
            y = self.bn(self.conv(x)).mean((2, 3))
            return self.b(self.a(y)) * self.scale

    ts = torch.jit.trace(Net().eval(), torch.randn(2, 3, 8, 8))
    x = (torch.randn(2, 3, 8, 8),)
    ours, theirs = _converter_class()(ts, x), TS2EPConverter(ts, x)
    assert set(vars(ours)) == set(vars(theirs))
    for field in ("name_to_non_tensor_attributes", "name_to_constant", "sample_kwargs"):
        assert getattr(ours, field) == getattr(theirs, field), field
    assert ours.sample_args is x and len(list(ours.ts_graph.nodes())) == len(list(theirs.ts_graph.nodes()))
    assert set(ours.name_to_param) == {n for n, _ in ts.named_parameters()}
    assert set(ours.name_to_param) < set(theirs.name_to_param)  # torch's also took bn.running_var
    both = lambda c: {**c.name_to_param, **c.name_to_buffer}  # noqa: E731
    assert both(ours).keys() == both(theirs).keys()
    assert all(both(ours)[k] is both(theirs)[k] or torch.equal(both(ours)[k], both(theirs)[k]) for k in both(ours))
    ep_ours, ep_theirs = ours.convert(), theirs.convert()
    assert str(ep_ours.graph) == str(ep_theirs.graph)
    assert torch.equal(ep_ours.module()(*x), ep_theirs.module()(*x))


def test_no_stack_traces_restores_torchs_setting_after_nested_blocks() -> None:
    import torch.fx.config as fx_config

    before = fx_config.do_not_emit_stack_traces
    with torch_compat.no_stack_traces():
        with torch_compat.no_stack_traces():
            assert fx_config.do_not_emit_stack_traces is True
        assert fx_config.do_not_emit_stack_traces is True  # the outer block still holds it
    assert fx_config.do_not_emit_stack_traces == before
