"""Parameters one module shares under several names (tied weights), found once and restored.

A language model's output layer often *is* its input embedding (``lm_head.weight`` and
``embed_tokens.weight`` are one ``Parameter``).  Checkpoints store such a tensor once
(``save_pretrained`` and safetensors drop the duplicates), ``state_dict()`` lists it under every
name, and anything that replaces a parameter by name (``load_state_dict(assign=True)``, the
rebuild's resizing) cuts the tie.  So the ties are read off the module before it is touched,
missing names are filled from their twin, and the twins are made one object again afterwards.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..errors import StateDictMismatch


def alias_groups(module: nn.Module) -> list[list[str]]:
    """Names that refer to one tensor object, for every tensor with more than one name (first
    name first, in ``named_parameters``/``named_buffers`` order)."""
    by_id: dict[int, list[str]] = {}
    for name, t in list(module.named_parameters(remove_duplicate=False)) + list(module.named_buffers(remove_duplicate=False)):
        by_id.setdefault(id(t), []).append(name)
    return [names for names in by_id.values() if len(names) > 1]


def complete(state: dict[str, torch.Tensor], groups: list[list[str]], architecture: str) -> dict[str, torch.Tensor]:
    """``state`` with every missing tied name filled from a twin the file holds.  Twins the file
    holds twice must be equal: the architecture ties them, so differing values cannot be loaded."""
    out = dict(state)
    for names in groups:
        present = [n for n in names if n in state]
        if not present:
            continue
        first = state[present[0]]
        for other in present[1:]:
            t = state[other]
            if t.shape != first.shape or not torch.equal(t, first):
                raise StateDictMismatch(
                    f"the state-dict holds {present[0]!r} and {other!r} with different values, but architecture "
                    f"{architecture!r} ties them (one tensor): they cannot both be loaded"
                )
        for n in names:
            out.setdefault(n, first)
    return out


def _owner(module: nn.Module, name: str) -> tuple[nn.Module, str]:
    owner_name, _, attr = name.rpartition(".")
    return (module.get_submodule(owner_name) if owner_name else module), attr


def retie(module: nn.Module, groups: list[list[str]]) -> None:
    """Make every name of a group refer to the first name's tensor again."""
    for names in groups:
        owner, attr = _owner(module, names[0])
        t = getattr(owner, attr)
        for other in names[1:]:
            o, a = _owner(module, other)
            if isinstance(t, nn.Parameter):
                o._parameters[a] = t
            else:
                o._buffers[a] = t
