"""Targets instead of ratios: remove channels by global ranking until the model keeps at most a
fraction of its MACs (or parameters).

Trying each candidate prune for real (slice the graph, count its MACs) would cost a surgery per
step.  Instead the cost of a removal is *modelled* from the analysis: every op that does
multiply-adds does them in proportion to the fraction kept of each distinct channel dimension it
touches (a convolution: kept output × kept input channels; a depthwise one: the shared channels
once), and a parameter keeps the product of its dimensions' kept counts.  The model is exact for
convolutions and matmuls; the API counts the pruned model's real MACs afterwards, corrects the
model by what it missed (:func:`TargetSearch.corrected`) and reports the fraction reached.

Channels are ranked globally, each by its importance relative to its group's mean (as
``global_ranking`` does), and taken lowest first; a group never drops below ``min_channels`` and
keeps a multiple of ``round_to``.  The search takes the fewest channels that meet the target, so
the result lies within one channel group's worth of it.

A criterion that probes its candidates (GradProbe) restores some of them, which would leave the
target unmet.  :meth:`TargetSearch.probed` therefore searches again without the restored channels and
probes the new candidates, for a few rounds, until the survivors meet the target or nothing new
is restored.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.fx as fx
from torch.utils.flop_counter import FlopCounterMode

from ..analysis.walk import Analysis
from ..spec import Spec
from .plan import global_candidates, take_lowest


def node_macs(gm: fx.GraphModule, example: tuple) -> dict[str, int]:
    """Multiply-adds of every op, measured by torch's flop counter on one real forward pass."""
    out: dict[str, int] = {}

    class _Count(fx.Interpreter):
        def run_node(self, n):
            if n.op != "call_function":
                return super().run_node(n)
            with FlopCounterMode(display=False) as counter:
                val = super().run_node(n)
            flops = counter.get_total_flops()
            if flops:
                out[n.name] = int(flops // 2)
            return val

    with torch.no_grad():
        _Count(gm).run(*example)
    return out


PROBE_ROUNDS = 6  # searches-and-probes at most, for a criterion that restores candidates


class TargetSearch:
    def __init__(self, a: Analysis, gm: fx.GraphModule, tensors: dict[str, torch.Tensor], spec: Spec,
                 example: tuple) -> None:
        self.a, self.spec = a, spec
        self.roots = a.atoms.roots()
        self.metric, self.fraction = spec.target.metric, spec.target.fraction
        self.correction = 1.0  # real / modelled cost of the last prune (set by corrected())
        params = {n for n, _ in gm.named_parameters()}
        # per costed item: weight and the root arrays of its distinct channel dimensions
        self.items: list[tuple[float, list[np.ndarray]]] = []
        if self.metric == "macs":
            macs = node_macs(gm, example)
            by_name = {n.name: n for n in gm.graph.nodes}
            for name, m in macs.items():
                node = by_name[name]
                dims = [self._dims(a.labels.get(x.name)) for x in node.all_input_nodes] + [self._dims(a.labels.get(name))]
                self.items.append((float(m), self._distinct([d for ds in dims for d in ds])))
        else:
            for name, t in tensors.items():
                if name in params:
                    lab = a.attr_labels.get(name)
                    # every dimension counts on its own for parameters (a [C, C] weight loses C² entries)
                    fixed = math.prod(int(s) for s, d in zip(t.shape, lab or ()) if d is None) if lab else t.numel()
                    self.items.append((float(fixed), [self._root_array(d) for d in (lab or ()) if d is not None]))
        self.total = sum(self._cost_of(w, ds, None) for w, ds in self.items)

    def _root_array(self, arr: np.ndarray) -> np.ndarray:
        r = np.full(len(arr), -1, dtype=np.int64)
        r[arr >= 0] = self.roots[arr[arr >= 0]]
        return r

    def _dims(self, lab) -> list[np.ndarray]:
        if not isinstance(lab, tuple):
            return []
        return [self._root_array(d) for d in lab if isinstance(d, np.ndarray) and len(d) and (d >= 0).any()]

    @staticmethod
    def _distinct(dims: list[np.ndarray]) -> list[np.ndarray]:
        seen, out = set(), []
        for d in dims:
            key = tuple(np.unique(d[d >= 0]).tolist())
            if key and key not in seen:
                seen.add(key)
                out.append(d)
        return out

    def _cost_of(self, weight: float, dims: list[np.ndarray], removed: np.ndarray | None) -> float:
        if self.metric == "macs":
            c = weight
            for d in dims:
                gone = 0 if removed is None else int(removed[d[d >= 0]].sum())
                c *= (len(d) - gone) / len(d)
            return c
        c = weight
        for d in dims:
            gone = 0 if removed is None else int(removed[d[d >= 0]].sum())
            c *= len(d) - gone
        return c

    def _root_flags(self, flag_roots) -> np.ndarray:
        f = np.zeros(int(self.roots.max()) + 1 if len(self.roots) else 1, dtype=bool)
        f[np.fromiter(flag_roots, dtype=np.int64)] = True
        return f

    def corrected(self, real_fraction: float, modelled_fraction: float) -> None:
        """Learn from a real count: scale the modelled cost by what it missed."""
        if modelled_fraction > 0 and real_fraction > 0:
            self.correction *= real_fraction / modelled_fraction

    @property
    def goal(self) -> float:
        return self.fraction / self.correction * self.total

    def meets(self, removed_roots: set[int]) -> bool:
        return self.modelled(removed_roots) <= self.goal

    def __call__(self, groups: list, pool: list[int], exclude: set[int] = frozenset()) -> set[int]:
        """The channels to remove so that the modelled cost meets the target (never one in
        ``exclude``: channels a probe has restored)."""
        cands = [c for c in global_candidates(groups, pool) if c[2] not in exclude]
        goal = self.goal

        def take(k: int) -> set[int]:
            return take_lowest(groups, cands, k, self.spec)

        lo, hi = 0, len(cands)
        best = take(hi)
        if self.modelled(best) > goal:
            return best  # the target cannot be met: take all that may go (the report says what was reached)
        while lo < hi:
            mid = (lo + hi) // 2
            chosen = take(mid)
            if self.modelled(chosen) <= goal:
                hi, best = mid, chosen
            else:
                lo = mid + 1
        return best

    def probed(self, groups: list, pool: list[int], probe) -> tuple[set[int], dict]:
        """Channels that meet the target *after* ``probe(candidates) -> survivors`` has spoken.

        A probe that keeps every candidate (every criterion but GradProbe) ends this in one round.
        """
        restored: set[int] = set()
        survivors: set[int] = set()
        rounds = 0
        for rounds in range(1, PROBE_ROUNDS + 1):
            chosen = self(groups, pool, exclude=restored)
            survivors = set(probe(chosen)) if chosen else set()
            new = chosen - survivors - restored
            restored |= chosen - survivors
            if not new or self.meets(survivors):
                break
        return survivors, {"rounds": rounds, "restored": len(restored), "candidates": len(restored | survivors)}

    def modelled(self, removed_roots: set[int]) -> float:
        flags = self._root_flags(removed_roots) if removed_roots else None
        return sum(self._cost_of(w, ds, flags) for w, ds in self.items)

    def modelled_fraction(self, removed_roots: set[int]) -> float:
        return self.modelled(removed_roots) / self.total if self.total else 1.0

