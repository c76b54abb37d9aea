"""Build an architecture without its random initial weights, then give it the uploaded ones.

A state-dict upload replaces every parameter the architecture's constructor creates, so drawing
random values for them first only costs time and a second copy of the model in memory (seconds
and gigabytes for a large language model).  While a factory runs under :func:`parameters_on_meta`
every parameter it registers lives on the ``meta`` device (shape and dtype, no storage; the
initialisers become no-ops).  Buffers stay real: some are computed in the constructor and never
saved (rotary frequencies, position ids), and nothing else could recompute them.
:func:`fill` then hands the uploaded tensors to the module with ``load_state_dict(assign=True)``:
they *become* its parameters, with no copy.

Only the thread that builds sees meta parameters (the switch is thread-local), so a server that
builds a model while another thread constructs modules of its own is unaffected.
"""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from typing import Callable

import torch
import torch.nn as nn

_local = threading.local()
_install_lock = threading.Lock()
_installed = False


def _install() -> None:
    """Wrap ``nn.Module.register_parameter`` once (every ``self.weight = Parameter(...)`` goes
    through it); the wrapper does nothing unless this thread is inside ``parameters_on_meta``."""
    global _installed
    with _install_lock:
        if _installed:
            return
        original = nn.Module.register_parameter

        def register_parameter(self: nn.Module, name: str, param: "nn.Parameter | None") -> None:
            if getattr(_local, "depth", 0) and type(param) is nn.Parameter and param.device.type != "meta":
                param = nn.Parameter(param.detach().to("meta"), requires_grad=param.requires_grad)
            original(self, name, param)

        register_parameter.__wrapped__ = original  # type: ignore[attr-defined]
        nn.Module.register_parameter = register_parameter  # type: ignore[method-assign]
        _installed = True


@contextlib.contextmanager
def parameters_on_meta():
    """Parameters registered by this thread inside the block are created on ``meta``."""
    _install()
    _local.depth = getattr(_local, "depth", 0) + 1
    try:
        yield
    finally:
        _local.depth -= 1


def has_meta(module: nn.Module) -> list[str]:
    """Names of the module's tensors that still have no storage."""
    return [n for n, t in list(module.named_parameters()) + list(module.named_buffers()) if t.device.type == "meta"]


def build(factory: Callable[[], nn.Module]) -> tuple[nn.Module, bool]:
    """``(module, empty)``: the factory's module with meta parameters, or, where the constructor
    cannot run on meta parameters, a normally built one (``empty`` False)."""
    try:
        with parameters_on_meta():
            module = factory()
        return module, True
    except Exception:  # e.g. a constructor that computes a buffer from a weight: build it normally
        return factory(), False


def fill(module: nn.Module, state: "dict[str, torch.Tensor]", empty: bool) -> nn.Module:
    """Load ``state`` strictly into ``module``: by assignment (each floating tensor in the dtype
    the module declared) when it was built empty, by copy otherwise."""
    if not empty:
        module.load_state_dict(state, strict=True)
        return module
    declared = module.state_dict(keep_vars=True)
    ready: dict[str, torch.Tensor] = OrderedDict()
    for k, v in state.items():
        want = declared[k].dtype if k in declared else v.dtype
        ready[k] = v.to(want) if v.is_floating_point() and want.is_floating_point and v.dtype != want else v
    meta = getattr(state, "_metadata", None)
    if meta is None:  # modules that version their state (torchvision's MNASNet) read it from here
        meta = getattr(declared, "_metadata", None)
    if meta is not None:
        ready._metadata = meta  # type: ignore[attr-defined]
    module.load_state_dict(ready, strict=True, assign=True)
    return module


def torch_load_mapped(path) -> object:
    """``torch.load`` weights-only, memory-mapped where the file allows (the zip format): the
    tensors are the file's pages, read as they are used, and with :func:`fill` they become the
    module's parameters without ever being copied into the process's own memory.  A legacy
    (non-zip) pickle cannot be mapped and is read whole."""
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as exc:
        if "mmap" not in str(exc):
            raise
    return torch.load(str(path), map_location="cpu", weights_only=True)
