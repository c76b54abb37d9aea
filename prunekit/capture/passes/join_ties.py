"""Tied tensors (one tensor under two names) become one attribute the graph reads under one name.

``ExportedProgram.module()`` gives each name of a tied tensor (an embedding shared with the LM
head) its own ``Parameter`` over the same memory, and the graph reads each name separately.  Cut
apart, the two would be sliced and written as two tensors: a pruned model with *more* unique
parameters than its upload, and a report counting the shared matrix twice.  Two names are one
tensor when they are the same object, or views of the same memory with the same offset, shape,
strides and dtype (values that are equal by construction, forever); every read then goes through
the first name and every other name refers to the first name's tensor (``io/ties.py``), so the
analysis couples all uses, the surgery slices it once and every writer sees one tensor.
"""

from __future__ import annotations

import torch
import torch.fx as fx
import torch.nn as nn

from ...io.ties import retie


def _key(t: torch.Tensor):
    if t.device.type == "meta" or t.numel() == 0:
        return None
    return (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()), t.dtype)


def tied_names(module: nn.Module) -> list[list[str]]:
    """Groups of parameter (or buffer) names that are one tensor, first name first."""
    groups: list[list[str]] = []
    for named in (module.named_parameters(remove_duplicate=False), module.named_buffers(remove_duplicate=False)):
        by_key: dict = {}
        for name, t in named:
            k = _key(t)
            if k is not None:
                by_key.setdefault(k, []).append(name)
        groups += [names for names in by_key.values() if len(names) > 1]
    return groups


def join_ties(gm: fx.GraphModule) -> list[list[str]]:
    """Make every tied group one tensor read under its first name; return the groups."""
    groups = tied_names(gm)
    if not groups:
        return groups
    first = {other: names[0] for names in groups for other in names[1:]}
    for node in gm.graph.nodes:
        if node.op == "get_attr" and node.target in first:
            node.target = first[node.target]
    retie(gm, groups)
    gm.recompile()
    return groups
