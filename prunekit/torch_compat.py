"""Every place PruneKit reaches into torch internals, in one file, each checked before use.

torch's public API does not cover the things PruneKit needs, so it patches or subclasses
private pieces.  Each is listed here with the torch versions it was checked on, and
:func:`check` fails loudly, naming the missing piece, when a torch upgrade removes or renames
what a patch relies on (better a clear error at the first job than a patch that silently does
nothing: for the unpickling patch that would mean running an upload's pickles).

========================= ========================================================= ============
piece                     why                                                       checked on
========================= ========================================================= ============
``untrusted_unpickling``  ``torch.export.load`` unpickles ``.pt2`` payloads with    2.13.0
                          ``weights_only=False``; force weights-only, refuse the
                          rest (``_package.pickle``, ``torch._C._pickle_load_obj``)
``batch_only_retrace``    TS2EPConverter retraces with every dim dynamic; modulo    2.13.0
                          size arithmetic (Swin) then takes minutes to solve, and
                          each extra symbol costs retrace time
                          (``torch.export._trace._export``)
``TS2EP_RETRACE_HOOK``    fold tensorised size arithmetic before the converter      2.13.0
                          retraces (``TS2EPConverter.retrace_as_exported_program``)
``TS2EP_INIT``            sort the state dict into parameters and buffers by name,  2.13.0
                          not by comparing values pairwise (quadratic: 1.25 s on
                          ViT-B/16); ``capture/torchscript.py`` restates
                          ``TS2EPConverter.__init__`` (``lift_get_attr``,
                          ``_create_jit_graph``), a test compares the two
``no_stack_traces``       the converter's retrace records a stack trace per node    2.13.0
                          from generated code, none of which survives
                          (``torch.fx.config.do_not_emit_stack_traces``)
``converter_graph``       hand the converter a graph whose constant control flow    2.13.0
                          was specialised (``converter._create_jit_graph``,
                          ``converter._get_param_count_list``)
========================= ========================================================= ============
"""

from __future__ import annotations

import contextlib
import threading

import torch

CHECKED_ON = ("2.13.0",)
TS2EP_RETRACE_HOOK = "retrace_as_exported_program"
TS2EP_INIT = "lift_get_attr"  # what capture/torchscript.py's restated __init__ calls


class TorchInternalsChanged(RuntimeError):
    """A torch upgrade removed what a patch here relies on."""


def _require(owner, attr: str, what: str) -> None:
    if not hasattr(owner, attr):
        raise TorchInternalsChanged(
            f"torch {torch.__version__} has no {what}, which prunekit/torch_compat.py relies on "
            f"(checked on torch {', '.join(CHECKED_ON)}); update the patch before using this torch"
        )


def check() -> None:
    """Raise :class:`TorchInternalsChanged` if any patched piece is gone."""
    from torch._export.converter import TS2EPConverter
    from torch.export import _trace as export_trace
    from torch.export.pt2_archive import _package

    _require(_package, "pickle", "torch.export.pt2_archive._package.pickle")
    _require(_package, "torch", "torch.export.pt2_archive._package.torch")
    _require(torch._C, "_pickle_load_obj", "torch._C._pickle_load_obj")
    _require(export_trace, "_export", "torch.export._trace._export")
    _require(TS2EPConverter, TS2EP_RETRACE_HOOK, f"TS2EPConverter.{TS2EP_RETRACE_HOOK}")
    _require(TS2EPConverter, TS2EP_INIT, f"TS2EPConverter.{TS2EP_INIT}")
    _require(torch.fx.config, "do_not_emit_stack_traces", "torch.fx.config.do_not_emit_stack_traces")
    from torch._export import converter

    _require(converter, "_create_jit_graph", "torch._export.converter._create_jit_graph")
    _require(converter, "_get_param_count_list", "torch._export.converter._get_param_count_list")


_UNPICKLE_LOCK = threading.Lock()


@contextlib.contextmanager
def untrusted_unpickling(refuse):
    """Force every unpickle inside ``torch.export.load`` to ``weights_only=True``; ``refuse`` is
    called instead of any plain unpickle (it should raise).

    A ``.pt2`` archive may carry pickled payloads (``use_pickle`` weights, opaque constants,
    sample inputs) that torch would otherwise unpickle with ``weights_only=False``, i.e. run code
    from the upload.  Inside this block such payloads load as plain tensors or are refused.
    """
    check()
    from torch.export.pt2_archive import _package

    real_load = torch.load

    def safe_load(f, *args, **kwargs):
        kwargs["weights_only"] = True
        return real_load(f, *args, **kwargs)

    real_pickle = _package.pickle
    real_obj = torch._C._pickle_load_obj
    fake_pickle = type("_NoPickle", (), {"loads": staticmethod(refuse), "load": staticmethod(refuse)})
    with _UNPICKLE_LOCK:
        torch.load = safe_load
        _package.pickle = fake_pickle
        torch._C._pickle_load_obj = refuse
        try:
            yield
        finally:
            torch.load = real_load
            _package.pickle = real_pickle
            torch._C._pickle_load_obj = real_obj


_RETRACE_LOCK = threading.Lock()


@contextlib.contextmanager
def batch_only_retrace(dims: "list[set[int]] | None" = None):
    """Within the converter's retrace, make only dimension 0 of each input dynamic, plus the
    dimensions ``dims[i]`` names for input ``i`` (the ones that must stay dynamic)."""
    check()
    import torch.export._trace as export_trace

    _RETRACE_LOCK.acquire()  # the patch is process-wide: one capture at a time goes through it
    real = export_trace._export

    def batch_only(mod, args, *rest, dynamic_shapes=None, **kwargs):
        if dynamic_shapes is not None:
            dynamic_shapes = tuple(
                {d: torch.export.Dim.AUTO for d in {0, *(dims[i] if dims and i < len(dims) else ())} if d < a.dim()}
                if isinstance(a, torch.Tensor) and a.dim() else None
                for i, a in enumerate(args)
            )
        return real(mod, args, *rest, dynamic_shapes=dynamic_shapes, **kwargs)

    export_trace._export = batch_only
    try:
        yield
    finally:
        export_trace._export = real
        _RETRACE_LOCK.release()


_CONVERTER_LOCK = threading.Lock()


@contextlib.contextmanager
def converter_graph(graph, params: list, module):
    """Within this block, TS2EPConverter converts ``graph`` (the frozen ``forward`` with the
    parameters as trailing inputs, as the converter itself would build it) instead of building
    its own from the module; the input shapes are assigned from the converter's sample, as it does."""
    check()
    from torch._export import converter

    def prepared(model, args):
        args_params = tuple(args) + tuple(params)
        counts = converter._get_param_count_list(graph, args_params)
        flat, _ = torch.jit._flatten(args_params)
        shaped = torch._C._propagate_and_assign_input_shapes(graph, tuple(flat), counts, False, False)
        return shaped, params, None, module

    with _CONVERTER_LOCK:
        real = converter._create_jit_graph
        converter._create_jit_graph = prepared
        try:
            yield
        finally:
            converter._create_jit_graph = real


_STACK_TRACES_LOCK = threading.Lock()
_stack_traces_off = 0


@contextlib.contextmanager
def no_stack_traces():
    """Within this block, tracing records no ``node.meta["stack_trace"]`` (``torch.fx.config``,
    process-wide: an export running in another thread meanwhile records none either, which
    costs it debugging text only).  Nested and concurrent blocks restore torch's setting once
    the last one ends."""
    global _stack_traces_off
    check()
    import torch.fx.config as fx_config

    with _STACK_TRACES_LOCK:
        if _stack_traces_off == 0:
            no_stack_traces.saved = fx_config.do_not_emit_stack_traces
        _stack_traces_off += 1
        fx_config.do_not_emit_stack_traces = True
    try:
        yield
    finally:
        with _STACK_TRACES_LOCK:
            _stack_traces_off -= 1
            if _stack_traces_off == 0:
                fx_config.do_not_emit_stack_traces = no_stack_traces.saved
