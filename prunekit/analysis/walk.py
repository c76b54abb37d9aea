"""Walk the graph once and label every tensor dimension with the channel atoms it carries.

For each node the rule for its op (the call's extra rules, then the built-in ``rules.RULES``: see
``ruleset.py``) reads the labels of its inputs, couples or pins atoms, and returns the labels of
its output.  Labels of a tensor are a tuple with one entry per dimension: ``None`` (no channels:
batch, spatial, sequence) or an int vector of atom ids, ``-1`` where an index carries no channel.
The result, :class:`Analysis`, is everything later stages need: which atoms each tensor attribute
has, which node dimensions they flow through, and which ops stopped them (barriers).
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.fx as fx

from . import ruleset
from .atoms import Atoms
from .context import Barrier, Ctx, Labels, _flat_args
from .heads import head_dims
from .shapes import record_shapes


@dataclass
class Analysis:
    gm: fx.GraphModule
    atoms: Atoms
    labels: dict[str, Any]                 # node name -> Labels | list[Labels] | None
    attr_labels: dict[str, Labels]         # attribute fqn -> labels of the tensor
    created: dict[str, Labels]             # node name -> labels of a constant-filled tensor it creates
    shapes: dict[str, Any]
    dtypes: dict[str, Any]
    symbolic: dict[str, Any]
    barriers: list[Barrier] = field(default_factory=list)
    output_labels: list[Any] = field(default_factory=list)
    eager: bool = False
    output_dims: dict[str, int] = field(default_factory=dict)  # weights whose output channels are not dim 0
    rules: ruleset.RuleSet | None = None   # extra rules (call + entry points), looked up before the built-in ones
    normalized_dims: str = "keep"           # "prune": statistics over channels may lose them (spec.normalized_dims)
    renormalised: dict[str, str] = field(default_factory=dict)  # node -> what it takes statistics over (prune mode)
    heads: dict[str, frozenset[int]] = field(default_factory=dict)  # reshape node -> its dims that are attention heads

    def output_slices(self, tensors: dict[str, torch.Tensor], roots: np.ndarray):
        """``(name, tensor, dim, root per index)`` for every floating tensor in ``tensors`` whose
        output dimension carries channels: the slices that *produce* a channel (rows, biases,
        BatchNorm entries); ``-1`` where an index carries none."""
        for name, lab in self.attr_labels.items():
            t = tensors.get(name)
            if t is None or not t.is_floating_point() or t.dim() == 0:
                continue
            d = self.output_dims.get(name, 0)
            if d >= len(lab) or lab[d] is None:
                continue
            arr = lab[d]
            r = np.full(len(arr), -1, dtype=np.int64)
            r[arr >= 0] = roots[arr[arr >= 0]]
            yield name, t, d, r


def _none_labels(shape_tree: Any) -> Any:
    if isinstance(shape_tree, tuple):
        return tuple(None for _ in shape_tree)
    if isinstance(shape_tree, list):
        return [_none_labels(s) for s in shape_tree]
    return None


def find_rule(node: fx.Node, extra: ruleset.RuleSet | None = None) -> ruleset.Rule | None:
    """The rule for ``node``'s op: ``extra`` (default: the entry points'), then the built-in table."""
    return ruleset.find_rule(node.target, extra)


def analyse(
    gm: fx.GraphModule,
    example: tuple,
    example2: tuple | None,
    *,
    frozen: dict[str, str] | None = None,
    eager: bool = False,
    rules: ruleset.RulesArg = None,
    normalized_dims: str = "keep",
) -> Analysis:
    """Label every node of ``gm``; ``example2`` (another batch size) marks batch-dependent dims.

    ``frozen`` maps tensor attributes that must keep their shape to the reason.  ``eager`` asks the
    rules to keep only changes an eager ``forward`` can follow (for state-dict outputs, which are
    run by the architecture's own Python code rather than the rewritten graph).  ``rules`` are
    extra channel rules, looked up before the built-in ones (``ruleset.extra_rules``).
    ``normalized_dims="prune"`` lets channels go that an op takes statistics over
    (``Ctx.statistics_over``).
    """
    extra = ruleset.extra_rules(rules)
    shapes, dtypes, symbolic = record_shapes(gm, example, example2)
    a = Analysis(gm=gm, atoms=Atoms(), labels={}, attr_labels={}, created={}, shapes=shapes, dtypes=dtypes,
                 symbolic=symbolic, eager=eager, rules=extra, normalized_dims=normalized_dims,
                 heads=head_dims(gm, shapes))
    frozen = frozen or {}
    ctx = Ctx(a)
    read_attrs: set[str] = set()
    for node in gm.graph.nodes:
        ctx.node = node
        if node.op == "placeholder":
            a.labels[node.name] = _none_labels(shapes.get(node.name))
        elif node.op == "get_attr":
            shape = shapes.get(node.name)
            if isinstance(shape, tuple):
                if node.target not in a.attr_labels:
                    a.attr_labels[node.target] = ctx.fresh(shape, tuple(False for _ in shape))
                    if node.target in frozen:
                        ctx.pin_all(a.attr_labels[node.target], frozen[node.target])
                a.labels[node.name] = a.attr_labels[node.target]
            else:
                a.labels[node.name] = None
        elif node.op == "call_function":
            for arg in _flat_args(node):
                if arg.op == "get_attr":
                    read_attrs.add(arg.target)
            if node.target is operator.getitem:
                src, idx = node.args
                lst = a.labels.get(src.name)
                a.labels[node.name] = lst[idx] if isinstance(lst, list) and idx < len(lst) else _none_labels(shapes.get(node.name))
                continue
            rule = find_rule(node, extra)
            if rule is None:
                ctx.barrier("no channel rule for this op")
                a.labels[node.name] = _none_labels(shapes.get(node.name))
                continue
            try:
                out = rule.propagate(ctx, node)
            except Exception as exc:  # a rule that cannot handle this call stops channels, nothing more
                ctx.barrier(f"the channel rule failed here ({type(exc).__name__}: {str(exc)[:120]})")
                out = None
            if out is None:
                out = _none_labels(shapes.get(node.name))
            a.labels[node.name] = out
        elif node.op == "output":
            for arg in _flat_args(node):
                lab = ctx.lab(arg)
                a.output_labels.append((arg.name, lab))
                for d in lab or ():
                    a.atoms.pin(d, "model output", output=True)
        else:  # call_module / call_method: opaque
            ctx.barrier(f"{node.op} is opaque to the analysis")
            a.labels[node.name] = _none_labels(shapes.get(node.name))
    for fqn, lab in a.attr_labels.items():
        if fqn not in read_attrs:
            for d in lab:
                a.atoms.pin(d, f"{fqn} is used only where the analysis cannot see")
    return a
