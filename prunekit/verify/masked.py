"""The masked original: the reference every pruned model is checked against.

A copy of the original graph in which every tensor that carries a removed channel is multiplied by
a 0/1 mask right after it is produced.  Removed channels are therefore zero wherever they are
consumed, and the kept outputs of this model are what the physically pruned model must compute.

With ``normalized_dims: prune`` some ops take statistics over dimensions that lose channels (a
layer norm over the residual width).  A zeroed channel still counts in a mean, so there the
pruned model computes something else by design: the statistics over the kept channels only.
The reference follows it exactly: each such node reads its inputs *gathered* to the kept
channels, runs with the arguments the pruned graph will have (its rule's rewrite), and its
output is scattered back to the full width, zero where channels went
(:func:`_kept_statistics`).  Everything else stays the masked original, so the check still
proves every other op of the prune.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.fx as fx

from ..analysis.context import _flat_args
from ..analysis.walk import Analysis, find_rule
from ..graph_copy import shared_copy

aten = torch.ops.aten

if TYPE_CHECKING:
    from ..prune.removal import Removal


def _masks_for(shape: tuple[int, ...], lab: tuple, removal: "Removal") -> list[torch.Tensor]:
    """One 0/1 vector per dimension that loses channels, shaped to broadcast along it.  Kept
    apart rather than multiplied out: a conv weight losing input and output channels would need a
    mask of ``out x in`` entries (together about the size of the model's weights)."""
    masks = []
    for dim, d in enumerate(lab):
        if d is None:
            continue
        keep = removal.kept(d)
        if keep.all():
            continue
        view = [1] * len(shape)
        view[dim] = shape[dim]
        masks.append(torch.from_numpy(keep.astype(np.float32)).reshape(view))
    return masks


def multiply_after(m: fx.GraphModule, node: fx.Node, name: str, factor: torch.Tensor,
                   order: dict[fx.Node, int] | None = None) -> None:
    """Register ``factor`` as buffer ``name`` and make every user of ``node`` read ``node * factor``.

    A weight (``get_attr``) is multiplied right before its first user, not where it is read:
    exported graphs read every weight at the top, so masking there would hold a masked copy of
    all the weights through the whole forward (1.5-2x the weights on ResNet-50).  ``order``
    (node -> position) tells which user comes first; users it does not know are new nodes
    (an earlier mask of the same weight), which are then its only user."""
    m.register_buffer(name, factor)
    if node.op == "get_attr" and node.users:
        if order is None:
            order = {n: i for i, n in enumerate(m.graph.nodes)}
        first = min(node.users, key=lambda u: order.get(u, -1))
        with m.graph.inserting_before(first):  # (inserting before one node keeps creation order)
            factor_node = m.graph.get_attr(name)
            mul = m.graph.call_function(aten.mul.Tensor, (node, factor_node))
    else:
        with m.graph.inserting_after(node):
            factor_node = m.graph.get_attr(name)
        with m.graph.inserting_after(factor_node):
            mul = m.graph.call_function(aten.mul.Tensor, (node, factor_node))
    node.replace_all_uses_with(mul, delete_user_cb=lambda user: user is not mul)


def scatter_back(t: torch.Tensor, dim: int, index: torch.Tensor, size: int) -> torch.Tensor:
    """``t`` (kept channels along ``dim``) placed at ``index`` in zeros of width ``size``."""
    shape = list(t.shape)
    shape[dim] = size
    return t.new_zeros(shape).index_copy(dim, index, t)


def _losing(lab, removal: "Removal") -> list[tuple[int, np.ndarray, int]]:
    """``(dim, kept indices, full width)`` for each dimension of ``lab`` that loses channels."""
    out = []
    for dim, d in enumerate(lab if isinstance(lab, tuple) else ()):
        if d is None:
            continue
        keep = removal.kept(d)
        if not keep.all():
            out.append((dim, np.nonzero(keep)[0], len(keep)))
    return out


def renormalised(gm: fx.GraphModule, analysis: Analysis, removal: "Removal") -> list[str]:
    """The statistics nodes (``analysis.renormalised``) that read a tensor losing channels: the
    ones whose function the prune changes by design."""
    out = []
    for node in gm.graph.nodes:
        if node.name in analysis.renormalised and any(
                _losing(analysis.labels.get(a.name), removal) for a in _flat_args(node)):
            out.append(node.name)
    return out


def _kept_statistics(m: fx.GraphModule, analysis: Analysis, removal: "Removal") -> set[str]:
    """Make every recorded statistics node (``analysis.renormalised``) compute over the kept
    channels; returns the nodes whose output is no longer full width (the masking skips them)."""
    from ..prune.surgery import Rewriter

    rw = Rewriter(analysis, removal)
    skip: set[str] = set()
    count = 0

    def index_buffer(idx: np.ndarray) -> fx.Node:
        nonlocal count
        name = f"_prunekit_kept_{count}"
        count += 1
        m.register_buffer(name, torch.from_numpy(idx.astype(np.int64)))
        return m.graph.get_attr(name)

    changed = set(renormalised(m, analysis, removal))
    for node in list(m.graph.nodes):
        if node.name not in changed:
            continue
        inputs = [a for a in dict.fromkeys(_flat_args(node)) if _losing(analysis.labels.get(a.name), removal)]
        rule = find_rule(node, analysis.rules)
        if rule is not None and rule.rewrite is not None:
            rule.rewrite(rw, node)  # sizes as the pruned graph will have them (normalized_shape)
        for a in inputs:
            with m.graph.inserting_before(node):
                g = a
                for dim, idx, _ in _losing(analysis.labels.get(a.name), removal):
                    g = m.graph.call_function(aten.index_select.default, (g, dim, index_buffer(idx)))
            node.replace_input_with(a, g)
        outs = analysis.labels.get(node.name)
        carriers = ([(node, outs)] if isinstance(outs, tuple) else
                    [(u, analysis.labels.get(u.name)) for u in list(node.users) if u.op == "call_function"])
        for carrier, lab in carriers:
            losing = _losing(lab, removal)
            if not losing:
                continue
            skip.add(carrier.name)
            with m.graph.inserting_before(carrier.next):  # in creation order, right after the carrier
                full = carrier
                first = None
                for dim, idx, size in losing:
                    full = m.graph.call_function(scatter_back, (full, dim, index_buffer(idx), size))
                    first = first or full
            carrier.replace_all_uses_with(full, delete_user_cb=lambda user, first=first: user is not first)
    return skip


def masked_original(gm: fx.GraphModule, analysis: Analysis, removal: "Removal") -> fx.GraphModule:
    m = shared_copy(gm)  # the original's tensors, read only: masks and kept indices are new buffers
    skip = _kept_statistics(m, analysis, removal) if analysis.renormalised else set()
    count = 0
    order = {n: i for i, n in enumerate(m.graph.nodes)}
    for node in list(m.graph.nodes):
        if node.op in ("output", "placeholder") or node.name in skip:
            continue
        lab = analysis.labels.get(node.name)
        dtype = analysis.dtypes.get(node.name)
        if not isinstance(lab, tuple) or not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            continue
        shape = analysis.shapes[node.name]
        for mask in _masks_for(shape, lab, removal):
            multiply_after(m, node, f"_prunekit_mask_{count}", mask.to(dtype), order)
            count += 1
    _ones_in_divisors(m)
    m.recompile()
    return m


# Ops that divide by an argument (position): a removed channel masked to 0 there would make the
# reference compute 0/0 or 1/0 where the pruned model has no channel at all.
_DIVIDES_BY = {aten.div.Tensor: 1, aten.div.Tensor_mode: 1, aten.reciprocal.default: 0, aten.rsqrt.default: 0}
_MASK_PREFIX = "_prunekit_mask_"


def _mask_names(node: object) -> list[str]:
    """The mask buffers ``node`` is multiplied by, if it is a chain of mask multiplications."""
    names = []
    while (isinstance(node, fx.Node) and node.op == "call_function" and node.target is aten.mul.Tensor
           and isinstance(node.args[1], fx.Node) and node.args[1].op == "get_attr"
           and str(node.args[1].target).startswith(_MASK_PREFIX)):
        names.append(str(node.args[1].target))
        node = node.args[0]
    return names


def _ones_in_divisors(m: fx.GraphModule) -> None:
    """Where a masked tensor is divided by, its removed channels read 1 instead of 0.

    The masked original zeroes every removed channel where it is produced; a divisor that carries
    one (``F.normalize``'s clamped norm, a layer's own RMS) would then give NaN or infinity in the
    reference at a place the pruned model does not have.  Reading 1 there leaves the quotient at
    the removed channels to the quotient's own mask (zero), and every kept value unchanged."""
    count = 0
    for node in list(m.graph.nodes):
        pos = _DIVIDES_BY.get(node.target) if node.op == "call_function" else None
        if pos is None or len(node.args) <= pos:
            continue
        names = _mask_names(node.args[pos])
        if not names:
            continue
        keep = None
        for name in names:
            mask = getattr(m, name)
            keep = mask if keep is None else keep * mask
        pad_name = f"_prunekit_ones_{count}"
        count += 1
        m.register_buffer(pad_name, 1 - keep)
        with m.graph.inserting_before(node):
            pad = m.graph.get_attr(pad_name)
            divisor = m.graph.call_function(aten.add.Tensor, (node.args[pos], pad))
        node.replace_input_with(node.args[pos], divisor)
