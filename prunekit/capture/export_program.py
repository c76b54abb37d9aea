"""Capture through ``torch.export``: eager modules (state-dict uploads) and ``.pt2`` programs.

Eager modules are exported with a dynamic batch (falling back to a fixed one, with a note); a
``.pt2`` is used as stored, fitted to its own batch when it was saved static, and re-exported
with a dynamic batch where its graph allows.  Also the helpers that read a program's user
inputs (which input, which shape, whether its batch is dynamic).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..errors import CaptureFailed, InvalidSpec, first_line
from dataclasses import replace

from ..io.inputs import InputSignature, dynamic_dims_text, second_size
from ..verify.check import same_outputs
from .passes import strip_runtime_guards
from .quiet import quiet


def dynamic_shapes(n_inputs: int, sigs: "list[InputSignature] | None" = None, batch: bool = True):
    """``torch.export``'s ``dynamic_shapes``: the batch of every input (one ``Dim``) and every
    dynamic dimension the signatures name besides it (``Dim.DYNAMIC``: torch works out which
    are equal, and fails rather than fixing one to its example size)."""
    dim = torch.export.Dim("batch", min=1, max=65536)
    out = []
    for i in range(n_inputs):
        spec = {0: dim} if batch else {}
        if sigs is not None and i < len(sigs):
            spec.update({d: torch.export.Dim.DYNAMIC for d, _ in sigs[i].vary})
        out.append(spec or None)
    return tuple(out)


def dynamic_dims_of_program(ep, sigs: list[InputSignature]) -> list[InputSignature]:
    """The signatures with every dimension besides the batch that the program takes at any size
    (a symbolic size in its input's metadata) given a second size inside the program's range.
    A size derived from a symbol (``2*s``) follows its symbol; a symbol whose range holds no
    second size stays at its example size."""
    import sympy

    vals = user_input_vals(ep)
    ranges = {str(k): v for k, v in ep.range_constraints.items()}
    value: dict = {}  # symbol -> its example size
    for v, sig in zip(vals, sigs):
        if not isinstance(v, torch.Tensor):
            continue
        for d in range(1, min(v.dim(), len(sig.shape))):
            size = v.shape[d]
            if isinstance(size, torch.SymInt) and isinstance(size.node.expr, sympy.Symbol):
                value.setdefault(size.node.expr, sig.shape[d])
    second: dict = {}
    for sym, size in value.items():
        r = ranges.get(str(sym))
        lo = int(r.lower) if r is not None and r.lower.is_finite else 1
        hi = int(r.upper) if r is not None and r.upper.is_finite else None
        s2 = second_size(size, lo, hi)
        if s2 is not None:
            second[sym] = s2
    out = []
    for i, sig in enumerate(sigs):
        v = vals[i] if i < len(vals) else None
        vary = []
        if isinstance(v, torch.Tensor):
            for d in range(1, min(v.dim(), len(sig.shape))):
                size = v.shape[d]
                if not isinstance(size, torch.SymInt):
                    continue
                expr = size.node.expr
                if expr.free_symbols and expr.free_symbols <= set(second) and expr.free_symbols <= set(value):
                    s2 = expr.subs(second)
                    if s2.is_Integer and int(s2) >= 1:
                        vary.append((d, int(s2)))
        fixed = sorted({d for d, _ in sig.vary} - {d for d, _ in vary})
        if fixed:  # the spec asks for a size the uploaded program was exported without
            raise InvalidSpec(
                f"inputs.{i}.dims names dimension {fixed[0]}, which the uploaded program takes at one size only "
                f"({sig.shape[fixed[0]]}): export it with that dimension dynamic, or leave it out of dims"
            )
        out.append(replace(sig, vary=tuple(vary)))
    return out


def export_eager(module: nn.Module, example: tuple, notes: list[str],
                 sigs: "list[InputSignature] | None" = None) -> tuple["torch.export.ExportedProgram", bool]:
    """Export with a dynamic batch (and the dims ``sigs`` name dynamic); without the batch if
    that fails, and say so.  A named dim that cannot stay dynamic fails the capture."""
    try:
        with quiet():
            return torch.export.export(module, example, dynamic_shapes=dynamic_shapes(len(example), sigs), strict=False), True
    except Exception as exc:  # fall back to a fixed batch, and say so
        dyn_error = first_line(exc, with_type=True)
    try:
        with quiet():
            if sigs is not None and any(s.vary for s in sigs):
                ep = torch.export.export(module, example, dynamic_shapes=dynamic_shapes(len(example), sigs, batch=False),
                                         strict=False)
            else:
                ep = torch.export.export(module, example, strict=False)
    except Exception as exc:
        if sigs is not None and any(s.vary for s in sigs):
            raise CaptureFailed(
                f"the model cannot be captured with {dynamic_dims_text(sigs)} dynamic (spec inputs[i].dims): {dyn_error}"
            ) from None
        raise CaptureFailed(f"torch.export could not capture the model: {first_line(exc, with_type=True)}") from None
    notes.append(f"the batch dimension could not be made dynamic ({dyn_error}); the pruned model keeps batch {example[0].shape[0]}")
    return ep, False


def relax_batch(ep, example: tuple, sigs: "list[InputSignature] | None" = None):
    """Re-export a fixed-batch program with a dynamic batch, if its graph allows it.

    The archive's input guard is dropped first (it is what pins the batch); the result is kept
    only if it computes what the original computes at the original batch size.
    """
    try:
        fixed = fit_example_to_program(ep, example)
        gm = ep.module()
        strip_runtime_guards(gm)
        with quiet():
            relaxed = torch.export.export(gm, example, dynamic_shapes=dynamic_shapes(len(example), sigs), strict=False)
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
            f"inputs: the export archive takes {len(vals)} input(s) ({', '.join(names[:8])}{', ...' if len(names) > 8 else ''}), "
            f"the spec gives {len(sigs)}"
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
