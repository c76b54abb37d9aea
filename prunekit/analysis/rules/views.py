"""Views: permutations are exact; reshapes go through the factor-group mapping."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch.fx as fx

from .. import eager_limits
from ..arguments import bound
from ..context import Ctx, Labels
from ._common import _dim, _has, _ops, rule


@rule(*_ops("permute"))
def permute(ctx: Ctx, node: fx.Node) -> Labels:
    xl = ctx.lab(ctx.args["self"])
    return tuple(xl[_dim(d, len(xl))] for d in ctx.args["dims"])


@rule(*_ops("transpose", "swapaxes", "swapdims"))
def transpose(ctx: Ctx, node: fx.Node) -> Labels:
    args = ctx.args  # transpose/swapdims: (self, dim0, dim1); swapaxes: (self, axis0, axis1)
    xl = list(ctx.lab(args["self"]))
    if len(xl) < 2:
        return tuple(xl)
    a, b = (_dim(args[k] if k in args else args[alt], len(xl)) for k, alt in (("dim0", "axis0"), ("dim1", "axis1")))
    xl[a], xl[b] = xl[b], xl[a]
    return tuple(xl)


@rule(*_ops("t", "numpy_T"))
def t(ctx: Ctx, node: fx.Node) -> Labels:
    return tuple(reversed(ctx.lab(ctx.input)))


@rule(*_ops("movedim"))
def movedim(ctx: Ctx, node: fx.Node) -> Labels:
    args = ctx.args
    xl = list(ctx.lab(args["self"]))
    n = len(xl)
    src, dst = args["source"], args["destination"]
    src = [src] if isinstance(src, int) else list(src)
    dst = [dst] if isinstance(dst, int) else list(dst)
    order = [None] * n
    src, dst = [_dim(s, n) for s in src], [_dim(d, n) for d in dst]
    for s, d in zip(src, dst):
        order[d] = s
    rest = iter(i for i in range(n) if i not in src)
    order = [o if o is not None else next(rest) for o in order]
    return tuple(xl[o] for o in order)


def factor_groups(a: tuple[int, ...], b: tuple[int, ...]) -> list[tuple[list[int], list[int]]] | None:
    """Split two shapes of equal numel into runs of dims with equal products.

    ``(2, 197, 768) -> (2, 197, 12, 64)`` gives ``[([0],[0]), ([1],[1]), ([2],[2,3])]``.
    Size-1 dims join the neighbouring run.
    """
    groups, i, j = [], 0, 0
    while i < len(a) or j < len(b):
        ga, gb = [], []
        pa = pb = 1
        while True:
            if pa == pb and (ga or gb) and pa != 0:
                # absorb trailing size-1 dims into this run
                while i < len(a) and a[i] == 1 and not (j < len(b) and b[j] == 1):
                    ga.append(i); i += 1
                while j < len(b) and b[j] == 1 and not (i < len(a) and a[i] == 1):
                    gb.append(j); j += 1
                break
            if (pa <= pb and i < len(a)) or j >= len(b):
                if i >= len(a):
                    return None
                pa *= a[i]; ga.append(i); i += 1
            else:
                pb *= b[j]; gb.append(j); j += 1
        groups.append((ga, gb))
    return groups


def reshape_labels(ctx: Ctx, xl: Labels, in_shape: tuple, out_shape: tuple, out_sym: tuple,
                   prefer: frozenset[int] = frozenset()) -> Labels:
    """``prefer``: output dims that should carry the channels of a split when they can (the
    ones eager code computes: ``eager_limits.computed_dims``)."""
    groups = factor_groups(tuple(in_shape), tuple(out_shape))
    out: list = [None] * len(out_shape)
    if groups is None:
        ctx.pin_all(xl, "reshape the analysis could not map")
        return tuple(out)
    for gi, go in groups:
        labelled = [d for d in gi if _has(xl[d])]
        if not labelled:
            continue
        if len(gi) == 1 and len(go) == 1:
            out[go[0]] = xl[gi[0]]
            continue
        if len(labelled) > 1:
            for d in labelled:
                ctx.pin(xl[d], "reshape merges two channel dimensions")
            continue
        ld = labelled[0]
        sizes_in = [in_shape[d] for d in gi]
        view = [1] * len(gi)
        view[gi.index(ld)] = in_shape[ld]
        grid = np.broadcast_to(xl[ld].reshape(view), sizes_in).reshape([out_shape[d] for d in go])
        best, best_score = None, None
        for pos, d in enumerate(go):
            if out_shape[d] <= 1 or out_sym[d]:
                continue
            rows = np.moveaxis(grid, pos, 0).reshape(out_shape[d], -1)
            filled = int((rows >= 0).any(axis=1).sum())
            score = (d in prefer, filled, pos)
            if best_score is None or score > best_score:
                best, best_score = (pos, d, rows), score
        if best is None:
            ctx.pin(xl[ld], "reshape folds channels into the batch")
            continue
        _, d, rows = best
        lab = np.full(out_shape[d], -1, dtype=np.int64)
        for r in range(rows.shape[0]):
            row = rows[r]
            if (row < 0).any() and (row >= 0).any():
                ctx.pin(row, "reshape mixes channels with fixed entries")
            lab[r] = ctx.merge(row)
        out[d] = lab
    return tuple(out)


def _reshape(ctx: Ctx, node: fx.Node) -> Labels:
    x = ctx.input
    # eager code fixes what it writes down; a graph output may lose whole attention heads (heads.py)
    prefer = eager_limits.computed_dims(ctx) if ctx.eager else ctx.a.heads.get(node.name, frozenset())
    return reshape_labels(ctx, ctx.lab(x), ctx.shape(x), ctx.out_shape(), ctx.symbolic(node), prefer)


def _sizes_rewrite(names: tuple[str, ...], offset: Callable[[Any, fx.Node], int] = lambda rw, n: 0):
    """Rewrite the size-list argument (the first of ``names`` the op's schema has: ``view`` says
    ``size``, ``reshape`` says ``shape``) so each entry matches the node's new output shape."""

    def rewrite(rw, node: fx.Node) -> None:
        args = bound(node)
        name = next((n for n in names if n in args), None)
        sizes = args.get(name)
        if not isinstance(sizes, (list, tuple)):
            return
        old, new = rw.orig_shape(node), rw.new_shape(node)
        if old == new:
            return
        off = offset(rw, node)
        out = list(sizes)
        for i, s in enumerate(sizes):
            j = i + off
            # a size computed in the graph (``x.size(-1) // heads``) is replaced too: the dim
            # carries channels, so it never depends on the batch and its new width is known
            if s != -1 and 0 <= j < len(new) and old[j] != new[j]:
                out[i] = new[j]
        rw.set_argument(node, name, out)

    return rewrite


rule(*_ops("view", "reshape", "_unsafe_view", "view_copy", "_reshape_alias"), rewrite=_sizes_rewrite(("size", "shape")))(_reshape)
rule(*_ops("flatten", "squeeze", "unsqueeze", "view_as", "reshape_as", "squeeze_copy", "unsqueeze_copy", "ravel"))(_reshape)
rule(*_ops("unflatten"), rewrite=_sizes_rewrite(
    ("sizes",), lambda rw, n: _dim(bound(n)["dim"], len(rw.orig_shape(bound(n)["self"])))))(_reshape)


def _expand(ctx: Ctx, node: fx.Node) -> Labels:
    x = ctx.input
    xl, xs, os = ctx.lab(x), ctx.shape(x), ctx.out_shape()
    off = len(os) - len(xs)
    out: list = [None] * len(os)
    for i, (d, n) in enumerate(zip(xl, xs)):
        if n == os[off + i]:
            out[off + i] = d
        else:
            ctx.pin(d, "broadcast by expand")
    return tuple(out)


rule(*_ops("expand", "expand_copy", "broadcast_to"), rewrite=_sizes_rewrite(("size",)))(_expand)
rule(*_ops("expand_as"))(_expand)


@rule(*_ops("repeat"))
def repeat(ctx: Ctx, node: fx.Node) -> Labels:
    xl, reps = ctx.lab(ctx.args["self"]), list(ctx.args["repeats"])
    lead = len(reps) - len(xl)
    out: list = [None] * lead
    for d, r in zip(xl, reps[lead:]):
        out.append(np.tile(d, r) if d is not None else None)
    return tuple(out)
