"""Capture a loaded model as one ATen-level ``torch.fx`` graph with a dynamic batch dimension.

Everything downstream (analysis, masking, surgery, export) works on the ``GraphModule`` that
``ExportedProgram.module()`` returns: parameters appear as ``get_attr`` nodes named by their
fully-qualified names, which is exactly what specs refer to.

* eager modules (state-dict uploads): ``torch.export.export(strict=False)``;
* TorchScript: ``torch._export.converter.TS2EPConverter``; params arrive as buffers and are turned
  back into parameters so parameter counts stay meaningful;
* ``.pt2``: used as stored (re-exported with a dynamic batch when it was saved static).

Fused transformer kernels that eval-mode tracing records are then opened up (``fused.py``).

The example batch is 2: a batch of 1 makes export specialise the batch dimension.
"""

from __future__ import annotations

import contextlib
import io
import logging
import operator
import warnings
from dataclasses import dataclass, field

import torch
import torch.fx as fx
import torch.nn as nn

from .check import same_outputs
from .errors import CaptureFailed, first_line
from .fused import open_fused_ops
from .inputs import InputSignature, sample_inputs
from .loading import LoadedModel
from .torch_compat import batch_only_retrace

CAPTURE_BATCH = 2


@dataclass
class Captured:
    gm: fx.GraphModule
    example: tuple[torch.Tensor, ...]
    dynamic_batch: bool
    warnings: list[str] = field(default_factory=list)
    upload: object = None            # the model as uploaded, callable (see upload_runner)
    upload_batch: int | None = None  # the one batch size the upload takes (None: any)


def _dynamic_shapes(n_inputs: int):
    batch = torch.export.Dim("batch", min=1, max=65536)
    return tuple({0: batch} for _ in range(n_inputs))


@contextlib.contextmanager
def _quiet():
    """torch.export logs and warns copiously; users get our summary instead."""
    loggers = [logging.getLogger(n) for n in ("torch._export", "torch.export", "torch._dynamo", "torch.fx.experimental.symbolic_shapes", "torch._export.converter", "torch._subclasses.fake_tensor")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)


def _export(module: nn.Module, example: tuple, notes: list[str]) -> tuple["torch.export.ExportedProgram", bool]:
    try:
        with _quiet():
            return torch.export.export(module, example, dynamic_shapes=_dynamic_shapes(len(example)), strict=False), True
    except Exception as exc:  # fall back to a fixed batch, and say so
        dyn_error = first_line(exc, with_type=True)
    try:
        with _quiet():
            ep = torch.export.export(module, example, strict=False)
    except Exception as exc:
        raise CaptureFailed(f"torch.export could not capture the model: {first_line(exc, with_type=True)}") from None
    notes.append(f"the batch dimension could not be made dynamic ({dyn_error}); the pruned model keeps batch {example[0].shape[0]}")
    return ep, False


_RUNTIME_ASSERTS = tuple(
    getattr(torch.ops.aten, n).default
    for n in ("_assert_scalar", "sym_constrain_range_for_size", "sym_constrain_range", "_assert_tensor_metadata")
    if hasattr(torch.ops.aten, n)
)


def _strip_runtime_guards(gm: fx.GraphModule) -> None:
    """Drop export's input guards (graph nodes and the module's input-check hook) and size assertions.

    They pin the captured widths (``u1 >= 8``) and would fire once channels are removed; the
    masked-vs-pruned check validates shapes instead.
    """
    for node in reversed(list(gm.graph.nodes)):
        if node.op == "call_module" and node.target == "_guards_fn" and not node.users:
            gm.graph.erase_node(node)
        elif node.op == "call_function" and node.target in _RUNTIME_ASSERTS and not node.users:
            gm.graph.erase_node(node)
    gm.graph.eliminate_dead_code()
    if hasattr(gm, "_guards_fn"):
        delattr(gm, "_guards_fn")
    for key, hook in list(gm._forward_pre_hooks.items()):
        if getattr(hook, "__name__", "") == "_check_input_constraints_pre_hook":
            del gm._forward_pre_hooks[key]  # the same input guards, as a hook
    gm.graph.lint()
    gm.recompile()


_SCALAR_OPS = {
    "mul": operator.mul, "add": operator.add, "sub": operator.sub,
    "floor_divide": operator.floordiv, "remainder": operator.mod, "rsub": operator.sub,
}


def _aten_name(node: fx.Node) -> str | None:
    """The ATen op name of a call, whether it targets an overload (``aten.mul.Tensor``, as after
    export) or a packet (``aten.mul``, as in the converter's graph before its retrace)."""
    if node.op != "call_function":
        return None
    if isinstance(node.target, torch._ops.OpOverload):
        return node.target.overloadpacket.__name__
    if isinstance(node.target, torch._ops.OpOverloadPacket):
        return node.target.__name__
    return None


def _fold_scalar_arithmetic(gm: fx.GraphModule) -> None:
    """Turn TS2EP's tensorised size arithmetic back into plain integer arithmetic.

    TorchScript computes ``bsz * num_heads`` on ints; the converter rebuilds it as
    ``scalar_tensor(size) * lifted_tensor`` followed by ``.item()``.  Tracing cannot follow an
    ``.item()``, and the analysis cannot see through it, so the chain is rewritten with
    ``operator`` calls on the sizes themselves.  Run on the converter's graph before its
    retrace, this also keeps padding arithmetic like Swin's ``(7 - W % 7) % 7`` from becoming
    data-dependent sizes the retrace cannot guard on.
    """
    as_int: dict[fx.Node, object] = {}
    graph = gm.graph
    for node in list(graph.nodes):
        if node.op == "get_attr":
            t = getattr(gm, node.target, None) if "." not in node.target else None
            if isinstance(t, torch.Tensor) and t.dim() == 0 and not t.is_floating_point() and t.dtype != torch.bool:
                as_int[node] = int(t.item())
            continue
        name = _aten_name(node)
        if name is None:
            continue
        if name == "scalar_tensor" and not isinstance(node.args[0], float):
            as_int[node] = node.args[0]
        elif name in ("_to_copy", "to") and node.args[0] in as_int:
            dtype = node.kwargs.get("dtype")
            if dtype is None or not dtype.is_floating_point:
                as_int[node] = as_int[node.args[0]]
        elif name in _SCALAR_OPS or (name == "div" and node.kwargs.get("rounding_mode") == "floor"):
            a, b = node.args[0], node.args[1]
            if name == "rsub":  # rsub(a, b, alpha) = b - alpha * a
                if (node.args[2] if len(node.args) > 2 else node.kwargs.get("alpha", 1)) != 1:
                    continue
                a, b = b, a
            va = as_int.get(a, a if isinstance(a, int) else None) if isinstance(a, (fx.Node, int)) else None
            vb = as_int.get(b, b if isinstance(b, int) else None) if isinstance(b, (fx.Node, int)) else None
            if va is None or vb is None:
                continue
            fn = operator.floordiv if name == "div" else _SCALAR_OPS[name]
            with graph.inserting_before(node):
                as_int[node] = graph.call_function(fn, (va, vb))
        elif name == "_local_scalar_dense" and node.args[0] in as_int:
            value = as_int[node.args[0]]
            node.replace_all_uses_with(value) if isinstance(value, fx.Node) else _replace_with_const(node, value)
    graph.eliminate_dead_code()
    gm.recompile()


def _replace_with_const(node: fx.Node, value: int) -> None:
    for user in list(node.users):
        user.args = tuple(_swap(a, node, value) for a in user.args)
        user.kwargs = {k: _swap(v, node, value) for k, v in user.kwargs.items()}


def _swap(v, node, value):
    if v is node:
        return value
    if isinstance(v, (list, tuple)):
        return type(v)(_swap(x, node, value) for x in v)
    return v


def _owner(gm: nn.Module, fqn: str, create: bool = False) -> tuple[nn.Module | None, str]:
    owner_name, _, attr = fqn.rpartition(".")
    mod: nn.Module = gm
    for part in owner_name.split(".") if owner_name else []:
        nxt = getattr(mod, part, None)
        if not isinstance(nxt, nn.Module):
            if not create:
                return None, attr
            nxt = nn.Module()
            setattr(mod, part, nxt)
        mod = nxt
    return mod, attr


def _map_lifted_constants(gm: fx.GraphModule, params: dict[str, torch.Tensor]) -> None:
    """TS2EP turns some parameters (a scripted ``nn.GRU``'s weights) into anonymous lifted
    constants; point them back at their parameter names so specs and reports can use them."""
    missing = {n: t for n, t in params.items() if _owner(gm, n)[0] is None or not hasattr(_owner(gm, n)[0], _owner(gm, n)[1])}
    if not missing:
        return
    for node in gm.graph.nodes:
        if node.op != "get_attr":
            continue
        t = getattr(gm, node.target, None) if "." not in node.target else None
        if not isinstance(t, torch.Tensor):
            continue
        for name, p in list(missing.items()):
            if p.shape == t.shape and p.dtype == t.dtype and torch.equal(p, t):
                owner, attr = _owner(gm, name, create=True)
                owner.register_parameter(attr, nn.Parameter(t.detach().clone(), requires_grad=False))
                node.target = name
                del missing[name]
                break
    gm.recompile()


def _promote_to_parameters(gm: fx.GraphModule, names: set[str]) -> None:
    """TS2EP lifts parameters as buffers; make the originals parameters again."""
    for name in names:
        owner, attr = _owner(gm, name)
        if owner is None:
            continue
        t = owner._buffers.get(attr)
        if t is not None and t.is_floating_point():
            del owner._buffers[attr]
            owner.register_parameter(attr, nn.Parameter(t.detach().clone(), requires_grad=False))


def upload_runner(loaded: LoadedModel):
    """The model exactly as uploaded, as a callable: the ScriptModule, the eager module, or the
    archive's program.  The check compares the captured graph with it (a capture that dropped
    a ``raise`` or a branch must not pass), so it is never the captured graph itself."""
    if loaded.program is not None:
        return loaded.program.module()
    return loaded.module


def upload_fixed_batch(loaded: LoadedModel) -> int | None:
    """The one batch size the upload itself accepts (a fixed-batch ``.pt2``), else ``None``."""
    if loaded.program is None or _batch_is_dynamic(loaded.program):
        return None
    vals = [v for v in _user_input_vals(loaded.program) if isinstance(v, torch.Tensor) and v.dim() > 0]
    return int(vals[0].shape[0]) if vals else None


def _shape_text(example: tuple) -> str:
    return ", ".join(f"inputs.{i} {list(x.shape)} {str(x.dtype).replace('torch.', '')}" for i, x in enumerate(example))


def _probe_upload(run, sigs: list[InputSignature], seed: int, own_batch: int, example: tuple) -> tuple:
    """Run the upload on the example before capturing it.  A model that raises on the example
    is the user's error to see as it is; one that raises only at the capture batch (``if
    x.size(0) > 1: raise``) is captured at its own batch instead."""
    tries = [example] + ([sample_inputs(sigs, own_batch, seed)] if own_batch != example[0].shape[0] else [])
    error: BaseException | None = None
    for ex in tries:
        try:
            with torch.no_grad(), _quiet():
                run(*ex)
            return ex
        except Exception as exc:
            error = error or exc
    raise CaptureFailed(
        f"the uploaded model raises on the example inputs ({_shape_text(tries[-1])}): {first_line(error, with_type=True)}"
    ) from error  # kept as the cause: the worker tells a failed allocation from a model's own error


def capture(loaded: LoadedModel, sigs: list[InputSignature], seed: int = 0) -> Captured:
    """Return the model as a ``GraphModule`` plus the example it was captured with."""
    notes: list[str] = []
    example = sample_inputs(sigs, CAPTURE_BATCH, seed)
    own_batch = sigs[0].shape[0] if sigs else CAPTURE_BATCH
    if loaded.program is not None:
        check_inputs_fit_program(loaded.program, sigs)
        example = _fit_example_to_program(loaded.program, example)
    upload = upload_runner(loaded)
    example = _probe_upload(upload, sigs, seed, own_batch, example)
    if loaded.format == "state_dict":
        try:
            ep, dynamic = _export(loaded.module, example, notes)
        except CaptureFailed:
            if own_batch == example[0].shape[0]:
                raise
            # a model written for one batch size (``x.view(1, -1)``) exports only at that size
            example = sample_inputs(sigs, own_batch, seed)
            ep, dynamic = _export(loaded.module, example, notes)
    elif loaded.format == "torchscript":
        ep, example = _convert_torchscript(loaded.module, sigs, seed, own_batch, example, notes)
        dynamic = _batch_is_dynamic(ep)
        if not dynamic:
            notes.append("the TorchScript model specialises its batch size; the pruned model keeps it")
    else:
        ep = loaded.program
        dynamic = _batch_is_dynamic(ep)
        example = sample_inputs(sigs, CAPTURE_BATCH, seed)  # the probe ran it fitted to the program
        if not dynamic:
            relaxed = _relax_batch(ep, example)
            if relaxed is not None:
                ep, dynamic = relaxed, True
                notes.append("the export archive had a fixed batch size; its batch dimension was made dynamic")
            else:
                notes.append("the export archive has a fixed batch size; the pruned model keeps it")
        example = _fit_example_to_program(ep, example)
    ep = open_fused_ops(ep, example, notes)
    gm = ep.module()
    _strip_runtime_guards(gm)
    if loaded.format == "torchscript":
        _promote_to_parameters(gm, loaded.param_names)
        _map_lifted_constants(gm, dict(loaded.module.named_parameters()))
        _fold_scalar_arithmetic(gm)
    return Captured(gm=gm, example=example, dynamic_batch=dynamic, warnings=notes, upload=upload,
                    upload_batch=upload_fixed_batch(loaded))


# Converter failures whose cause users can act on: a fragment of the error → what to do.
CONVERTER_HINTS = {
    "_nested_tensor_from_mask": (
        "The trace took nn.TransformerEncoder's nested-tensor fast path (a padding mask in inference "
        "mode); trace it with enable_nested_tensor=False, or upload a state-dict or torch.export archive"
    ),
}


_PADDING_NOTE = ("the TorchScript model computes paddings from its input sizes; "
                 "the pruned model keeps the example's sizes except the batch")


def _ts_to_export(ts, example: tuple, notes: list[str]):
    """TS2EPConverter, with tensorised size arithmetic folded before the converter retraces.

    The converter retraces with every dimension dynamic, which keeps sequence lengths and image
    sizes free.  A model that takes its sizes modulo something (Swin's window padding,
    ``(7 - W % 7) % 7``) sends the symbolic-shape solver into minutes of work over ``Mod``
    expressions; such a model is retraced with only the batch dimension dynamic instead.
    """
    from torch._export.converter import TS2EPConverter

    class SizeFoldingConverter(TS2EPConverter):  # the hook torch_compat.TS2EP_RETRACE_HOOK checks
        def retrace_as_exported_program(self, gm, name_to_constant):
            _fold_scalar_arithmetic(gm)
            if not any(n.target is operator.mod for n in gm.graph.nodes):  # only folds still in use
                return super().retrace_as_exported_program(gm, name_to_constant)
            if _PADDING_NOTE not in notes:  # once, however many conversion attempts
                notes.append(_PADDING_NOTE)
            with batch_only_retrace():
                return super().retrace_as_exported_program(gm, name_to_constant)

    return SizeFoldingConverter(ts, example).convert()




def _convert_torchscript(ts, sigs, seed: int, own_batch: int, example: tuple, notes: list[str]):
    """TS2EP at batch 2 (batch 1 would specialise the program); a model traced with its batch
    size baked in converts only at that size, so that is tried next."""
    attempts = [example] + ([sample_inputs(sigs, own_batch, seed)] if own_batch != example[0].shape[0] else [])
    error: BaseException | None = None
    for ex in attempts:
        try:
            with _quiet():
                return _ts_to_export(ts, ex, notes), ex
        except Exception as exc:
            error = error or exc
    message = f"the TorchScript model could not be converted to a graph: {first_line(error, with_type=True)}"
    hint = next((h for key, h in CONVERTER_HINTS.items() if key in str(error)), None)
    raise CaptureFailed(f"{message}. {hint}" if hint else message) from None


def _relax_batch(ep, example: tuple):
    """Re-export a fixed-batch program with a dynamic batch, if its graph allows it.

    The archive's input guard is dropped first (it is what pins the batch); the result is kept
    only if it computes what the original computes at the original batch size.
    """
    try:
        fixed = _fit_example_to_program(ep, example)
        gm = ep.module()
        _strip_runtime_guards(gm)
        with _quiet():
            relaxed = torch.export.export(gm, example, dynamic_shapes=_dynamic_shapes(len(example)), strict=False)
            with torch.no_grad():
                same = same_outputs(ep.module()(*fixed), relaxed.module()(*fixed))
        return relaxed if same else None
    except Exception:
        return None


def _user_input_vals(ep) -> list:
    specs = ep.graph_signature.input_specs
    user = [s.arg.name for s in specs if s.kind == torch.export.graph_signature.InputKind.USER_INPUT]
    vals = {n.name: n.meta.get("val") for n in ep.graph.nodes if n.op == "placeholder"}
    return [vals.get(u) for u in user]


def symbol_names(gm: fx.GraphModule) -> dict[str, str]:
    """``{"s22": "batch", "s7": "inputs.0.shape[2]"}``: the user's names for the graph's
    symbolic input sizes, so that messages speak of their dims, not of torch's symbols."""
    names: dict[str, str] = {}
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    for i, node in enumerate(placeholders):
        val = node.meta.get("val")
        for d, size in enumerate(getattr(val, "shape", ())):
            if isinstance(size, torch.SymInt) and getattr(size.node.expr, "is_Symbol", False):
                names.setdefault(str(size.node.expr), "batch" if d == 0 else f"inputs.{i}.shape[{d}]")
    return names


def humanize_symbols(text: str, names: dict[str, str]) -> str:
    if not names:
        return text
    import re

    return re.sub(r"\b[su]\d+\b", lambda m: names.get(m.group(0), m.group(0)), text)


def check_inputs_fit_program(ep, sigs: list[InputSignature]) -> None:
    """Say which input does not fit a ``.pt2`` program and how, before anything runs it (the
    program's own guard would fail deep inside torch with a dumped graph)."""
    specs = ep.graph_signature.input_specs
    names = [s.arg.name for s in specs if s.kind == torch.export.graph_signature.InputKind.USER_INPUT]
    vals = _user_input_vals(ep)
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


def _batch_is_dynamic(ep) -> bool:
    vals = [v for v in _user_input_vals(ep) if isinstance(v, torch.Tensor) and v.dim() > 0]
    return bool(vals) and all(isinstance(v.shape[0], torch.SymInt) for v in vals)


def _fit_example_to_program(ep, example: tuple) -> tuple:
    """A static .pt2 only accepts its own batch size: rebuild the example at that size."""
    vals = _user_input_vals(ep)
    out = []
    for v, x in zip(vals, example):
        if isinstance(v, torch.Tensor) and v.dim() > 0 and not isinstance(v.shape[0], torch.SymInt):
            b = int(v.shape[0])
            if x.shape[0] != b:
                reps = (b + x.shape[0] - 1) // x.shape[0]
                x = torch.cat([x] * reps)[:b]
        out.append(x)
    return tuple(out)
