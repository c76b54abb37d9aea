"""Calibration data: a few batches of the user's own inputs (and optional targets).

Pruning blind can only rank weights by their norms; with a sample of real data the engine can
rank by what the data does (Taylor, GradProbe, WANDA), re-estimate BatchNorm statistics, and say
what a prune cost on held-out samples.  The data arrives as a ``.safetensors`` file (tensors only:
nothing in it is code) holding

* ``inputs`` — one input, batch first; or several inputs named after the model's arguments
  (``input_ids``, ``attention_mask``), or ``inputs.0``, ``inputs.1``, ... in argument order;
* ``targets`` (optional) — class indices (integers) for ``cross_entropy``, or values shaped like
  the output for ``mse``.

Everything is validated before any work: a file that does not fit the model or the spec is refused
with :class:`~prunekit.errors.InvalidCalibration` naming the field, never a crash mid-job.
The split into calibration and held-out samples is seeded, so a job is repeatable.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping

import torch

from ..errors import InvalidCalibration
from ..limits import current as current_limits

TARGETS = "targets"
_FIELD = "calibration"


@dataclass
class Calibration:
    """The samples, split: ``train`` for gradients and statistics, ``holdout`` for evaluation."""

    inputs: list[torch.Tensor]         # one tensor per model argument, all with N samples first
    targets: torch.Tensor | None
    names: list[str]                   # the file's key of each input
    train_index: torch.Tensor          # sample indices used for calibration
    holdout_index: torch.Tensor        # sample indices kept for evaluation
    batch_size: int
    num_batches: int
    loss: str                          # cross_entropy | mse | none

    @property
    def samples(self) -> int:
        return int(self.inputs[0].shape[0])

    def batches(self, part: str = "train", *, limit: int | None = None) -> Iterator[tuple[tuple[torch.Tensor, ...], torch.Tensor | None]]:
        """``(inputs, targets)`` batches of ``part`` (``train``: ``num_batches`` of them; ``holdout``: all)."""
        index = self.train_index if part == "train" else self.holdout_index
        count = self.num_batches if part == "train" else math.ceil(len(index) / self.batch_size)
        if limit is not None:
            count = min(count, limit)
        for b in range(count):
            sel = index[b * self.batch_size:(b + 1) * self.batch_size]
            if not len(sel):
                return
            yield tuple(t[sel] for t in self.inputs), (None if self.targets is None else self.targets[sel])

    def example(self, batch: int = 2) -> tuple[torch.Tensor, ...]:
        sel = self.train_index[:batch]
        return tuple(t[sel] for t in self.inputs)


def read_tensors(source: "str | Path | bytes | Mapping[str, torch.Tensor]") -> dict[str, torch.Tensor]:
    """The file's tensors (safetensors only: a format that cannot carry code)."""
    if isinstance(source, Mapping):
        tensors = dict(source)
        if not all(isinstance(v, torch.Tensor) for v in tensors.values()):
            raise InvalidCalibration("every value must be a tensor")
        return tensors
    from safetensors.torch import load, load_file

    try:
        if isinstance(source, (bytes, bytearray)):
            return load(bytes(source))
        return load_file(str(source))
    except Exception as exc:  # safetensors raises its own error types with a short message
        text = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise InvalidCalibration(f"not a readable .safetensors file ({text})") from None


def _natural(key: str) -> tuple:
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", key))


def split_inputs(tensors: dict[str, torch.Tensor], arg_names: list[str] | None) -> tuple[list[str], torch.Tensor | None]:
    """The keys holding the model's inputs, in argument order, and the targets tensor."""
    targets = tensors.get(TARGETS)
    keys = [k for k in tensors if k != TARGETS]
    if not keys:
        raise InvalidCalibration("the file holds no inputs (put them under the key 'inputs')", field=f"{_FIELD}.inputs")
    if keys == ["inputs"]:
        return keys, targets
    if arg_names and set(keys) <= set(arg_names):
        missing = [n for n in arg_names[:len(keys)] if n not in keys]
        if missing:
            raise InvalidCalibration(f"inputs are named after the model's arguments but {missing[0]!r} is missing "
                                     f"(arguments: {', '.join(arg_names)})", field=f"{_FIELD}.{missing[0]}")
        return [n for n in arg_names if n in keys], targets
    stray = [k for k in keys if not re.fullmatch(r"inputs?([._]?\d+)?", k)]
    if stray:
        known = f"the model's arguments ({', '.join(arg_names)}), " if arg_names else ""
        raise InvalidCalibration(f"unknown key {stray[0]!r}: name inputs 'inputs', {known}or 'inputs.0', 'inputs.1', ...; "
                                 "targets 'targets'", field=f"{_FIELD}.{stray[0]}")
    return sorted(keys, key=_natural), targets


def infer_loss(targets: torch.Tensor | None, loss: str | None) -> str:
    if loss is not None:
        if loss != "none" and targets is None:
            raise InvalidCalibration(f"loss {loss!r} needs targets: add a 'targets' tensor to the file, or set loss 'none'",
                                     field=f"{_FIELD}.targets")
        if loss == "cross_entropy" and (targets.is_floating_point() or targets.dtype == torch.bool):
            raise InvalidCalibration(f"cross_entropy needs integer class indices; the targets are {str(targets.dtype)[6:]}",
                                     field=f"{_FIELD}.targets")
        if loss == "mse" and not targets.is_floating_point():
            raise InvalidCalibration(f"mse needs floating-point targets; the targets are {str(targets.dtype)[6:]}",
                                     field=f"{_FIELD}.targets")
        return loss
    if targets is None:
        return "none"
    return "mse" if targets.is_floating_point() else "cross_entropy"


def load_calibration(source, *, sigs=None, arg_names: list[str] | None = None, batch_size: int = 32,
                     num_batches: int | None = None, holdout: float = 0.2, loss: str | None = None,
                     seed: int = 0) -> Calibration:
    """Read and validate the calibration data; ``sigs`` (the example inputs, if any) must fit it."""
    tensors = read_tensors(source)
    keys, targets = split_inputs(tensors, arg_names)
    inputs = [tensors[k] for k in keys]
    n = int(inputs[0].shape[0]) if inputs[0].dim() else 0
    for k, t in zip(keys, inputs):
        if t.dim() == 0:
            raise InvalidCalibration("is a scalar; inputs need a sample dimension first", field=f"{_FIELD}.{k}")
        if t.shape[0] != n:
            raise InvalidCalibration(f"has {t.shape[0]} samples but {keys[0]!r} has {n}", field=f"{_FIELD}.{k}")
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise InvalidCalibration("holds NaN or infinite values", field=f"{_FIELD}.{k}")
    if targets is not None:
        if targets.dim() == 0 or targets.shape[0] != n:
            raise InvalidCalibration(f"must have one row per sample ({n}); shape is {list(targets.shape)}",
                                     field=f"{_FIELD}.targets")
        if targets.is_floating_point() and not torch.isfinite(targets).all():
            raise InvalidCalibration("holds NaN or infinite values", field=f"{_FIELD}.targets")
    if sigs:
        _fit_signatures(keys, inputs, sigs)
    limit = current_limits().max_input_elements
    per_sample = sum(math.prod(t.shape[1:]) for t in inputs)
    if per_sample * batch_size > limit:
        raise InvalidCalibration(f"a batch of {batch_size} samples has {per_sample * batch_size:,} elements, more than "
                                 f"the limit of {limit:,} (PRUNEKIT_MAX_INPUT_ELEMENTS); lower batch_size", field="batch_size")
    loss = infer_loss(targets, loss)
    n_hold = int(math.floor(n * holdout)) if holdout > 0 else 0
    if holdout > 0 and n_hold == 0 and n >= 2:
        n_hold = 1
    n_train = n - n_hold
    if n_train < 1 or (holdout > 0 and n_hold < 1):
        raise InvalidCalibration(f"{n} samples are too few to keep a fraction {holdout} aside and calibrate on the rest",
                                 field=f"{_FIELD}.{keys[0]}")
    if num_batches is None:
        num_batches = max(1, n_train // batch_size) if n_train >= batch_size else 1
    elif num_batches * batch_size > n_train:
        raise InvalidCalibration(f"num_batches {num_batches} × batch_size {batch_size} needs {num_batches * batch_size} "
                                 f"samples but {n_train} remain after the holdout ({n} in the file); lower num_batches "
                                 f"(at most {max(1, n_train // batch_size)}) or batch_size", field="num_batches")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return Calibration(inputs=inputs, targets=targets, names=keys, train_index=order[n_hold:], holdout_index=order[:n_hold],
                       batch_size=batch_size, num_batches=num_batches, loss=loss)


def _fit_signatures(keys: list[str], inputs: list[torch.Tensor], sigs) -> None:
    if len(inputs) != len(sigs):
        raise InvalidCalibration(f"the file holds {len(inputs)} input(s) ({', '.join(keys)}) but the model takes "
                                 f"{len(sigs)}", field=f"{_FIELD}.inputs")
    for k, t, sig in zip(keys, inputs, sigs):
        want = list(sig.shape[1:])
        if list(t.shape[1:]) != want:
            raise InvalidCalibration(f"samples are shaped {list(t.shape[1:])} but the model's input takes {want} "
                                     f"(after the batch dimension)", field=f"{_FIELD}.{k}")
        if t.dtype != sig.dtype and not (t.is_floating_point() and sig.dtype.is_floating_point):
            raise InvalidCalibration(f"dtype {str(t.dtype)[6:]} does not fit the model's input ({str(sig.dtype)[6:]})",
                                     field=f"{_FIELD}.{k}")


def signatures_from(cal: Calibration):
    """Example-input signatures when the spec gives none: the calibration samples' shapes."""
    from ..io.inputs import InputSignature

    out = []
    for t in cal.inputs:
        low, high = 0, 2
        if not t.is_floating_point() and t.dtype != torch.bool and t.numel():
            low, high = int(t.min()), int(t.max()) + 1
        out.append(InputSignature((2, *t.shape[1:]), t.dtype, low, high))
    return out


def check_targets(cal: Calibration, output: torch.Tensor) -> None:
    """Targets against the model's real output (known once it ran): classes in range, shapes."""
    if cal.targets is None:
        return
    t = cal.targets
    if cal.loss == "cross_entropy":
        if output.dim() < 2:
            raise InvalidCalibration(f"cross_entropy needs class scores per sample; the model's output is shaped "
                                     f"{list(output.shape)}", field="loss")
        classes = int(output.shape[1])
        want = [int(s) for s in output.shape[2:]]
        if [int(s) for s in t.shape[1:]] != want:
            raise InvalidCalibration(f"class-index targets must be shaped [samples{''.join(', ' + str(s) for s in want)}] "
                                     f"for an output shaped [batch, {classes}{''.join(', ' + str(s) for s in output.shape[2:])}]; "
                                     f"they are {list(t.shape)}", field=f"{_FIELD}.targets")
        lo, hi = int(t.min()), int(t.max())
        if lo < 0 or hi >= classes:
            bad = lo if lo < 0 else hi
            raise InvalidCalibration(f"class index {bad} is out of range: the model scores {classes} classes (0..{classes - 1})",
                                     field=f"{_FIELD}.targets")
    elif cal.loss == "mse":
        if list(t.shape[1:]) != list(output.shape[1:]):
            raise InvalidCalibration(f"mse targets must be shaped like the output per sample {list(output.shape[1:])}; "
                                     f"they are {list(t.shape[1:])}", field=f"{_FIELD}.targets")
