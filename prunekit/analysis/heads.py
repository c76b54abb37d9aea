"""Attention heads: which reshape dimension is a head, and how many heads each attention keeps.

A projection's output ``[B, S, H*D]`` is viewed as ``[B, S, H, D]`` before attention.  The
reshape rule (``rules/views.py``) must say which of the two new dimensions carries the
projection's channels: the head width ``D`` (each channel is one index of every head) or the
heads ``H`` (each channel is a whole head).  Both are correct; whole heads are what users mean by
pruning attention, keep the head width the kernels are tuned for, and survive what pins the head
width (a rotary embedding rotates pairs of it; a fixed ``1/sqrt(D)`` scale).  So the reshapes
that produce an attention's heads are found first, here, by walking back from every attention to
the reshape that split its heads out:

* an attention is ``scaled_dot_product_attention`` or a 4-D ``matmul`` (written-out attention,
  T5); its heads are dimension ``-3`` of its operands;
* the walk goes back through ops that keep that dimension (permutes, transposes, elementwise ops
  such as a rotary embedding, slices and concatenations along other dimensions, whole slices
  along it (traced TorchScript keeps the ``x[:, :]`` of grouped-query attention's key/value repeat), ``expand``, the
  ``getitem`` of a split) and stops at the reshape, whose output dimension is recorded; through a
  reshape that *merges* into the heads (grouped-query attention repeating key/value heads) it
  goes on to the merged dimensions, so key/value heads are found too.

The rule then prefers those dimensions (``Analysis.heads``); where a state-dict output's eager
code fixes the number of heads, the eager preference (``eager_limits.computed_dims``) wins.

:func:`attention_heads` reads the result back for the report: per attention, heads (and key/value
heads, and head width) before and after.
"""

from __future__ import annotations

import operator
from collections import defaultdict
from typing import Any

import numpy as np
import torch
import torch.fx as fx

_RESHAPES = {"view", "reshape", "_unsafe_view", "view_copy", "_reshape_alias"}
_SAME_DIMS = {  # ops whose output dims are their (broadcast) inputs' dims, index for index
    "add", "sub", "mul", "div", "neg", "to", "_to_copy", "clone", "contiguous", "alias", "dropout",
    "type_as", "where", "masked_fill", "pow", "rsqrt", "sqrt", "tanh", "sigmoid", "silu", "gelu", "relu",
    "cos", "sin", "float", "half", "bfloat16", "detach", "lift_fresh_copy",
}
_ALONG = {"slice", "narrow", "softmax", "_softmax", "log_softmax", "split", "split_with_sizes", "chunk"}


def _name(node: fx.Node) -> str | None:
    t = node.target
    if isinstance(t, torch._ops.OpOverload):
        return t.overloadpacket.__name__
    return None


def _arg(node: fx.Node, i: int, key: str, default: Any = None) -> Any:
    if len(node.args) > i:
        return node.args[i]
    return node.kwargs.get(key, default)


def _seeds(node: fx.Node, shapes: dict[str, Any]) -> list[tuple[fx.Node, int]]:
    name = _name(node)
    if name == "scaled_dot_product_attention":
        return [(a, -3) for a in node.args[:3] if isinstance(a, fx.Node) and len(shapes.get(a.name) or ()) == 4]
    if name == "matmul":
        ops = [a for a in node.args[:2] if isinstance(a, fx.Node)]
        if len(ops) == 2 and all(len(shapes.get(a.name) or ()) == 4 for a in ops):
            return [(a, -3) for a in ops]
    return []


def head_dims(gm: fx.GraphModule, shapes: dict[str, Any]) -> dict[str, frozenset[int]]:
    """Reshape node name -> its output dimensions that are an attention's heads."""
    found: dict[str, set[int]] = defaultdict(set)
    seen: set[tuple[str, int]] = set()
    stack: list[tuple[fx.Node, int]] = []
    for node in gm.graph.nodes:
        if node.op == "call_function":
            stack += _seeds(node, shapes)
    while stack:
        node, d = stack.pop()
        shape = shapes.get(node.name)
        if not isinstance(shape, tuple) or not shape:
            continue
        d %= len(shape)
        if (node.name, d) in seen:
            continue
        seen.add((node.name, d))
        stack += _back(node, d, shape, shapes, found)
    return {k: frozenset(v) for k, v in found.items()}


def _back(node: fx.Node, d: int, shape: tuple, shapes: dict[str, Any], found: dict[str, set[int]]) -> list:
    """The (producer, dim) pairs that dimension ``d`` of ``node`` comes from."""
    if node.op != "call_function":
        return []
    if node.target is operator.getitem:
        src = node.args[0]
        if isinstance(src, fx.Node) and _name(src) in ("split", "split_with_sizes", "chunk", "unbind"):
            inner = src.args[0]
            dim = _arg(src, 2, "dim", 0) if _name(src) != "unbind" else _arg(src, 1, "dim", 0)
            n_in = len(shapes.get(inner.name) or ())
            if not n_in:
                return []
            dim %= n_in
            if _name(src) == "unbind":
                return [(inner, d if d < dim else d + 1)]
            return [(inner, d)] if d != dim else []
        return []
    name = _name(node)
    x = node.args[0] if node.args else None
    if name == "cat":
        dim = int(_arg(node, 1, "dim", 0)) % len(shape)
        parts = [p for p in x if isinstance(p, fx.Node)] if isinstance(x, (list, tuple)) else []
        return [(p, d) for p in parts if len(shapes.get(p.name) or ()) == len(shape)] if dim != d else []
    if not isinstance(x, fx.Node):
        return []
    in_shape = shapes.get(x.name)
    if not isinstance(in_shape, tuple):
        return []
    if name in _RESHAPES:
        found[node.name].add(d)
        from .rules.views import factor_groups

        groups = factor_groups(in_shape, shape) or []
        for gi, go in groups:
            if go == [d] and len(gi) > 1:  # merged into the heads (repeated key/value heads)
                return [(x, i) for i in gi if in_shape[i] > 1]
        return []
    if name in ("transpose", "swapaxes", "swapdims"):
        a, b = (int(v) % len(shape) for v in node.args[1:3])
        return [(x, b if d == a else a if d == b else d)]
    if name == "permute":
        return [(x, int(node.args[1][d]) % len(shape))]
    if name == "select":
        dim = int(node.args[1]) % len(in_shape)
        return [(x, d if d < dim else d + 1)]
    if name == "unsqueeze":
        dim = int(node.args[1]) % len(shape)
        return [] if d == dim else [(x, d if d < dim else d - 1)]
    if name in ("expand", "expand_copy", "broadcast_to"):
        di = d - (len(shape) - len(in_shape))
        return [(x, di)] if di >= 0 else []
    if name in _ALONG:
        dim = _arg(node, 1, "dim", 0)
        if name in ("split", "split_with_sizes", "chunk"):
            return []
        if int(dim) % len(shape) != d or (name == "slice" and shape[d] == in_shape[d]):
            return [(x, d)]  # a whole slice along the heads keeps them (traced TorchScript writes x[:, :])
        return []
    if name in _SAME_DIMS:
        out = []
        for a in node.args:
            s = shapes.get(a.name) if isinstance(a, fx.Node) else None
            if isinstance(s, tuple):
                di = d - (len(shape) - len(s))
                if di >= 0 and s[di] == shape[d]:
                    out.append((a, di))
        return out
    return []


def _projection(node: fx.Node, hops: int = 12) -> str | None:
    """The first weight a query's value is computed from (its projection), walking back."""
    frontier, seen = [node], set()
    for _ in range(hops):
        nxt = []
        for n in frontier:
            for a in n.all_input_nodes:
                if a.name in seen:
                    continue
                seen.add(a.name)
                if a.op == "get_attr" and str(a.target).endswith("weight"):
                    return str(a.target).rsplit(".", 1)[0]
                nxt.append(a)
        frontier = nxt
    return None


def _feeds_softmax(node: fx.Node, hops: int = 4) -> bool:
    frontier = [node]
    for _ in range(hops):
        frontier = [u for n in frontier for u in n.users]
        if any(_name(u) in ("softmax", "_softmax") for u in frontier):
            return True
    return False


def attention_heads(analysis: Any, removal: Any) -> list[dict[str, Any]]:
    """Per attention of the analysed graph: heads (query, key/value) and head width, before and after."""
    out: list[dict[str, Any]] = []

    def count(arg: fx.Node, d: int) -> tuple[int, int]:
        shape = analysis.shapes.get(arg.name)
        lab = analysis.labels.get(arg.name)
        n = int(shape[d])
        if removal is None or not isinstance(lab, tuple) or lab[d] is None:
            return n, n
        return n, int(np.count_nonzero(removal.kept(lab[d])))

    def distinct(arg: fx.Node, d: int) -> tuple[int, int]:
        # key/value heads repeated for grouped-query attention carry one atom per real head
        lab = analysis.labels.get(arg.name)
        if not isinstance(lab, tuple) or lab[d] is None or not (lab[d] >= 0).all():
            return count(arg, d)
        keep = removal.kept(lab[d]) if removal is not None else np.ones(len(lab[d]), dtype=bool)
        return len(np.unique(lab[d])), len(np.unique(lab[d][keep]))

    for node in analysis.gm.graph.nodes:
        if node.op != "call_function":
            continue
        name = _name(node)
        if name == "scaled_dot_product_attention":
            q, k = node.args[0], node.args[1]
        elif name == "matmul" and _seeds(node, analysis.shapes) and _feeds_softmax(node):
            q, k = node.args[0], node.args[1]
        else:
            continue
        if not all(isinstance(a, fx.Node) and len(analysis.shapes.get(a.name) or ()) == 4 for a in (q, k)):
            continue
        hq, hk, width = count(q, -3), distinct(k, -3), count(q, -1)
        out.append({"node": node.name, "projection": _projection(q), "heads_before": hq[0], "heads_after": hq[1],
                    "kv_heads_before": hk[0], "kv_heads_after": hk[1],
                    "head_width_before": width[0], "head_width_after": width[1]})
    return out
