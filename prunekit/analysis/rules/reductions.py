"""Reductions and normalising functions: summing over channels is safe, averaging or normalising pins them."""

from __future__ import annotations

from typing import Any

import torch.fx as fx

from ..context import Ctx
from ._common import _dim, _ops, rule
from .elementwise import elementwise


def _reduce(sum_like: bool, dim_arg: int = 1, keep_arg: int = 2):
    def propagate(ctx: Ctx, node: fx.Node) -> Any:
        xl = ctx.lab(node.args[0])
        n = len(xl)
        dims = node.args[dim_arg] if len(node.args) > dim_arg else node.kwargs.get("dim")
        if dims is None or (isinstance(dims, (list, tuple)) and len(dims) == 0):
            dims = list(range(n))
        elif isinstance(dims, int):
            dims = [dims]
        dims = {_dim(d, n) for d in dims}
        keep = bool(node.args[keep_arg] if len(node.args) > keep_arg else node.kwargs.get("keepdim", False))
        for d in dims:
            if not sum_like:
                ctx.pin(xl[d], "averaged or compared over")
        out = tuple(None if i in dims else xl[i] for i in range(n) if keep or i not in dims)
        shapes = ctx.out_shapes()
        return [out] * len(shapes) if isinstance(shapes, list) else out

    return propagate


rule(*_ops("sum", "nansum"))(_reduce(True))
rule(*_ops("mean", "amax", "amin", "prod", "logsumexp", "any", "all", "nanmean", "argmax", "argmin"))(_reduce(False))


@rule(*_ops("max", "min"))
def max_min(ctx: Ctx, node: fx.Node) -> Any:
    """``max(a, b)`` is elementwise; ``max(a)`` / ``max(a, dim)`` reduce."""
    if len(node.args) > 1 and isinstance(node.args[1], fx.Node) and ctx.is_tensor(node.args[1]):
        return elementwise(ctx, node)
    return _reduce(False)(ctx, node)

rule(*_ops("var", "std", "var_mean", "std_mean"))(lambda ctx, node: _reduce(False)(ctx, node))


@rule(*_ops("linalg_vector_norm"))
def vector_norm(ctx: Ctx, node: fx.Node) -> Any:
    ordv = node.args[1] if len(node.args) > 1 else node.kwargs.get("ord", 2)
    return _reduce(ordv in (1, 2, 1.0, 2.0), dim_arg=2, keep_arg=3)(ctx, node)


@rule(*_ops("norm"))
def norm(ctx: Ctx, node: fx.Node) -> Any:
    p = node.args[1] if len(node.args) > 1 else node.kwargs.get("p", 2)
    return _reduce(p in (1, 2, 1.0, 2.0, None), dim_arg=2, keep_arg=3)(ctx, node)


def _dims_arg(value: Any, ndim: int) -> list[int]:
    if value is None:
        return list(range(ndim))
    if isinstance(value, int):
        return [_dim(value, ndim)]
    return [_dim(int(v), ndim) for v in value]


def _along_dim(why: str, dim_arg: int = 1):
    def propagate(ctx: Ctx, node: fx.Node) -> Any:
        xl = ctx.lab(node.args[0])
        d = node.args[dim_arg] if len(node.args) > dim_arg else node.kwargs.get("dim", node.kwargs.get("dims", -1))
        for i in _dims_arg(d, len(xl)) if xl else []:
            ctx.pin(xl[i], why)
        shapes = ctx.out_shapes()
        return [xl] * len(shapes) if isinstance(shapes, list) else xl

    return propagate


rule(*_ops("softmax", "_softmax", "log_softmax", "_log_softmax"))(_along_dim("normalised over by softmax"))
rule(*_ops("cumsum", "cumprod", "sort", "argsort", "cummax", "cummin", "flip"))(_along_dim("order-dependent op"))
rule(*_ops("topk"))(_along_dim("order-dependent op", dim_arg=2))
rule(*_ops("roll"))(_along_dim("rolled along", dim_arg=2))
