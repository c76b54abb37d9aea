"""Unit tests of the analysis's small pure pieces: the atom union-find, the reshape factor groups,
and single rules on a one-op graph (a table: adding an op adds a row).

The zoo tests prove whole models; these pin down each piece on its own, so a broken piece fails
here, by name, before it fails a model.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from prunekit.analysis.atoms import Atoms
from prunekit.analysis.rules.views import factor_groups
from prunekit.analysis.walk import analyse
from prunekit.capture import capture
from prunekit.io.inputs import from_specs
from prunekit.io.loading import LoadedModel
from prunekit.prune.plan import find_groups

# -- Atoms --------------------------------------------------------------------------------------


def test_union_keeps_the_lowest_root_and_carries_pins_and_outputs() -> None:
    atoms = Atoms()
    a, b = atoms.new(2), atoms.new(2)
    atoms.pin(b[:1], "normalised over")
    atoms.pin(b[1:], "", output=True)
    atoms.union(int(a[0]), int(b[0]))
    atoms.union(int(a[1]), int(b[1]))
    assert atoms.find(int(b[0])) == int(a[0]) and atoms.find(int(b[1])) == int(a[1])
    assert atoms.hard == {int(a[0]): "normalised over"}
    assert atoms.output == {int(a[1])}


def test_union_arrays_couples_index_by_index_and_pins_one_sided_indices() -> None:
    atoms = Atoms()
    x, y = atoms.new(3), atoms.new(3)
    y = y.copy()
    y[2] = -1  # this index carries no channel on one side
    out = atoms.union_arrays(x, y, "one side only")
    assert out.tolist() == x.tolist()
    roots = atoms.roots()
    assert roots[x[0]] == roots[y[0]] and roots[x[1]] == roots[y[1]]
    assert atoms.hard == {int(x[2]): "one side only"}
    with pytest.raises(ValueError, match="sizes 3 and 2"):
        atoms.union_arrays(x, atoms.new(2), "")


def test_merge_makes_one_channel_and_ignores_unlabelled() -> None:
    atoms = Atoms()
    x = atoms.new(4)
    assert atoms.merge(np.array([x[3], -1, x[1]])) == int(x[1])
    roots = atoms.roots()
    assert roots[x[1]] == roots[x[3]] and len(set(roots.tolist())) == 3
    assert atoms.merge(np.array([-1, -1])) == -1


# -- factor groups ------------------------------------------------------------------------------

FACTOR_CASES = [
    ((2, 197, 768), (2, 197, 12, 64), [([0], [0]), ([1], [1]), ([2], [2, 3])]),  # heads split out
    ((6,), (2, 3), [([0], [0, 1])]),
    ((2, 3, 4), (6, 4), [([0, 1], [0]), ([2], [1])]),                            # flatten leading dims
    ((1, 8), (8,), [([0], []), ([1], [0])]),                                      # a size-1 dim goes
    ((2, 6), (3, 4), [([0, 1], [0, 1])]),                                         # no finer split
    ((4,), (3,), None),                                                            # numel differs
]


@pytest.mark.parametrize("a,b,expected", FACTOR_CASES)
def test_factor_groups(a, b, expected) -> None:  # type: ignore[no-untyped-def]
    assert factor_groups(a, b) == expected


# -- single rules on a one-op graph -------------------------------------------------------------


class Between(nn.Module):
    """``conv a`` → the op under test → ``conv b``: is ``a``'s output channel still removable?"""

    def __init__(self, op) -> None:  # type: ignore[no-untyped-def]
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.op = op if isinstance(op, nn.Module) else _Fn(op)
        self.b = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.op(self.a(x)))


class _Fn(nn.Module):
    def __init__(self, fn) -> None:  # type: ignore[no-untyped-def]
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


# (name, op between the convs, whether a's output channels stay removable)
RULE_CASES = [
    ("relu", nn.ReLU(), True),                                          # pointwise: channels pass
    ("batch_norm", nn.BatchNorm2d(8), True),                            # per-channel parameters follow
    ("group_norm", nn.GroupNorm(2, 8), True),                           # whole groups may go
    ("max_pool", nn.MaxPool2d(2), True),                                # spatial: channels pass
    ("sum_over_channels", lambda x: x.sum(1, keepdim=True).expand(-1, 8, -1, -1), True),  # sums ignore zeros
    ("channel_shuffle", lambda x: x.view(x.shape[0], 2, 4, x.shape[2], x.shape[3]).transpose(1, 2)
     .reshape(x.shape), True),                                          # views move channels exactly
    ("cat_then_slice", lambda x: torch.cat([x, x], 1)[:, :8], True),
    ("softmax_over_channels", lambda x: x.softmax(1), False),           # normalises over channels: pinned
    ("mean_over_channels", lambda x: x - x.mean(1, keepdim=True), False),  # averages over them: pinned
]


def _removable(module: nn.Module, shape: tuple[int, ...]) -> set[str]:
    sigs = from_specs([{"shape": list(shape)}])
    module = module.eval()
    cap = capture(LoadedModel("state_dict", 0, module=module, param_names={n for n, _ in module.named_parameters()}), sigs)
    analysis = analyse(cap.gm, cap.example, None)
    tensors = {**dict(cap.gm.named_parameters()), **dict(cap.gm.named_buffers())}
    groups, _ = find_groups(analysis, tensors)
    return {n for g in groups for n, d in g.slots if d == 0}


@pytest.mark.parametrize("name,op,removable", RULE_CASES, ids=[c[0] for c in RULE_CASES])
def test_one_op_between_two_convs(name: str, op, removable: bool) -> None:  # type: ignore[no-untyped-def]
    assert ("a.weight" in _removable(Between(op), (2, 3, 8, 8))) is removable


# -- arguments by name --------------------------------------------------------------------------


def test_arguments_are_read_by_name_whatever_the_overload_and_defaults_fill_in() -> None:
    import torch.fx as fx

    from prunekit.analysis.arguments import bound, set_argument

    g = fx.Graph()
    x, w = g.placeholder("x"), g.placeholder("w")
    conv2d = g.call_function(torch.ops.aten.conv2d.default, (x, w, None, [1, 1], [0, 0], [1, 1], 4))
    conv = g.call_function(torch.ops.aten.convolution.default,
                           (x, w, None, [1, 1], [0, 0], [1, 1], False, [0, 0]), {"groups": 2})
    short = g.call_function(torch.ops.aten.conv2d.default, (x, w))
    assert bound(conv2d)["groups"] == 4 and bound(conv)["groups"] == 2
    assert bound(short)["groups"] == 1 and bound(short)["bias"] is None  # schema defaults
    set_argument(conv2d, "groups", 8)
    set_argument(conv, "groups", 3)
    assert conv2d.args[6] == 8 and conv.kwargs["groups"] == 3  # written where the node passes it



def test_heads_walk_through_a_whole_slice_along_the_heads():
    """Traced TorchScript keeps ``k[:, :]`` (grouped-query attention's key/value repeat): a slice
    along the heads that keeps all of them is no end of the walk, so the key's reshape is a head
    split; a slice that drops heads still ends it."""
    import torch.fx as fx
    from torch.fx.passes.shape_prop import ShapeProp

    from prunekit.analysis.heads import head_dims

    aten = torch.ops.aten

    def heads_of_views(q_heads: int, end: int) -> list:
        def f(q, k):
            q = aten.transpose.int(aten.view.default(q, [2, 16, q_heads, 8]), 1, 2)
            k = aten.slice.Tensor(aten.transpose.int(aten.view.default(k, [2, 16, 4, 8]), 1, 2), 1, 0, end)
            return aten.scaled_dot_product_attention.default(q, k, k)

        gm = fx.symbolic_trace(f)
        ShapeProp(gm).propagate(torch.randn(2, 16, q_heads * 8), torch.randn(2, 16, 32))
        shapes = {n.name: tuple(n.meta["tensor_meta"].shape) for n in gm.graph.nodes if "tensor_meta" in n.meta}
        heads = head_dims(gm, shapes)
        return [heads.get(n.name, frozenset()) for n in gm.graph.nodes if n.target is aten.view.default]

    assert heads_of_views(4, 9223372036854775807) == [frozenset({2}), frozenset({2})]  # q, k
    assert heads_of_views(4, 4) == [frozenset({2}), frozenset({2})]
    assert heads_of_views(2, 2) == [frozenset({2}), frozenset()]  # k[:, :2] drops heads: not walked
