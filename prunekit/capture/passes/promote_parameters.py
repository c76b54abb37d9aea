"""Pass: make TS2EP's lifted parameters parameters again.

TS2EPConverter lifts a TorchScript model's parameters as buffers; parameter counts and specs
(which name parameters) need them back as ``nn.Parameter``.
"""

from __future__ import annotations

import torch.fx as fx
import torch.nn as nn


def owner_of(gm: nn.Module, fqn: str, create: bool = False) -> tuple[nn.Module | None, str]:
    owner_name, _, attr = fqn.rpartition(".")
    mod: nn.Module = gm
    for part in owner_name.split(".") if owner_name else []:
        nxt = getattr(mod, part, None)
        if not isinstance(nxt, nn.Module):
            if not create:
                return None, attr
            nxt = nn.Module()
            setattr(mod, part, nxt)
        mod = nxt
    return mod, attr


def promote_to_parameters(gm: fx.GraphModule, names: set[str]) -> None:
    """TS2EP lifts parameters as buffers; make the originals parameters again."""
    for name in names:
        owner, attr = owner_of(gm, name)
        if owner is None:
            continue
        t = owner._buffers.get(attr)
        if t is not None and t.is_floating_point():
            del owner._buffers[attr]
            owner.register_parameter(attr, nn.Parameter(t.detach(), requires_grad=False))
