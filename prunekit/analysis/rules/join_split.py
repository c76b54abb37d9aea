"""Joining and splitting along a dimension: cat, stack, split, chunk, unbind."""

from __future__ import annotations

import numpy as np
import torch.fx as fx

from ..context import Ctx, Labels
from ._common import _as_array, _dim, _ops, aten, rule


@rule(*_ops("cat", "concat", "concatenate"))
def cat(ctx: Ctx, node: fx.Node) -> Labels:
    tensors = [t for t in node.args[0] if ctx.is_tensor(t) and ctx.shape(t) != (0,)]
    n = len(ctx.out_shape())
    d = _dim(ctx.arg(1, "dim", 0), n)
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
    tensors = node.args[0]
    n = len(ctx.out_shape())
    d = _dim(ctx.arg(1, "dim", 0), n)
    acc: list = [None] * (n - 1)
    for k, t in enumerate(tensors):
        lab = ctx.lab(t)
        for i in range(n - 1):
            acc[i] = lab[i] if k == 0 else ctx.unify(acc[i], lab[i])
    return tuple(acc[:d]) + (None,) + tuple(acc[d:])


def _split_rewrite(rw, node: fx.Node) -> None:
    x = node.args[0]
    n = len(rw.orig_shape(x))
    d = _dim(ctx_dim(node, 2), n)
    if rw.orig_shape(x)[d] == rw.new_shape(x)[d]:
        return
    sizes = [rw.new_shape_of_output(node, i)[d] for i in range(len(rw.orig_outputs(node)))]
    node.target = aten.split_with_sizes.default
    node.args = (x, sizes, d)
    node.kwargs = {}


def ctx_dim(node: fx.Node, i: int, default: int = 0) -> int:
    return node.args[i] if len(node.args) > i else node.kwargs.get("dim", default)


@rule(*_ops("split", "split_with_sizes", "chunk", "tensor_split", "unsafe_split", "split_copy"), rewrite=_split_rewrite)
def split(ctx: Ctx, node: fx.Node) -> list:
    xl = ctx.lab(node.args[0])
    n = len(xl)
    d = _dim(ctx_dim(node, 2), n)
    sizes = [s[d] for s in ctx.out_shapes()]
    pieces, start = [], 0
    for size in sizes:
        pieces.append(xl[d][start : start + size] if xl[d] is not None else None)
        start += size
    if ctx.eager and xl[d] is not None:
        how = _eager_split(node)
        if how == "parts" and len(set(sizes)) == 1:
            # eager code (``x.chunk(2, 1)``) splits whatever arrives into equal parts: the parts must
            # keep equal counts, so the j-th channel of every part goes with the j-th of the first
            for k in range(1, len(pieces)):
                ctx.unify(pieces[0], pieces[k], ctx.reason("equal parts in eager code"))
        elif how == "sizes":
            # ``x.split(64, -1)`` / ``x.split([a, b])`` keep their sizes when eager code reruns
            ctx.pin(xl[d], "split by fixed sizes in eager code")
    return [tuple(piece if i == d else xl[i] for i in range(n)) for piece in pieces]


def _eager_split(node: fx.Node) -> str:
    """How eager code would split: into a number of equal ``parts`` (``chunk``, ``tensor_split``
    by a count) or by fixed ``sizes`` (``split`` by an int or a list)."""
    name = node.target.overloadpacket.__name__
    if name == "chunk" or (name == "tensor_split" and isinstance(node.args[1], int)):
        return "parts"
    return "sizes"


@rule(*_ops("unbind"))
def unbind(ctx: Ctx, node: fx.Node) -> list:
    xl = ctx.lab(node.args[0])
    d = _dim(ctx_dim(node, 1), len(xl))
    ctx.pin(xl[d], "unbound into separate tensors")
    rest = tuple(xl[:d]) + tuple(xl[d + 1 :])
    return [rest for _ in ctx.out_shapes()]
