"""The loss the data-driven criteria differentiate, and the evaluation every report carries.

``cross_entropy`` and ``mse`` compare the model's (first) output with the calibration targets.
Without targets (``none``) there is still something to differentiate and to report: for an output
that scores classes (``[batch, classes, ...]``) the original model's own top-1 predictions serve as
labels (how far pruning moves the model from what it said before), otherwise half the mean squared
output.  Evaluation then reports the pruned model's agreement with the original's predictions and
its relative deviation from the original's outputs.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from .calibration import Calibration


def first_tensor(out) -> torch.Tensor:
    """The tensor the loss looks at: the output itself, or the first tensor in a tuple/list/dict."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (list, tuple)):
        for v in out:
            try:
                return first_tensor(v)
            except TypeError:
                continue
    raise TypeError("the model's output holds no tensor")


def scores_classes(out: torch.Tensor) -> bool:
    return out.dim() >= 2 and out.shape[1] > 1 and out.is_floating_point()


def loss_of(kind: str, out: torch.Tensor, targets: torch.Tensor | None, reference: torch.Tensor | None = None) -> torch.Tensor:
    """The scalar loss of one batch; ``reference`` is the original's output (for ``none``)."""
    out = out.float()
    if kind == "cross_entropy":
        return F.cross_entropy(out, targets.long())
    if kind == "mse":
        return F.mse_loss(out, targets.float())
    if reference is not None and scores_classes(out):
        return F.cross_entropy(out, reference.float().argmax(1))
    return 0.5 * out.pow(2).mean()


def evaluate(model: Callable, cal: Calibration, *, reference: Callable | None = None,
             limit: int | None = None) -> dict:
    """Loss and top-1 accuracy (classification) of ``model`` on the held-out samples.

    For ``loss: none`` it reports, against ``reference`` (the original), top-1 ``agreement`` and the
    ``relative_error`` of the outputs; the original itself agrees fully.
    """
    total, n, correct, agree, err_num, err_den = 0.0, 0, 0.0, 0.0, 0.0, 0.0
    classes = True
    with torch.no_grad():
        for x, y in cal.batches("holdout", limit=limit):
            out = first_tensor(model(*x)).float()
            b = int(out.shape[0])
            if cal.loss == "none":
                ref = first_tensor(reference(*x)).float() if reference is not None else out
                err_num += float((out - ref).pow(2).sum())
                err_den += float(ref.pow(2).sum())
                if scores_classes(out):
                    agree += float((out.argmax(1) == ref.argmax(1)).float().mean()) * b
                else:
                    classes = False
            else:
                total += float(loss_of(cal.loss, out, y)) * b
                if cal.loss == "cross_entropy":
                    correct += float((out.argmax(1) == y.long()).float().mean()) * b
            n += b
    if n == 0:
        return {"samples": 0}
    if cal.loss == "none":
        res = {"samples": n, "relative_error": math.sqrt(err_num / err_den) if err_den > 0 else 0.0}
        if classes:
            res["agreement"] = agree / n
        return res
    res = {"samples": n, "loss": total / n}
    if cal.loss == "cross_entropy":
        res["accuracy"] = correct / n
    return res


def evaluation_report(original: dict, pruned: dict, loss: str) -> dict:
    """The report's ``evaluation``: both models on the held-out part and what pruning cost."""
    out = {"loss_fn": loss, "samples": pruned.get("samples", 0), "original": original, "pruned": pruned}
    if "accuracy" in original and "accuracy" in pruned:
        out["accuracy_drop"] = original["accuracy"] - pruned["accuracy"]
    if "loss" in original and "loss" in pruned:
        out["loss_increase"] = pruned["loss"] - original["loss"]
    if "agreement" in pruned:
        out["accuracy_drop"] = 1.0 - pruned["agreement"]  # against the original's own predictions
    return out
