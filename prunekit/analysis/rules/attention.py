"""Attention: scaled_dot_product_attention (heads and head width; the default scale follows the head width;
a mask with a value per head, a position bias, goes with the heads)."""

from __future__ import annotations

import numpy as np
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
        # query head j reads key/value head j // (Hq / Hkv): a key/value head goes with its queries
        hq, hk = (ctx.shape(args["query"]) or (0,) * 3)[-3], (ctx.shape(args["key"]) or (0,) * 3)[-3]
        if len(q) < 3 or not hk or hq % hk:
            ctx.barrier("grouped-query attention with heads the analysis could not match")
            return None
        rep = hq // hk
        k = k[:-3] + (np.repeat(k[-3], rep) if k[-3] is not None else None,) + k[-2:]
        v = v[:-3] + (np.repeat(v[-3], rep) if v[-3] is not None else None,) + v[-2:]
    if ctx.eager:
        eager_limits.attention_scale(ctx, q, k)
    ctx.unify(q[-1], k[-1])           # q·k sums over the head dimension
    ctx.unify(k[-2], v[-2])           # keys and values share the source sequence
    batch = []
    for dq, dk, dv in zip(q[:-2], k[:-2], v[:-2]):
        batch.append(ctx.unify(ctx.unify(dq, dk), dv) if any(d is not None for d in (dq, dk, dv)) else None)
    out = tuple(batch) + (q[-2], v[-1])
    if isinstance(mask, fx.Node):
        ml, ms = ctx.lab(mask), ctx.shape(mask) or ()
        ctx.pin_all(ml[-2:], "attention mask")
        for i in range(1, len(ml) - 1):  # a mask (a position bias) per head goes with the head
            if ms[-2 - i] > 1 and i <= len(batch):
                batch[-i] = ctx.unify(batch[-i], ml[-2 - i]) if batch[-i] is not None or ml[-2 - i] is not None else None
        out = tuple(batch) + (q[-2], v[-1])
    return out
