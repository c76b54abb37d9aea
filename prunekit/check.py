"""Prove a prune: the pruned model must compute what the masked original computes.

Random inputs at two batch sizes go through both; each output of the masked original is cut down
to its kept channels and compared with the pruned model's.  The largest absolute and relative
deviations are reported; above the tolerance the prune is rejected (``CheckFailed``).

The masked original is built from the *captured* graph, so the captured graph is first held
against the model as uploaded (:func:`compare_with_upload`) on the same inputs: a capture that
lost a ``raise``, a branch or an op would otherwise be checked against itself.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.fx as fx
from torch.utils._pytree import tree_flatten

from .errors import CheckFailed, first_line
from .inputs import InputSignature, sample_inputs


@dataclass
class CheckResult:
    max_abs: float
    max_rel: float
    passed: bool
    batch_sizes: list[int]
    outputs: int
    tolerance: float
    upload_max_rel: float | None = None  # captured graph vs the model as uploaded
    upload_batch_sizes: list[int] | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _restrict(t: torch.Tensor, lab, kept) -> torch.Tensor:
    for dim, d in enumerate(lab or ()):
        if d is None or dim >= t.dim():
            continue
        keep = kept(d)
        if not keep.all():
            t = t.index_select(dim, torch.from_numpy(np.nonzero(keep)[0]))
    return t


def verify(
    pruned: fx.GraphModule,
    masked: fx.GraphModule,
    output_labels: list,
    kept,
    sigs: list[InputSignature],
    batch_sizes: list[int],
    seed: int,
    tolerance: float,
) -> CheckResult:
    max_abs = max_rel = 0.0
    n_out = 0
    for i, b in enumerate(batch_sizes):
        x = sample_inputs(sigs, b, seed + 1000 + i)
        with torch.no_grad():
            try:
                got = pruned(*x)
            except Exception as exc:
                raise CheckFailed(f"the pruned model does not run at batch {b}: {first_line(exc)}") from None
            ref = masked(*x)
        got_flat, _ = tree_flatten(got)
        ref_flat, _ = tree_flatten(ref)
        got_t = [t for t in got_flat if isinstance(t, torch.Tensor)]
        ref_t = [t for t in ref_flat if isinstance(t, torch.Tensor)]
        if len(got_t) != len(ref_t):
            raise CheckFailed(f"the pruned model returns {len(got_t)} tensors, the original {len(ref_t)}")
        n_out = len(got_t)
        for j, (g, r) in enumerate(zip(got_t, ref_t)):
            lab = output_labels[j][1] if j < len(output_labels) else None
            r = _restrict(r, lab, kept)
            if tuple(g.shape) != tuple(r.shape):
                raise CheckFailed(
                    f"output {j} has shape {tuple(g.shape)} after pruning, expected {tuple(r.shape)} at batch {b}"
                )
            if not g.is_floating_point():
                if not torch.equal(g, r):
                    raise CheckFailed(f"integer output {j} differs from the masked original at batch {b}")
                continue
            diff = (g.double() - r.double()).abs()
            a = float(diff.max()) if diff.numel() else 0.0
            scale = float(r.double().abs().max()) if r.numel() else 0.0
            rel = a / max(scale, 1e-12) if a > 0 else 0.0
            if not np.isfinite(a):
                raise CheckFailed(f"output {j} of the pruned model is not finite at batch {b}")
            max_abs, max_rel = max(max_abs, a), max(max_rel, rel)
    res = CheckResult(max_abs, max_rel, max_rel <= tolerance, list(batch_sizes), n_out, tolerance)
    if not res.passed:
        raise CheckFailed(
            f"the pruned model deviates from the masked original by {max_rel:.3g} (relative; max abs "
            f"{max_abs:.3g}), above the tolerance {tolerance:g}: an op rule is wrong for this model"
        )
    return res


def _tensors(out) -> list[torch.Tensor]:
    return [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]


def compare_with_upload(upload, captured, sigs: list[InputSignature], batch_sizes: list[int], seed: int,
                        tolerance: float) -> float:
    """Run the upload and the captured graph on the check's inputs; return the largest relative
    deviation, or raise ``CheckFailed`` when the capture is not the upload."""
    worst = 0.0
    for i, b in enumerate(batch_sizes):
        x = sample_inputs(sigs, b, seed + 1000 + i)
        with torch.no_grad():
            try:
                ref = upload(*x)
            except Exception as exc:
                raise CheckFailed(
                    f"the uploaded model raises at batch {b} ({first_line(exc, with_type=True)}) but the captured "
                    "graph does not: the capture lost part of the model, so nothing is handed out"
                ) from None
            try:
                got = captured(*x)
            except Exception as exc:
                raise CheckFailed(f"the captured graph does not run at batch {b}: {first_line(exc)}") from None
        ref_t, got_t = _tensors(ref), _tensors(got)
        if len(ref_t) != len(got_t):
            raise CheckFailed(f"the uploaded model returns {len(ref_t)} tensors, its captured graph {len(got_t)}")
        for j, (r, g) in enumerate(zip(ref_t, got_t)):
            if tuple(r.shape) != tuple(g.shape) or r.dtype != g.dtype:
                raise CheckFailed(
                    f"output {j} of the captured graph is {tuple(g.shape)} {g.dtype}, the uploaded model's "
                    f"{tuple(r.shape)} {r.dtype} at batch {b}"
                )
            if not r.is_floating_point():
                if not torch.equal(r, g):
                    raise CheckFailed(f"integer output {j} of the captured graph differs from the uploaded model at batch {b}")
                continue
            rd, gd = r.double(), g.double()
            finite = rd.isfinite()
            if not torch.equal(finite, gd.isfinite()):
                raise CheckFailed(f"output {j} of the captured graph has NaN/inf where the uploaded model has none at batch {b}")
            if not finite.any():
                continue
            a = float((rd[finite] - gd[finite]).abs().max())
            rel = a / max(float(rd[finite].abs().max()), 1e-12) if a > 0 else 0.0
            worst = max(worst, rel)
            if rel > tolerance:
                raise CheckFailed(
                    f"the captured graph differs from the uploaded model by {rel:.3g} (relative) at batch {b}, above "
                    f"the tolerance {tolerance:g}: the capture is wrong for this model"
                )
    return worst


def same_outputs(a, b, tolerance: float = 1e-4) -> bool:
    """Whether two models' outputs (any pytree) agree: same structure and shapes, integers equal,
    floats within ``tolerance`` of the larger finite magnitude, NaN and infinities in the same
    places.

    For the capture-time rewrites (batch relaxation, fused-op decomposition), which must
    reproduce the program they replace before they are used.
    """
    flat_a, spec_a = tree_flatten(a)
    flat_b, spec_b = tree_flatten(b)
    if spec_a != spec_b:
        return False
    for x, y in zip(flat_a, flat_b):
        if isinstance(x, torch.Tensor) != isinstance(y, torch.Tensor):
            return False
        if not isinstance(x, torch.Tensor):
            continue
        if x.shape != y.shape or x.dtype != y.dtype:
            return False
        if not x.is_floating_point():
            if not torch.equal(x, y):
                return False
            continue
        x, y = x.double(), y.double()
        finite = x.isfinite()
        if not torch.equal(finite, y.isfinite()) or not torch.equal(x[~finite].nan_to_num(0.0), y[~finite].nan_to_num(0.0)):
            return False  # NaN where NaN, and infinities of the same sign
        x, y = x[finite], y[finite]
        if x.numel() and float((x - y).abs().max()) > tolerance * max(1.0, float(x.abs().max())):
            return False
    return True
