"""Counting what pruning saves: parameters and multiply-accumulates."""

from __future__ import annotations

import contextlib

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from .gates import GATES_BY_OP

aten = torch.ops.aten
_GATES = {op: g for op, g in GATES_BY_OP.items() if not op.endswith("_cell")}


def count_parameters(module: nn.Module) -> int:
    """Unique parameters: a tensor shared under several names (tied embeddings, by object or,
    as a loaded ``.pt2`` gives them, by memory) counts once."""
    seen: set = set()
    total = 0
    for p in module.parameters():
        key = (id(p),) if p.device.type == "meta" else (
            p.untyped_storage().data_ptr(), p.storage_offset(), tuple(p.shape), tuple(p.stride()), p.dtype)
        if key not in seen:
            seen.add(key)
            total += p.numel()
    return total


def _recurrent_flops(gates: int):
    """FLOPs of a fused recurrent op (torch's counter has no formula for it): per time step and
    sample, each layer and direction does ``G*H*(in + H)`` multiply-adds."""

    def flops(x_shape, hx_shape, params_shapes, has_biases, num_layers, dropout, train, bidirectional,
              batch_first, *args, out_shape=None, **kwargs) -> int:
        steps = x_shape[0] * x_shape[1] if len(x_shape) == 3 else x_shape[0]
        per = 4 if has_biases else 2
        total = 0
        for i in range(0, len(params_shapes), per):
            w_ih, w_hh = params_shapes[i], params_shapes[i + 1]
            total += w_ih[0] * (w_ih[1] + w_hh[1])
        return 2 * steps * total

    return flops


def _shape_of(x):
    if isinstance(x, torch.Tensor):
        return tuple(x.shape)
    if isinstance(x, (list, tuple)):
        return [_shape_of(v) for v in x]
    return x


def _mapping() -> dict:
    out = {}
    for name, gates in _GATES.items():
        op = getattr(aten, name, None)
        if op is not None and hasattr(op, "input"):
            fn = _recurrent_flops(gates)
            out[op.input] = lambda *a, _fn=fn, out_val=None, **k: _fn(*[_shape_of(v) for v in a], **k)
    return out


class MacCounter:
    """Counts the MACs of the forward passes run inside it, as :func:`count_macs` counts them
    (same counter, same formulas for the fused recurrent ops), on real tensors.

    For a pass that runs anyway (the check's first batch): the count then costs no pass of its
    own.  ``macs`` is ``None`` until a pass completed inside the counter."""

    def __init__(self) -> None:
        self.macs: int | None = None
        self._mode: FlopCounterMode | None = None

    def __enter__(self) -> "MacCounter":
        self._mode = FlopCounterMode(display=False, custom_mapping=_mapping())
        self._mode.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        mode, self._mode = self._mode, None
        mode.__exit__(*exc)
        if exc[0] is None:
            self.macs = int(mode.get_total_flops() // 2)


def count_macs(module: nn.Module, inputs: tuple) -> int:
    """MACs of one forward pass at the given inputs (FLOPs of matmul-like ops / 2).

    Runs on fake tensors (shapes only, no arithmetic), falling back to a real pass for ops that
    have no fake implementation; -1 if neither works.
    """
    from torch._subclasses.fake_tensor import FakeTensorMode

    for fake in (True, False):
        try:
            with torch.no_grad(), contextlib.ExitStack() as stack:
                args = inputs
                if fake:
                    mode = stack.enter_context(FakeTensorMode(allow_non_fake_inputs=True))
                    args = tuple(mode.from_tensor(x) if isinstance(x, torch.Tensor) else x for x in inputs)
                counter = stack.enter_context(MacCounter())
                module(*args)
            return counter.macs
        except Exception:
            continue
    return -1
