"""Pass: turn TS2EP's tensorised size arithmetic back into plain integer arithmetic.

TorchScript computes sizes on ints; the converter rebuilds the arithmetic on 0-d tensors ending
in ``.item()``, which neither tracing nor the channel analysis can see through (see the
function's docstring).
"""

from __future__ import annotations

import operator

import torch
import torch.fx as fx


_SCALAR_OPS = {
    "mul": operator.mul, "add": operator.add, "sub": operator.sub,
    "floor_divide": operator.floordiv, "remainder": operator.mod, "rsub": operator.sub,
}


def _aten_name(node: fx.Node) -> str | None:
    """The ATen op name of a call, whether it targets an overload (``aten.mul.Tensor``, as after
    export) or a packet (``aten.mul``, as in the converter's graph before its retrace)."""
    if node.op != "call_function":
        return None
    if isinstance(node.target, torch._ops.OpOverload):
        return node.target.overloadpacket.__name__
    if isinstance(node.target, torch._ops.OpOverloadPacket):
        return node.target.__name__
    return None


def fold_scalar_arithmetic(gm: fx.GraphModule) -> None:
    """Turn TS2EP's tensorised size arithmetic back into plain integer arithmetic.

    TorchScript computes ``bsz * num_heads`` on ints; the converter rebuilds it as
    ``scalar_tensor(size) * lifted_tensor`` followed by ``.item()``.  Tracing cannot follow an
    ``.item()``, and the analysis cannot see through it, so the chain is rewritten with
    ``operator`` calls on the sizes themselves.  Run on the converter's graph before its
    retrace, this also keeps padding arithmetic like Swin's ``(7 - W % 7) % 7`` from becoming
    data-dependent sizes the retrace cannot guard on.
    """
    as_int: dict[fx.Node, object] = {}
    graph = gm.graph
    changed = False  # a replaced ``.item()``; unused new nodes go with the dead code
    for node in list(graph.nodes):
        if node.op == "get_attr":
            t = getattr(gm, node.target, None) if "." not in node.target else None
            if isinstance(t, torch.Tensor) and t.dim() == 0 and not t.is_floating_point() and t.dtype != torch.bool:
                as_int[node] = int(t.item())
            continue
        name = _aten_name(node)
        if name is None:
            continue
        if name == "scalar_tensor" and not isinstance(node.args[0], float):
            as_int[node] = node.args[0]
        elif name in ("_to_copy", "to") and node.args[0] in as_int:
            dtype = node.kwargs.get("dtype")
            if dtype is None or not dtype.is_floating_point:
                as_int[node] = as_int[node.args[0]]
        elif name in _SCALAR_OPS or (name == "div" and node.kwargs.get("rounding_mode") == "floor"):
            a, b = node.args[0], node.args[1]
            if name == "rsub":  # rsub(a, b, alpha) = b - alpha * a
                if (node.args[2] if len(node.args) > 2 else node.kwargs.get("alpha", 1)) != 1:
                    continue
                a, b = b, a
            va = as_int.get(a, a if isinstance(a, int) else None) if isinstance(a, (fx.Node, int)) else None
            vb = as_int.get(b, b if isinstance(b, int) else None) if isinstance(b, (fx.Node, int)) else None
            if va is None or vb is None:
                continue
            fn = operator.floordiv if name == "div" else _SCALAR_OPS[name]
            with graph.inserting_before(node):
                as_int[node] = graph.call_function(fn, (va, vb))
        elif name == "_local_scalar_dense" and node.args[0] in as_int:
            value = as_int[node.args[0]]
            node.replace_all_uses_with(value) if isinstance(value, fx.Node) else _replace_with_const(node, value)
            changed = True
    if graph.eliminate_dead_code() or changed:  # (else the code is the graph's already: a recompile
        gm.recompile()                          # costs ResNet-50 10-20 ms, and this runs twice)


def _replace_with_const(node: fx.Node, value: int) -> None:
    for user in list(node.users):
        user.args = tuple(_swap(a, node, value) for a in user.args)
        user.kwargs = {k: _swap(v, node, value) for k, v in user.kwargs.items()}


def _swap(v, node, value):
    if v is node:
        return value
    if isinstance(v, (list, tuple)):
        return type(v)(_swap(x, node, value) for x in v)
    return v
