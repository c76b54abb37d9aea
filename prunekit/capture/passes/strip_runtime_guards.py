"""Pass: drop export's input guards and size assertions from a captured graph.

A captured program asserts its example's sizes (``u1 >= 8``, ``x.size()[1] == 64``), as graph
nodes and as a pre-hook of the module.  Once channels are removed those would fire on the
pruned widths; the masked-vs-pruned check validates shapes instead.
"""

from __future__ import annotations

import torch
import torch.fx as fx


_RUNTIME_ASSERTS = tuple(
    getattr(torch.ops.aten, n).default
    for n in ("_assert_scalar", "sym_constrain_range_for_size", "sym_constrain_range", "_assert_tensor_metadata")
    if hasattr(torch.ops.aten, n)
)


def strip_runtime_guards(gm: fx.GraphModule) -> None:
    """Drop export's input guards (graph nodes and the module's input-check hook) and size assertions.

    They pin the captured widths (``u1 >= 8``) and would fire once channels are removed; the
    masked-vs-pruned check validates shapes instead.
    """
    changed = False
    for node in reversed(list(gm.graph.nodes)):
        if node.op == "call_module" and node.target == "_guards_fn" and not node.users:
            gm.graph.erase_node(node)
            changed = True
        elif node.op == "call_function" and node.target in _RUNTIME_ASSERTS and not node.users:
            gm.graph.erase_node(node)
            changed = True
    changed = gm.graph.eliminate_dead_code() or changed
    if hasattr(gm, "_guards_fn"):
        delattr(gm, "_guards_fn")
    for key, hook in list(gm._forward_pre_hooks.items()):
        if getattr(hook, "__name__", "") == "_check_input_constraints_pre_hook":
            del gm._forward_pre_hooks[key]  # the same input guards, as a hook
    if changed:  # (else the code is the graph's already)
        gm.graph.lint()
        gm.recompile()
