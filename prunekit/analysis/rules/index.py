"""Indexing along a dimension: slice, narrow, select, index_select, index, gather."""

from __future__ import annotations

import torch.fx as fx

from ..arguments import bound
from ..context import Ctx, Labels
from ._common import _dim, _none, _ops, rule


def _slice_bounds(node: fx.Node, size: int) -> tuple[int, int, int]:
    args = bound(node)
    start, end, step = args.get("start"), args.get("end"), args.get("step", 1)
    s = slice(start if isinstance(start, int) else None, end if isinstance(end, int) else None, step)
    return s.indices(size)


def _slice_rewrite(rw, node: fx.Node) -> None:
    args = bound(node)
    x = args["self"]
    d = _dim(args.get("dim", 0), len(rw.orig_shape(x)))
    lab = rw.labels(x)[d]
    if lab is None or rw.orig_shape(x)[d] == rw.new_shape(x)[d]:
        return
    start, end, _ = _slice_bounds(node, rw.orig_shape(x)[d])
    kept = rw.kept(lab)
    new_start = int(kept[:start].sum())
    new_end = new_start + int(kept[start:end].sum())
    node.args = (x, d, new_start, new_end, 1)
    node.kwargs = {}


@rule(*_ops("slice"), rewrite=_slice_rewrite)
def slice_(ctx: Ctx, node: fx.Node) -> Labels:
    args = ctx.args
    xl = list(ctx.lab(args["self"]))
    d = _dim(args.get("dim", 0), len(xl))
    if xl[d] is not None:
        start, end, step = _slice_bounds(node, len(xl[d]))
        if step != 1 or not all(isinstance(v, (int, type(None))) for v in (args.get("start"), args.get("end"))):
            ctx.pin(xl[d], "strided or dynamic slice")
            xl[d] = None
        else:
            xl[d] = xl[d][start:end]
    return tuple(xl)


def _narrow_rewrite(rw, node: fx.Node) -> None:
    args = bound(node)
    x, d, start, length = args["self"], args["dim"], args["start"], args["length"]
    d = _dim(d, len(rw.orig_shape(x)))
    lab = rw.labels(x)[d]
    if lab is None or rw.orig_shape(x)[d] == rw.new_shape(x)[d]:
        return
    kept = rw.kept(lab)
    node.args = (x, d, int(kept[:start].sum()), int(kept[start : start + length].sum()))


@rule(*_ops("narrow"), rewrite=_narrow_rewrite)
def narrow(ctx: Ctx, node: fx.Node) -> Labels:
    args = ctx.args
    x, d, start, length = args["self"], args["dim"], args["start"], args["length"]
    xl = list(ctx.lab(x))
    d = _dim(d, len(xl))
    if xl[d] is not None:
        xl[d] = xl[d][start : start + length]
    return tuple(xl)


def _select_rewrite(rw, node: fx.Node) -> None:
    args = bound(node)
    x, d, idx = args["self"], args["dim"], args["index"]
    d = _dim(d, len(rw.orig_shape(x)))
    lab = rw.labels(x)[d]
    if lab is None:
        return
    idx = idx % rw.orig_shape(x)[d]
    node.args = (x, d, int(rw.kept(lab)[:idx].sum()))


@rule(*_ops("select"), rewrite=_select_rewrite)
def select(ctx: Ctx, node: fx.Node) -> Labels:
    args = ctx.args
    x, d, idx = args["self"], args["dim"], args["index"]
    xl = ctx.lab(x)
    d = _dim(d, len(xl))
    if xl[d] is not None:
        ctx.pin(xl[d][idx : idx + 1] if idx >= 0 else xl[d][idx:][:1], "selected by index")
    return tuple(xl[:d]) + tuple(xl[d + 1 :])


@rule(*_ops("index_select"))
def index_select(ctx: Ctx, node: fx.Node) -> Labels:
    args = ctx.args
    xl = list(ctx.lab(args["self"]))
    d = _dim(args["dim"], len(xl))
    ctx.pin(xl[d], "gathered by index")
    ctx.pin_all(ctx.lab(args["index"]), "index values")
    xl[d] = None
    return tuple(xl)


@rule(*_ops("index"))
def index(ctx: Ctx, node: fx.Node) -> Labels | None:
    """``x[i0, i1, ...]`` with index tensors: the indexed dims are positions (pinned) and become the
    indices' broadcast dims; the others pass through (CLIP's ``h[arange(B), ids.argmax(-1)]``
    keeps the channels of ``h``)."""
    xl = ctx.lab(ctx.args["self"])
    idx = list(ctx.args["indices"])
    for t in idx:
        if t is not None:
            ctx.pin_all(ctx.lab(t), "index values")  # an index tensor's entries are positions, not channels
    consumed: list[int] = []   # dims of x each index consumes (a boolean mask consumes its rank)
    nds: list[int] = []
    d = 0
    for t in idx:
        if t is None:
            d += 1
            continue
        shape = ctx.shape(t) or (0,)
        mask = str(ctx.a.dtypes.get(t.name)) in ("torch.bool", "torch.uint8")
        width = len(shape) if mask else 1
        consumed += list(range(d, d + width))
        nds.append(1 if mask else len(shape))
        d += width
    if not consumed or consumed[-1] >= len(xl):
        ctx.barrier("indexing the analysis could not follow")
        return None
    for c in consumed:
        ctx.pin(xl[c], "gathered by index")
    out_nd = max(nds)
    used = [i for i, t in enumerate(idx) if t is not None]
    adjacent = used == list(range(used[0], used[-1] + 1))
    rest = [xl[i] for i in range(len(xl)) if i not in consumed]
    if adjacent:
        first = consumed[0]
        before = [xl[i] for i in range(first)]
        return tuple(before) + _none(out_nd) + tuple(rest[len(before):])
    return _none(out_nd) + tuple(rest)


@rule(*_ops("gather"))
def gather(ctx: Ctx, node: fx.Node) -> Labels:
    """``out[..i..] = x[..index[..i..]..]`` along ``dim``: ``x``'s dim is positions (pinned); the
    output has the index's shape, every other dim read index for index from both."""
    args = ctx.args
    xl, il = ctx.lab(args["self"]), ctx.lab(args["index"])
    xs, is_ = ctx.shape(args["self"]), ctx.shape(args["index"])
    d = _dim(args["dim"], len(xl))
    ctx.pin(xl[d], "gathered by index")
    ctx.pin(il[d], "index values")
    out: list = []
    for i, (a, b) in enumerate(zip(xl, il)):
        if i == d:
            out.append(None)
        elif xs[i] == is_[i]:
            out.append(ctx.unify(a, b) if a is not None or b is not None else None)
        else:
            ctx.pin(a, "gathered in part")
            ctx.pin(b, "index values")
            out.append(None)
    return tuple(out)
