"""GradProbe: keep what the gradients fight for.

A data-free strategy (l2 for channels, magnitude for weights; any registered criterion can serve)
proposes candidates.  GradProbe records the element-wise largest ``|∂L/∂w|`` over the calibration
batches, *scales* the candidates by ``reduction_factor`` (not zero: the seed's own magnitude
strategy zeroed them, so its probe ran at 0×), records the gradients again, and decides per
candidate:

* gradient grew by at most ``gradient_threshold`` (relative) → redundant, pruned;
* gradient grew by more → the optimisation is fighting to recover it, restored.

For channels the probe scales the channel's output side (its filter rows, bias and BatchNorm
affine entries: every parameter slice at the tensor's output dimension) and compares the sum of
the recorded gradients over those slices.  By design GradProbe prunes at most what the strategy
proposed: the report gives both the target and what was reached.  The two gradient records do
not depend on the threshold, so a sweep over ``gradient_threshold`` probes each candidate set once
(``details["_probes"]``).  With a ``target`` the search probes again without the restored
channels until the target is met (:meth:`~prunekit.prune.target.TargetSearch.probed`).
"""

from __future__ import annotations

import numpy as np
import torch

from .importance import Importance, RankInputs, get_criterion


def grew(before: torch.Tensor, after: torch.Tensor, threshold: float) -> torch.Tensor:
    """Where the gradient grew by more than ``threshold`` (relative): those are restored."""
    return after > before * (1.0 + threshold)


class GradProbe(Importance):
    name = "gradprobe"
    methods = ("structured", "unstructured")
    needs_data = True
    description = "candidates of a data-free strategy, scaled by reduction_factor; restored where gradients grow"

    def __init__(self, name: str = "gradprobe", strategy: dict[str, str] | None = None) -> None:
        self.name = name
        self.strategy = strategy or {"structured": "l2", "unstructured": "magnitude"}

    def channels(self, inp: RankInputs) -> np.ndarray:
        return get_criterion(self.strategy["structured"]).channels(inp)

    def weights(self, inp: RankInputs, names: list[str]) -> dict[str, torch.Tensor]:
        return get_criterion(self.strategy["unstructured"]).weights(inp, names)

    # -- structured -------------------------------------------------------------------------------
    def probe_channels(self, inp: RankInputs, candidates: set[int]) -> set[int]:
        if not candidates:
            return candidates
        a, roots, spec = inp.analysis, inp.roots, inp.spec
        params = dict(inp.gm.named_parameters())
        cand = np.fromiter(candidates, dtype=np.int64, count=len(candidates))
        scale: dict[str, torch.Tensor] = {}
        slices: list[tuple[str, int, np.ndarray]] = []  # (parameter, output dim, root per index)
        for name, p, d, r in a.output_slices(params, roots):
            hit = np.isin(r, cand)
            if not hit.any():
                continue
            s = torch.ones(p.shape[d])
            s[torch.from_numpy(hit)] = spec.reduction_factor
            view = [1] * p.dim()
            view[d] = p.shape[d]
            scale[name] = s.view(view)
            slices.append((name, d, r))
        key = ("channels", tuple(sorted(candidates)), spec.reduction_factor)
        cache = inp.details.setdefault("_probes", {})
        if key not in cache:
            before, after = self._record(inp, scale)
            b_sum: dict[int, float] = {}
            a_sum: dict[int, float] = {}
            for name, d, r in slices:
                gb = before[name].movedim(d, 0).reshape(len(r), -1).sum(1).double().numpy()
                ga = after[name].movedim(d, 0).reshape(len(r), -1).sum(1).double().numpy()
                for i in np.nonzero(np.isin(r, cand))[0].tolist():
                    b_sum[int(r[i])] = b_sum.get(int(r[i]), 0.0) + float(gb[i])
                    a_sum[int(r[i])] = a_sum.get(int(r[i]), 0.0) + float(ga[i])
            self._keep(cache, key, (b_sum, a_sum))
        b_sum, a_sum = cache[key]
        restored = {r for r in candidates if r in b_sum and a_sum[r] > b_sum[r] * (1.0 + spec.gradient_threshold)}
        self._note(inp, len(candidates), len(candidates) - len(restored), "channels")
        return candidates - restored

    # -- unstructured -----------------------------------------------------------------------------
    def probe_weights(self, inp: RankInputs, masks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        spec = inp.spec
        key = ("weights", tuple(sorted((n, int(m.sum())) for n, m in masks.items())), spec.reduction_factor)
        cache = inp.details.setdefault("_probes", {})
        if key not in cache:
            scale = {n: torch.where(m, torch.tensor(spec.reduction_factor), torch.tensor(1.0)) for n, m in masks.items()}
            self._keep(cache, key, self._record(inp, scale))
        before, after = cache[key]
        out = {n: m & ~grew(before[n], after[n], spec.gradient_threshold) for n, m in masks.items()}
        self._note(inp, sum(int(m.sum()) for m in masks.values()), sum(int(m.sum()) for m in out.values()), "weights")
        return out

    # -- shared -----------------------------------------------------------------------------------
    @staticmethod
    def _keep(cache: dict, key, value, most: int = 8) -> None:
        """Probe records by candidate set: a target's rounds and a sweep's settings reuse them."""
        while len(cache) >= most:
            cache.pop(next(iter(cache)))
        cache[key] = value

    def _record(self, inp: RankInputs, scale: dict[str, torch.Tensor]):
        from ..data.evidence import max_abs_gradients

        cal = inp.calibration
        n = cal.num_batches
        inp.tick(0.0, f"gradprobe: recording gradients ({n} batches)")
        before = max_abs_gradients(inp.gm, cal, names=set(scale),
                                   on_batch=lambda k: inp.tick(0.5 * (k + 1) / n, f"gradprobe: pass 1, batch {k + 1}/{n}"))
        after = max_abs_gradients(inp.gm, cal, names=set(scale), scale=scale,
                                  on_batch=lambda k: inp.tick(0.5 + 0.5 * (k + 1) / n, f"gradprobe: pass 2, batch {k + 1}/{n}"))
        return before, after

    def _note(self, inp: RankInputs, candidates: int, pruned: int, unit: str) -> None:
        inp.details["gradprobe"] = {
            "unit": unit, "candidates": candidates, "pruned": pruned, "restored": candidates - pruned,
            "reduction_factor": inp.spec.reduction_factor, "gradient_threshold": inp.spec.gradient_threshold,
            "strategy": self.strategy["structured" if unit == "channels" else "unstructured"],
        }
