"""Prove a prune: the pruned model must compute what the masked original computes.

Random inputs at two batch sizes go through both; each output of the masked original is cut down
to its kept channels and compared with the pruned model's.  The largest absolute and relative
deviations are reported; above the tolerance the prune is rejected (``CheckFailed``).

The masked original is built from the *captured* graph, so the captured graph is first held
against the model as uploaded (:func:`compare_with_upload`) on the same inputs: a capture that
lost a ``raise``, a branch or an op would otherwise be checked against itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.fx as fx
from torch.utils._pytree import tree_flatten

from ..errors import CheckFailed, first_line
from ..io.inputs import InputSignature, sample_inputs
from ..memory import trim
from ..metrics import MacCounter

if TYPE_CHECKING:
    from ..prune.removal import Removal


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


def _restrict(t: torch.Tensor, lab, removal: "Removal") -> torch.Tensor:
    for dim, d in enumerate(lab or ()):
        if d is None or dim >= t.dim():
            continue
        keep = removal.kept(d)
        if not keep.all():
            t = t.index_select(dim, torch.from_numpy(np.nonzero(keep)[0]))
    return t


@dataclass
class Deviation:
    """How far one model's outputs are from a reference's: the largest absolute and relative
    (to the reference's largest finite magnitude) deviation of floating outputs, and ``problem``
    when they cannot be compared at all (count, structure, shape, dtype, integer values, or NaN
    and infinities in other places)."""

    max_abs: float = 0.0
    max_rel: float = 0.0
    problem: str | None = None


def compare_outputs(ref, got, *, restrict=None, scale_floor: float = 1e-12, structure: bool = False,
                    dtypes: bool = True) -> Deviation:
    """The one output comparator: the check, the capture self-tests and the artifact proof all
    measure with it (each with its own tolerance and message).

    ``restrict(j, tensor)`` cuts reference output ``j`` down first (the masked original's
    outputs to their kept channels); ``scale_floor`` is the smallest magnitude a relative
    deviation is taken against; ``structure`` also compares the pytree structure."""
    ref_flat, ref_spec = tree_flatten(ref)
    got_flat, got_spec = tree_flatten(got)
    if structure and ref_spec != got_spec:
        return Deviation(problem="the outputs are structured differently")
    ref_t = [t for t in ref_flat if isinstance(t, torch.Tensor)]
    got_t = [t for t in got_flat if isinstance(t, torch.Tensor)]
    if len(ref_t) != len(got_t):
        return Deviation(problem=f"{len(got_t)} output tensors where the reference has {len(ref_t)}")
    dev = Deviation()
    for j, (r, g) in enumerate(zip(ref_t, got_t)):
        if restrict is not None:
            r = restrict(j, r)
        if tuple(g.shape) != tuple(r.shape) or (dtypes and g.dtype != r.dtype):
            where = f"{tuple(g.shape)} {g.dtype}" if dtypes else f"{tuple(g.shape)}"
            want = f"{tuple(r.shape)} {r.dtype}" if dtypes else f"{tuple(r.shape)}"
            return Deviation(problem=f"output {j} has shape {where}, expected {want}")
        if not r.is_floating_point():
            if not torch.equal(g.to(r.dtype), r):
                return Deviation(problem=f"integer output {j} differs")
            continue
        rd, gd = r.double(), g.double()
        finite = rd.isfinite()
        if not torch.equal(finite, gd.isfinite()) or not torch.equal(rd[~finite].nan_to_num(0.0), gd[~finite].nan_to_num(0.0)):
            return Deviation(problem=f"output {j} has NaN or infinity in other places than the reference")
        if not finite.any():
            continue
        a = float((rd[finite] - gd[finite]).abs().max())
        scale = max(float(rd[finite].abs().max()), scale_floor)
        dev.max_abs, dev.max_rel = max(dev.max_abs, a), max(dev.max_rel, a / scale if a > 0 else 0.0)
    return dev


def check_inputs(sigs: list[InputSignature], batch_sizes: list[int], seed: int):
    """The check's inputs, ``(batch, inputs)`` per batch size: the upload comparison and the
    pruned-vs-masked check draw exactly the same ones.  Every batch after the first is drawn with
    the dynamic dimensions besides the batch at their second size (``InputSignature.vary``)."""
    for i, b in enumerate(batch_sizes):
        yield b, sample_inputs(sigs, b, seed + 1000 + i, second=i > 0)


def where(b: int, x: tuple) -> str:
    """``batch 3`` and, where an input has more than one dimension, the shapes run."""
    shapes = [list(t.shape) for t in x if isinstance(t, torch.Tensor) and t.dim() > 1]
    return f"batch {b}" + (f" (input shapes {', '.join(map(str, shapes))})" if shapes else "")


def verify(
    pruned: fx.GraphModule,
    masked: fx.GraphModule,
    output_labels: list,
    removal: "Removal",
    sigs: list[InputSignature],
    batch_sizes: list[int],
    seed: int,
    tolerance: float,
    outputs: list | None = None,
    macs: dict | None = None,
) -> CheckResult:
    """``outputs``, if given, receives ``(batch, inputs, pruned outputs)`` per batch size: the
    artifact proof runs the written model on the same inputs and compares with them.

    ``macs``, if given, receives as ``"after"`` the MACs of the pruned model's pass at the first
    batch and the input shapes they were counted at, ``(macs, shapes)``, counted while it runs:
    the report's figure without a pass of its own.  The key is missing where the pass could not
    be counted."""
    max_abs = max_rel = 0.0
    n_out = 0

    def restrict(j: int, t: torch.Tensor) -> torch.Tensor:
        return _restrict(t, output_labels[j][1] if j < len(output_labels) else None, removal)

    for i, (b, x) in enumerate(check_inputs(sigs, batch_sizes, seed)):
        count = macs if i == 0 else None
        with torch.no_grad():
            try:
                got = _counted(pruned, x, count, "after")
            except Exception as exc:
                raise CheckFailed(f"the pruned model does not run at {where(b, x)}: {first_line(exc)}") from None
            trim()  # the pruned run's activations (other sizes than the masked run's) go back first
            ref = masked(*x)
        dev = compare_outputs(ref, got, restrict=restrict, dtypes=False)
        if dev.problem:
            raise CheckFailed(f"the pruned model does not match the masked original at {where(b, x)}: {dev.problem}")
        n_out = len([t for t in tree_flatten(got)[0] if isinstance(t, torch.Tensor)])
        if outputs is not None:
            outputs.append((b, x, got))
        del ref
        trim()
        max_abs, max_rel = max(max_abs, dev.max_abs), max(max_rel, dev.max_rel)
    res = CheckResult(max_abs, max_rel, max_rel <= tolerance, list(batch_sizes), n_out, tolerance)
    if not res.passed:
        raise CheckFailed(
            f"the pruned model deviates from the masked original by {max_rel:.3g} (relative; max abs "
            f"{max_abs:.3g}), above the tolerance {tolerance:g}: an op rule is wrong for this model"
        )
    return res


def _counted(model, x: tuple, macs: dict | None, key: str):
    """``model(*x)``, with ``(its MACs, the input shapes)`` put in ``macs[key]`` when ``macs`` is
    given.  A pass the counter cannot follow (an op whose formula fails) runs again without it;
    the key is then left out and the caller counts another way."""
    if macs is None:
        return model(*x)
    try:
        with MacCounter() as counter:
            out = model(*x)
    except Exception:
        return model(*x)
    macs[key] = (counter.macs, [tuple(t.shape) for t in x if isinstance(t, torch.Tensor)])
    return out


def output_change(upload, pruned, output_labels: list, removal: "Removal", sigs: list[InputSignature],
                  batch_sizes: list[int], seed: int, pruned_outputs: list | None = None) -> dict:
    """How far the pruned model's outputs are from the upload's (its outputs cut to the kept
    channels), on the check's inputs: the largest relative deviation (as the check measures) and
    the relative L2 change ``|pruned - upload| / |upload|``.  For prunes that change the function
    by design (``normalized_dims: prune``), reported, never a pass/fail.

    ``pruned_outputs``: the ``(batch, inputs, pruned outputs)`` :func:`verify` kept on these same
    inputs; the pruned model is then not run again."""
    def restrict(j: int, t: torch.Tensor) -> torch.Tensor:
        return _restrict(t, output_labels[j][1] if j < len(output_labels) else None, removal)

    if pruned_outputs is not None and [b for b, _, _ in pruned_outputs] != list(batch_sizes):
        pruned_outputs = None  # not the check's inputs at these batches: run the pruned model
    runs = (pruned_outputs if pruned_outputs is not None
            else [(b, x, None) for b, x in check_inputs(sigs, batch_sizes, seed)])
    worst, num, den = 0.0, 0.0, 0.0
    for b, x, got in runs:
        with torch.no_grad():
            ref = upload(*x)
            if got is None:
                got = pruned(*x)
        dev = compare_outputs(ref, got, restrict=restrict, dtypes=False)
        if dev.problem:
            return {"problem": dev.problem}
        worst = max(worst, dev.max_rel)
        refs = [t for t in tree_flatten(ref)[0] if isinstance(t, torch.Tensor)]
        gots = [t for t in tree_flatten(got)[0] if isinstance(t, torch.Tensor)]
        for j, (r, g) in enumerate(zip(refs, gots)):
            if r.is_floating_point():
                r = restrict(j, r).double()
                num += float((g.double() - r).pow(2).sum())
                den += float(r.pow(2).sum())
    return {"max_rel": worst, "rel_l2": (num / den) ** 0.5 if den > 0 else 0.0, "batch_sizes": list(batch_sizes)}


def compare_with_upload(upload, captured, sigs: list[InputSignature], batch_sizes: list[int], seed: int,
                        tolerance: float, *, what: str = "the captured graph",
                        reference: str = "the uploaded model", macs: dict | None = None) -> float:
    """Run the upload and the captured graph on the check's inputs; return the largest relative
    deviation, or raise ``CheckFailed`` when the capture is not the upload.  (``what`` and
    ``reference`` name the two in the messages when another pair is compared the same way.)

    ``macs``, if given, receives as ``"captured"`` the MACs of the captured graph's pass at the
    first batch and the input shapes, ``(macs, shapes)``, counted while it runs (missing where it
    could not be counted)."""
    worst = 0.0
    for i, (b, x) in enumerate(check_inputs(sigs, batch_sizes, seed)):
        with torch.no_grad():
            try:
                ref = upload(*x)
            except Exception as exc:
                raise _upload_raises(exc, captured, x, where(b, x), sigs, what, reference) from None
            try:
                got = _counted(captured, x, macs if i == 0 else None, "captured")
            except Exception as exc:
                raise CheckFailed(f"{what} does not run at {where(b, x)}: {first_line(exc)}") from None
        dev = compare_outputs(ref, got)
        if dev.problem:
            raise CheckFailed(f"{what} does not match {reference} at {where(b, x)}: {dev.problem}")
        worst = max(worst, dev.max_rel)
        if dev.max_rel > tolerance:
            raise CheckFailed(
                f"{what} differs from {reference} by {dev.max_rel:.3g} (relative) at {where(b, x)}, "
                f"above the tolerance {tolerance:g}: {what} is wrong for this model"
            )
    return worst


def _upload_raises(exc: BaseException, captured, x: tuple, at: str, sigs: list[InputSignature], what: str,
                   reference: str) -> CheckFailed:
    """The reference raised on the check's inputs: say whether the other model runs there (which
    is what tells a lost part of the model from inputs the model does not take)."""
    error = first_line(exc, with_type=True)
    dims = any(s.vary for s in sigs)
    hint = (" The sizes besides the batch come from spec inputs[i].dims: leave out a dimension the model takes "
            "at one size only." if dims else "")
    try:
        with torch.no_grad():
            captured(*x)
    except Exception:
        return CheckFailed(f"{reference} and {what} both raise at {at} ({error}): the model does not take these "
                           f"input sizes.{hint}")
    return CheckFailed(f"{reference} raises at {at} ({error}) but {what} does not: either the model does not take "
                       f"these input sizes or part of it was lost in capture, so nothing is handed out.{hint}")


def same_outputs(a, b, tolerance: float = 1e-4) -> bool:
    """Whether two models' outputs (any pytree) agree: same structure, shapes and dtypes,
    integers equal, floats within ``tolerance`` of the larger of 1 and the largest finite
    magnitude, NaN and infinities in the same places.

    For the capture-time rewrites (batch relaxation, fused-op decomposition), which must
    reproduce the program they replace before they are used.
    """
    dev = compare_outputs(a, b, scale_floor=1.0, structure=True)
    return dev.problem is None and dev.max_rel <= tolerance
