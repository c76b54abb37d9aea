"""Attention: scaled_dot_product_attention (heads and head width; the default scale follows the head width)."""

from __future__ import annotations

import torch.fx as fx

from ..context import Ctx, Labels
from ._common import _ops, rule


def _sdpa_rewrite(rw, node: fx.Node) -> None:
    q = node.args[0]
    head = rw.orig_shape(q)[-1]
    if rw.new_shape(q)[-1] != head and _sdpa_scale(node) is None:
        node.kwargs = {**node.kwargs, "scale": 1.0 / float(head) ** 0.5}


def _sdpa_scale(node: fx.Node):
    return node.args[6] if len(node.args) > 6 else node.kwargs.get("scale")


@rule(*_ops("scaled_dot_product_attention"), rewrite=_sdpa_rewrite)
def sdpa(ctx: Ctx, node: fx.Node) -> Labels:
    q, k, v = (ctx.lab(a) for a in node.args[:3])
    mask = ctx.arg(3, "attn_mask")
    if ctx.arg(8, "enable_gqa", False):
        ctx.barrier("grouped-query attention")
        return None
    if ctx.eager and _sdpa_scale(node) is None:
        # eager code recomputes the default scale 1/sqrt(head_dim) from the pruned width
        ctx.pin(q[-1], "default attention scale depends on the head width")
        ctx.pin(k[-1], "default attention scale depends on the head width")
    ctx.unify(q[-1], k[-1])           # q·k sums over the head dimension
    ctx.unify(k[-2], v[-2])           # keys and values share the source sequence
    batch = []
    for dq, dk, dv in zip(q[:-2], k[:-2], v[:-2]):
        batch.append(ctx.unify(ctx.unify(dq, dk), dv) if any(d is not None for d in (dq, dk, dv)) else None)
    out = tuple(batch) + (q[-2], v[-1])
    if isinstance(mask, fx.Node):
        ml = ctx.lab(mask)
        ctx.pin_all(ml, "attention mask")
    return out
