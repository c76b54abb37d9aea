"""Attention: scaled_dot_product_attention (heads and head width; the default scale follows the head width)."""

from __future__ import annotations

import torch.fx as fx

from .. import eager_limits
from ..arguments import bound
from ..context import Ctx, Labels
from ._common import _ops, rule


def _sdpa_rewrite(rw, node: fx.Node) -> None:
    q = bound(node)["query"]
    head = rw.orig_shape(q)[-1]
    if rw.new_shape(q)[-1] != head and bound(node).get("scale") is None:
        rw.set_argument(node, "scale", 1.0 / float(head) ** 0.5)


@rule(*_ops("scaled_dot_product_attention"), rewrite=_sdpa_rewrite)
def sdpa(ctx: Ctx, node: fx.Node) -> Labels:
    args = ctx.args
    q, k, v = (ctx.lab(args[n]) for n in ("query", "key", "value"))
    mask = args.get("attn_mask")
    if args.get("enable_gqa", False):
        ctx.barrier("grouped-query attention")
        return None
    if ctx.eager:
        eager_limits.attention_scale(ctx, q, k)
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
