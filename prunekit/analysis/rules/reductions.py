"""Reductions and normalising functions: summing over channels is safe; a mean or a variance over
channels pins them, or (``normalized_dims: prune``) is taken over the kept ones; other
reductions (max, product, any) and softmax pin them."""

from __future__ import annotations

from typing import Any

import torch.fx as fx

from ..context import Ctx
from ._common import _dim, _ops, rule
from .elementwise import elementwise


def _reduce(sum_like: bool, statistic: bool = False):
    """Reduce over ``dim`` (every dimension when absent or empty), keeping them if ``keepdim``.
    ``statistic``: a mean or a variance (``Ctx.statistics_over``).

    By name: ``var(x, True)`` passes ``unbiased`` where ``var(x, [1])`` passes ``dim``."""

    def propagate(ctx: Ctx, node: fx.Node) -> Any:
        args = ctx.args
        xl = ctx.lab(args["self"])
        n = len(xl)
        dims = args.get("dim")
        if dims is None or (isinstance(dims, (list, tuple)) and len(dims) == 0):
            dims = list(range(n))
        elif isinstance(dims, int):
            dims = [dims]
        dims = {_dim(d, n) for d in dims}
        keep = bool(args.get("keepdim", False))
        if statistic:
            ctx.statistics_over([xl[d] for d in sorted(dims)], "averaged over")
        elif not sum_like:
            for d in dims:
                ctx.pin(xl[d], "averaged or compared over")
        out = tuple(None if i in dims else xl[i] for i in range(n) if keep or i not in dims)
        shapes = ctx.out_shapes()
        return [out] * len(shapes) if isinstance(shapes, list) else out

    return propagate


rule(*_ops("sum", "nansum"))(_reduce(True))
rule(*_ops("mean", "nanmean"))(_reduce(False, statistic=True))
rule(*_ops("amax", "amin", "prod", "logsumexp", "any", "all", "argmax", "argmin"))(_reduce(False))


@rule(*_ops("max", "min"))
def max_min(ctx: Ctx, node: fx.Node) -> Any:
    """``max(a, b)`` is elementwise; ``max(a)`` / ``max(a, dim)`` reduce."""
    other = ctx.args.get("other")
    if isinstance(other, fx.Node) and ctx.is_tensor(other):
        return elementwise(ctx, node)
    return _reduce(False)(ctx, node)

rule(*_ops("var", "std", "var_mean", "std_mean"))(lambda ctx, node: _reduce(False, statistic=True)(ctx, node))


@rule(*_ops("linalg_vector_norm"))
def vector_norm(ctx: Ctx, node: fx.Node) -> Any:
    return _reduce(ctx.args.get("ord", 2) in (1, 2, 1.0, 2.0))(ctx, node)


@rule(*_ops("norm"))
def norm(ctx: Ctx, node: fx.Node) -> Any:
    return _reduce(ctx.args.get("p", 2) in (1, 2, 1.0, 2.0, None))(ctx, node)


def _dims_arg(value: Any, ndim: int) -> list[int]:
    if value is None or (isinstance(value, (list, tuple)) and len(value) == 0):  # roll(dims=[]) flattens
        return list(range(ndim))
    if isinstance(value, int):
        return [_dim(value, ndim)]
    return [_dim(int(v), ndim) for v in value]


def _along_dim(why: str):
    """Pin the dimensions the op works along (``dim``, or ``dims`` for flip and roll)."""

    def propagate(ctx: Ctx, node: fx.Node) -> Any:
        args = ctx.args
        xl = ctx.lab(args["self"])
        d = args["dim"] if "dim" in args else args.get("dims")
        for i in _dims_arg(d, len(xl)) if xl else []:
            ctx.pin(xl[i], why)
        shapes = ctx.out_shapes()
        return [xl] * len(shapes) if isinstance(shapes, list) else xl

    return propagate


rule(*_ops("softmax", "_softmax", "log_softmax", "_log_softmax"))(_along_dim("normalised over by softmax"))
rule(*_ops("cumsum", "cumprod", "sort", "argsort", "cummax", "cummin", "flip"))(_along_dim("order-dependent op"))
rule(*_ops("topk"))(_along_dim("order-dependent op"))
rule(*_ops("roll"))(_along_dim("rolled along"))
