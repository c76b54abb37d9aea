"""Write the pruned graph in the format asked for, atomically, and read it back to prove it.

* ``torchscript``: ``torch.jit.trace`` of the pruned ``GraphModule`` (batch sizes stay dynamic
  because the graph computes them with ``sym_size``).
* ``export``: ``torch.export.export`` again, with the dynamic batch, then ``torch.export.save``.
* ``state_dict``: ``torch.save`` of the tensors plus ``manifest.json`` with every shape, for
  :func:`prunekit.load_pruned`.
* ``checkpoint``: the same as a checkpoint folder: ``model.safetensors``, ``manifest.json`` and,
  for architectures built from a configuration, ``config.json`` as uploaded
  (``prunekit.load_pruned(folder)`` rebuilds it; ``checkpoint.py`` says why the config alone cannot).

Every file is written under a temporary name and renamed into place, then loaded back and run:
a file that does not load, or computes something else, is never handed out.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Callable

import torch
import torch.fx as fx
import torch.nn as nn

from ..artifacts import ARTIFACT_NAMES, CONFIG_NAME, MANIFEST_NAME
from ..errors import ExportFailed, first_line
from ..graph_copy import shared_copy
from . import empty
from .rebuild import MANIFEST_FORMAT, rebuild_from
from ..capture.export_program import dynamic_shapes as _dynamic_shapes
from ..capture.quiet import quiet as _quiet


@contextlib.contextmanager
def atomic_path(final: Path):
    """Yield a temporary path beside ``final``; rename it into place only on success."""
    final.parent.mkdir(parents=True, exist_ok=True)
    # the suffix stays last: torch.export.save warns about a name not ending in .pt2
    fd, tmp = tempfile.mkstemp(prefix=f".{final.stem}.", suffix=final.suffix, dir=final.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the file from an API running as another user
        os.replace(tmp, final)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


_SIZE_VALUES = (torch.SymInt, torch.SymFloat, torch.SymBool)
_SIZE_ARITHMETIC = ("_operator", "operator", "math")


def _is_size(v: object) -> bool:
    """A graph value that is a *symbolic* size: ``x.size(d)`` or arithmetic on such sizes.

    Only these need the rewriting below; a plain int is a constant in any trace, and a tensor is
    never a size (``operator.getitem`` of an op's tuple output is a tensor: treating it as a size
    rewrote the tensor ops that read it, ``to()`` with a layout and ``index`` among them)."""
    if not isinstance(v, fx.Node):
        return False
    if v.op == "call_method" and v.target == "size":
        return True
    if "val" in v.meta:
        return isinstance(v.meta["val"], _SIZE_VALUES)
    return (v.op == "call_function" and getattr(v.target, "__module__", "") in _SIZE_ARITHMETIC
            and any(_is_size(a) for a in v.args))


def _takes_size(node: fx.Node) -> bool:
    values = list(node.args) + list(node.kwargs.values())
    return any(_is_size(v) for a in values for v in (a if isinstance(a, (list, tuple)) else [a]))


def _traced_slice(x: torch.Tensor, dim: int = 0, start=None, end=None, step: int = 1) -> torch.Tensor:
    """``aten.slice`` by indexing: the tracer records the bounds as the sizes they came from
    (the op itself has no Python binding the tracer follows, so its bounds became constants:
    BERT's ``position_ids[:, :seq]`` was written at the example's length)."""
    return x[(slice(None),) * (dim % x.dim()) + (slice(start, end, step),)]


# Internal ops with no Python binding, and the public op that computes the same thing.
_TRACEABLE_ALIASES = {"_unsafe_view": "reshape"}
_TRACEABLE_FUNCTIONS = {torch.ops.aten.slice.Tensor: _traced_slice}


def _traceable_sizes(gm: fx.GraphModule, for_trace: bool = False) -> fx.GraphModule:
    """Make input-dependent sizes survive ``torch.jit.trace``.

    The tracer records ``x.size(d)`` as ``aten::size`` and follows it into calls made through
    torch's Python bindings, but an ``OpOverload`` call turns it into a constant.  So sizes become
    ``x.size(d)``, and the ops that take a symbolic size (and only those) are called through
    ``torch._C._VariableFunctions`` or as tensor methods (slices by indexing).

    ``for_trace``: a size read back from a tensor (``aten.item`` of a symbolic size, as traced
    TorchScript computes BART's positions: ``arange(tensor(seq) + 0)``) is a Python number to the
    tracer, so a constant; its 0-d tensor is passed on instead, which torch's bindings take for a
    number and the tracer follows.  Scripting needs the ``item`` (a tensor is no ``int`` there).
    """
    gm = shared_copy(gm)
    graph = gm.graph
    for node in list(graph.nodes):
        if node.op != "call_function":
            continue
        if node.target in (torch.ops.aten.sym_size.int, torch.ops.aten.size.int):
            with graph.inserting_before(node):
                new = graph.call_method("size", (node.args[0], node.args[1]))
            node.replace_all_uses_with(new)
            graph.erase_node(node)
    for node in list(graph.nodes):
        if node.op != "call_function" or not isinstance(node.target, torch._ops.OpOverload) or not _takes_size(node):
            continue
        if node.target in _TRACEABLE_FUNCTIONS:
            node.target = _TRACEABLE_FUNCTIONS[node.target]
            continue
        name = _TRACEABLE_ALIASES.get(node.target.overloadpacket.__name__, node.target.overloadpacket.__name__)
        if hasattr(torch._C._VariableFunctions, name):
            node.target = getattr(torch._C._VariableFunctions, name)
        elif hasattr(torch.Tensor, name):
            node.op, node.target = "call_method", name
    if for_trace:  # after the rewrite above, which reads the item as a size
        return _size_items_as_tensors(gm)
    gm.recompile()
    return gm


def _size_items_as_tensors(gm: fx.GraphModule) -> fx.GraphModule:
    """:func:`_traceable_sizes`'s ``for_trace`` step, in place on its result."""
    graph = gm.graph
    for node in list(graph.nodes):
        if (node.op == "call_function" and node.target is torch.ops.aten.item.default
                and isinstance(node.meta.get("val"), _SIZE_VALUES) and isinstance(node.args[0], fx.Node)):
            node.replace_all_uses_with(node.args[0])
            graph.erase_node(node)
    gm.recompile()
    return gm


def _unscriptable_call(gm: fx.GraphModule) -> str | None:
    """An ATen overload the graph still calls (``torch.ops.aten.conv2d.default``): TorchScript
    cannot compile the attribute lookup of an overload, so scripting such a graph always fails
    (and took 0.45 s to say so on ResNet-50).  Only the ops that take symbolic sizes are
    rewritten to scriptable calls, so most captured graphs hold one."""
    for node in gm.graph.nodes:
        if node.op == "call_function" and isinstance(node.target, torch._ops.OpOverload):
            return str(node.target)
    return None


def to_torchscript(gm: fx.GraphModule, example: tuple) -> torch.jit.ScriptModule:
    """Script the pruned graph (sizes stay dynamic, control flow survives); trace if that fails
    or cannot work (see :func:`_unscriptable_call`)."""
    prepared = _traceable_sizes(gm)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        overload = _unscriptable_call(prepared)
        if overload is not None:
            script_error = f"TorchScript cannot compile the ATen overload call {overload}"
        else:
            try:
                return torch.jit.script(prepared)
            except Exception as exc:
                script_error = first_line(exc, with_type=True)
        if any(n.op == "call_function" and isinstance(n.target, torch._ops.HigherOrderOperator) for n in gm.graph.nodes):
            raise ExportFailed(
                f"the model has control flow that TorchScript tracing would drop and scripting failed ({script_error}); "
                "ask for output_format 'export'"
            )
        try:
            # never scripted, ``prepared`` is finished in place; else from a fresh copy of ``gm``
            traceable = _size_items_as_tensors(prepared) if overload is not None else _traceable_sizes(gm, for_trace=True)
            return torch.jit.trace(traceable, example, check_trace=False, strict=False)
        except Exception as exc:
            raise ExportFailed(f"TorchScript conversion of the pruned model failed: {first_line(exc, with_type=True)}") from None


def to_export(gm: fx.GraphModule, example: tuple, dynamic: bool, sigs=None) -> "torch.export.ExportedProgram":
    """Export with the batch (when ``dynamic``) and every dim ``sigs`` calls dynamic left free."""
    try:
        with _quiet():
            if dynamic or (sigs is not None and any(s.vary for s in sigs)):
                shapes = _dynamic_shapes(len(example), sigs, batch=dynamic)
                return torch.export.export(gm, example, dynamic_shapes=shapes, strict=False)
            return torch.export.export(gm, example, strict=False)
    except Exception as exc:
        raise ExportFailed(f"torch.export of the pruned model failed: {first_line(exc, with_type=True)}") from None


def _compact(t: torch.Tensor, seen: set[int]) -> torch.Tensor:
    """``t`` itself when it is all of its storage and no earlier entry holds that storage
    (``torch.save`` writes just it), else a compact copy: a view would drag its whole storage
    into the file, and tied entries are written apart as before (safetensors refuses shared
    ones).  Surgery's outputs and untouched (memory-mapped) weights are compact, so the pruned
    weights are not copied a second time."""
    t = t.detach()
    storage = t.untyped_storage()
    whole = storage.nbytes() == t.numel() * t.element_size() and t.storage_offset() == 0 and t.is_contiguous()
    if whole and t.numel() and storage.data_ptr() not in seen:
        seen.add(storage.data_ptr())
        return t
    return t.clone(memory_format=torch.contiguous_format)


def pruned_state_dict(gm: nn.Module, names: list[str], *, once: bool = False) -> dict[str, torch.Tensor]:
    """The tensors under ``names``; a tied tensor (``ties.py``) stays one tensor under all its
    names (``torch.save`` then stores it once), or with ``once`` appears under its first name only
    (safetensors refuses shared tensors; loading fills the twins from the architecture's ties)."""
    sd, seen = gm.state_dict(), set()
    out: dict[str, torch.Tensor] = {}
    by_view: dict = {}
    for n in names:
        if n not in sd:
            continue
        t = sd[n]
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()), t.dtype)
        if t.numel() and key in by_view:
            if not once:
                out[n] = by_view[key]
            continue
        out[n] = by_view[key] = _compact(t, seen)
    return out


def write(
    gm: fx.GraphModule,
    fmt: str,
    out_dir: Path,
    example: tuple,
    dynamic: bool,
    *,
    architecture: str | None = None,
    config: dict | None = None,
    state_names: list[str] | None = None,
    sigs=None,
    compact: bool = False,
) -> tuple[dict[str, Path], Callable[[], nn.Module]]:
    """Write ``gm`` as ``fmt`` into ``out_dir``; return the artifacts and a loader for the model file.
    ``compact``: an export archive leaves out the nodes' stack traces (debugging text only: on a
    small model the graph's text outweighs its weights)."""
    out_dir = Path(out_dir)
    path = out_dir / ARTIFACT_NAMES[fmt]
    if fmt == "torchscript":
        ts = to_torchscript(gm, example)
        with atomic_path(path) as tmp:
            torch.jit.save(ts, str(tmp))
        return {path.name: path}, lambda: torch.jit.load(str(path), map_location="cpu")
    if fmt == "export":
        ep = to_export(gm, example, dynamic, sigs)
        for node in ep.graph.nodes:  # the re-export's provenance (our own graph's nodes): a third more graph text
            node.meta.pop("from_node", None)
            if compact:
                node.meta.pop("stack_trace", None)
        with atomic_path(path) as tmp:
            torch.export.save(ep, str(tmp))
        return {path.name: path}, lambda: torch.export.load(str(path)).module()
    names = state_names or [n for n, _ in gm.state_dict().items()]
    sd = pruned_state_dict(gm, names, once=fmt == "checkpoint")
    shapes = {n: list(t.shape) for n, t in gm.state_dict().items() if n in set(names)}
    manifest = {
        "format": MANIFEST_FORMAT,
        "architecture": architecture,
        **({"config": config} if config is not None else {}),
        "shapes": shapes,
        "dtypes": {k: str(v.dtype).replace("torch.", "") for k, v in gm.state_dict().items() if k in shapes},
    }
    mpath = out_dir / MANIFEST_NAME
    written = {path.name: path, mpath.name: mpath}
    with atomic_path(path) as tmp:
        if fmt == "checkpoint":
            from safetensors.torch import save_file

            save_file(sd, str(tmp), metadata={"format": "pt"})
        else:
            torch.save(sd, str(tmp))
    with atomic_path(mpath) as tmp:
        tmp.write_text(json.dumps(manifest, indent=2))
    if fmt == "checkpoint" and config is not None:
        cpath = out_dir / CONFIG_NAME
        with atomic_path(cpath) as tmp:
            tmp.write_text(json.dumps(config, indent=2))
        written[cpath.name] = cpath

    def load() -> nn.Module:
        if not architecture:
            raise ExportFailed("a state-dict output needs spec.architecture to be rebuilt")
        if fmt == "checkpoint":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = empty.torch_load_mapped(path)
        return rebuild_from(architecture, config, manifest["shapes"], state)

    return written, load
