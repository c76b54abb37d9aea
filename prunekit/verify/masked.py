"""The masked original: the reference every pruned model is checked against.

A copy of the original graph in which every tensor that carries a removed channel is multiplied by
a 0/1 mask right after it is produced.  Removed channels are therefore zero wherever they are
consumed, and the kept outputs of this model are what the physically pruned model must compute.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import copy

import numpy as np
import torch
import torch.fx as fx

from ..analysis.walk import Analysis

aten = torch.ops.aten

if TYPE_CHECKING:
    from ..prune.removal import Removal


def _mask_for(shape: tuple[int, ...], lab: tuple, removal: "Removal") -> torch.Tensor | None:
    mask = None
    for dim, d in enumerate(lab):
        if d is None:
            continue
        keep = removal.kept(d)
        if keep.all():
            continue
        view = [1] * len(shape)
        view[dim] = shape[dim]
        m = torch.from_numpy(keep.astype(np.float32)).reshape(view)
        mask = m if mask is None else mask * m
    return mask


def multiply_after(m: fx.GraphModule, node: fx.Node, name: str, factor: torch.Tensor) -> None:
    """Register ``factor`` as buffer ``name`` and make every user of ``node`` read ``node * factor``."""
    m.register_buffer(name, factor)
    with m.graph.inserting_after(node):
        factor_node = m.graph.get_attr(name)
    with m.graph.inserting_after(factor_node):
        mul = m.graph.call_function(aten.mul.Tensor, (node, factor_node))
    node.replace_all_uses_with(mul, delete_user_cb=lambda user: user is not mul)


def masked_original(gm: fx.GraphModule, analysis: Analysis, removal: "Removal") -> fx.GraphModule:
    m = copy.deepcopy(gm)
    count = 0
    for node in list(m.graph.nodes):
        if node.op in ("output", "placeholder"):
            continue
        lab = analysis.labels.get(node.name)
        dtype = analysis.dtypes.get(node.name)
        if not isinstance(lab, tuple) or not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            continue
        shape = analysis.shapes[node.name]
        mask = _mask_for(shape, lab, removal)
        if mask is None:
            continue
        multiply_after(m, node, f"_prunekit_mask_{count}", mask.to(dtype))
        count += 1
    m.recompile()
    return m
