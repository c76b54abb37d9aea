"""Elementwise ops with broadcasting: dimensions that line up carry the same channels."""

from __future__ import annotations

import numpy as np
import torch.fx as fx

from ..context import Ctx, Labels
from ._common import _dim, _ops, _with_inplace, rule


def broadcast(ctx: Ctx, tensors: list[fx.Node], out_ndim: int, out_shape: tuple[int, ...]) -> Labels:
    out: list = [None] * out_ndim
    seen = [False] * out_ndim  # a full-size operand already claimed this dim
    for t in tensors:
        lab, shape = ctx.lab(t), ctx.shape(t)
        if lab is None or shape is None:
            continue
        off = out_ndim - len(shape)
        for i, (d, n) in enumerate(zip(lab, shape)):
            j = off + i
            if n == 1 and out_shape[j] != 1:
                ctx.pin(d, "broadcast from size 1")
                continue
            if not seen[j]:
                out[j], seen[j] = d, True
            else:
                out[j] = ctx.unify(out[j], d, ctx.reason("elementwise with a tensor without these channels"))
    return tuple(out)


def _tensor_args(ctx: Ctx, node: fx.Node) -> list[fx.Node]:
    vals = list(node.args) + list(node.kwargs.values())
    return [v for v in vals if isinstance(v, fx.Node) and ctx.is_tensor(v)]


@rule(*_with_inplace(
    "add", "sub", "mul", "div", "rsub", "maximum", "minimum", "fmax", "fmin", "pow", "where", "masked_fill",
    "eq", "ne", "lt", "le", "gt", "ge", "logical_and", "logical_or", "logical_xor", "logical_not",
    "bitwise_and", "bitwise_or", "bitwise_xor", "bitwise_not", "atan2", "fmod", "remainder", "copysign",
    "lerp", "addcmul", "addcdiv", "clamp", "clamp_min", "clamp_max", "hardtanh", "relu", "relu6", "gelu",
    "silu", "sigmoid", "tanh", "hardswish", "hardsigmoid", "leaky_relu", "elu", "selu", "celu", "mish",
    "softplus", "log_sigmoid", "threshold", "dropout", "feature_dropout", "alpha_dropout",
    "feature_alpha_dropout", "clone", "contiguous", "detach", "alias", "_to_copy", "to", "neg", "abs", "exp",
    "exp2", "log", "log2", "log10", "log1p", "expm1", "sqrt", "rsqrt", "reciprocal", "erf", "erfc", "sin",
    "cos", "tan", "sign", "sgn", "floor", "ceil", "round", "trunc", "frac", "square", "isnan", "isinf",
    "nan_to_num", "fill", "zeros_like", "ones_like", "full_like", "empty_like", "lift_fresh_copy", "sinh",
    "cosh", "asin", "acos", "atan", "asinh", "acosh", "atanh", "xlogy", "heaviside", "sigmoid_backward",
    "logit", "positive", "conj", "real", "hypot", "float_power", "true_divide", "floor_divide",
))
def elementwise(ctx: Ctx, node: fx.Node) -> Labels:
    shape = ctx.out_shape()
    return broadcast(ctx, _tensor_args(ctx, node), len(shape), shape)


@rule(*_ops("native_dropout"))
def native_dropout(ctx: Ctx, node: fx.Node) -> list:
    lab = ctx.lab(ctx.input)
    return [lab, lab]


@rule(*_ops("type_as"))
def type_as(ctx: Ctx, node: fx.Node) -> Labels:
    return ctx.lab(ctx.input)


@rule(*_ops("prelu", "_prelu_kernel"))
def prelu(ctx: Ctx, node: fx.Node) -> Labels:
    x, w = ctx.args["self"], ctx.args["weight"]
    lab = list(ctx.lab(x))
    wl = ctx.lab(w)
    if ctx.shape(w) and ctx.shape(w)[0] > 1 and len(lab) > 1:
        lab[1] = ctx.unify(lab[1], wl[0])
    else:
        ctx.pin_all(wl, "shared PReLU slope")
    return tuple(lab)


@rule(*_with_inplace("triu", "tril"))
def triangular(ctx: Ctx, node: fx.Node) -> Labels:
    """Zeroes by (row, column) position: those two dimensions keep every index."""
    lab = ctx.lab(ctx.input)
    for d in lab[-2:]:
        ctx.pin(d, "triangular mask by position")
    return lab


@rule(*_ops("pixel_shuffle"))
def pixel_shuffle(ctx: Ctx, node: fx.Node) -> Labels:
    """Channel c of the output is laid out from input channels c*r*r ... c*r*r + r*r - 1: a block
    goes (or stays) as one channel."""
    lab = list(ctx.lab(ctx.input))
    r2 = int(ctx.args["upscale_factor"]) ** 2
    c = len(lab) - 3  # channels come before (H, W)
    if lab[c] is not None:
        blocks = lab[c].reshape(-1, r2)
        for k in range(1, r2):
            ctx.unify(blocks[:, 0], blocks[:, k], ctx.reason("one output channel of a pixel shuffle"))
        lab[c] = blocks[:, 0].copy()
    return tuple(lab)


@rule(*_ops("pixel_unshuffle"))
def pixel_unshuffle(ctx: Ctx, node: fx.Node) -> Labels:
    """Each input channel becomes r*r consecutive output channels, removed together."""
    lab = list(ctx.lab(ctx.input))
    r2 = int(ctx.args["downscale_factor"]) ** 2
    c = len(lab) - 3
    if lab[c] is not None:
        lab[c] = np.repeat(lab[c], r2)
    return tuple(lab)


@rule(*_ops("glu"))
def glu(ctx: Ctx, node: fx.Node) -> Labels:
    lab = list(ctx.lab(ctx.input))
    d = _dim(ctx.args["dim"], len(lab))
    if lab[d] is not None:
        half = len(lab[d]) // 2
        lab[d] = ctx.unify(lab[d][:half], lab[d][half:])
    return tuple(lab)
