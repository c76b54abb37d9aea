"""A node's arguments by name, normalised once from its op's schema.

ATen ops take the same argument at different positions in different overloads
(``convolution``'s ``groups`` is its 9th argument, ``conv2d``'s its 7th), and a graph may pass
any of them by keyword.  Rules that read ``node.args[i]`` need per-op helpers to cope; rules
that read :func:`bound` (``ctx.args`` in a rule, ``rw.set_argument`` in a rewrite) do not.
Defaults from the schema are filled in, so an absent argument reads as its default.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.fx as fx

def _schema(node: fx.Node):
    target = node.target
    if isinstance(target, torch._ops.OpOverload):
        return target._schema
    if isinstance(target, torch._ops.OpOverloadPacket):  # the first overload the call fits
        for name in target.overloads():
            schema = getattr(target, name)._schema
            positional = [a for a in schema.arguments if not a.kwarg_only]
            names = {a.name for a in schema.arguments}
            if len(node.args) <= len(positional) and set(node.kwargs) <= names:
                return schema
    return None


def bound(node: fx.Node) -> dict[str, Any]:
    """``{argument name: value}`` for every argument of the op's schema."""
    schema = _schema(node)
    out: dict[str, Any] = {}
    if schema is None:
        out.update({f"arg{i}": a for i, a in enumerate(node.args)})
        out.update(node.kwargs)
    else:
        for i, arg in enumerate(schema.arguments):
            if i < len(node.args) and not arg.kwarg_only:
                out[arg.name] = node.args[i]
            elif arg.name in node.kwargs:
                out[arg.name] = node.kwargs[arg.name]
            elif arg.has_default_value():
                out[arg.name] = arg.default_value
    return out


def set_argument(node: fx.Node, name: str, value: Any) -> None:
    """Set the argument called ``name``, where the node passes it (position or keyword)."""
    schema = _schema(node)
    names = [a.name for a in schema.arguments] if schema is not None else []
    if name in names and names.index(name) < len(node.args):
        args = list(node.args)
        args[names.index(name)] = value
        node.args = tuple(args)
    else:
        node.kwargs = {**node.kwargs, name: value}
