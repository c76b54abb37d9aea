"""The channel rules: one entry per ATen op, in one table.

A rule has two halves:

* ``propagate(ctx, node) -> labels``: read the labels of the inputs, couple (``ctx.unify``) the
  dimensions that must lose the same channels, pin (``ctx.pin``) the ones that must not change,
  and return the labels of the output.  The masked-vs-pruned check verifies that the rule is right.
* ``rewrite(rw, node)`` (optional): after channels are removed, fix the node's non-tensor
  arguments (a ``view`` size, a conv's ``groups``, a split's sizes).

Adding an op is adding one ``@rule(...)`` entry.  An op without a rule is a barrier: every channel
that reaches it is kept, and the report names it.  Ops of other libraries get their rules from the user
(``prune(..., rules=...)``, the ``prunekit.rules`` entry points: see ``ruleset.py``), never here.

Semantics the rules rely on: in the masked original every pruned channel is zero wherever it
appears, so an op that *sums* over a channel dimension (a conv's input channels, a matmul's inner
dimension, ``sum``) is unaffected by the removal, while an op that *normalises* or *averages* over
it (``layer_norm``, ``softmax``, ``mean``) is not and must pin it.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
import torch.fx as fx

from .resolve import Ctx, Labels
from .ruleset import Rule, RuleSet

aten = torch.ops.aten

RULES = RuleSet(name="built-in")
"""The built-in table.  Users add rules without editing it: ``prune(..., rules=...)`` or the
``prunekit.rules`` entry points (``ruleset.py``), which are looked up first."""


def rule(*ops: Any, rewrite: Callable | None = None) -> Callable[[Callable], Callable]:
    """A built-in entry (``RuleSet.rule``); ``ops`` may be empty where this torch build lacks them."""
    if not ops:
        return lambda fn: fn
    return RULES.rule(*ops, rewrite=rewrite)


def _ops(*names: str) -> list:
    """Resolve aten packet names that exist in this torch build (older builds lack some)."""
    return [getattr(aten, n) for n in names if hasattr(aten, n)]


def _with_inplace(*names: str) -> list:
    """The ops and their in-place forms (``relu_``), which eager-style exports keep."""
    return _ops(*names, *(n + "_" for n in names))


def _none(n: int) -> Labels:
    return tuple(None for _ in range(n))


def _dim(d: int, ndim: int) -> int:
    return d % ndim if ndim else 0


def _as_array(lab: np.ndarray | None, n: int) -> np.ndarray:
    return lab if lab is not None else np.full(n, -1, dtype=np.int64)


def _has(lab: np.ndarray | None) -> bool:
    return lab is not None and bool((lab >= 0).any())


# ------------------------------------------------------------------------------------------
# Elementwise ops (with broadcasting): dimensions that line up carry the same channels.
# ------------------------------------------------------------------------------------------
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
    lab = ctx.lab(node.args[0])
    return [lab, lab]


@rule(*_ops("type_as"))
def type_as(ctx: Ctx, node: fx.Node) -> Labels:
    return ctx.lab(node.args[0])


@rule(*_ops("prelu", "_prelu_kernel"))
def prelu(ctx: Ctx, node: fx.Node) -> Labels:
    x, w = node.args[0], node.args[1]
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
    lab = ctx.lab(node.args[0])
    for d in lab[-2:]:
        ctx.pin(d, "triangular mask by position")
    return lab


@rule(*_ops("pixel_shuffle"))
def pixel_shuffle(ctx: Ctx, node: fx.Node) -> Labels:
    """Channel c of the output is laid out from input channels c*r*r ... c*r*r + r*r - 1: a block
    goes (or stays) as one channel."""
    lab = list(ctx.lab(node.args[0]))
    r2 = int(ctx.arg(1, "upscale_factor", 1)) ** 2
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
    lab = list(ctx.lab(node.args[0]))
    r2 = int(ctx.arg(1, "downscale_factor", 1)) ** 2
    c = len(lab) - 3
    if lab[c] is not None:
        lab[c] = np.repeat(lab[c], r2)
    return tuple(lab)


@rule(*_ops("glu"))
def glu(ctx: Ctx, node: fx.Node) -> Labels:
    x = node.args[0]
    lab = list(ctx.lab(x))
    d = _dim(ctx.arg(1, "dim", -1), len(lab))
    if lab[d] is not None:
        half = len(lab[d]) // 2
        lab[d] = ctx.unify(lab[d][:half], lab[d][half:])
    return tuple(lab)


# ------------------------------------------------------------------------------------------
# Producers and consumers: convolutions, linear layers, matrix products, attention.
# ------------------------------------------------------------------------------------------
def _conv_parts(node: fx.Node) -> tuple[Any, Any, Any, bool, int]:
    name = node.target.overloadpacket.__name__ if isinstance(node.target, torch._ops.OpOverload) else ""
    a = list(node.args)
    kw = node.kwargs
    x, w = a[0], a[1]
    b = a[2] if len(a) > 2 else kw.get("bias")
    if name in ("convolution", "_convolution"):
        transposed = bool(a[6] if len(a) > 6 else kw.get("transposed", False))
        groups = int(a[8] if len(a) > 8 else kw.get("groups", 1))
    elif name.startswith("conv_transpose"):
        transposed = True
        groups = int(a[6] if len(a) > 6 else kw.get("groups", 1))
    else:
        transposed = False
        groups = int(a[6] if len(a) > 6 else kw.get("groups", 1))
    return x, w, b, transposed, groups


def _groups_index(node: fx.Node) -> int:
    name = node.target.overloadpacket.__name__
    return 8 if name in ("convolution", "_convolution") else 6


def _conv_rewrite(rw, node: fx.Node) -> None:
    x, w, b, transposed, groups = _conv_parts(node)
    if groups == 1 or transposed:
        return
    wshape = rw.orig_shape(w)
    if wshape[1] != 1:
        return
    new_groups = rw.new_shape(x)[1 if len(rw.orig_shape(x)) == len(wshape) else 0]
    if new_groups != groups:
        rw.set_arg(node, _groups_index(node), "groups", new_groups)


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
            ctx.a.output_dims[w.target] = 1  # (in, out, k...): for the report's "kept"
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
                ctx.atoms.merge(np.concatenate([xc[j : j + 1], wo[j * per_out : (j + 1) * per_out]]))
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
                ctx.atoms.merge(col)
            wg = wo.reshape(groups, per_out)
            for m in range(per_out):
                ctx.atoms.merge(wg[:, m])
        out_c = wl[0]
    if bl is not None:
        out_c = ctx.unify(out_c, bl[0])
    out = [None] * len(xl)
    out[:cdim] = xl[:cdim]
    out[cdim] = out_c
    return tuple(out)


@rule(*_ops("linear"))
def linear(ctx: Ctx, node: fx.Node) -> Labels:
    x, w = node.args[0], node.args[1]
    b = node.args[2] if len(node.args) > 2 else node.kwargs.get("bias")
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
    a, b = ctx.lab(node.args[0]), ctx.lab(node.args[1])
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
    bias, a, b = node.args[0], ctx.lab(node.args[1]), ctx.lab(node.args[2])
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
    if ctx.a.eager and _sdpa_scale(node) is None:
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


@rule(*_ops("embedding"))
def embedding(ctx: Ctx, node: fx.Node) -> Labels:
    w, idx = ctx.lab(node.args[0]), ctx.lab(node.args[1])
    ctx.pin(w[0], "embedding vocabulary")
    return tuple(idx) + (w[1],)


# ------------------------------------------------------------------------------------------
# Normalisation
# ------------------------------------------------------------------------------------------
def _per_channel(ctx: Ctx, xl: Labels, params: list, cdim: int = 1) -> Labels:
    xl = list(xl)
    for p in params:
        if isinstance(p, fx.Node) and ctx.is_tensor(p) and xl:
            xl[cdim] = ctx.unify(xl[cdim], ctx.lab(p)[0])
    return tuple(xl)


@rule(*_ops("batch_norm", "instance_norm"))
def batch_norm(ctx: Ctx, node: fx.Node) -> Labels:
    return _per_channel(ctx, ctx.lab(node.args[0]), list(node.args[1:5]))


@rule(*_ops("_native_batch_norm_legit_no_training", "_native_batch_norm_legit", "native_batch_norm",
            "_native_batch_norm_legit_functional"))
def native_batch_norm(ctx: Ctx, node: fx.Node) -> list:
    out = _per_channel(ctx, ctx.lab(node.args[0]), list(node.args[1:5]))
    rest = ctx.a.shapes.get(node.name)
    extra = [tuple(None for _ in s) if isinstance(s, tuple) else None for s in rest[1:]] if isinstance(rest, list) else []
    return [out, *extra]


def _layer_norm(ctx: Ctx, node: fx.Node, weight_idx: int) -> Labels:
    xl = ctx.lab(node.args[0])
    ns = node.args[1]
    k = len(ns)
    for d in xl[-k:]:
        ctx.pin(d, "normalised over by a layer/RMS norm")
    for p in node.args[weight_idx : weight_idx + 2]:
        if isinstance(p, fx.Node) and ctx.is_tensor(p):
            ctx.pin_all(ctx.lab(p), "layer/RMS norm affine")
    return xl


@rule(*_ops("layer_norm", "rms_norm"))
def layer_norm(ctx: Ctx, node: fx.Node) -> Labels:
    return _layer_norm(ctx, node, 2)


@rule(*_ops("native_layer_norm"))
def native_layer_norm(ctx: Ctx, node: fx.Node) -> list:
    out = _layer_norm(ctx, node, 2)
    rest = ctx.a.shapes.get(node.name)
    return [out] + [tuple(None for _ in s) for s in rest[1:]]


def _group_norm_rewrite(rw, node: fx.Node) -> None:
    x = node.args[0]
    c0, c1 = rw.orig_shape(x)[1], rw.new_shape(x)[1]
    if c0 != c1:
        groups = int(node.args[1])
        rw.set_arg(node, 1, "num_groups", c1 // (c0 // groups))


@rule(*_ops("group_norm"), rewrite=_group_norm_rewrite)
def group_norm(ctx: Ctx, node: fx.Node) -> Labels:
    xl = list(ctx.lab(node.args[0]))
    groups = int(node.args[1])
    c = ctx.shape(node.args[0])[1]
    if xl[1] is not None:
        per = c // groups
        for g in range(groups):  # statistics are per group: a group goes whole or stays
            ctx.atoms.merge(xl[1][g * per : (g + 1) * per])
            if (xl[1][g * per : (g + 1) * per] < 0).any():
                ctx.pin(xl[1][g * per : (g + 1) * per], "group norm group with fixed channels")
    return _per_channel(ctx, tuple(xl), list(node.args[2:4]))


# ------------------------------------------------------------------------------------------
# Spatial ops: channels (and batch) pass, the trailing spatial dims carry none.
# ------------------------------------------------------------------------------------------
def _spatial(k: int):
    def propagate(ctx: Ctx, node: fx.Node) -> Any:
        xl = ctx.lab(node.args[0])
        for d in xl[-k:]:
            ctx.pin(d, "spatial window")
        out = tuple(xl[:-k]) + _none(k)
        shapes = ctx.a.shapes.get(node.name)
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
    xl = ctx.lab(node.args[0])
    pad = node.args[1]
    k = len(pad) // 2
    for d in xl[len(xl) - k :]:
        ctx.pin(d, "padded dimension")
    return xl


rule(*_ops("constant_pad_nd", "pad", "reflection_pad1d", "reflection_pad2d", "reflection_pad3d",
           "replication_pad1d", "replication_pad2d", "replication_pad3d", "circular_pad1d", "circular_pad2d"))(_pad_dims)


# ------------------------------------------------------------------------------------------
# Reductions and normalising functions
# ------------------------------------------------------------------------------------------
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
        shapes = ctx.a.shapes.get(node.name)
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
        shapes = ctx.a.shapes.get(node.name)
        return [xl] * len(shapes) if isinstance(shapes, list) else xl

    return propagate


rule(*_ops("softmax", "_softmax", "log_softmax", "_log_softmax"))(_along_dim("normalised over by softmax"))
rule(*_ops("cumsum", "cumprod", "sort", "argsort", "cummax", "cummin", "flip"))(_along_dim("order-dependent op"))
rule(*_ops("topk"))(_along_dim("order-dependent op", dim_arg=2))
rule(*_ops("roll"))(_along_dim("rolled along", dim_arg=2))


# ------------------------------------------------------------------------------------------
# Joining and splitting along a dimension
# ------------------------------------------------------------------------------------------
@rule(*_ops("cat", "concat", "concatenate"))
def cat(ctx: Ctx, node: fx.Node) -> Labels:
    tensors = [t for t in node.args[0] if ctx.is_tensor(t) and ctx.shape(t) != (0,)]
    n = len(ctx.out_shape())
    d = _dim(ctx.arg(1, "dim", 0), n)
    parts, others = [], [None] * n
    for k, t in enumerate(tensors):
        lab = ctx.lab(t)
        parts.append(_as_array(lab[d], ctx.shape(t)[d]))
        for i in range(n):
            if i != d:
                others[i] = lab[i] if k == 0 else ctx.unify(others[i], lab[i])
    joined = np.concatenate(parts) if parts else None
    others[d] = joined if joined is not None and (joined >= 0).any() else None
    return tuple(others)


@rule(*_ops("stack"))
def stack(ctx: Ctx, node: fx.Node) -> Labels:
    tensors = node.args[0]
    n = len(ctx.out_shape())
    d = _dim(ctx.arg(1, "dim", 0), n)
    acc: list = [None] * (n - 1)
    for k, t in enumerate(tensors):
        lab = ctx.lab(t)
        for i in range(n - 1):
            acc[i] = lab[i] if k == 0 else ctx.unify(acc[i], lab[i])
    return tuple(acc[:d]) + (None,) + tuple(acc[d:])


def _split_rewrite(rw, node: fx.Node) -> None:
    x = node.args[0]
    n = len(rw.orig_shape(x))
    d = _dim(ctx_dim(node, 2), n)
    if rw.orig_shape(x)[d] == rw.new_shape(x)[d]:
        return
    sizes = [rw.new_shape_of_output(node, i)[d] for i in range(len(rw.orig_outputs(node)))]
    node.target = aten.split_with_sizes.default
    node.args = (x, sizes, d)
    node.kwargs = {}


def ctx_dim(node: fx.Node, i: int, default: int = 0) -> int:
    return node.args[i] if len(node.args) > i else node.kwargs.get("dim", default)


@rule(*_ops("split", "split_with_sizes", "chunk", "tensor_split", "unsafe_split", "split_copy"), rewrite=_split_rewrite)
def split(ctx: Ctx, node: fx.Node) -> list:
    xl = ctx.lab(node.args[0])
    n = len(xl)
    d = _dim(ctx_dim(node, 2), n)
    sizes = [s[d] for s in ctx.a.shapes.get(node.name)]
    pieces, start = [], 0
    for size in sizes:
        pieces.append(xl[d][start : start + size] if xl[d] is not None else None)
        start += size
    if ctx.a.eager and xl[d] is not None:
        how = _eager_split(node)
        if how == "parts" and len(set(sizes)) == 1:
            # eager code (``x.chunk(2, 1)``) splits whatever arrives into equal parts: the parts must
            # keep equal counts, so the j-th channel of every part goes with the j-th of the first
            for k in range(1, len(pieces)):
                ctx.unify(pieces[0], pieces[k], ctx.reason("equal parts in eager code"))
        elif how == "sizes":
            # ``x.split(64, -1)`` / ``x.split([a, b])`` keep their sizes when eager code reruns
            ctx.pin(xl[d], "split by fixed sizes in eager code")
    return [tuple(piece if i == d else xl[i] for i in range(n)) for piece in pieces]


def _eager_split(node: fx.Node) -> str:
    """How eager code would split: into a number of equal ``parts`` (``chunk``, ``tensor_split``
    by a count) or by fixed ``sizes`` (``split`` by an int or a list)."""
    name = node.target.overloadpacket.__name__
    if name == "chunk" or (name == "tensor_split" and isinstance(node.args[1], int)):
        return "parts"
    return "sizes"


@rule(*_ops("unbind"))
def unbind(ctx: Ctx, node: fx.Node) -> list:
    xl = ctx.lab(node.args[0])
    d = _dim(ctx_dim(node, 1), len(xl))
    ctx.pin(xl[d], "unbound into separate tensors")
    rest = tuple(xl[:d]) + tuple(xl[d + 1 :])
    return [rest for _ in ctx.a.shapes.get(node.name)]


def _slice_bounds(node: fx.Node, size: int) -> tuple[int, int, int]:
    start = node.args[2] if len(node.args) > 2 else node.kwargs.get("start")
    end = node.args[3] if len(node.args) > 3 else node.kwargs.get("end")
    step = node.args[4] if len(node.args) > 4 else node.kwargs.get("step", 1)
    s = slice(start if isinstance(start, int) else None, end if isinstance(end, int) else None, step)
    return s.indices(size)


def _slice_rewrite(rw, node: fx.Node) -> None:
    x = node.args[0]
    d = _dim(node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0), len(rw.orig_shape(x)))
    lab = rw.labels(x)[d]
    if lab is None or rw.orig_shape(x)[d] == rw.new_shape(x)[d]:
        return
    start, end, _ = _slice_bounds(node, rw.orig_shape(x)[d])
    kept = rw.kept(lab)
    new_start = int(kept[:start].sum())
    new_end = new_start + int(kept[start:end].sum())
    node.args = (x, d, new_start, new_end, 1)
    node.kwargs = {}


@rule(*_ops("slice"), rewrite=_slice_rewrite)
def slice_(ctx: Ctx, node: fx.Node) -> Labels:
    xl = list(ctx.lab(node.args[0]))
    d = _dim(node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0), len(xl))
    if xl[d] is not None:
        start, end, step = _slice_bounds(node, len(xl[d]))
        if step != 1 or not all(isinstance(v, (int, type(None))) for v in node.args[2:4]):
            ctx.pin(xl[d], "strided or dynamic slice")
            xl[d] = None
        else:
            xl[d] = xl[d][start:end]
    return tuple(xl)


def _narrow_rewrite(rw, node: fx.Node) -> None:
    x, d, start, length = node.args[:4]
    d = _dim(d, len(rw.orig_shape(x)))
    lab = rw.labels(x)[d]
    if lab is None or rw.orig_shape(x)[d] == rw.new_shape(x)[d]:
        return
    kept = rw.kept(lab)
    node.args = (x, d, int(kept[:start].sum()), int(kept[start : start + length].sum()))


@rule(*_ops("narrow"), rewrite=_narrow_rewrite)
def narrow(ctx: Ctx, node: fx.Node) -> Labels:
    x, d, start, length = node.args[:4]
    xl = list(ctx.lab(x))
    d = _dim(d, len(xl))
    if xl[d] is not None:
        xl[d] = xl[d][start : start + length]
    return tuple(xl)


def _select_rewrite(rw, node: fx.Node) -> None:
    x, d, idx = node.args[:3]
    d = _dim(d, len(rw.orig_shape(x)))
    lab = rw.labels(x)[d]
    if lab is None:
        return
    idx = idx % rw.orig_shape(x)[d]
    node.args = (x, d, int(rw.kept(lab)[:idx].sum()))


@rule(*_ops("select"), rewrite=_select_rewrite)
def select(ctx: Ctx, node: fx.Node) -> Labels:
    x, d, idx = node.args[:3]
    xl = ctx.lab(x)
    d = _dim(d, len(xl))
    if xl[d] is not None:
        ctx.pin(xl[d][idx : idx + 1] if idx >= 0 else xl[d][idx:][:1], "selected by index")
    return tuple(xl[:d]) + tuple(xl[d + 1 :])


@rule(*_ops("index_select"))
def index_select(ctx: Ctx, node: fx.Node) -> Labels:
    xl = list(ctx.lab(node.args[0]))
    d = _dim(node.args[1], len(xl))
    ctx.pin(xl[d], "gathered by index")
    ctx.pin_all(ctx.lab(node.args[2]), "index values")
    xl[d] = None
    return tuple(xl)


@rule(*_ops("index"))
def index(ctx: Ctx, node: fx.Node) -> Labels | None:
    xl = ctx.lab(node.args[0])
    idx = node.args[1]
    for t in idx:
        if t is not None:
            ctx.pin_all(ctx.lab(t), "index values")  # an index tensor's entries are positions, not channels
    used = [i for i, t in enumerate(idx) if t is not None]
    if len(used) != 1:
        ctx.barrier("advanced indexing on several dimensions")
        return None
    d = used[0]
    ctx.pin(xl[d], "gathered by index")
    idx_nd = len(ctx.shape(idx[d]) or (0,))
    return tuple(xl[:d]) + _none(idx_nd) + tuple(xl[d + 1 :])


# ------------------------------------------------------------------------------------------
# Views: permutations are exact; reshapes go through the factor-group mapping.
# ------------------------------------------------------------------------------------------
@rule(*_ops("permute"))
def permute(ctx: Ctx, node: fx.Node) -> Labels:
    xl = ctx.lab(node.args[0])
    return tuple(xl[_dim(d, len(xl))] for d in node.args[1])


@rule(*_ops("transpose", "swapaxes", "swapdims"))
def transpose(ctx: Ctx, node: fx.Node) -> Labels:
    xl = list(ctx.lab(node.args[0]))
    if len(xl) < 2:
        return tuple(xl)
    a, b = (_dim(d, len(xl)) for d in node.args[1:3])
    xl[a], xl[b] = xl[b], xl[a]
    return tuple(xl)


@rule(*_ops("t", "numpy_T"))
def t(ctx: Ctx, node: fx.Node) -> Labels:
    return tuple(reversed(ctx.lab(node.args[0])))


@rule(*_ops("movedim"))
def movedim(ctx: Ctx, node: fx.Node) -> Labels:
    xl = list(ctx.lab(node.args[0]))
    n = len(xl)
    src, dst = node.args[1], node.args[2]
    src = [src] if isinstance(src, int) else list(src)
    dst = [dst] if isinstance(dst, int) else list(dst)
    order = [None] * n
    src, dst = [_dim(s, n) for s in src], [_dim(d, n) for d in dst]
    for s, d in zip(src, dst):
        order[d] = s
    rest = iter(i for i in range(n) if i not in src)
    order = [o if o is not None else next(rest) for o in order]
    return tuple(xl[o] for o in order)


def factor_groups(a: tuple[int, ...], b: tuple[int, ...]) -> list[tuple[list[int], list[int]]] | None:
    """Split two shapes of equal numel into runs of dims with equal products.

    ``(2, 197, 768) -> (2, 197, 12, 64)`` gives ``[([0],[0]), ([1],[1]), ([2],[2,3])]``.
    Size-1 dims join the neighbouring run.
    """
    groups, i, j = [], 0, 0
    while i < len(a) or j < len(b):
        ga, gb = [], []
        pa = pb = 1
        while True:
            if pa == pb and (ga or gb) and pa != 0:
                # absorb trailing size-1 dims into this run
                while i < len(a) and a[i] == 1 and not (j < len(b) and b[j] == 1):
                    ga.append(i); i += 1
                while j < len(b) and b[j] == 1 and not (i < len(a) and a[i] == 1):
                    gb.append(j); j += 1
                break
            if (pa <= pb and i < len(a)) or j >= len(b):
                if i >= len(a):
                    return None
                pa *= a[i]; ga.append(i); i += 1
            else:
                pb *= b[j]; gb.append(j); j += 1
        groups.append((ga, gb))
    return groups


def reshape_labels(ctx: Ctx, xl: Labels, in_shape: tuple, out_shape: tuple, out_sym: tuple) -> Labels:
    groups = factor_groups(tuple(in_shape), tuple(out_shape))
    out: list = [None] * len(out_shape)
    if groups is None:
        ctx.pin_all(xl, "reshape the analysis could not map")
        return tuple(out)
    for gi, go in groups:
        labelled = [d for d in gi if _has(xl[d])]
        if not labelled:
            continue
        if len(gi) == 1 and len(go) == 1:
            out[go[0]] = xl[gi[0]]
            continue
        if len(labelled) > 1:
            for d in labelled:
                ctx.pin(xl[d], "reshape merges two channel dimensions")
            continue
        ld = labelled[0]
        sizes_in = [in_shape[d] for d in gi]
        view = [1] * len(gi)
        view[gi.index(ld)] = in_shape[ld]
        grid = np.broadcast_to(xl[ld].reshape(view), sizes_in).reshape([out_shape[d] for d in go])
        best, best_score = None, None
        for pos, d in enumerate(go):
            if out_shape[d] <= 1 or out_sym[d]:
                continue
            rows = np.moveaxis(grid, pos, 0).reshape(out_shape[d], -1)
            filled = int((rows >= 0).any(axis=1).sum())
            score = (filled, pos)
            if best_score is None or score > best_score:
                best, best_score = (pos, d, rows), score
        if best is None:
            ctx.pin(xl[ld], "reshape folds channels into the batch")
            continue
        _, d, rows = best
        lab = np.full(out_shape[d], -1, dtype=np.int64)
        for r in range(rows.shape[0]):
            row = rows[r]
            if (row < 0).any() and (row >= 0).any():
                ctx.pin(row, "reshape mixes channels with fixed entries")
            lab[r] = ctx.atoms.merge(row)
        out[d] = lab
    return tuple(out)


def _reshape(ctx: Ctx, node: fx.Node) -> Labels:
    x = node.args[0]
    return reshape_labels(ctx, ctx.lab(x), ctx.shape(x), ctx.out_shape(), ctx.symbolic(node))


def _sizes_rewrite(arg_index: int, name: str, offset: Callable[[Any, fx.Node], int] = lambda rw, n: 0):
    """Rewrite a size-list argument so each entry matches the node's new output shape."""

    def rewrite(rw, node: fx.Node) -> None:
        sizes = node.args[arg_index] if len(node.args) > arg_index else node.kwargs.get(name)
        if not isinstance(sizes, (list, tuple)):
            return
        old, new = rw.orig_shape(node), rw.new_shape(node)
        if old == new:
            return
        off = offset(rw, node)
        out = list(sizes)
        for i, s in enumerate(sizes):
            j = i + off
            # a size computed in the graph (``x.size(-1) // heads``) is replaced too: the dim
            # carries channels, so it never depends on the batch and its new width is known
            if s != -1 and 0 <= j < len(new) and old[j] != new[j]:
                out[i] = new[j]
        rw.set_arg(node, arg_index, name, out)

    return rewrite


rule(*_ops("view", "reshape", "_unsafe_view", "view_copy", "_reshape_alias"), rewrite=_sizes_rewrite(1, "size"))(_reshape)
rule(*_ops("flatten", "squeeze", "unsqueeze", "view_as", "reshape_as", "squeeze_copy", "unsqueeze_copy", "ravel"))(_reshape)
rule(*_ops("unflatten"), rewrite=_sizes_rewrite(2, "sizes", lambda rw, n: _dim(n.args[1], len(rw.orig_shape(n.args[0])))))(_reshape)


def _expand(ctx: Ctx, node: fx.Node) -> Labels:
    x = node.args[0]
    xl, xs, os = ctx.lab(x), ctx.shape(x), ctx.out_shape()
    off = len(os) - len(xs)
    out: list = [None] * len(os)
    for i, (d, n) in enumerate(zip(xl, xs)):
        if n == os[off + i]:
            out[off + i] = d
        else:
            ctx.pin(d, "broadcast by expand")
    return tuple(out)


rule(*_ops("expand", "expand_copy", "broadcast_to"), rewrite=_sizes_rewrite(1, "size"))(_expand)
rule(*_ops("expand_as"))(_expand)


@rule(*_ops("repeat"))
def repeat(ctx: Ctx, node: fx.Node) -> Labels:
    xl, reps = ctx.lab(node.args[0]), list(node.args[1])
    lead = len(reps) - len(xl)
    out: list = [None] * lead
    for d, r in zip(xl, reps[lead:]):
        out.append(np.tile(d, r) if d is not None else None)
    return tuple(out)


# ------------------------------------------------------------------------------------------
# Tensors the graph creates: constant fills take whatever channels they meet.
# ------------------------------------------------------------------------------------------
def _created(ctx: Ctx, node: fx.Node) -> Labels:
    lab = ctx.fresh(ctx.out_shape(), ctx.symbolic(node))
    ctx.a.created[node.name] = lab
    return lab


rule(*_ops("zeros", "ones", "empty", "full"), rewrite=_sizes_rewrite(0, "size"))(_created)
rule(*_ops("new_zeros", "new_ones", "new_empty", "new_full"), rewrite=_sizes_rewrite(1, "size"))(_created)


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


# ------------------------------------------------------------------------------------------
# Recurrent layers: the fused ops stay fused; hidden units are removed from every gate block.
# ------------------------------------------------------------------------------------------
_GATES = {"gru": 3, "lstm": 4, "rnn_tanh": 1, "rnn_relu": 1,
          "gru_cell": 3, "lstm_cell": 4, "rnn_tanh_cell": 1, "rnn_relu_cell": 1}


def _couple_hidden(ctx: Ctx, hidden: np.ndarray | None, w_ih, w_hh, biases: list, gates: int, size: int):
    """Hidden unit j is row j of every gate block of w_ih, w_hh and the biases, and column j of
    w_hh; all of them are coupled to ``hidden[j]``."""
    wi, wh = ctx.lab(w_ih), ctx.lab(w_hh)
    blocks = [rows[g * size : (g + 1) * size] for rows in [wi[0], wh[0]] + [ctx.lab(b)[0] for b in biases]
              if rows is not None for g in range(gates)]
    for block in blocks + [wh[1]]:
        hidden = block if hidden is None else ctx.unify(hidden, block)
    return hidden, wi


@rule(*_ops("gru", "lstm", "rnn_tanh", "rnn_relu"))
def recurrent(ctx: Ctx, node: fx.Node) -> Any:
    """``aten.gru.input(x, hx, params, has_biases, num_layers, dropout, train, bidirectional, batch_first)``.

    Every layer and direction of one fused op shares a hidden size, so unit j goes from all of
    them at once: the native op (and its speed) survives the prune.
    """
    name = node.target.overloadpacket.__name__
    if node.target._overloadname != "input":
        ctx.barrier("packed sequences are not pruned")
        return None
    x, hx, params, has_biases, num_layers, _drop, _train, bidirectional = node.args[:8]
    gates, dirs = _GATES[name], 2 if bidirectional else 1
    per = 4 if has_biases else 2
    if len(params) != num_layers * dirs * per:
        ctx.barrier("recurrent layer with projections (proj_size)")
        return None
    size = ctx.shape(params[1])[1]
    hidden = None
    layer_in = ctx.lab(x)[-1]
    for layer in range(num_layers):
        for d in range(dirs):
            w = params[(layer * dirs + d) * per : (layer * dirs + d + 1) * per]
            hidden, wi = _couple_hidden(ctx, hidden, w[0], w[1], list(w[2:]), gates, size)
            ctx.unify(layer_in, wi[1])
        layer_in = np.concatenate([hidden] * dirs) if hidden is not None else None
    states = list(hx) if isinstance(hx, (list, tuple)) else [hx]
    for h in states:
        ctx.unify(ctx.lab(h)[-1], hidden)
    xl = ctx.lab(x)
    out = tuple(xl[:-1]) + (layer_in,)
    state_lab = (None, None, hidden) if len(ctx.shape(states[0])) == 3 else (None, hidden)
    return [out] + [state_lab for _ in states]


@rule(*_ops("gru_cell", "lstm_cell", "rnn_tanh_cell", "rnn_relu_cell"))
def recurrent_cell(ctx: Ctx, node: fx.Node) -> Any:
    """``aten.gru_cell(x, hx, w_ih, w_hh, b_ih, b_hh)``; LSTM cells take ``[hx, cx]``."""
    name = node.target.overloadpacket.__name__
    x, hx, w_ih, w_hh = node.args[:4]
    biases = [b for b in node.args[4:6] if isinstance(b, fx.Node)]
    gates = _GATES[name]
    size = ctx.shape(w_hh)[1]
    hidden, wi = _couple_hidden(ctx, None, w_ih, w_hh, biases, gates, size)
    ctx.unify(ctx.lab(x)[-1], wi[1])
    states = list(hx) if isinstance(hx, (list, tuple)) else [hx]
    out = []
    for h in states:
        hl = ctx.lab(h)
        hidden = ctx.unify(hl[-1], hidden)
        out.append(tuple(hl[:-1]) + (hidden,))
    return out if name == "lstm_cell" else out[0]
