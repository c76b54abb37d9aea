"""Rebuild a working ``nn.Module`` from a pruned state-dict and its shape manifest.

A state-dict carries no structure, so the architecture is instantiated from the registry and every
module whose tensors shrank is resized in place: tensors are replaced by ones of the manifest's
shapes and the attributes ``forward`` reads (``in_channels``, ``groups``, ``normalized_shape``...)
are recomputed from them.  Architectures whose ``forward`` hard-codes widths cannot adapt
(``analysis/eager_limits.py`` lists what the analysis keeps for them); the pipeline checks every
rebuilt model against the pruned graph before it hands out a state-dict.

The architecture is built without random weights (``empty.py``: parameters on ``meta``) and the
pruned tensors become its parameters; tied parameters (``ties.py``) stay one tensor.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn as nn

from ..registry import get_architecture
from . import empty, ties

MANIFEST_FORMAT = "prunekit.state_dict/1"


def _resize_tensors(model: nn.Module, shapes: dict[str, list[int]]) -> None:
    for name, shape in shapes.items():
        owner_name, _, attr = name.rpartition(".")
        owner = model.get_submodule(owner_name) if owner_name else model
        old = getattr(owner, attr, None)
        if not isinstance(old, torch.Tensor) or list(old.shape) == list(shape):
            continue
        new = torch.zeros(shape, dtype=old.dtype, device=old.device)
        if isinstance(old, nn.Parameter):
            setattr(owner, attr, nn.Parameter(new, requires_grad=old.requires_grad))
        else:
            owner._buffers[attr] = new


def _fix_conv(m: nn.modules.conv._ConvNd, orig: dict) -> None:
    w = m.weight
    if m.transposed:
        m.in_channels, m.out_channels = w.shape[0], w.shape[1] * m.groups
        return
    if orig["groups"] > 1 and orig["in_per_group"] == 1:
        m.groups = w.shape[0] // orig["per_out"]
        m.in_channels = m.groups
    else:
        m.in_channels = w.shape[1] * m.groups
    m.out_channels = w.shape[0]


def _fix_attributes(model: nn.Module, before: dict[str, dict]) -> None:
    for name, m in model.named_modules():
        orig = before.get(name, {})
        if isinstance(m, nn.modules.conv._ConvNd):
            _fix_conv(m, orig)
        elif isinstance(m, nn.Linear):
            m.out_features, m.in_features = m.weight.shape
        elif isinstance(m, (nn.modules.batchnorm._NormBase,)):
            ref = m.weight if m.weight is not None else m.running_mean
            if ref is not None:
                m.num_features = ref.shape[0]
        elif isinstance(m, nn.LayerNorm) and m.weight is not None:
            m.normalized_shape = tuple(m.weight.shape)
        elif isinstance(m, nn.GroupNorm) and m.weight is not None:
            groups = orig.get("groups", m.num_groups)
            per = orig.get("channels", m.num_channels) // groups
            m.num_channels = m.weight.shape[0]
            m.num_groups = 1 if groups == 1 else m.num_channels // per  # one group stays one (normalized_dims prune)
        elif isinstance(m, nn.Embedding):
            m.num_embeddings, m.embedding_dim = m.weight.shape
        elif isinstance(m, nn.PReLU):
            m.num_parameters = m.weight.numel()
        elif _is_transposed_linear(m):  # transformers' Conv1D (GPT-2): weight [in, out], forward reads nf
            m.nx, m.nf = m.weight.shape
        elif isinstance(m, nn.RNNBase):
            from ..interop.recurrent import fix_rnn_attributes

            fix_rnn_attributes(m)


def _is_transposed_linear(m: nn.Module) -> bool:
    """A linear layer stored as ``[in, out]`` whose forward builds its output shape from ``nf``
    (``transformers.pytorch_utils.Conv1D``), recognised by those attributes, not imported."""
    w = getattr(m, "weight", None)
    return (type(m).__name__ == "Conv1D" and isinstance(getattr(m, "nf", None), int)
            and isinstance(getattr(m, "nx", None), int) and isinstance(w, torch.Tensor) and w.dim() == 2)


def _describe(model: nn.Module) -> dict[str, dict]:
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            out[name] = {"groups": m.groups, "in_per_group": m.weight.shape[1] if not m.transposed else 0,
                         "per_out": m.out_channels // m.groups}
        elif isinstance(m, nn.GroupNorm):
            out[name] = {"groups": m.num_groups, "channels": m.num_channels}
    return out


def rebuild(model: nn.Module, shapes: dict[str, list[int]], state_dict: dict[str, torch.Tensor] | None = None,
            *, empty_built: bool = False, architecture: str = "") -> nn.Module:
    """Resize ``model`` in place to ``shapes`` and load ``state_dict`` into it (by assignment
    when ``empty_built``: its parameters are still on ``meta``)."""
    before = _describe(model)
    groups = ties.alias_groups(model)
    _resize_tensors(model, shapes)
    ties.retie(model, groups)
    _fix_attributes(model, before)
    if state_dict is not None:
        state = ties.complete(state_dict, groups, architecture or type(model).__name__)
        empty.fill(model, state, empty_built)
        ties.retie(model, groups)
        left = empty.has_meta(model)
        if left:
            raise ValueError(f"the state-dict leaves {len(left)} tensors unset (e.g. {', '.join(left[:3])})")
    return model.eval()


def rebuild_from(architecture: str, config: dict | None, shapes: dict[str, list[int]],
                 state_dict: dict[str, torch.Tensor]) -> nn.Module:
    """Build ``architecture`` (from ``config`` where its provider takes one) at ``shapes`` and
    load ``state_dict``."""
    arch = get_architecture(architecture, config)
    model, empty_built = empty.build(arch.factory)
    try:
        return rebuild(model, shapes, state_dict, empty_built=empty_built, architecture=architecture)
    except ValueError:
        if not empty_built:
            raise
    # the constructor derives a buffer from a weight: build it with its random weights instead
    return rebuild(arch.factory(), shapes, state_dict, architecture=architecture)


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return empty.torch_load_mapped(path)


def load_pruned(
    architecture: "str | Path",
    state_dict: "dict[str, torch.Tensor] | str | Path | None" = None,
    manifest: "dict | str | Path | None" = None,
) -> nn.Module:
    """Build ``architecture`` at the pruned widths in ``manifest`` and load ``state_dict``.

    ``state_dict`` and ``manifest`` may be paths (the files PruneKit writes) or loaded objects.
    ``load_pruned(folder)`` reads a pruned checkpoint folder as PruneKit writes it (its
    ``manifest.json`` names the architecture and, for ``hf:`` models, holds the configuration;
    the weights are ``model.safetensors`` or ``state_dict.pt``).
    """
    if state_dict is None and manifest is None and Path(architecture).is_dir():
        folder = Path(architecture)
        manifest = json.loads((folder / "manifest.json").read_text())
        weights = [folder / n for n in ("model.safetensors", "state_dict.pt") if (folder / n).exists()]
        if not weights:
            raise ValueError(f"{folder} holds neither model.safetensors nor state_dict.pt")
        state_dict, architecture = weights[0], manifest.get("architecture")
    if manifest is None or state_dict is None:
        raise ValueError("load_pruned needs a state-dict and its manifest (or a folder PruneKit wrote)")
    if isinstance(manifest, (str, Path)):
        manifest = json.loads(Path(manifest).read_text())
    if isinstance(state_dict, (str, Path)):
        state_dict = _read_state(Path(state_dict))
    if manifest.get("format") != MANIFEST_FORMAT:
        raise ValueError(f"not a PruneKit manifest (format {manifest.get('format')!r})")
    return rebuild_from(str(architecture), manifest.get("config"), manifest["shapes"], state_dict)
