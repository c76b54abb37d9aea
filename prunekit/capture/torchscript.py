"""Capture through TS2EPConverter: TorchScript uploads, traced or scripted.

The converter is given the example at the capture batch (batch 1 would specialise the program),
then at the model's own batch if it was traced with its batch baked in.  Size arithmetic is
folded before the converter retraces, which keeps dynamic only the dimensions that must stay so
(the batch and the spec's ``inputs[i].dims``) unless scripted control flow was specialised, and a model that takes sizes modulo something is
retraced with only the batch dynamic (see :func:`ts_to_export`).  Fused transformer kernels are
opened in the converter's graph before that one retrace (:func:`.fused.open_fused_graph`).
"""

from __future__ import annotations

import operator

import torch

from ..errors import CaptureFailed, first_line
from ..io.inputs import sample_inputs
from ..torch_compat import batch_only_retrace, converter_graph, no_stack_traces
from .fused import open_fused_graph, open_fused_ops
from .passes import fold_scalar_arithmetic, scalar_ops_to_python
from .quiet import quiet
from .script_branches import has_control_flow, prepare_scripted


# Converter failures whose cause users can act on: a fragment of the error → what to do.
CONVERTER_HINTS = {
    "_nested_tensor_from_mask": (
        "The trace took nn.TransformerEncoder's nested-tensor fast path (a padding mask in inference "
        "mode); trace it with enable_nested_tensor=False, or upload a state-dict or torch.export archive"
    ),
}


def _converter_class():
    """TS2EPConverter with an ``__init__`` that sorts the state dict into parameters and buffers by
    name (``ts_model.named_parameters()``) instead of torch's value comparison of every entry with
    every parameter of the same shape: quadratic in same-shaped layers (ViT-B/16: 1.25 s of CPU,
    ResNet-50 0.14 s).  The sorting does not change the capture: the converter hands parameters and
    buffers alike to one ``GraphModule`` as buffers (``promote_to_parameters`` makes the real
    parameters parameters again); torch's comparison only also called buffers parameters whose
    values happen to equal a parameter's (a fresh BatchNorm's running variance and its weight).
    Everything else is torch's ``__init__`` as checked in ``torch_compat`` (``TS2EP_INIT``)."""
    from torch._export import converter

    class Converter(converter.TS2EPConverter):
        def __init__(self, ts_model, sample_args: tuple, sample_kwargs=None):
            self.ts_model = ts_model
            # through the module attribute, so that torch_compat.converter_graph's patch applies
            self.ts_graph, self.params, _, _ = converter._create_jit_graph(ts_model, sample_args)
            self.sample_args = sample_args
            self.sample_kwargs = sample_kwargs
            self.name_to_param: dict = {}
            self.name_to_buffer: dict = {}
            if not isinstance(ts_model, torch._C.ScriptFunction):
                params = {n for n, _ in ts_model.named_parameters()}
                for k, tensor in ts_model.state_dict().items():
                    (self.name_to_param if k in params else self.name_to_buffer)[k] = tensor
            self.name_to_non_tensor_attributes: dict = {}
            self.name_to_constant: dict = {}
            self.lift_get_attr()

    return Converter


_PADDING_NOTE = ("the TorchScript model computes paddings from its input sizes; "
                 "the pruned model keeps the example's sizes except the batch")


def ts_to_export(ts, example: tuple, notes: list[str], prepared=None, dims: "list[set[int]] | None" = None):
    """TS2EPConverter, with tensorised size arithmetic folded before the converter retraces.

    ``prepared`` (:func:`.script_branches.prepare_scripted`) is the graph to convert when the
    model has control flow; integer size ops are made Python operators so sizes stay symbolic.

    The converter retraces with every dimension dynamic.  Given ``dims`` (a graph without control
    flow: traced, or scripted straight-line code), only the batch and the dimensions ``dims[i]``
    names for input ``i`` are (the contract of spec ``inputs[i].dims``, the same as an eager
    upload's export): each symbol more costs retrace time (ResNet-50: 2.67 s CPU with all dims
    symbolic, 1.39 s with the batch alone).  Scripted code with control flow (``dims`` None)
    keeps every dimension its graph allows free, as before: a scripted
    ``nn.TransformerEncoder`` uploaded at one length is pruned to one that takes any length.

    A model that takes its sizes modulo something (Swin's window padding, ``(7 - W % 7) % 7``) sends the symbolic-shape solver into minutes of work over ``Mod``
    expressions; such a model is retraced with only the batch dimension dynamic instead.

    Fused transformer kernels (``aten._native_multi_head_attention``) are replaced by their
    decompositions in the converter's graph, each checked at the example, before the retrace:
    one export records the opened ops (:func:`.fused.open_fused_graph`).
    """
    class SizeFoldingConverter(_converter_class()):  # the hook torch_compat.TS2EP_RETRACE_HOOK checks
        def retrace_as_exported_program(self, gm, name_to_constant):
            fold_scalar_arithmetic(gm)
            scalar_ops_to_python(gm)
            fused_notes: list[str] = []
            opened[:] = [open_fused_graph(gm, self.sample_args, fused_notes), fused_notes]
            if not any(n.target is operator.mod for n in gm.graph.nodes):  # only folds still in use
                if dims is None:
                    return super().retrace_as_exported_program(gm, name_to_constant)
                with batch_only_retrace(dims):
                    return super().retrace_as_exported_program(gm, name_to_constant)
            if _PADDING_NOTE not in notes:  # once, however many conversion attempts
                notes.append(_PADDING_NOTE)
            with batch_only_retrace():
                return super().retrace_as_exported_program(gm, name_to_constant)

    opened: list = []  # open_fused_graph's verdict and note, of the retrace that succeeded
    if prepared is None:
        converter = SizeFoldingConverter(ts, example)
    else:
        with converter_graph(prepared.graph, prepared.params, prepared.module):
            converter = SizeFoldingConverter(ts, example)
    # The retrace runs the converter's generated code: no node keeps a stack trace from it, but
    # recording one per node cost ResNet-50 0.12 s of CPU.
    with no_stack_traces():
        ep = converter.convert()
    if opened:
        notes.extend(opened[1])
    if not opened or opened[0] is not False:  # fused calls the converter's graph did not show (a
        ep = open_fused_ops(ep, example, notes)  # branch's subgraph) are opened in the program
    return ep


def convert_torchscript(ts, sigs, seed: int, own_batch: int, example: tuple, notes: list[str]):
    """TS2EP at batch 2 (batch 1 would specialise the program); a model traced with its batch
    size baked in converts only at that size, so that is tried next."""
    attempts = [example] + ([sample_inputs(sigs, own_batch, seed)] if own_batch != example[0].shape[0] else [])
    error: BaseException | None = None
    scripted = has_control_flow(ts)
    for ex in attempts:
        try:
            with quiet():
                prepared = prepare_scripted(ts, ex, lambda b: sample_inputs(sigs, b, seed)) if scripted else None
                if prepared is not None:
                    _note_specialised(prepared, notes)
                dims = None if scripted else [{d for d, _ in s.vary} for s in sigs]
                return ts_to_export(ts, ex, notes, prepared, dims), ex
        except CaptureFailed:
            raise
        except Exception as exc:
            error = error or exc
    message = f"the TorchScript model could not be converted to a graph: {first_line(error, with_type=True)}"
    hint = next((h for key, h in CONVERTER_HINTS.items() if key in str(error)), None)
    raise CaptureFailed(f"{message}. {hint}" if hint else message) from None


def _note_specialised(prepared, notes: list[str]) -> None:
    note = (f"the scripted model's control flow was specialised to the example: {prepared.specialised} "
            f"branch(es) on shapes, flags or None-ness replaced by the branch taken")
    if prepared.specialised and note not in notes:
        notes.append(note)
