"""Capture a loaded model as one ATen-level ``torch.fx`` graph with a dynamic batch dimension.

Everything downstream (analysis, masking, surgery, export) works on the ``GraphModule`` that
``ExportedProgram.module()`` returns: parameters appear as ``get_attr`` nodes named by their
fully-qualified names, which is exactly what specs refer to.

* eager modules (state-dict uploads): ``torch.export.export(strict=False)`` (``export_program``);
* TorchScript: ``TS2EPConverter`` (``torchscript``); params arrive as buffers and are turned
  back into parameters so parameter counts stay meaningful (``passes``);
* ``.pt2``: used as stored (re-exported with a dynamic batch when it was saved static).

Fused transformer kernels that eval-mode tracing records are then opened up (``fused``;
for TorchScript inside the conversion, before its retrace).

The example batch is 2: a batch of 1 makes export specialise the batch dimension.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch
import torch.fx as fx

from ..errors import CaptureFailed
from ..io.formats import EAGER_FORMATS
from ..io.inputs import InputSignature, sample_inputs
from ..io.loading import LoadedModel
from ..torch_compat import no_stack_traces
from .export_program import (batch_is_dynamic, check_inputs_fit_program, dynamic_dims_of_program, export_eager,
                             fit_example_to_program, relax_batch)
from .fused import open_fused_ops
from .passes import (fold_scalar_arithmetic, inline_grad_mode, join_ties, map_lifted_constants, promote_to_parameters,
                     strip_runtime_guards)
from .torchscript import convert_torchscript
from .upload import probe_upload, upload_fixed_batch, upload_runner


CAPTURE_BATCH = 2


@dataclass
class Captured:
    gm: fx.GraphModule
    example: tuple[torch.Tensor, ...]
    dynamic_batch: bool
    warnings: list[str] = field(default_factory=list)
    upload: object = None            # the model as uploaded, callable (see upload_runner)
    upload_batch: int | None = None  # the one batch size the upload takes (None: any)
    before: fx.GraphModule | None = None  # the capture before consumers were subselected (prune/inputs.py)
    sigs: list[InputSignature] | None = None  # the inputs, with the dynamic dims besides the batch (``vary``)


def _keeps_dims(gm: fx.GraphModule, sigs: list[InputSignature]) -> None:
    """Every dimension the signatures call dynamic is symbolic in the captured graph's inputs:
    else the pruned model would accept fewer sizes than the upload."""
    vals = [n.meta.get("val") for n in gm.graph.nodes if n.op == "placeholder"]
    lost = [f"inputs.{i} dim {d}" for i, (v, sig) in enumerate(zip(vals, sigs)) for d, _ in sig.vary
            if isinstance(v, torch.Tensor) and d < v.dim() and not isinstance(v.shape[d], torch.SymInt)]
    if lost:
        raise CaptureFailed(f"the capture fixed {', '.join(lost)} to the example's size although the upload takes any "
                            "size there (spec inputs[i].dims): the pruned model would accept fewer input sizes")


def capture(loaded: LoadedModel, sigs: list[InputSignature], seed: int = 0, *,
            stack_traces: bool = True) -> Captured:
    """Return the model as a ``GraphModule`` plus the example it was captured with.

    ``stack_traces=False``: an eager module is exported without recording each node's stack
    trace (the model's source lines, which only an export archive written from the capture
    carries on; ResNet-50: 0.70 -> 0.61 s of CPU).  TorchScript conversion records none either way."""
    notes: list[str] = []
    example = sample_inputs(sigs, CAPTURE_BATCH, seed)
    own_batch = sigs[0].shape[0] if sigs else CAPTURE_BATCH
    if loaded.program is not None:
        check_inputs_fit_program(loaded.program, sigs)
        sigs = dynamic_dims_of_program(loaded.program, sigs)
        example = fit_example_to_program(loaded.program, example)
    upload = upload_runner(loaded)
    example = probe_upload(upload, sigs, seed, own_batch, example)
    if loaded.format in EAGER_FORMATS:
        with contextlib.nullcontext() if stack_traces else no_stack_traces():
            try:
                ep, dynamic = export_eager(loaded.module, example, notes, sigs)
            except CaptureFailed:
                if own_batch == example[0].shape[0]:
                    raise
                # a model written for one batch size (``x.view(1, -1)``) exports only at that size
                example = sample_inputs(sigs, own_batch, seed)
                ep, dynamic = export_eager(loaded.module, example, notes, sigs)
    elif loaded.format == "torchscript":
        ep, example = convert_torchscript(loaded.module, sigs, seed, own_batch, example, notes)
        dynamic = batch_is_dynamic(ep)
        if not dynamic:
            notes.append("the TorchScript model specialises its batch size; the pruned model keeps it")
    else:
        ep = loaded.program
        dynamic = batch_is_dynamic(ep)
        example = sample_inputs(sigs, CAPTURE_BATCH, seed)  # the probe ran it fitted to the program
        if not dynamic:
            relaxed = relax_batch(ep, example, sigs)
            if relaxed is not None:
                ep, dynamic = relaxed, True
                notes.append("the export archive had a fixed batch size; its batch dimension was made dynamic")
            else:
                notes.append("the export archive has a fixed batch size; the pruned model keeps it")
        example = fit_example_to_program(ep, example)
    if loaded.format != "torchscript":  # (the TorchScript conversion opens them before its one retrace)
        ep = open_fused_ops(ep, example, notes)
    gm = ep.module()
    strip_runtime_guards(gm)
    inline_grad_mode(gm)
    if loaded.format == "torchscript":
        promote_to_parameters(gm, loaded.param_names)
        map_lifted_constants(gm, dict(loaded.module.named_parameters()))
        fold_scalar_arithmetic(gm)
    join_ties(gm)
    _keeps_dims(gm, sigs)
    return Captured(gm=gm, example=example, dynamic_batch=dynamic, warnings=notes, upload=upload,
                    upload_batch=upload_fixed_batch(loaded), sigs=sigs)
