"""Pass: integer ATen ops on sizes (``aten.mul.int``, ``aten.floordiv.int``) become ``operator`` calls.

A scripted model computes sizes with TorchScript's integer ops (``bsz * num_heads``); the
converter emits them as ATen overloads on ints.  Called on a symbolic size during the converter's
retrace, such an overload is a C++ op that needs a concrete int, so export guards the size to the
example's value: the batch and sequence length of every scripted transformer came out fixed.
The same arithmetic through ``operator`` stays symbolic.  Run on the converter's graph before its
retrace; ops with a tensor argument or result are left alone.
"""

from __future__ import annotations

import operator

import torch
import torch.fx as fx


# ATen scalar op name → the Python operator that keeps a symbolic size symbolic.
PYTHON_OPERATORS = {
    "add": operator.add, "sub": operator.sub, "mul": operator.mul, "floordiv": operator.floordiv,
    "div": operator.truediv, "remainder": operator.mod, "neg": operator.neg, "pow": operator.pow,
    "eq": operator.eq, "ne": operator.ne, "lt": operator.lt, "le": operator.le, "gt": operator.gt,
    "ge": operator.ge, "__getitem__": operator.getitem,
}


def _on_scalars_only(schema) -> bool:
    types = [str(a.type) for a in schema.arguments] + [str(r.type) for r in schema.returns]
    return len(schema.returns) == 1 and not any("Tensor" in t for t in types)


def scalar_ops_to_python(gm: fx.GraphModule) -> int:
    """Rewrite scalar ATen overloads as ``operator`` calls; return how many were rewritten."""
    rewritten = 0
    for node in gm.graph.nodes:
        if node.op != "call_function" or node.kwargs or not isinstance(node.target, torch._ops.OpOverload):
            continue
        schema = node.target._schema
        fn = PYTHON_OPERATORS.get(schema.name.split("::")[-1]) if schema.name.startswith("aten::") else None
        if fn is not None and _on_scalars_only(schema):
            node.target = fn
            rewritten += 1
    if rewritten:
        gm.recompile()
    return rewritten
