"""Importance criteria: how much a channel matters, as a table of named criteria.

A criterion scores one weight slice per channel (the rows of a ``[channels, -1]`` matrix); a
channel's importance is the sum over every weight slice it would remove.  ``bn_scale`` only
looks at BatchNorm scales (and falls back to ``l2`` for groups without one); ``random`` ignores
the weights (seeded).  Adding a criterion is adding one entry to :data:`CRITERIA` (and its name
to the spec's ``importance`` field).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ..analysis.walk import Analysis


@dataclass(frozen=True)
class Criterion:
    name: str
    score: Callable[[torch.Tensor], torch.Tensor] | None  # [channels, -1] float64 -> [channels]; None: random
    only_batch_norm: bool = False                         # score BatchNorm scales only (others: l2)


def _l1(rows: torch.Tensor) -> torch.Tensor:
    return rows.abs().sum(1)


def _l2(rows: torch.Tensor) -> torch.Tensor:
    return rows.pow(2).sum(1)


CRITERIA: dict[str, Criterion] = {
    "l1": Criterion("l1", _l1),
    "l2": Criterion("l2", _l2),
    "bn_scale": Criterion("bn_scale", _l1, only_batch_norm=True),
    "random": Criterion("random", None),
}


def batch_norm_weights(a: Analysis) -> set[str]:
    out = set()
    for node in a.gm.graph.nodes:
        if node.op == "call_function" and "batch_norm" in str(node.target) and len(node.args) > 1:
            w = node.args[1]
            if getattr(w, "op", None) == "get_attr":
                out.add(w.target)
    return out


def channel_scores(a: Analysis, tensors: dict[str, torch.Tensor], roots: np.ndarray,
                   score: Callable[[torch.Tensor], torch.Tensor], only: set[str] | None = None) -> np.ndarray:
    """Importance of every component (indexed by root atom): ``score`` summed over its slices."""
    total = np.zeros(len(roots), dtype=np.float64)
    for name, lab in a.attr_labels.items():
        t = tensors.get(name)
        if t is None or not t.is_floating_point() or (only is not None and name not in only):
            continue
        t = t.detach().double()
        for dim, arr in enumerate(lab):
            if arr is None or t.dim() == 0:
                continue
            s = score(t.movedim(dim, 0).reshape(t.shape[dim], -1)).numpy()
            ok = arr >= 0
            np.add.at(total, roots[arr[ok]], s[ok])
    return total


def rank_groups(a: Analysis, tensors: dict[str, torch.Tensor], roots: np.ndarray, groups: list, kind: str,
                seed: int) -> list[str]:
    """Set ``importance`` on every group by the criterion ``kind``; returns warnings."""
    crit = CRITERIA[kind]
    warnings: list[str] = []
    if crit.score is None:
        scores = np.random.default_rng(seed).random(len(roots))
        for g in groups:
            g.importance = scores[g.roots]
        return warnings
    bn = batch_norm_weights(a) if crit.only_batch_norm else set()
    if crit.only_batch_norm and not bn:
        warnings.append(f"importance {kind}: the model has no batch norm; ranked by l2 instead")
        crit = CRITERIA["l2"]
    scores = channel_scores(a, tensors, roots, crit.score, bn if crit.only_batch_norm else None)
    fallback = channel_scores(a, tensors, roots, _l2) if crit.only_batch_norm else None
    for g in groups:
        use_fallback = fallback is not None and not any(n in bn for n, _ in g.slots)
        g.importance = (fallback if use_fallback else scores)[g.roots]
    return warnings
