"""The model as uploaded, as a callable, and the probe that runs it before capture.

The check holds the captured graph against the upload itself (a capture that lost a ``raise``
must not pass); capture first runs the upload on the example, so an upload that raises is the
user's error, reported as it is.
"""

from __future__ import annotations

import torch

from ..errors import CaptureFailed, first_line
from ..io.inputs import InputSignature, sample_inputs
from ..io.loading import LoadedModel
from .export_program import batch_is_dynamic, user_input_vals
from .quiet import quiet


def upload_runner(loaded: LoadedModel):
    """The model exactly as uploaded, as a callable: the ScriptModule, the eager module, or the
    archive's program.  The check compares the captured graph with it (a capture that dropped
    a ``raise`` or a branch must not pass), so it is never the captured graph itself."""
    if loaded.program is not None:
        return loaded.program.module()
    return loaded.module


def upload_fixed_batch(loaded: LoadedModel) -> int | None:
    """The one batch size the upload itself accepts (a fixed-batch ``.pt2``), else ``None``."""
    if loaded.program is None or batch_is_dynamic(loaded.program):
        return None
    vals = [v for v in user_input_vals(loaded.program) if isinstance(v, torch.Tensor) and v.dim() > 0]
    return int(vals[0].shape[0]) if vals else None


def _shape_text(example: tuple, shown: int = 8) -> str:
    text = ", ".join(f"inputs.{i} {list(x.shape)} {str(x.dtype).replace('torch.', '')}" for i, x in enumerate(example[:shown]))
    return text + (f" and {len(example) - shown:,} more" if len(example) > shown else "")


def probe_upload(run, sigs: list[InputSignature], seed: int, own_batch: int, example: tuple) -> tuple:
    """Run the upload on the example before capturing it.  A model that raises on the example
    is the user's error to see as it is; one that raises only at the capture batch (``if
    x.size(0) > 1: raise``) is captured at its own batch instead."""
    tries = [example] + ([sample_inputs(sigs, own_batch, seed)] if own_batch != example[0].shape[0] else [])
    error: BaseException | None = None
    for ex in tries:
        try:
            with torch.no_grad(), quiet():
                run(*ex)
            return ex
        except Exception as exc:
            error = error or exc
    raise CaptureFailed(
        f"the uploaded model raises on the example inputs ({_shape_text(tries[-1])}): {first_line(error, with_type=True)}"
    ) from error  # kept as the cause: the worker tells a failed allocation from a model's own error
