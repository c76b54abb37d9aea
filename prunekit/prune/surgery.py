"""Remove the chosen channels: slice tensors, then fix the graph's shape arguments.

Every tensor attribute dimension that carries atoms is sliced to the kept indices (a tied tensor's
other names then point at the sliced one).  Then each node
whose op has a ``rewrite`` half in the rule table (the analysis's extra rules first) gets its
non-tensor arguments updated (a view's sizes, a depthwise conv's ``groups``...).  New shapes are
read off the labels: a dimension keeps the indices whose atoms survive, so no shape inference is
needed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.fx as fx
import torch.nn as nn

from ..analysis.arguments import set_argument
from ..analysis.walk import Analysis, find_rule
from ..io.ties import alias_groups, retie
from ..graph_copy import shared_copy
from .removal import Removal


class Rewriter:
    """What a rule's rewrite half may ask: old and new shapes, labels, kept masks."""

    def __init__(self, analysis: Analysis, removal: Removal) -> None:
        self.a = analysis
        self.removal = removal
        self.kept = removal.kept

    def labels(self, arg: Any):
        lab = self.a.labels.get(arg.name) if isinstance(arg, fx.Node) else None
        return lab if isinstance(lab, tuple) else ()

    def orig_shape(self, arg: Any) -> tuple[int, ...]:
        s = self.a.shapes.get(arg.name) if isinstance(arg, fx.Node) else None
        return s if isinstance(s, tuple) else ()

    def _new(self, shape: tuple, lab: tuple) -> tuple[int, ...]:
        return tuple(
            int(self.kept(d).sum()) if d is not None else n for n, d in zip(shape, lab or (None,) * len(shape))
        )

    def new_shape(self, arg: Any) -> tuple[int, ...]:
        return self._new(self.orig_shape(arg), self.labels(arg))

    def orig_outputs(self, node: fx.Node) -> list:
        s = self.a.shapes.get(node.name)
        return s if isinstance(s, list) else []

    def new_shape_of_output(self, node: fx.Node, i: int) -> tuple[int, ...]:
        shapes, labs = self.a.shapes.get(node.name), self.a.labels.get(node.name)
        return self._new(shapes[i], labs[i])

    @staticmethod
    def set_argument(node: fx.Node, name: str, value: Any) -> None:
        """Set the argument ``name`` of ``node`` by its schema, wherever the node passes it."""
        set_argument(node, name, value)


def _set_tensor(gm: nn.Module, fqn: str, value: torch.Tensor) -> None:
    owner_name, _, attr = fqn.rpartition(".")
    owner = gm.get_submodule(owner_name) if owner_name else gm
    old = getattr(owner, attr)
    if isinstance(old, nn.Parameter):
        setattr(owner, attr, nn.Parameter(value, requires_grad=old.requires_grad))
    elif attr in owner._buffers:
        owner._buffers[attr] = value
    else:
        setattr(owner, attr, value)


def _get_tensor(gm: nn.Module, fqn: str) -> torch.Tensor:
    owner_name, _, attr = fqn.rpartition(".")
    owner = gm.get_submodule(owner_name) if owner_name else gm
    return getattr(owner, attr)


def apply(gm: fx.GraphModule, analysis: Analysis, removal: Removal) -> fx.GraphModule:
    """Return a pruned copy of ``gm``."""
    rw = Rewriter(analysis, removal)
    pruned = shared_copy(gm)  # sliced tensors replace the shared ones; the rest stay shared
    tied = [names for names in alias_groups(pruned) if any(n in analysis.attr_labels for n in names)]
    for fqn, lab in analysis.attr_labels.items():
        if not any(d is not None for d in lab):
            continue
        t = _get_tensor(pruned, fqn)
        if not isinstance(t, torch.Tensor):
            continue
        new = t.detach()
        for dim, d in enumerate(lab):
            if d is None:
                continue
            keep = rw.kept(d)
            if not keep.all():
                new = new.index_select(dim, torch.from_numpy(np.nonzero(keep)[0]))
        if new.shape != t.shape:
            _set_tensor(pruned, fqn, new.contiguous())  # index_select made it: nothing shared
    for names in tied:  # a tied tensor the graph reads under one name: its other names follow
        read = next(n for n in names if n in analysis.attr_labels)
        retie(pruned, [[read] + [n for n in names if n != read]])
    for node in pruned.graph.nodes:
        if node.op != "call_function":
            continue
        rule = find_rule(node, analysis.rules)
        if rule is not None and rule.rewrite is not None:
            rule.rewrite(rw, node)
    pruned.recompile()
    return pruned
