"""Capture through ``torch.export``: eager modules (state-dict uploads) and ``.pt2`` programs.

Eager modules are exported with a dynamic batch (falling back to a fixed one, with a note); a
``.pt2`` is used as stored, fitted to its own batch when it was saved static, and re-exported
with a dynamic batch where its graph allows.  Also the helpers that read a program's user
inputs (which input, which shape, whether its batch is dynamic).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..errors import CaptureFailed, first_line
from ..io.inputs import InputSignature
from ..verify.check import same_outputs
from .passes import strip_runtime_guards
from .quiet import quiet


def dynamic_shapes(n_inputs: int):
    batch = torch.export.Dim("batch", min=1, max=65536)
    return tuple({0: batch} for _ in range(n_inputs))


def export_eager(module: nn.Module, example: tuple, notes: list[str]) -> tuple["torch.export.ExportedProgram", bool]:
    try:
        with quiet():
            return torch.export.export(module, example, dynamic_shapes=dynamic_shapes(len(example)), strict=False), True
    except Exception as exc:  # fall back to a fixed batch, and say so
        dyn_error = first_line(exc, with_type=True)
    try:
        with quiet():
            ep = torch.export.export(module, example, strict=False)
    except Exception as exc:
        raise CaptureFailed(f"torch.export could not capture the model: {first_line(exc, with_type=True)}") from None
    notes.append(f"the batch dimension could not be made dynamic ({dyn_error}); the pruned model keeps batch {example[0].shape[0]}")
    return ep, False


def relax_batch(ep, example: tuple):
    """Re-export a fixed-batch program with a dynamic batch, if its graph allows it.

    The archive's input guard is dropped first (it is what pins the batch); the result is kept
    only if it computes what the original computes at the original batch size.
    """
    try:
        fixed = fit_example_to_program(ep, example)
        gm = ep.module()
        strip_runtime_guards(gm)
        with quiet():
            relaxed = torch.export.export(gm, example, dynamic_shapes=dynamic_shapes(len(example)), strict=False)
            with torch.no_grad():
                same = same_outputs(ep.module()(*fixed), relaxed.module()(*fixed))
        return relaxed if same else None
    except Exception:
        return None


def user_input_vals(ep) -> list:
    specs = ep.graph_signature.input_specs
    user = [s.arg.name for s in specs if s.kind == torch.export.graph_signature.InputKind.USER_INPUT]
    vals = {n.name: n.meta.get("val") for n in ep.graph.nodes if n.op == "placeholder"}
    return [vals.get(u) for u in user]


def check_inputs_fit_program(ep, sigs: list[InputSignature]) -> None:
    """Say which input does not fit a ``.pt2`` program and how, before anything runs it (the
    program's own guard would fail deep inside torch with a dumped graph)."""
    specs = ep.graph_signature.input_specs
    names = [s.arg.name for s in specs if s.kind == torch.export.graph_signature.InputKind.USER_INPUT]
    vals = user_input_vals(ep)
    if len(vals) != len(sigs):
        raise CaptureFailed(
            f"inputs: the export archive takes {len(vals)} input(s) ({', '.join(names)}), the spec gives {len(sigs)}"
        )
    for i, (name, v, sig) in enumerate(zip(names, vals, sigs)):
        if not isinstance(v, torch.Tensor):
            continue
        want = ["*" if isinstance(d, torch.SymInt) else int(d) for d in v.shape]
        ok = len(want) == len(sig.shape) and all(w == "*" or w == g or j == 0 for j, (w, g) in enumerate(zip(want, sig.shape)))
        if not ok or v.dtype != sig.dtype:
            shown = "[" + ", ".join(str(w) for w in want) + "]"
            raise CaptureFailed(
                f"inputs.{i}: the export archive's input {name!r} has shape {shown} {str(v.dtype).replace('torch.', '')} "
                f"(* = any size), the spec gives {list(sig.shape)} {str(sig.dtype).replace('torch.', '')}"
            )


def batch_is_dynamic(ep) -> bool:
    vals = [v for v in user_input_vals(ep) if isinstance(v, torch.Tensor) and v.dim() > 0]
    return bool(vals) and all(isinstance(v.shape[0], torch.SymInt) for v in vals)


def fit_example_to_program(ep, example: tuple) -> tuple:
    """A static .pt2 only accepts its own batch size: rebuild the example at that size."""
    vals = user_input_vals(ep)
    out = []
    for v, x in zip(vals, example):
        if isinstance(v, torch.Tensor) and v.dim() > 0 and not isinstance(v.shape[0], torch.SymInt):
            b = int(v.shape[0])
            if x.shape[0] != b:
                reps = (b + x.shape[0] - 1) // x.shape[0]
                x = torch.cat([x] * reps)[:b]
        out.append(x)
    return tuple(out)
