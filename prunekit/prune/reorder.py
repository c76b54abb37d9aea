"""Reorder a stream's channels so that each consumer's kept inputs are one contiguous run.

A consumer that drops input channels reads a subselection of its producer's stream
(``prune/inputs.py``): a free ``narrow`` if what it keeps is contiguous, a ``gather`` (a copy of
the activation) otherwise.  The channel order of a stream is internal to the model: permute the
channels of every tensor that carries the stream (the producers' rows, their BatchNorm scales,
shifts and statistics, every consumer's columns) and the model computes the same function.  So
PruneKit looks for the order in which the most consumers keep a contiguous run, and permutes.

Kept sets that can all be runs at once are rare beyond two disjoint drops (a run's complement is a
prefix plus a suffix: drops must sit at the ends or be nested), so the search is over the order of
*classes* of channels (channels every consumer treats alike), exhaustive for up to 7 classes and
a bounded local search above.  A stream is reordered only where that is safe by the labels: it does not reach a
model input or output, and every tensor dimension that carries any of its channels carries all of
them, once each (no split into parts, no repeat).  The subselected graph is then proven equal to
the upload with those input channels zeroed; the API falls back to no reordering if it is not.
"""

from __future__ import annotations

import itertools
from collections import defaultdict

import numpy as np
import torch
import torch.fx as fx

from ..analysis.walk import Analysis
from ..graph_copy import shared_copy
from ..spec import ChannelRemoval
from .inputs import column_roots
from .plan import find_groups
from .surgery import _get_tensor, _set_tensor

EXHAUSTIVE_CLASSES = 7


def contiguous(order: list[int], kept: set[int]) -> bool:
    pos = [i for i, r in enumerate(order) if r in kept]
    return bool(pos) and pos[-1] - pos[0] + 1 == len(pos)


def best_order(channels: list[int], kept_sets: list[set[int]]) -> tuple[list[int], int]:
    """The order of ``channels`` in which the most kept sets are contiguous (the given order on a tie)."""
    classes: dict[tuple[bool, ...], list[int]] = defaultdict(list)
    for r in channels:
        classes[tuple(r in k for k in kept_sets)].append(r)
    keys = list(classes)

    def score(perm) -> int:
        """Kept sets that are runs: a class is all kept or all dropped by each consumer, so a kept
        set is a run exactly when the classes it keeps are consecutive in ``perm``."""
        total = 0
        for i in range(len(kept_sets)):
            at = [j for j, key in enumerate(perm) if key[i]]
            total += bool(at) and at[-1] - at[0] + 1 == len(at)
        return total

    best, best_score = list(channels), sum(contiguous(channels, k) for k in kept_sets)
    if len(keys) <= EXHAUSTIVE_CLASSES:
        candidates = itertools.permutations(keys)
    else:
        candidates = iter([_local_search(keys, score)])
    for perm in candidates:
        s = score(perm)
        if s > best_score:
            best, best_score = [r for key in perm for r in classes[key]], s
            if s == len(kept_sets):
                break
    return best, best_score


def _local_search(keys: list, score, budget: int = 20000) -> list:
    """Too many classes to try every order.  Any two consumers ``i``, ``j`` can both keep runs:
    channels both drop first, then those only ``i`` drops, the kept-by-both middle, those only
    ``j`` drops last.  Try that for pairs, keep the best, then move single classes while that makes
    more runs (``budget`` scorings at most)."""
    m = len(keys[0]) if keys else 0
    perm, current, spent = list(keys), score(list(keys)), 1
    for i, j in itertools.islice(itertools.permutations(range(m), 2), 400):
        cand = ([k for k in keys if not k[i] and not k[j]] + [k for k in keys if not k[i] and k[j]]
                + sorted((k for k in keys if k[i] and k[j]), key=sum, reverse=True)
                + [k for k in keys if k[i] and not k[j]])
        s, spent = score(cand), spent + 1
        if s > current:
            perm, current = cand, s
    better = True
    while better and spent < budget:
        better = False
        for a, b in itertools.permutations(range(len(perm)), 2):
            if spent >= budget:
                break
            cand = perm[:a] + perm[a + 1:]
            cand.insert(b, perm[a])
            s, spent = score(cand), spent + 1
            if s > current:
                perm, current, better = cand, s, True
                break
    return perm


def _labelled_dims(a: Analysis):
    """Every (kind, name, dim, label array) the analysis holds: graph values and attributes."""
    for name, lab in a.attr_labels.items():
        for d, arr in enumerate(lab or ()):
            if isinstance(arr, np.ndarray):
                yield "attr", name, d, arr
    for name, lab in a.labels.items():
        for labs in (lab if isinstance(lab, list) else [lab]):
            if isinstance(labs, tuple):
                for d, arr in enumerate(labs):
                    if isinstance(arr, np.ndarray):
                        yield "node", name, d, arr


def _safe(a: Analysis, gm: fx.GraphModule, roots: np.ndarray, stream: set[int]) -> bool:
    inputs = {n.name for n in gm.graph.nodes if n.op == "placeholder"}
    for kind, name, _d, arr in _labelled_dims(a):
        rs = roots[arr[arr >= 0]]
        hit = [int(r) for r in rs.tolist() if int(r) in stream]
        if not hit:
            continue
        if kind == "node" and name in inputs:
            return False
        if len(hit) != len(stream) or len(set(hit)) != len(hit):
            return False
    return True


def reorder(gm: fx.GraphModule, a: Analysis, entries: list[ChannelRemoval], carried: list[ChannelRemoval] = ()
            ) -> tuple[fx.GraphModule, list[ChannelRemoval], list[dict], list[ChannelRemoval]]:
    """A copy of ``gm`` with reordered streams, ``entries`` translated to the new column order and
    ``carried`` (other entries naming channels of the same tensors) translated too (``gm`` itself
    and the entries unchanged where nothing is gained)."""
    tensors = {n: t for n, t in list(gm.named_parameters()) + list(gm.named_buffers())}
    groups, roots = find_groups(a, tensors)
    group_of = {int(r): gi for gi, g in enumerate(groups) for r in g.roots.tolist()}
    readers: dict[int, list[tuple[ChannelRemoval, np.ndarray]]] = defaultdict(list)
    for e in entries:
        col_roots = column_roots(a, roots, e.param)
        if col_roots is None or (col_roots < 0).any():
            continue
        if any(c >= len(col_roots) for c in e.channels):
            continue  # subselect() names the bad index
        gis = {group_of.get(int(r)) for r in col_roots.tolist()}
        if len(gis) == 1 and None not in gis:
            gi = gis.pop()
            if len(set(col_roots.tolist())) == len(col_roots) == len(groups[gi].roots):
                readers[gi].append((e, col_roots))
    out, info, moved = gm, [], {}
    for gi, rd in readers.items():
        g = groups[gi]
        stream = [int(r) for r in g.roots.tolist()]
        if g.output or not _safe(a, gm, roots, set(stream)):
            continue
        kept_sets = [set(int(r) for r in cr.tolist()) - {int(cr[c]) for c in e.channels} for e, cr in rd]
        base = sum(contiguous(stream, k) for k in kept_sets)
        order, score = best_order(stream, kept_sets)
        if score <= base:
            continue
        if out is gm:
            out = shared_copy(gm)
        rank = {r: i for i, r in enumerate(order)}
        for kind, name, d, arr in _labelled_dims(a):
            if kind != "attr":
                continue
            rs = roots[np.where(arr >= 0, arr, 0)]
            pos = [i for i in range(len(arr)) if arr[i] >= 0 and int(rs[i]) in rank]
            if not pos:
                continue
            at = {int(rs[i]): i for i in pos}
            idx = torch.arange(len(arr))
            idx[pos] = torch.tensor([at[r] for r in order])
            with torch.no_grad():
                _set_tensor(out, name, _get_tensor(out, name).detach().index_select(d, idx).clone())
            moved[(name, d)] = {int(at[r]): pos[k] for k, r in enumerate(order)}
        info.append({"leader": g.leader, "channels": len(stream), "consumers": len(rd),
                     "contiguous_before": base, "contiguous_after": score})
    if out is gm:
        return gm, entries, [], list(carried)
    return out, [translate(e, moved) for e in entries], info, [translate(e, moved) for e in carried]


def translate(e: ChannelRemoval, moved: dict) -> ChannelRemoval:
    """``e``'s channel indices in the reordered tensors (input entries read dim 1, output ones dim 0)."""
    m = moved.get((e.param, 1 if e.dim == "in" else 0))
    return e if not m else e.model_copy(update={"channels": sorted(m.get(c, c) for c in e.channels)})
