"""Unstructured sparsity: zero single weights, keep every shape.

``method: unstructured`` scores every element of every eligible weight (floating-point parameters
of two or more dimensions: convolution, linear, recurrent and embedding matrices; ``ignore`` keeps
one whole) by the spec's criterion and zeros the lowest:

* ``magnitude`` and ``gradprobe``'s candidates: the lowest ``sparsity`` fraction of each layer;
* ``wanda``: the lowest fraction of each output row (WANDA's comparison group);
* ``pattern: "N:M"``: at most N non-zeros in every M consecutive weights along the input
  dimension (``2:4`` is the pattern sparse tensor cores run), whatever the criterion.

Then the criterion may probe the candidates (GradProbe restores those whose gradient grows).  The
output keeps dense shapes with exact zeros, in every output format; the report gives the sparsity
reached per layer and overall.  The check compares the zeroed model with the uploaded one whose
weights are masked in the graph (a multiplication inserted after each weight is read), two
independent ways of computing the same thing.
"""

from __future__ import annotations

import math

import torch
import torch.fx as fx

from ..graph_copy import shared_copy
from ..spec import Spec
from ..verify.masked import multiply_after
from .importance import RankInputs, get_criterion
from .surgery import _set_tensor



def pattern_of(spec: Spec) -> tuple[int, int] | None:
    if spec.pattern is None:
        return None
    n, m = spec.pattern.split(":")
    return int(n), int(m)


def target_sparsity(spec: Spec) -> float:
    pat = pattern_of(spec)
    return 1.0 - pat[0] / pat[1] if pat else spec.sparsity


def eligible(gm: fx.GraphModule, spec: Spec) -> list[str]:
    ignored = set(spec.ignore)
    return [n for n, p in gm.named_parameters() if p.is_floating_point() and p.dim() >= 2 and n not in ignored]


def _lowest(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Bool mask of the ``k`` lowest entries of a 1-D tensor (ties broken by position)."""
    mask = torch.zeros(scores.numel(), dtype=torch.bool)
    if k > 0:
        idx = torch.argsort(scores.reshape(-1), stable=True)[:k]
        mask[idx] = True
    return mask


def _n_m(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Zero ``m - n`` of every ``m`` consecutive weights along the flattened input dimension."""
    rows = scores.reshape(scores.shape[0], -1)
    cols = rows.shape[1]
    pad = (-cols) % m
    padded = torch.cat([rows, torch.full((rows.shape[0], pad), float("inf"))], 1) if pad else rows
    blocks = padded.reshape(rows.shape[0], -1, m)
    order = torch.argsort(blocks, dim=-1, stable=True)
    mask = torch.zeros_like(blocks, dtype=torch.bool)
    mask.scatter_(-1, order[..., : m - n], True)
    mask = mask.reshape(rows.shape[0], -1)[:, :cols]
    return mask & torch.isfinite(rows)


def choose(inp: RankInputs, names: list[str]) -> dict[str, torch.Tensor]:
    """``{weight: bool mask}``, True where the weight is zeroed."""
    spec = inp.spec
    crit = get_criterion(spec.importance)
    scores = crit.weights(inp, names)
    pat = pattern_of(spec)
    per_row = getattr(crit, "per_row", False)
    masks: dict[str, torch.Tensor] = {}
    for name in names:
        s = scores[name].float()
        if pat is not None:
            m = _n_m(s, *pat)
        elif per_row:
            rows = s.reshape(s.shape[0], -1)
            k = int(math.floor(spec.sparsity * rows.shape[1] + 1e-9))
            m = torch.stack([_lowest(r, k) for r in rows]) if k else torch.zeros_like(rows, dtype=torch.bool)
        else:
            m = _lowest(s, int(math.floor(spec.sparsity * s.numel() + 1e-9)))
        masks[name] = m.reshape(s.shape)
    return crit.probe_weights(inp, masks)


def zeroed(gm: fx.GraphModule, masks: dict[str, torch.Tensor]) -> fx.GraphModule:
    """A copy of ``gm`` whose masked weights are exactly zero (dense shapes)."""
    out = shared_copy(gm)
    params = dict(out.named_parameters())
    with torch.no_grad():
        for name, m in masks.items():  # written in place: a copy of this tensor alone
            _set_tensor(out, name, params[name].detach().masked_fill(m, 0.0))
    return out


def masked_in_graph(gm: fx.GraphModule, masks: dict[str, torch.Tensor]) -> fx.GraphModule:
    """The reference for the check: ``gm`` with ``weight * keep`` computed in the graph."""
    m = shared_copy(gm)
    params = dict(m.named_parameters())
    for i, node in enumerate([n for n in m.graph.nodes if n.op == "get_attr" and n.target in masks]):
        multiply_after(m, node, f"_prunekit_keep_{i}", (~masks[node.target]).to(params[node.target].dtype))
    m.recompile()
    return m


def report(gm: fx.GraphModule, masks: dict[str, torch.Tensor], spec: Spec) -> dict:
    """Sparsity reached per layer and overall (of the eligible weights, and of all parameters)."""
    params = dict(gm.named_parameters())
    layers = {n: round(float(m.float().mean()), 6) for n, m in masks.items()}
    zeros = sum(int(m.sum()) for m in masks.values())
    size = sum(params[n].numel() for n in masks)
    total = sum(p.numel() for p in params.values())
    return {
        "criterion": spec.importance, "target": target_sparsity(spec), "pattern": spec.pattern,
        "reached": zeros / size if size else 0.0, "of_all_parameters": zeros / total if total else 0.0,
        "weights_zeroed": zeros, "weights_eligible": size, "layers": layers,
        "storage": "dense shapes with exact zeros (the file is not smaller; sparse kernels or compression make it so)",
    }
