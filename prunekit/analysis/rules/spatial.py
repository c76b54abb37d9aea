"""Spatial ops (pooling, padding, interpolation): channels and batch pass, trailing spatial dims carry none."""

from __future__ import annotations

from typing import Any

import torch.fx as fx

from ..context import Ctx, Labels
from ._common import _none, _ops, rule


def _spatial(k: int):
    def propagate(ctx: Ctx, node: fx.Node) -> Any:
        xl = ctx.lab(ctx.input)
        for d in xl[-k:]:
            ctx.pin(d, "spatial window")
        out = tuple(xl[:-k]) + _none(k)
        shapes = ctx.out_shapes()
        return [out] * len(shapes) if isinstance(shapes, list) else out

    return propagate


for _k in (1, 2, 3):
    _names = [f"{p}{_k}d" for p in ("max_pool", "avg_pool", "adaptive_avg_pool", "adaptive_max_pool",
                                      "_adaptive_avg_pool", "upsample_nearest", "_upsample_nearest_exact", "lp_pool")]
    _names += [f"max_pool{_k}d_with_indices", f"adaptive_max_pool{_k}d"]
    if _k == 1:
        _names += ["upsample_linear1d"]
    if _k == 2:
        _names += ["upsample_bilinear2d", "upsample_bicubic2d", "_upsample_bilinear2d_aa", "_upsample_bicubic2d_aa"]
    if _k == 3:
        _names += ["upsample_trilinear3d"]
    rule(*_ops(*_names))(_spatial(_k))


def _pad_dims(ctx: Ctx, node: fx.Node) -> Labels:
    args = ctx.args
    xl = ctx.lab(args["self"])
    pad = args["pad"] if "pad" in args else args["padding"]  # pad / constant_pad_nd; reflection_pad2d ...
    k = len(pad) // 2
    for d in xl[len(xl) - k :]:
        ctx.pin(d, "padded dimension")
    return xl


rule(*_ops("constant_pad_nd", "pad", "reflection_pad1d", "reflection_pad2d", "reflection_pad3d",
           "replication_pad1d", "replication_pad2d", "replication_pad3d", "circular_pad1d", "circular_pad2d"))(_pad_dims)
