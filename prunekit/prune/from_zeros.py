"""Models that were already masked: remove the channels whose weights are exactly zero.

``torch.nn.utils.prune`` (made permanent), torch.ao's sparsifier or an unstructured row mask
leave channels whose producing weights are all zero: the model computes nothing in them, yet
pays for them.  ``from_zeros`` finds those channels and removes them physically (seed 001's
order: masks first, removal after).

A channel is a candidate when *every* parameter slice that produces it is exactly zero: the rows
of the weights whose output dimension carries it, their biases, its BatchNorm scale and shift.  A
zero row alone is not enough: ``conv(bias=False) → BatchNorm`` still emits the BatchNorm shift, a
constant, in a channel whose convolution rows are zero.  And an op after it may map 0 elsewhere
(``sigmoid``).  So candidates are *proven*: the capture with them masked must equal the capture as
uploaded (:func:`exact`); a group whose candidates change the output is kept and reported.
"""

from __future__ import annotations

from typing import Callable

import torch

from ..analysis.walk import Analysis
from .plan import find_groups


def zero_channels(a: Analysis, tensors: dict[str, torch.Tensor], parameters: set[str],
                  min_channels: int = 1) -> tuple[dict[str, set[int]], int]:
    """``{group leader: roots}`` of the channels whose producing slices are all exactly zero
    (never a group's last ``min_channels``; never a group that reaches the model's output), and
    how many channels have zero weight rows but another producing slice that is not zero.

    Only ``parameters`` count as producing slices: BatchNorm's running statistics are buffers and
    do not matter once its scale and shift are zero (any buffer that does is caught by the proof)."""
    groups, roots = find_groups(a, tensors)
    produced: dict[int, bool] = {}  # root -> every producing slice seen so far is zero
    zero_rows: set[int] = set()     # roots with an all-zero row in some weight matrix
    for _name, t, d, rs in a.output_slices({n: t for n, t in tensors.items() if n in parameters}, roots):
        zero = (t.detach().movedim(d, 0).reshape(t.shape[d], -1) == 0).all(1).tolist()
        for r, z in zip(rs.tolist(), zero):
            if r >= 0:
                produced[r] = produced.get(r, True) and z
                if z and t.dim() >= 2:
                    zero_rows.add(r)
    out: dict[str, set[int]] = {}
    for g in groups:
        if g.output:
            continue
        rs = [int(r) for r in g.roots.tolist() if produced.get(int(r), False)]
        room = len(g.roots) - max(1, min_channels)
        if rs and room > 0:
            out[g.leader] = set(rs[:room])
    return out, len([r for r in zero_rows if not produced.get(r, False)])


MOST_GROUP_PROOFS = 32  # each proof runs the model twice: a model with thousands of such groups must not hang


def exact(candidates: dict[str, set[int]], unchanged: Callable[[set[int]], bool],
          most: int = MOST_GROUP_PROOFS) -> tuple[set[int], list[str]]:
    """The candidates whose removal leaves the model unchanged: all at once if that holds, else
    group by group (the first ``most`` groups; the rest are kept untried).  Returns the accepted
    roots and the groups kept."""
    every = set().union(*candidates.values()) if candidates else set()
    if not every or unchanged(every):
        return every, []
    accepted: set[int] = set()
    refused: list[str] = []
    for k, (gi, rs) in enumerate(sorted(candidates.items())):
        if k < most and unchanged(rs):
            accepted |= rs
        else:
            refused.append(gi)
    if accepted and refused and not unchanged(accepted):  # two groups that pass alone but not together
        return set(), sorted(candidates)
    return accepted, refused

