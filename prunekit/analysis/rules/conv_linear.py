"""Producers and consumers of channels: convolutions, linear layers, matrix products, embeddings."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.fx as fx

from ..arguments import bound
from ..context import Ctx, Labels
from ._common import _as_array, _ops, rule
from .elementwise import broadcast


def _conv_parts(node: fx.Node) -> tuple[Any, Any, Any, bool, int]:
    """Input, weight, bias, whether transposed, groups: by name, whichever conv overload."""
    args = bound(node)
    name = node.target.overloadpacket.__name__ if isinstance(node.target, torch._ops.OpOverload) else ""
    transposed = bool(args.get("transposed", name.startswith("conv_transpose")))
    return args["input"], args["weight"], args.get("bias"), transposed, int(args.get("groups", 1))


def _conv_rewrite(rw, node: fx.Node) -> None:
    x, w, b, transposed, groups = _conv_parts(node)
    if groups == 1 or transposed:
        return
    wshape = rw.orig_shape(w)
    if wshape[1] != 1:
        return
    new_groups = rw.new_shape(x)[1 if len(rw.orig_shape(x)) == len(wshape) else 0]
    if new_groups != groups:
        rw.set_argument(node, "groups", new_groups)


@rule(*_ops("conv1d", "conv2d", "conv3d", "convolution", "_convolution", "conv_transpose1d",
            "conv_transpose2d", "conv_transpose3d"), rewrite=_conv_rewrite)
def conv(ctx: Ctx, node: fx.Node) -> Labels:
    x, w, b, transposed, groups = _conv_parts(node)
    xl, wl = list(ctx.lab(x)), ctx.lab(w)
    wshape = ctx.shape(w)
    cdim = 1 if len(xl) == len(wshape) else 0  # batched or unbatched input
    for k in wl[2:]:
        ctx.pin(k, "kernel window")
    bl = ctx.lab(b)
    if transposed:
        if groups != 1:
            ctx.barrier("grouped transposed convolution")
            return None
        ctx.unify(xl[cdim], wl[0])
        out_c = wl[1]
        if isinstance(w, fx.Node) and w.op == "get_attr":
            ctx.weight_output_dim(w.target, 1)  # (in, out, k...): for the report's "kept"
    elif groups == 1:
        ctx.unify(xl[cdim], wl[1])
        out_c = wl[0]
    else:
        out_ch, in_per_group = wshape[0], wshape[1]
        per_out = out_ch // groups
        xc = _as_array(xl[cdim], in_per_group * groups)
        wo = _as_array(wl[0], out_ch)
        if in_per_group == 1:
            # depthwise-style: input channel j feeds outputs j*per_out ... ; remove them together
            for j in range(groups):
                ctx.merge(np.concatenate([xc[j : j + 1], wo[j * per_out : (j + 1) * per_out]]))
            if xl[cdim] is None:
                ctx.pin(wo, "grouped conv on unprunable input channels")
        else:
            # grouped: keep the groups uniform by removing the same position in every group
            xg = xc.reshape(groups, in_per_group)
            wi = _as_array(wl[1], in_per_group)
            for k in range(in_per_group):
                col = np.concatenate([xg[:, k], wi[k : k + 1]])
                if (col < 0).any():
                    ctx.pin(col, "grouped conv input")
                ctx.merge(col)
            wg = wo.reshape(groups, per_out)
            for m in range(per_out):
                ctx.merge(wg[:, m])
        out_c = wl[0]
    if bl is not None:
        out_c = ctx.unify(out_c, bl[0])
    out = [None] * len(xl)
    out[:cdim] = xl[:cdim]
    out[cdim] = out_c
    return tuple(out)


@rule(*_ops("linear"))
def linear(ctx: Ctx, node: fx.Node) -> Labels:
    args = ctx.args
    x, w, b = args["input"], args["weight"], args.get("bias")
    xl, wl = ctx.lab(x), ctx.lab(w)
    ctx.unify(xl[-1], wl[1])
    out_c = wl[0]
    if b is not None:
        out_c = ctx.unify(out_c, ctx.lab(b)[0])
    return tuple(xl[:-1]) + (out_c,)


def _batch_dims(ctx: Ctx, a: Labels, b: Labels, n_out: int) -> list:
    """Unify the broadcast batch dimensions of two matmul operands (all but the last two)."""
    ab, bb = list(a[:-2]), list(b[:-2])
    width = max(len(ab), len(bb))
    ab = [None] * (width - len(ab)) + ab
    bb = [None] * (width - len(bb)) + bb
    return [ctx.unify(x, y) for x, y in zip(ab, bb)]


@rule(*_ops("mm", "bmm", "matmul"))
def matmul(ctx: Ctx, node: fx.Node) -> Labels:
    args = ctx.args  # mm/bmm: (self, mat2); matmul: (self, other)
    a, b = ctx.lab(args["self"]), ctx.lab(args.get("mat2", args.get("other")))
    if len(a) == 1 and len(b) == 1:
        ctx.unify(a[0], b[0])
        return ()
    if len(a) == 1:
        ctx.unify(a[0], b[-2])
        return tuple(b[:-2]) + (b[-1],)
    if len(b) == 1:
        ctx.unify(a[-1], b[0])
        return tuple(a[:-1])
    ctx.unify(a[-1], b[-2])
    return tuple(_batch_dims(ctx, a, b, 0)) + (a[-2], b[-1])


@rule(*_ops("addmm", "baddbmm", "addbmm"))
def addmm(ctx: Ctx, node: fx.Node) -> Labels:
    args = ctx.args  # addmm: (self, mat1, mat2); baddbmm/addbmm: (self, batch1, batch2)
    bias = args["self"]
    a, b = (ctx.lab(args.get(m, args.get(bt))) for m, bt in (("mat1", "batch1"), ("mat2", "batch2")))
    ctx.unify(a[-1], b[-2])
    out = tuple(_batch_dims(ctx, a, b, 0)) + (a[-2], b[-1])
    shape = ctx.out_shape()
    return _merge_into(ctx, out, [bias], shape)


def _merge_into(ctx: Ctx, lab: Labels, tensors: list, shape: tuple) -> Labels:
    out = list(lab)
    extra = broadcast(ctx, tensors, len(shape), shape)
    for i, d in enumerate(extra):
        if d is not None:
            out[i] = ctx.unify(out[i], d) if out[i] is not None else d
    return tuple(out)


@rule(*_ops("embedding"))
def embedding(ctx: Ctx, node: fx.Node) -> Labels:
    args = ctx.args
    w, idx = ctx.lab(args["weight"]), ctx.lab(args["indices"])
    ctx.pin(w[0], "embedding vocabulary")
    return tuple(idx) + (w[1],)
