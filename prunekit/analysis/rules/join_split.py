"""Joining and splitting along a dimension: cat, stack, split, chunk, unbind."""

from __future__ import annotations

import numpy as np
import torch.fx as fx

from .. import eager_limits
from ..arguments import bound
from ..context import Ctx, Labels
from ._common import _as_array, _dim, _ops, aten, rule


@rule(*_ops("cat", "concat", "concatenate"))
def cat(ctx: Ctx, node: fx.Node) -> Labels:
    tensors = [t for t in ctx.args["tensors"] if ctx.is_tensor(t) and ctx.shape(t) != (0,)]
    n = len(ctx.out_shape())
    d = _dim(ctx.args["dim"], n)
    parts, others = [], [None] * n
    for k, t in enumerate(tensors):
        lab = ctx.lab(t)
        parts.append(_as_array(lab[d], ctx.shape(t)[d]))
        for i in range(n):
            if i != d:
                others[i] = lab[i] if k == 0 else ctx.unify(others[i], lab[i])
    joined = np.concatenate(parts) if parts else None
    others[d] = joined if joined is not None and (joined >= 0).any() else None
    return tuple(others)


@rule(*_ops("stack"))
def stack(ctx: Ctx, node: fx.Node) -> Labels:
    tensors = ctx.args["tensors"]
    n = len(ctx.out_shape())
    d = _dim(ctx.args["dim"], n)
    acc: list = [None] * (n - 1)
    for k, t in enumerate(tensors):
        lab = ctx.lab(t)
        for i in range(n - 1):
            acc[i] = lab[i] if k == 0 else ctx.unify(acc[i], lab[i])
    return tuple(acc[:d]) + (None,) + tuple(acc[d:])


def _split_rewrite(rw, node: fx.Node) -> None:
    args = bound(node)
    x = args["self"]
    n = len(rw.orig_shape(x))
    d = _dim(args["dim"], n)
    if rw.orig_shape(x)[d] == rw.new_shape(x)[d]:
        return
    sizes = [rw.new_shape_of_output(node, i)[d] for i in range(len(rw.orig_outputs(node)))]
    node.target = aten.split_with_sizes.default
    node.args = (x, sizes, d)  # split_with_sizes(self, split_sizes, dim)
    node.kwargs = {}


@rule(*_ops("split", "split_with_sizes", "chunk", "tensor_split", "unsafe_split", "split_copy"), rewrite=_split_rewrite)
def split(ctx: Ctx, node: fx.Node) -> list:
    xl = ctx.lab(ctx.args["self"])
    n = len(xl)
    d = _dim(ctx.args["dim"], n)
    sizes = [s[d] for s in ctx.out_shapes()]
    pieces, start = [], 0
    for size in sizes:
        pieces.append(xl[d][start : start + size] if xl[d] is not None else None)
        start += size
    if ctx.eager and xl[d] is not None:
        eager_limits.split(ctx, node, xl[d], pieces, sizes)
    return [tuple(piece if i == d else xl[i] for i in range(n)) for piece in pieces]


@rule(*_ops("unbind"))
def unbind(ctx: Ctx, node: fx.Node) -> list:
    xl = ctx.lab(ctx.args["self"])
    d = _dim(ctx.args["dim"], len(xl))
    ctx.pin(xl[d], "unbound into separate tensors")
    rest = tuple(xl[:d]) + tuple(xl[d + 1 :])
    return [rest for _ in ctx.out_shapes()]
