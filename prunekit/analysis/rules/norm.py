"""Normalisation layers: per-channel parameters follow their channels; statistics over channels
pin them (``normalized_dims: keep``) or are taken over the kept channels (``prune``:
``Ctx.statistics_over``)."""

from __future__ import annotations

import torch.fx as fx

from ..arguments import bound
from ..context import Ctx, Labels
from ._common import _none, _ops, rule


def _per_channel(ctx: Ctx, xl: Labels, params: list, cdim: int = 1) -> Labels:
    xl = list(xl)
    for p in params:
        if isinstance(p, fx.Node) and ctx.is_tensor(p) and xl:
            xl[cdim] = ctx.unify(xl[cdim], ctx.lab(p)[0])
    return tuple(xl)


@rule(*_ops("batch_norm", "instance_norm"))
def batch_norm(ctx: Ctx, node: fx.Node) -> Labels:
    return _per_channel(ctx, ctx.lab(ctx.args["input"]), _norm_params(ctx))


def _norm_params(ctx: Ctx) -> list:
    args = ctx.args
    return [args.get(k) for k in ("weight", "bias", "running_mean", "running_var")]


@rule(*_ops("_native_batch_norm_legit_no_training", "_native_batch_norm_legit", "native_batch_norm",
            "_native_batch_norm_legit_functional"))
def native_batch_norm(ctx: Ctx, node: fx.Node) -> list:
    out = _per_channel(ctx, ctx.lab(ctx.args["input"]), _norm_params(ctx))
    rest = ctx.out_shapes()
    extra = [tuple(None for _ in s) if isinstance(s, tuple) else None for s in rest[1:]] if isinstance(rest, list) else []
    return [out, *extra]


def _layer_norm(ctx: Ctx, node: fx.Node) -> Labels:
    args = ctx.args
    xl = list(ctx.lab(args["input"]))
    k = len(args["normalized_shape"])
    affine = [p for p in (args.get("weight"), args.get("bias")) if isinstance(p, fx.Node) and ctx.is_tensor(p)]
    if ctx.eager and not affine:
        # an eager LayerNorm without weights keeps its normalized_shape: nothing tells it the new width
        ctx.pin_all(tuple(xl[-k:]), "layer norm without weights in eager code")
    if not ctx.statistics_over(xl[-k:], "normalised over by a layer/RMS norm"):
        for p in affine:
            ctx.pin_all(ctx.lab(p), "layer/RMS norm affine")
        return tuple(xl)
    for p in affine:  # the affine parameters follow the channels they scale
        pl = ctx.lab(p)
        for i in range(1, min(k, len(pl)) + 1):
            xl[-i] = ctx.unify(xl[-i], pl[-i])
    return tuple(xl)


def _layer_norm_rewrite(rw, node: fx.Node) -> None:
    args = bound(node)
    k = len(args["normalized_shape"])
    new = list(rw.new_shape(args["input"])[-k:])
    if new != list(args["normalized_shape"]):
        rw.set_argument(node, "normalized_shape", new)


@rule(*_ops("layer_norm", "rms_norm"), rewrite=_layer_norm_rewrite)
def layer_norm(ctx: Ctx, node: fx.Node) -> Labels:
    return _layer_norm(ctx, node)


@rule(*_ops("native_layer_norm"), rewrite=_layer_norm_rewrite)
def native_layer_norm(ctx: Ctx, node: fx.Node) -> list:
    out = _layer_norm(ctx, node)
    rest = ctx.out_shapes()
    return [out] + [tuple(None for _ in s) for s in rest[1:]]


def _group_norm_rewrite(rw, node: fx.Node) -> None:
    args = bound(node)
    x = args["input"]
    c0, c1 = rw.orig_shape(x)[1], rw.new_shape(x)[1]
    groups = int(args["num_groups"])
    if c0 != c1 and groups > 1:  # whole groups went; one group (normalized_dims prune) stays one
        rw.set_argument(node, "num_groups", c1 // (c0 // groups))


@rule(*_ops("group_norm"), rewrite=_group_norm_rewrite)
def group_norm(ctx: Ctx, node: fx.Node) -> Labels:
    args = ctx.args
    xl = list(ctx.lab(args["input"]))
    groups = int(args["num_groups"])
    c = ctx.shape(args["input"])[1]
    if xl[1] is not None and groups == 1 and c > 1:
        # one group: statistics over every channel (and position), like a layer norm
        if ctx.statistics_over([xl[1]], "normalised over by a one-group group norm"):
            return _per_channel(ctx, tuple(xl), [args.get("weight"), args.get("bias")])
    if xl[1] is not None:
        per = c // groups
        for g in range(groups):  # statistics are per group: a group goes whole or stays
            ctx.merge(xl[1][g * per : (g + 1) * per])
            if (xl[1][g * per : (g + 1) * per] < 0).any():
                ctx.pin(xl[1][g * per : (g + 1) * per], "group norm group with fixed channels")
    return _per_channel(ctx, tuple(xl), [args.get("weight"), args.get("bias")])


@rule(*_ops("_weight_norm"))
def weight_norm(ctx: Ctx, node: fx.Node) -> Labels:
    """``w = g * v / ||v||``: every dim of ``v`` and ``g`` is kept (pinned, not a barrier).

    The norm sums over every dim but ``dim``, so those cannot lose entries; along ``dim`` an entry
    of ``v`` with its ``g`` would make one row of ``w``, but the masked original zeroes the row of
    ``v`` and its norm with it (0/0), so that dim is kept too.  wav2vec2's positional conv (``dim=2``,
    the kernel) loses nothing by it: its channels are normalised over anyway."""
    args = ctx.args
    ctx.pin_all(ctx.lab(args["v"]), "normalised by weight norm")
    ctx.pin_all(ctx.lab(args["g"]), "normalised by weight norm")
    return _none(len(ctx.lab(args["v"]) or ()))
