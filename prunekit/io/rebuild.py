"""Rebuild a working ``nn.Module`` from a pruned state-dict and its shape manifest.

A state-dict carries no structure, so the architecture is instantiated from the registry and every
module whose tensors shrank is resized in place: tensors are replaced by ones of the manifest's
shapes and the attributes ``forward`` reads (``in_channels``, ``groups``, ``normalized_shape``...)
are recomputed from them.  Architectures whose ``forward`` hard-codes widths cannot adapt
(``analysis/eager_limits.py`` lists what the analysis keeps for them); the pipeline checks every
rebuilt model against the pruned graph before it hands out a state-dict.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn as nn

from ..registry import build

MANIFEST_FORMAT = "prunekit.state_dict/1"


def _resize_tensors(model: nn.Module, shapes: dict[str, list[int]]) -> None:
    for name, shape in shapes.items():
        owner_name, _, attr = name.rpartition(".")
        owner = model.get_submodule(owner_name) if owner_name else model
        old = getattr(owner, attr, None)
        if not isinstance(old, torch.Tensor) or list(old.shape) == list(shape):
            continue
        new = torch.zeros(shape, dtype=old.dtype)
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
            per = orig.get("channels", m.num_channels) // orig.get("groups", m.num_groups)
            m.num_channels = m.weight.shape[0]
            m.num_groups = m.num_channels // per
        elif isinstance(m, nn.Embedding):
            m.num_embeddings, m.embedding_dim = m.weight.shape
        elif isinstance(m, nn.PReLU):
            m.num_parameters = m.weight.numel()
        elif isinstance(m, nn.RNNBase):
            from ..interop.recurrent import fix_rnn_attributes

            fix_rnn_attributes(m)


def _describe(model: nn.Module) -> dict[str, dict]:
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            out[name] = {"groups": m.groups, "in_per_group": m.weight.shape[1] if not m.transposed else 0,
                         "per_out": m.out_channels // m.groups}
        elif isinstance(m, nn.GroupNorm):
            out[name] = {"groups": m.num_groups, "channels": m.num_channels}
    return out


def rebuild(model: nn.Module, shapes: dict[str, list[int]], state_dict: dict[str, torch.Tensor] | None = None) -> nn.Module:
    """Resize ``model`` in place to ``shapes`` and load ``state_dict`` into it."""
    before = _describe(model)
    _resize_tensors(model, shapes)
    _fix_attributes(model, before)
    if state_dict is not None:
        if getattr(state_dict, "_metadata", None) is None:
            # modules that version their state (torchvision's MNASNet) read it from _metadata,
            # which a plain dict of tensors does not carry: use the architecture's own
            meta = getattr(model.state_dict(), "_metadata", None)
            state_dict = OrderedDict(state_dict)
            if meta is not None:
                state_dict._metadata = meta  # type: ignore[attr-defined]
        model.load_state_dict(state_dict, strict=True)
    return model.eval()


def load_pruned(
    architecture: str,
    state_dict: "dict[str, torch.Tensor] | str | Path",
    manifest: "dict | str | Path",
) -> nn.Module:
    """Build ``architecture`` at the pruned widths in ``manifest`` and load ``state_dict``.

    ``state_dict`` and ``manifest`` may be paths (the files PruneKit writes) or loaded objects.
    """
    if isinstance(manifest, (str, Path)):
        manifest = json.loads(Path(manifest).read_text())
    if isinstance(state_dict, (str, Path)):
        state_dict = torch.load(str(state_dict), map_location="cpu", weights_only=True)
    if manifest.get("format") != MANIFEST_FORMAT:
        raise ValueError(f"not a PruneKit manifest (format {manifest.get('format')!r})")
    return rebuild(build(architecture), manifest["shapes"], state_dict)
