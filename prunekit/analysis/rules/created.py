"""Tensors the graph creates: constant fills take whatever channels they meet."""

from __future__ import annotations

import torch
import torch.fx as fx

from ..context import Ctx, Labels
from ..ruleset import Rule
from ._common import RULES, _ops, rule
from .views import _sizes_rewrite


def _created(ctx: Ctx, node: fx.Node) -> Labels:
    lab = ctx.fresh(ctx.out_shape(), ctx.symbolic(node))
    ctx.created(lab)
    return lab


rule(*_ops("zeros", "ones", "empty", "full"), rewrite=_sizes_rewrite(("size",)))(_created)
rule(*_ops("new_zeros", "new_ones", "new_empty", "new_full"), rewrite=_sizes_rewrite(("size",)))(_created)


def _no_tensor(ctx: Ctx, node: fx.Node) -> None:
    return None


rule(*_ops("sym_size", "sym_numel", "sym_stride", "_assert_tensor_metadata", "_assert_scalar",
           "sym_constrain_range_for_size", "sym_constrain_range", "_assert_async", "arange",
           "scalar_tensor", "randn", "rand", "randint", "linspace", "eye", "tensor"))(_no_tensor)

import operator as _operator  # noqa: E402

for _fn in (_operator.mul, _operator.add, _operator.sub, _operator.floordiv, _operator.truediv, _operator.neg,
            _operator.mod, _operator.eq, _operator.ne, _operator.lt, _operator.le, _operator.gt, _operator.ge):
    RULES[_fn] = Rule(_no_tensor)
for _fn in ("sym_sum", "sym_max", "sym_min", "sym_not", "sym_float", "sym_int", "sym_sqrt", "sym_ite"):
    if hasattr(torch, _fn):
        RULES[getattr(torch, _fn)] = Rule(_no_tensor)
