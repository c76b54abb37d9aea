"""Helpers for the engine tests: real model files written the way users write them."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
import torch.nn as nn


def example(arch_inputs: list[dict], batch: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Example inputs for the spec's ``inputs`` entries, drawn exactly as the engine draws them
    (floats normal, integers in [low, high), booleans as padding masks): one way for every test."""
    from prunekit.io.inputs import from_specs, sample_inputs

    return sample_inputs(from_specs(arch_inputs), batch, seed)


def save_model(model: nn.Module, fmt: str, inputs: list[dict], path: Path) -> Path:
    """Write ``model`` as a user would: state-dict, traced/scripted TorchScript or .pt2."""
    model = model.eval()
    x = example(inputs, 2)
    if fmt == "state_dict":
        torch.save(model.state_dict(), path)
    elif fmt == "traced":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.jit.save(torch.jit.trace(model, x, check_trace=False), str(path))
    elif fmt == "scripted":
        torch.jit.save(torch.jit.script(model), str(path))
    elif fmt == "export":
        batch = torch.export.Dim("batch", min=1, max=1024)
        # a dimension the spec names in ``dims`` besides the batch (a sequence) is exported dynamic
        # too, one Dim per example size (two inputs of one sequence length share it)
        sizes: dict[int, object] = {}
        shapes = []
        for spec, t in zip(inputs, x):
            shape = {0: batch}
            for d in spec.get("dims") or ():
                if d > 0:
                    n = t.shape[d]
                    shape[d] = sizes.setdefault(n, torch.export.Dim(f"size{n}", min=2, max=max(64, n)))
            shapes.append(shape)
        ep = torch.export.export(model, x, dynamic_shapes=tuple(shapes), strict=False)
        torch.export.save(ep, str(path))
    else:
        raise ValueError(fmt)
    return path


def load_output(path: Path, fmt: str, architecture: str | None = None, manifest: Path | None = None) -> nn.Module:
    import prunekit

    if fmt == "torchscript":
        return torch.jit.load(str(path))
    if fmt == "export":
        return torch.export.load(str(path)).module()
    return prunekit.load_pruned(architecture, path, manifest)


def hf_checkpoint(folder: Path, kind: str, *, tie: bool = True) -> Path:
    """A Hugging Face checkpoint folder written by ``save_pretrained`` with random weights (seed 0):
    ``llama`` (one ``model.safetensors``, embeddings tied unless ``tie`` is False) or ``bert``
    (sharded: ``model.safetensors.index.json`` and five shards).  Returns the folder."""
    import torch

    from prunekit.providers.transformers_models import _transformers

    t = _transformers()
    torch.manual_seed(0)
    out = Path(folder) / kind
    if kind == "llama":
        cfg = t.LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                            num_key_value_heads=2, vocab_size=100, tie_word_embeddings=tie,
                            architectures=["LlamaForCausalLM"])
        t.LlamaForCausalLM(cfg).save_pretrained(out)
    elif kind == "bert":
        cfg = t.BertConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                           vocab_size=100, architectures=["BertForMaskedLM"])
        t.BertForMaskedLM(cfg).save_pretrained(out, max_shard_size="100KB")
    else:
        raise ValueError(kind)
    return out
