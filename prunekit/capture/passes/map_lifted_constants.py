"""Pass: give anonymous lifted constants their parameter names back.

TS2EPConverter turns some parameters (a scripted ``nn.GRU``'s weights) into constants named
``c_lifted_tensor_N``; specs and reports refer to them by parameter name.
"""

from __future__ import annotations

import torch
import torch.fx as fx
import torch.nn as nn

from .promote_parameters import owner_of


def map_lifted_constants(gm: fx.GraphModule, params: dict[str, torch.Tensor]) -> None:
    """TS2EP turns some parameters (a scripted ``nn.GRU``'s weights) into anonymous lifted
    constants; point them back at their parameter names so specs and reports can use them."""
    missing = {n: t for n, t in params.items() if owner_of(gm, n)[0] is None or not hasattr(owner_of(gm, n)[0], owner_of(gm, n)[1])}
    if not missing:
        return
    for node in gm.graph.nodes:
        if node.op != "get_attr":
            continue
        t = getattr(gm, node.target, None) if "." not in node.target else None
        if not isinstance(t, torch.Tensor):
            continue
        for name, p in list(missing.items()):
            if p.shape == t.shape and p.dtype == t.dtype and torch.equal(p, t):
                owner, attr = owner_of(gm, name, create=True)
                owner.register_parameter(attr, nn.Parameter(t.detach().clone(), requires_grad=False))
                node.target = name
                del missing[name]
                break
    gm.recompile()
