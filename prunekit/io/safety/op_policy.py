"""Which operators an uploaded graph may name: the tensor world, nothing that reaches outside it.

An uploaded ``.pt2`` graph names its ops by string (``torch.ops.aten.conv2d.default``), and
TorchScript code calls them by name; torch resolves either to whatever the name reaches.  Most
ops only compute on tensors, but a few touch the file system (``aten::from_file`` maps a file
of the server into a tensor, shared and writable; ``aten::save`` writes one), talk to other
processes (``c10d``, ``symm_mem``) or run host code (``torch.ops.higher_order`` kernels built
from source).  The policy is an allowlist of namespaces plus a denylist inside them, the
denylist derived from the op schemas themselves (any op with a file-name argument) so that a
new torch release's file op is refused without an edit here.
"""

from __future__ import annotations

import re
from functools import lru_cache

# Namespaces whose ops compute on tensors and scalars only.
TENSOR_NAMESPACES = frozenset({"aten", "prim", "prims", "quantized", "_quantized", "quantized_decomposed",
                               "profiler"})  # profiler: record_function markers, no effect on data

# Higher-order ops an exported graph may hold: control flow and context wrappers whose bodies
# are subgraphs of the same archive (and are audited like the main graph).
HIGHER_ORDER_OPS = frozenset({
    "cond", "while_loop", "map_impl", "scan", "associative_scan", "wrap_with_set_grad_enabled",
    "wrap_with_autocast", "invoke_subgraph", "auto_functionalized", "auto_functionalized_v2",
    "with_effects",
})

# Python-level functions an exported graph may call on sizes (``_operator.mul``, ``math.ceil``).
OPERATOR_FUNCS = frozenset({
    "add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "neg", "pos", "abs", "eq", "ne", "lt",
    "le", "gt", "ge", "and_", "or_", "xor", "not_", "invert", "lshift", "rshift", "getitem", "truth",
})
MATH_FUNCS = frozenset({"ceil", "floor", "trunc", "sqrt", "log2", "pow", "exp", "log", "cos", "sin"})
TORCH_SYM_FUNCS = frozenset({"sym_int", "sym_float", "sym_not", "sym_max", "sym_min", "sym_ite",
                             "sym_sqrt", "sym_sum", "sym_float", "_sym_sqrt"})

# torchbind classes (``torch.classes.NS.NAME``: C++ objects TorchScript code constructs, and a
# TorchScript pickle restores through their own ``__setstate__`` inside ``torch.jit.load``) that
# real models hold: the packed parameters of quantized, sparse, recurrent and oneDNN layers.
# Anything else is refused: ``_nnapi.Compilation.init`` makes torch dlopen an NNAPI library,
# ``c10d``/``dist_rpc`` build process groups and RPC workers, ``profiling`` switches profilers.
TORCHBIND_CLASSES = frozenset({
    "quantized.LinearPackedParamsBase", "quantized.Conv2dPackedParamsBase", "quantized.Conv3dPackedParamsBase",
    "quantized.EmbeddingPackedParamsBase", "sparse.LinearPackedParamsBase", "rnn.CellParamsBase",
    "mkldnn.ConvOpContext",
})

_FILE_ARGS = frozenset({"filename", "file", "path", "filepath", "fname", "f"})
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@lru_cache(maxsize=1)
def denied_ops() -> frozenset[str]:
    """``ns::name`` of every registered op that takes a file name (today ``aten::from_file`` and
    ``aten::save``), plus those known to act outside the process's tensors."""
    import torch

    out = {"aten::from_file", "aten::save"}
    for schema in torch._C._jit_get_all_schemas():
        if any(a.name in _FILE_ARGS and "str" in str(a.type) for a in schema.arguments):
            out.add(schema.name)
    return frozenset(out)


def denied_names() -> frozenset[str]:
    """The bare names of the denied ops (``from_file``), for scanning source text."""
    return frozenset(n.split("::", 1)[1] for n in denied_ops())


@lru_cache(maxsize=4096)
def _registered(qualified: str) -> bool:
    import torch

    return bool(torch._C._jit_get_schemas_for_operator(qualified))


def check_op(namespace: str, name: str, *, registered: bool = False) -> str | None:
    """``None`` if ``namespace::name`` may run; otherwise the reason it may not.

    ``registered``: the name must also be a registered op (an archive's string, which torch
    resolves by attribute lookup: ``aten.__and__`` is an op, ``aten.__class__`` is not)."""
    if not _NAME.fullmatch(namespace or "") or not _NAME.fullmatch(name or ""):
        return f"{namespace}::{name} is not an operator name"
    if namespace == "higher_order":
        return None if name in HIGHER_ORDER_OPS else f"higher-order op {name} is not allowed"
    if namespace not in TENSOR_NAMESPACES:
        return f"ops of namespace {namespace!r} are not allowed (only {', '.join(sorted(TENSOR_NAMESPACES))})"
    if f"{namespace}::{name}" in denied_ops():
        return f"{namespace}::{name} reaches the file system"
    if registered and not _registered(f"{namespace}::{name}"):
        return f"{namespace}::{name} is not a registered operator"
    return None


def check_target(target: str) -> str | None:
    """Validate the string an exported graph names a call by; ``None`` if allowed."""
    parts = target.split(".")
    if not all(_NAME.fullmatch(p) for p in parts):
        return f"{target!r} is not an operator name"
    if parts[:2] == ["torch", "ops"] and len(parts) in (4, 5):
        # the op name may be a dunder (aten.__and__), checked against the registry; the
        # namespace and overload may not
        if parts[2].startswith("__") or (len(parts) == 5 and parts[4].startswith("__")):
            return f"{target!r} is not an operator name"
        return check_op(parts[2], parts[3], registered=parts[2] != "higher_order")
    if any(p.startswith("__") for p in parts):
        return f"{target!r} is not an operator name"
    if parts[0] == "_operator" and len(parts) == 2:
        return None if parts[1] in OPERATOR_FUNCS else f"{target} is not an allowed size function"
    if parts[0] == "math" and len(parts) == 2:
        return None if parts[1] in MATH_FUNCS else f"{target} is not an allowed size function"
    if parts[0] == "torch" and len(parts) == 2 and parts[1] in TORCH_SYM_FUNCS:
        return None
    return f"{target!r} is not an operator an uploaded graph may call"


def check_class(namespace: str, name: str) -> str | None:
    """``None`` if the torchbind class ``torch.classes.namespace.name`` may be used; otherwise why not."""
    if f"{namespace}.{name}" in TORCHBIND_CLASSES:
        return None
    return (f"torchbind class torch.classes.{namespace}.{name} is not one a model's layers hold (allowed: "
            f"{', '.join(sorted(TORCHBIND_CLASSES))})")
