"""Every node's output shape and dtype at the example, and which dims move with the batch.

The analysis needs concrete shapes (label vectors have a length) and, for the dims that change
between two example sizes, a flag (``symbolic``: no channel lives there).  Running the graph twice
to find out costs two full forward passes (most of the analyse stage on a large model), while the
capture already left every node's output in ``node.meta["val"]``: a fake tensor whose sizes are
integers or symbolic expressions of the input sizes.  So:

* the symbols of the placeholders' sizes are bound to the example's sizes (and, separately, to
  the second example's); every node's sizes are its expressions evaluated under those bindings;
* a dim is *symbolic* when its two evaluations differ: exactly the definition of running the graph
  at both examples and comparing, without running anything.

Where the metadata cannot say (a node a pass added without it, a size that depends on data, an
input dim the capture made static that the second example changes), the graph is run instead, as
before: the answer is the same either way, only its price differs.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.fx as fx
from torch.fx.interpreter import Interpreter


class _NoMeta(Exception):
    """The metadata cannot answer for this graph: run it instead."""


# ---------------------------------------------------------------------------------- by running


class _ShapeRecorder(Interpreter):
    """Run the graph on an example and remember every node's output shape(s)."""

    def __init__(self, gm: fx.GraphModule) -> None:
        super().__init__(gm)
        self.shapes: dict[str, Any] = {}
        self.dtypes: dict[str, Any] = {}

    def run_node(self, n: fx.Node) -> Any:
        out = super().run_node(n)
        self.shapes[n.name] = _shape_tree(out)
        self.dtypes[n.name] = _dtype_tree(out)
        return out


def _shape_tree(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        return tuple(int(s) for s in v.shape)
    if isinstance(v, (list, tuple)):
        return [_shape_tree(x) for x in v]
    return None


def _dtype_tree(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        return v.dtype
    if isinstance(v, (list, tuple)):
        return [_dtype_tree(x) for x in v]
    return None


def _diff_tree(a: Any, b: Any) -> Any:
    if isinstance(a, tuple):
        if not isinstance(b, tuple) or len(a) != len(b):
            return tuple(True for _ in a)
        return tuple(x != y for x, y in zip(a, b))
    if isinstance(a, list):
        b = b if isinstance(b, list) and len(b) == len(a) else [None] * len(a)
        return [_diff_tree(x, y) for x, y in zip(a, b)]
    return None


def by_running(gm: fx.GraphModule, example: tuple, example2: tuple | None) -> tuple[dict, dict, dict]:
    rec = _ShapeRecorder(gm)
    with torch.no_grad():
        rec.run(*example)
    symbolic: dict[str, Any] = {}
    if example2 is not None:
        rec2 = _ShapeRecorder(gm)
        with torch.no_grad():
            rec2.run(*example2)
        for name, s1 in rec.shapes.items():
            symbolic[name] = _diff_tree(s1, rec2.shapes.get(name))
    return rec.shapes, rec.dtypes, symbolic


# ---------------------------------------------------------------------------------- from metadata


def _bind(placeholders: list[fx.Node], example: tuple) -> dict:
    """``{symbol: size}`` from the placeholders' fake sizes and the example's real ones."""
    if len(placeholders) != len(example):
        raise _NoMeta
    subs: dict = {}
    for node, x in zip(placeholders, example):
        val = node.meta.get("val")
        if not isinstance(x, torch.Tensor):
            continue
        if not isinstance(val, torch.Tensor) or val.dim() != x.dim():
            raise _NoMeta
        for d, real in zip(val.shape, x.shape):
            if isinstance(d, torch.SymInt):
                expr = d.node.expr
                if getattr(expr, "is_number", isinstance(expr, int)) and int(expr) == int(real):
                    continue
                if not expr.is_Symbol or subs.get(expr, int(real)) != int(real):
                    raise _NoMeta
                subs[expr] = int(real)
            elif int(d) != int(real):  # the capture made this dim static; the example moves it
                raise _NoMeta
    return subs


def _size(d: Any, subs: dict) -> int:
    if isinstance(d, torch.SymInt):
        expr = d.node.expr
        v = expr.xreplace(subs) if hasattr(expr, "xreplace") else expr
        if not getattr(v, "is_number", isinstance(v, int)):  # depends on data, or on no input's size
            raise _NoMeta
        return int(v)
    return int(d)


def _meta_tree(val: Any, subs: dict) -> Any:
    if isinstance(val, torch.Tensor):
        return tuple(_size(d, subs) for d in val.shape)
    if isinstance(val, (list, tuple)):
        return [_meta_tree(v, subs) for v in val]
    return None


def _attr(gm: fx.GraphModule, target: str) -> Any:
    obj: Any = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _args_tree(arg: Any, table: dict) -> Any:
    if isinstance(arg, fx.Node):
        return table.get(arg.name)
    if isinstance(arg, (list, tuple)):
        return [_args_tree(a, table) for a in arg]
    return None


def from_meta(gm: fx.GraphModule, example: tuple, example2: tuple | None) -> tuple[dict, dict, dict]:
    nodes = list(gm.graph.nodes)
    placeholders = [n for n in nodes if n.op == "placeholder"]
    subs = _bind(placeholders, example)
    subs2 = _bind(placeholders, example2) if example2 is not None else None
    shapes: dict[str, Any] = {}
    dtypes: dict[str, Any] = {}
    symbolic: dict[str, Any] = {}
    for n in nodes:
        if n.op == "get_attr":
            v = _attr(gm, n.target)
            shapes[n.name], dtypes[n.name] = _shape_tree(v), _dtype_tree(v)
            if subs2 is not None:
                symbolic[n.name] = _diff_tree(shapes[n.name], shapes[n.name])
            continue
        if n.op == "output":
            shapes[n.name], dtypes[n.name] = _args_tree(n.args[0], shapes), _args_tree(n.args[0], dtypes)
            if subs2 is not None:
                symbolic[n.name] = _args_tree(n.args[0], symbolic)
            continue
        if n.op not in ("placeholder", "call_function") or "val" not in n.meta:
            raise _NoMeta  # call_module / call_method, or a node a pass added without metadata
        val = n.meta["val"]
        shapes[n.name], dtypes[n.name] = _meta_tree(val, subs), _dtype_tree(val)
        if subs2 is not None:
            symbolic[n.name] = _diff_tree(shapes[n.name], _meta_tree(val, subs2))
    return shapes, dtypes, symbolic


def record_shapes(gm: fx.GraphModule, example: tuple, example2: tuple | None) -> tuple[dict, dict, dict]:
    """Shapes at ``example``, dtypes, and which dims differ at ``example2`` (``{}`` without it):
    read from the capture's metadata where it can say, else by running the graph on both."""
    try:
        return from_meta(gm, example, example2)
    except _NoMeta:
        return by_running(gm, example, example2)
