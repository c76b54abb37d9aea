"""Pass: inline ``higher_order.wrap_with_set_grad_enabled`` regions into the captured graph.

``torch.export`` keeps a ``@torch.no_grad()`` block of the model (the rotary embedding of LLaMA,
Qwen2 and GPT-NeoX computes its ``cos``/``sin`` under one) as a call of that higher-order op on a
subgraph.  The analysis has no rule for it, so every channel reaching it is kept: the query and
key projections stop there.  PruneKit only ever runs a model for inference (the check, the
evidence for the criteria uses its own autograd on the masked original, never the region's
gradients), where the grad mode changes no value, so the body is copied in place of the call
and the region disappears.

Only the plain form is inlined: a submodule whose graph holds placeholders, ATen calls and one
output, reached through ``getitem`` by every user.  Anything else (a nested region, a ``get_attr``
inside the body, a user that is not a ``getitem``) stays a region, and so a barrier: safe, never
wrong.
"""

from __future__ import annotations

import operator

import torch
import torch.fx as fx

_HOP = getattr(getattr(torch.ops, "higher_order", None), "wrap_with_set_grad_enabled", None)


def _body(gm: fx.GraphModule, node: fx.Node) -> fx.GraphModule | None:
    sub = node.args[1] if len(node.args) > 1 else None
    if not (isinstance(sub, fx.Node) and sub.op == "get_attr"):
        return None
    body = getattr(gm, str(sub.target), None)
    if not isinstance(body, fx.GraphModule):
        return None
    for n in body.graph.nodes:
        if n.op not in ("placeholder", "call_function", "output"):
            return None
        if n.op == "call_function" and not (isinstance(n.target, torch._ops.OpOverload) or n.target is operator.getitem):
            return None
    if not all(u.op == "call_function" and u.target is operator.getitem for u in node.users):
        return None
    return body


def inline_grad_mode(gm: fx.GraphModule) -> int:
    """Copy the body of every plain ``wrap_with_set_grad_enabled`` call in its place; returns how many."""
    if _HOP is None:
        return 0
    done = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or node.target is not _HOP:
            continue
        body = _body(gm, node)
        if body is None:
            continue
        operands = list(node.args[2:])
        placeholders = [n for n in body.graph.nodes if n.op == "placeholder"]
        if len(placeholders) != len(operands):
            continue
        env: dict[fx.Node, object] = dict(zip(placeholders, operands))
        outputs: object = None
        with gm.graph.inserting_before(node):
            for n in body.graph.nodes:
                if n.op == "placeholder":
                    continue
                if n.op == "output":
                    outputs = fx.node.map_arg(n.args[0], lambda a: env[a])
                    continue
                env[n] = gm.graph.node_copy(n, lambda a: env[a])
        outs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
        for user in list(node.users):
            user.replace_all_uses_with(outs[user.args[1]])
            gm.graph.erase_node(user)
        sub = node.args[1]
        gm.graph.erase_node(node)
        if not sub.users:
            gm.graph.erase_node(sub)
            if not any(n.op == "get_attr" and n.target == sub.target for n in gm.graph.nodes):
                gm.delete_submodule(str(sub.target))
        done += 1
    if done:
        gm.graph.lint()
        gm.recompile()
    return done
