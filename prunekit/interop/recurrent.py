"""Structured pruning of GRU and LSTM layers.

Why recurrent layers need their own treatment
---------------------------------------------
``nn.GRU`` and ``nn.LSTM`` run as one fused operator (``aten::gru`` / ``aten::lstm``, cuDNN on a
GPU).  A graph-based pruning tool sees a single opaque node holding flat weight tensors whose gate
blocks are interleaved; it cannot tell which rows belong to which hidden unit, so it either refuses
to touch the layer or corrupts it.

Even once the cell is written out with ordinary ``nn.Linear`` layers there is a second problem:
the hidden state is both an *input* of every time step (through ``W_hh`` and the elementwise
``z * h`` / ``f * c`` terms) and its *output*.  A tracer sees a cycle, and the state the module
returns (``h_n``, and the per-step outputs) is a boundary that a tool is not free to resize.

What this module does
---------------------
:func:`to_prunable` replaces every ``nn.GRU`` / ``nn.LSTM`` with :class:`PrunableGRU` /
:class:`PrunableLSTM`: the same recurrence, computed step by step from per-layer, per-direction
gate layers (``layers[i].fwd.ih`` = ``Linear(input, G*hidden)``, ``layers[i].fwd.hh`` =
``Linear(hidden, G*hidden)``, G = 3 gates r, z, n for a GRU and 4 gates i, f, g, o for an LSTM, in
PyTorch's order) plus ``layers[i].fwd.hidden_map``, a ``Linear(hidden, hidden)`` initialised to
the identity with zero bias.  Each step computes the new hidden state from the gates, then passes
it through ``hidden_map``; the mapped value is what is emitted and what the next step consumes.
Being the identity it changes nothing numerically, but it gives the hidden state an explicit,
ordinary producer: a *safe pruning point* whose rows and columns a tool can remove together with
the gate rows and ``hh`` columns, which breaks the input-equals-output deadlock.

Every shape is read from the ``Linear`` layers at run time, so after a structural pruning tool (or
:func:`prune_hidden_units`) has removed hidden units the explicit module still runs, with the
smaller sizes, for any batch size and sequence length.

:func:`to_native` goes back: every prunable module becomes a native ``nn.GRU`` / ``nn.LSTM`` with
the (possibly smaller) sizes read from its ``Linear`` layers, so the pruned model runs on the fast
fused kernel again and exports like any other recurrent model.  ``hidden_map`` can be dropped only
if it is still the identity on the units that were kept (see :func:`to_native`); when the
layers of a multi-layer module end up with different hidden sizes, which one native module cannot
express, the result is a :class:`StackedRNN` of single-layer native modules.

Limits: ``PackedSequence`` input is not supported by the explicit form; LSTMs with ``proj_size``
are refused by :func:`to_prunable`.
"""

from __future__ import annotations

import copy
from typing import Callable, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence

from ..gates import GATE_NAMES, GATES_BY_MODE

__all__ = [
    "GateCell",
    "PrunableLayer",
    "PrunableRNNBase",
    "PrunableGRU",
    "PrunableLSTM",
    "StackedRNN",
    "to_prunable",
    "to_native",
    "prune_hidden_units",
    "prune_input_features",
]

_GATE_NAMES = {m: GATE_NAMES[m] for m in ("GRU", "LSTM")}  # the modes converted here
_NATIVE = {"GRU": nn.GRU, "LSTM": nn.LSTM}

# What ``h_n`` / ``h0`` look like: one stacked tensor, or one tensor per (layer, direction).
StateLike = Union[Tensor, Sequence[Tensor]]


# ---------------------------------------------------------------------------------------------
# The explicit, prunable form
# ---------------------------------------------------------------------------------------------


class GateCell(nn.Module):
    """One direction of one layer, written with plain ``nn.Linear`` layers.

    * ``ih``: ``Linear(input_size, G*hidden)``, the input projection of all G gates; the rows of
      gate ``g`` for hidden unit ``j`` are at ``g*hidden + j`` (PyTorch's layout).
    * ``hh``: ``Linear(hidden, G*hidden)``, the recurrent projection, same row layout.
    * ``hidden_map``: ``Linear(hidden, hidden)``, identity with zero bias when created.  It maps the
      state the gates produce to the state that is emitted and fed back.  It exists only so that a
      pruning tool has an ordinary layer at the point where the recurrence closes.

    The gate size (``ih.out_features // G``) and the state size (``hidden_map.out_features``) are
    read from the layers on every call, so the cell keeps working after structural pruning.
    """

    def __init__(self, mode: str, input_size: int, hidden_size: int, bias: bool = True, *,
                 device=None, dtype=None) -> None:
        super().__init__()
        if mode not in _GATE_NAMES:
            raise ValueError(f"unknown recurrent mode {mode!r}; expected 'GRU' or 'LSTM'")
        self.mode = mode
        g = len(_GATE_NAMES[mode])
        kw = {"device": device, "dtype": dtype}
        self.ih = nn.Linear(input_size, g * hidden_size, bias=bias, **kw)
        self.hh = nn.Linear(hidden_size, g * hidden_size, bias=bias, **kw)
        self.hidden_map = nn.Linear(hidden_size, hidden_size, bias=True, **kw)
        self.reset_parameters()

    @property
    def num_gates(self) -> int:
        return len(_GATE_NAMES[self.mode])

    @property
    def gate_size(self) -> int:
        """Hidden units the gates produce (``ih.out_features // G``)."""
        return self.ih.out_features // self.num_gates

    @property
    def state_size(self) -> int:
        """Width of the emitted / fed-back hidden state (``hidden_map.out_features``)."""
        return self.hidden_map.out_features

    def reset_parameters(self) -> None:
        """Native-style init (uniform ±1/sqrt(hidden)) for the gates, identity for hidden_map."""
        bound = 1.0 / max(self.gate_size, 1) ** 0.5
        with torch.no_grad():
            for lin in (self.ih, self.hh):
                nn.init.uniform_(lin.weight, -bound, bound)
                if lin.bias is not None:
                    nn.init.uniform_(lin.bias, -bound, bound)
            self.reset_hidden_map()

    def reset_hidden_map(self) -> None:
        """Set ``hidden_map`` back to the identity with zero bias (it must be square)."""
        w = self.hidden_map.weight
        if w.shape[0] != w.shape[1]:
            raise ValueError(f"hidden_map is {tuple(w.shape)}, not square; cannot make it the identity")
        with torch.no_grad():
            w.copy_(torch.eye(w.shape[0], dtype=w.dtype, device=w.device))
            if self.hidden_map.bias is not None:
                self.hidden_map.bias.zero_()

    def check_shapes(self, where: str = "cell") -> int:
        """Check that the gate layers agree with each other; return the gate size.

        A structural change that removed hidden unit ``j`` must have removed row ``j`` of every
        gate block of ``ih`` and ``hh`` (and column ``j`` of ``hh`` and ``hidden_map``).  Row counts
        that are not a multiple of G, or that differ between ``ih`` and ``hh``, mean it did not.
        """
        g = self.num_gates
        names = "/".join(_GATE_NAMES[self.mode])
        for name in ("ih", "hh"):
            lin = getattr(self, name)
            if lin.out_features % g:
                raise ValueError(
                    f"{where}.{name} has {lin.out_features} output rows, which is not a multiple of "
                    f"the {g} {self.mode} gates ({names}): hidden units must be removed from every "
                    f"gate block together (row j, hidden+j, 2*hidden+j, ...), so the gate blocks "
                    f"are inconsistent")
            if lin.bias is not None and lin.bias.shape[0] != lin.out_features:
                raise ValueError(f"{where}.{name}.bias has {lin.bias.shape[0]} entries but the layer "
                                 f"has {lin.out_features} output rows")
        if self.ih.out_features != self.hh.out_features:
            raise ValueError(
                f"{where}: ih has {self.ih.out_features} gate rows but hh has "
                f"{self.hh.out_features}; both must hold G*hidden rows for the same hidden units")
        h = self.ih.out_features // g
        if self.hidden_map.in_features != h:
            raise ValueError(f"{where}.hidden_map takes {self.hidden_map.in_features} inputs but the "
                             f"gates produce {h} hidden units")
        if self.hh.in_features != self.hidden_map.out_features:
            raise ValueError(
                f"{where}.hh takes {self.hh.in_features} inputs but the fed-back hidden state "
                f"(hidden_map output) has {self.hidden_map.out_features} units")
        return h

    def forward(self, x: Tensor, h: Tensor, c: Tensor | None = None, *, reverse: bool = False
                ) -> tuple[Tensor, Tensor, Tensor | None]:
        """Run the recurrence over a whole sequence.

        ``x`` is ``(T, N, input)``, ``h`` ``(N, state)``, ``c`` ``(N, gate)`` for an LSTM.  With
        ``reverse`` the sequence is consumed from the last step to the first, and output ``t`` is
        the state after reading ``x[T-1] .. x[t]`` (the backward direction of a bidirectional RNN).
        Returns ``(outputs (T, N, state), h_T, c_T)``.
        """
        self.check_shapes()
        g = self.num_gates
        gi_all = self.ih(x)                     # input projections of every step at once
        steps = range(x.shape[0] - 1, -1, -1) if reverse else range(x.shape[0])
        outs: list[Tensor | None] = [None] * x.shape[0]
        lstm = self.mode == "LSTM"
        for t in steps:
            gi = gi_all[t].chunk(g, -1)
            gh = self.hh(h).chunk(g, -1)
            if lstm:
                i = torch.sigmoid(gi[0] + gh[0])
                f = torch.sigmoid(gi[1] + gh[1])
                cand = torch.tanh(gi[2] + gh[2])
                o = torch.sigmoid(gi[3] + gh[3])
                c = f * c + i * cand
                h_new = o * torch.tanh(c)
            else:
                r = torch.sigmoid(gi[0] + gh[0])
                z = torch.sigmoid(gi[1] + gh[1])
                n = torch.tanh(gi[2] + r * gh[2])
                h_new = n + z * (h - n)          # == (1 - z) * n + z * h
            h = self.hidden_map(h_new)
            outs[t] = h
        return torch.stack(outs, 0), h, c  # type: ignore[arg-type]


class PrunableLayer(nn.Module):
    """One layer: ``fwd`` and, when bidirectional, ``bwd`` (otherwise ``bwd`` is ``None``)."""

    def __init__(self, mode: str, input_size: int, hidden_size: int, bias: bool,
                 bidirectional: bool, *, device=None, dtype=None) -> None:
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        self.fwd = GateCell(mode, input_size, hidden_size, bias, **kw)
        self.register_module("bwd", GateCell(mode, input_size, hidden_size, bias, **kw)
                             if bidirectional else None)

    def directions(self) -> list[GateCell]:
        return [self.fwd] if self.bwd is None else [self.fwd, self.bwd]


class PrunableRNNBase(nn.Module):
    """Explicit multi-layer, optionally bidirectional GRU/LSTM made of prunable ``nn.Linear`` s.

    Same constructor arguments, call signature and return structure as the native module:
    ``forward(input, hx=None)`` with ``input`` ``(T, N, F)`` (``(N, T, F)`` if ``batch_first``) or
    unbatched ``(T, F)``; returns ``(output, h_n)`` for a GRU and ``(output, (h_n, c_n))`` for an
    LSTM.  Unpruned, it computes exactly what the native module computes.

    Hidden state convention: while every (layer, direction) has the same hidden size, ``h0`` /
    ``h_n`` are the native stacked tensors ``(num_layers*D, N, H)``.  Once pruning has made the
    sizes differ they cannot be stacked; ``h_n`` is then a tuple with one ``(N, h_k)`` tensor per
    (layer, direction) in native order (layer0 fwd, layer0 bwd, layer1 fwd, ...), so ``h_n[k]`` is
    what native ``h_n[k]`` would be, and ``h0`` may be given the same way (always accepted).
    """

    MODE = ""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False, *,
                 device=None, dtype=None) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError("num_layers must be at least 1")
        if not 0.0 <= float(dropout) <= 1.0:
            raise ValueError(f"dropout must be in [0, 1], got {dropout}")
        d = 2 if bidirectional else 1
        self.layers = nn.ModuleList(
            PrunableLayer(self.MODE, input_size if i == 0 else d * hidden_size, hidden_size, bias,
                          bidirectional, device=device, dtype=dtype)
            for i in range(num_layers))
        self.batch_first = bool(batch_first)
        self.dropout = float(dropout)
        self.bidirectional = bool(bidirectional)

    # -- sizes read from the Linear layers -------------------------------------------------
    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def input_size(self) -> int:
        return self.layers[0].fwd.ih.in_features

    def cells(self) -> list[GateCell]:
        """All cells in native ``h_n`` order: layer0 fwd, layer0 bwd, layer1 fwd, ..."""
        return [c for layer in self.layers for c in layer.directions()]

    @property
    def hidden_sizes(self) -> list[int]:
        """Fed-back state size of every (layer, direction), in native ``h_n`` order."""
        return [c.state_size for c in self.cells()]

    def extra_repr(self) -> str:
        return (f"input_size={self.input_size}, hidden_sizes={self.hidden_sizes}, "
                f"num_layers={self.num_layers}, bidirectional={self.bidirectional}, "
                f"batch_first={self.batch_first}, dropout={self.dropout}")

    # -- forward ----------------------------------------------------------------------------
    def forward(self, input: Tensor, hx=None):
        name = type(self).__name__
        x, unbatched = _to_seq_first(input, self.batch_first, name)
        n = x.shape[1]
        cells = self.cells()
        for k, cell in enumerate(cells):
            cell.check_shapes(f"{name}.cells()[{k}]")
        h_sizes = [c.state_size for c in cells]
        lstm = self.MODE == "LSTM"
        if lstm:
            h_spec, c_spec = _split_lstm_hx(hx, name)
            hs = _parse_state(h_spec, h_sizes, n, unbatched, x, f"{name}: h0")
            cs = _parse_state(c_spec, [c.gate_size for c in cells], n, unbatched, x, f"{name}: c0")
        else:
            hs = _parse_state(hx, h_sizes, n, unbatched, x, f"{name}: hx")
            cs = [None] * len(cells)

        h_out: list[Tensor] = []
        c_out: list[Tensor] = []
        k = 0
        for li, layer in enumerate(self.layers):
            if li > 0 and self.dropout > 0 and self.training:
                x = F.dropout(x, self.dropout, training=True)
            outs = []
            for di, cell in enumerate(layer.directions()):
                if cell.ih.in_features != x.shape[-1]:
                    raise ValueError(f"{name}.layers[{li}].{('fwd', 'bwd')[di]}.ih expects "
                                     f"{cell.ih.in_features} input features, got {x.shape[-1]}")
                out, h_t, c_t = cell(x, hs[k], cs[k], reverse=di == 1)
                outs.append(out)
                h_out.append(h_t)
                if lstm:
                    c_out.append(c_t)
                k += 1
            x = outs[0] if len(outs) == 1 else torch.cat(outs, -1)

        output = _from_seq_first(x, self.batch_first, unbatched)
        h_n = _pack_state(h_out, unbatched)
        if lstm:
            return output, (h_n, _pack_state(c_out, unbatched))
        return output, h_n


class PrunableGRU(PrunableRNNBase):
    """Explicit GRU (gates r, z, n).  Per step, for each (layer, direction)::

        r  = sigmoid(W_ir x + b_ir + W_hr h + b_hr)
        z  = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
        n  = tanh(W_in x + b_in + r * (W_hn h + b_hn))
        h' = hidden_map((1 - z) * n + z * h)
    """

    MODE = "GRU"


class PrunableLSTM(PrunableRNNBase):
    """Explicit LSTM (gates i, f, g, o).  Per step, for each (layer, direction)::

        i, f, g, o = sigmoid, sigmoid, tanh, sigmoid of (W_i* x + b_i* + W_h* h + b_h*)
        c' = f * c + i * g
        h' = hidden_map(o * tanh(c'))
    """

    MODE = "LSTM"


# ---------------------------------------------------------------------------------------------
# The native form for layers of different sizes
# ---------------------------------------------------------------------------------------------


class StackedRNN(nn.Module):
    """A multi-layer GRU/LSTM whose layers have different hidden sizes, built of native modules.

    One native ``nn.GRU``/``nn.LSTM`` needs a single ``hidden_size`` for every layer and both
    directions; after pruning, layers usually differ.  :func:`to_native` then emits this module:
    each entry of ``layers`` is one layer, either a native single-layer module (bidirectional when
    both directions kept the same size) or an ``nn.ModuleList([fwd, bwd])`` of two unidirectional
    native modules, the second run on the time-reversed sequence.  Every layer still runs on the
    fused kernel.  The per-layer modules are sequence-first; this wrapper handles ``batch_first``,
    unbatched input and the inter-layer dropout (training mode only, as natively).

    ``forward(input, hx=None)`` has the native signature.  ``h_n`` (and ``c_n``) follow the
    :class:`PrunableRNNBase` convention: the native stacked tensor if all sizes happen to agree,
    otherwise a tuple of per-(layer, direction) tensors in native order, so ``h_n[-1]`` is the
    last layer's final state exactly as with a native module.  ``h0`` is accepted in either form.
    """

    def __init__(self, layers: Sequence[nn.Module], *, batch_first: bool = False,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        if not len(self.layers):
            raise ValueError("StackedRNN needs at least one layer")
        modes = set()
        for i, entry in enumerate(self.layers):
            mods = list(entry) if isinstance(entry, nn.ModuleList) else [entry]
            if isinstance(entry, nn.ModuleList) and (
                    len(mods) != 2 or any(m.bidirectional for m in mods)):
                raise ValueError(f"StackedRNN layer {i}: a ModuleList entry must hold two "
                                 "unidirectional modules (fwd, bwd)")
            for m in mods:
                if not isinstance(m, (nn.GRU, nn.LSTM)) or m.num_layers != 1 or m.batch_first:
                    raise ValueError(f"StackedRNN layer {i}: entries must be single-layer, "
                                     "sequence-first nn.GRU/nn.LSTM modules")
                if isinstance(m, nn.LSTM) and m.proj_size:
                    raise ValueError(f"StackedRNN layer {i}: LSTM proj_size is not supported")
                modes.add("LSTM" if isinstance(m, nn.LSTM) else "GRU")
        if len(modes) != 1:
            raise ValueError("StackedRNN layers must all be GRUs or all be LSTMs")
        self.mode = modes.pop()
        self.batch_first = bool(batch_first)
        self.dropout = float(dropout)

    @staticmethod
    def _directions(entry: nn.Module) -> list[int]:
        if isinstance(entry, nn.ModuleList):
            return [entry[0].hidden_size, entry[1].hidden_size]
        return [entry.hidden_size] * (2 if entry.bidirectional else 1)

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def input_size(self) -> int:
        first = self.layers[0]
        return (first[0] if isinstance(first, nn.ModuleList) else first).input_size

    @property
    def bidirectional(self) -> bool:
        return len(self._directions(self.layers[0])) == 2

    @property
    def hidden_sizes(self) -> list[int]:
        """Hidden size of every (layer, direction), in native ``h_n`` order."""
        return [s for entry in self.layers for s in self._directions(entry)]

    def extra_repr(self) -> str:
        return f"hidden_sizes={self.hidden_sizes}, batch_first={self.batch_first}, dropout={self.dropout}"

    def forward(self, input: Tensor, hx=None):
        name = type(self).__name__
        x, unbatched = _to_seq_first(input, self.batch_first, name)
        n = x.shape[1]
        sizes = self.hidden_sizes
        lstm = self.mode == "LSTM"
        if lstm:
            h_spec, c_spec = _split_lstm_hx(hx, name)
            hs = _parse_state(h_spec, sizes, n, unbatched, x, f"{name}: h0")
            cs = _parse_state(c_spec, sizes, n, unbatched, x, f"{name}: c0")
        else:
            hs = _parse_state(hx, sizes, n, unbatched, x, f"{name}: hx")
            cs = []

        def call(mod: nn.Module, inp: Tensor, idx: list[int]):
            h0 = torch.stack([hs[i] for i in idx], 0)
            if lstm:
                out, (h_n, c_n) = mod(inp, (h0, torch.stack([cs[i] for i in idx], 0)))
                return out, list(h_n.unbind(0)), list(c_n.unbind(0))
            out, h_n = mod(inp, h0)
            return out, list(h_n.unbind(0)), []

        h_out: list[Tensor] = []
        c_out: list[Tensor] = []
        k = 0
        for li, entry in enumerate(self.layers):
            if li > 0 and self.dropout > 0 and self.training:
                x = F.dropout(x, self.dropout, training=True)
            if isinstance(entry, nn.ModuleList):
                out_f, h_f, c_f = call(entry[0], x, [k])
                out_b, h_b, c_b = call(entry[1], x.flip(0), [k + 1])
                x = torch.cat([out_f, out_b.flip(0)], -1)
                h_out += h_f + h_b
                c_out += c_f + c_b
                k += 2
            else:
                d = 2 if entry.bidirectional else 1
                x, h_l, c_l = call(entry, x, list(range(k, k + d)))
                h_out += h_l
                c_out += c_l
                k += d

        output = _from_seq_first(x, self.batch_first, unbatched)
        h_n = _pack_state(h_out, unbatched)
        if lstm:
            return output, (h_n, _pack_state(c_out, unbatched))
        return output, h_n


# ---------------------------------------------------------------------------------------------
# Input / state plumbing shared by both forms
# ---------------------------------------------------------------------------------------------


def _to_seq_first(input: Tensor, batch_first: bool, name: str) -> tuple[Tensor, bool]:
    if isinstance(input, PackedSequence):
        raise TypeError(f"{name} does not support PackedSequence input; pad the batch instead")
    if not isinstance(input, Tensor):
        raise TypeError(f"{name} expects a tensor input, got {type(input).__name__}")
    if input.dim() not in (2, 3):
        raise ValueError(f"{name}: expected 2-D (unbatched) or 3-D (batched) input, "
                         f"got {input.dim()}-D")
    if input.dim() == 2:
        x, unbatched = input.unsqueeze(1), True       # batch_first does not apply, as natively
    else:
        x, unbatched = (input.transpose(0, 1) if batch_first else input), False
    if x.shape[0] == 0:
        raise ValueError(f"{name}: the sequence length must be at least 1")
    return x, unbatched


def _from_seq_first(x: Tensor, batch_first: bool, unbatched: bool) -> Tensor:
    if unbatched:
        return x.squeeze(1)
    return x.transpose(0, 1) if batch_first else x


def _split_lstm_hx(hx, name: str):
    if hx is None:
        return None, None
    if not isinstance(hx, (tuple, list)) or len(hx) != 2:
        raise TypeError(f"{name}: an LSTM takes hx=(h0, c0)")
    return hx[0], hx[1]


def _parse_state(hx: StateLike | None, sizes: list[int], n: int, unbatched: bool, ref: Tensor,
                 what: str) -> list[Tensor]:
    """Turn a user state (None, stacked tensor, or per-(layer, direction) sequence) into a list of
    ``(N, size_k)`` tensors."""
    k = len(sizes)
    if hx is None:
        return [ref.new_zeros(n, s) for s in sizes]
    if isinstance(hx, Tensor):
        if len(set(sizes)) != 1:
            raise ValueError(
                f"{what}: the hidden sizes differ across layers/directions ({sizes}), so the state "
                f"cannot be one stacked tensor; pass a sequence of {k} tensors, one per "
                f"(layer, direction)")
        want = (k, sizes[0]) if unbatched else (k, n, sizes[0])
        if tuple(hx.shape) != want:
            raise ValueError(f"{what}: expected shape {want}, got {tuple(hx.shape)}")
        parts = list(hx.unbind(0))
    elif isinstance(hx, (list, tuple)):
        if len(hx) != k:
            raise ValueError(f"{what}: expected {k} per-(layer, direction) tensors, got {len(hx)}")
        parts = list(hx)
        for i, (p, s) in enumerate(zip(parts, sizes)):
            want = (s,) if unbatched else (n, s)
            if not isinstance(p, Tensor) or tuple(p.shape) != want:
                got = tuple(p.shape) if isinstance(p, Tensor) else type(p).__name__
                raise ValueError(f"{what}[{i}]: expected shape {want}, got {got}")
    else:
        raise TypeError(f"{what}: expected a tensor or a sequence of tensors, "
                        f"got {type(hx).__name__}")
    return [p.unsqueeze(0) for p in parts] if unbatched else parts


def _pack_state(parts: list[Tensor], unbatched: bool) -> StateLike:
    if len({p.shape[-1] for p in parts}) == 1:
        out = torch.stack(parts, 0)
        return out.squeeze(1) if unbatched else out
    return tuple(p.squeeze(0) for p in parts) if unbatched else tuple(parts)


# ---------------------------------------------------------------------------------------------
# Conversions
# ---------------------------------------------------------------------------------------------


def _replace_modules(model: nn.Module, match: Callable[[nn.Module], bool],
                     convert: Callable[[nn.Module], nn.Module]) -> nn.Module:
    """Replace matching modules (in place on ``model``); a shared module is converted once."""
    if match(model):
        return convert(model)
    memo: dict[int, nn.Module] = {}

    def visit(parent: nn.Module) -> None:
        # ``_modules`` rather than ``named_children()``: the latter skips repeated (shared) entries.
        for name, child in list(parent._modules.items()):
            if child is None:
                continue
            if match(child):
                if id(child) not in memo:
                    memo[id(child)] = convert(child)
                setattr(parent, name, memo[id(child)])
            elif id(child) not in seen:
                seen.add(id(child))
                visit(child)

    seen: set[int] = set()
    visit(model)
    return model


def _native_to_prunable(rnn: nn.Module) -> PrunableRNNBase:
    mode = "LSTM" if isinstance(rnn, nn.LSTM) else "GRU"
    if mode == "LSTM" and getattr(rnn, "proj_size", 0):
        raise ValueError(
            f"nn.LSTM with proj_size={rnn.proj_size} is not supported: its projected hidden state "
            f"has no explicit prunable form here; convert an LSTM without proj_size")
    if getattr(rnn, "mode", mode) != mode:
        raise ValueError(f"unsupported recurrent mode {rnn.mode!r}")
    ref = rnn.weight_ih_l0
    cls = PrunableLSTM if mode == "LSTM" else PrunableGRU
    # Build on the meta device so that conversion neither spends time on a throw-away random
    # init nor consumes the global RNG; every value is then copied from the native module.
    out = cls(rnn.input_size, rnn.hidden_size, rnn.num_layers, bias=rnn.bias,
              batch_first=rnn.batch_first, dropout=rnn.dropout, bidirectional=rnn.bidirectional,
              device="meta", dtype=ref.dtype).to_empty(device=ref.device)
    with torch.no_grad():
        for li, layer in enumerate(out.layers):
            for di, cell in enumerate(layer.directions()):
                sfx = f"l{li}" + ("_reverse" if di else "")
                cell.ih.weight.copy_(getattr(rnn, f"weight_ih_{sfx}"))
                cell.hh.weight.copy_(getattr(rnn, f"weight_hh_{sfx}"))
                if rnn.bias:
                    cell.ih.bias.copy_(getattr(rnn, f"bias_ih_{sfx}"))
                    cell.hh.bias.copy_(getattr(rnn, f"bias_hh_{sfx}"))
                cell.reset_hidden_map()
    out.train(rnn.training)
    return out


def to_prunable(model: nn.Module) -> nn.Module:
    """Return a copy of ``model`` with every ``nn.GRU`` / ``nn.LSTM`` made explicit and prunable.

    The fused recurrent operator is opaque to graph-based structural pruning, and its hidden state
    is both input and output of every step.  Each native module becomes a :class:`PrunableGRU` /
    :class:`PrunableLSTM` of per-layer, per-direction ``ih`` / ``hh`` gate ``Linear`` layers and
    an identity ``hidden_map`` (the safe pruning point), numerically equal to the original for
    any batch size, sequence length, ``batch_first`` and unbatched input.  Any number of layers,
    bidirectional or not, with or without bias.  ``model`` itself is not modified.

    Raises ``ValueError`` for an ``nn.LSTM`` with ``proj_size > 0``.
    """
    is_native = lambda m: isinstance(m, (nn.GRU, nn.LSTM))  # noqa: E731
    if is_native(model):
        return _native_to_prunable(model)
    return _replace_modules(copy.deepcopy(model), is_native, _native_to_prunable)


def _foldable_size(cell: GateCell, where: str, atol: float) -> int:
    """Check that ``cell`` can be written as a native cell; return its hidden size."""
    h = cell.check_shapes(where)
    hm = cell.hidden_map
    if hm.out_features != h:
        raise ValueError(
            f"{where}.hidden_map maps the {h} hidden units the gates produce to "
            f"{hm.out_features} units that are emitted and fed back.  A native {cell.mode} carries "
            f"one hidden state that is both the output of a step and the input of the next, so the "
            f"same units must be removed from hidden_map's rows and columns (and from hh's "
            f"columns); prune the hidden state as a whole")
    w = hm.weight.detach()
    eye = torch.eye(h, dtype=w.dtype, device=w.device)
    w_err = (w - eye).abs().max().item() if h else 0.0
    b_err = hm.bias.detach().abs().max().item() if hm.bias is not None and h else 0.0
    if w_err > atol or b_err > atol:
        raise ValueError(
            f"{where}.hidden_map is not the identity on the kept hidden units "
            f"(max |W - I| = {w_err:.3g}, max |b| = {b_err:.3g}, tolerance {atol:g}).  It sits "
            f"between the gate nonlinearities of consecutive time steps (and the elementwise "
            f"gating pairs state unit j with gate unit j), so a general matrix cannot be folded "
            f"into native weights; it can only be dropped when rows and columns were pruned with "
            f"the same kept units in the same order and its values were left untouched (freeze it "
            f"while fine-tuning)")
    return h


def _load_native_cell(native: nn.Module, layer: int, reverse: bool, cell: GateCell) -> None:
    sfx = f"l{layer}" + ("_reverse" if reverse else "")
    with torch.no_grad():
        getattr(native, f"weight_ih_{sfx}").copy_(cell.ih.weight)
        getattr(native, f"weight_hh_{sfx}").copy_(cell.hh.weight)
        if native.bias:
            for name, lin in (("ih", cell.ih), ("hh", cell.hh)):
                target = getattr(native, f"bias_{name}_{sfx}")
                if lin.bias is None:        # one of ih/hh lost its bias: a zero bias is the same
                    target.zero_()
                else:
                    target.copy_(lin.bias)


def _prunable_to_native(m: PrunableRNNBase, atol: float) -> nn.Module:
    name = type(m).__name__
    cls = _NATIVE[m.MODE]
    ref = m.layers[0].fwd.ih.weight
    kw = {"device": ref.device, "dtype": ref.dtype}
    per_layer: list[list[int]] = []
    in_sizes: list[int] = []
    for li, layer in enumerate(m.layers):
        sizes = []
        for di, cell in enumerate(layer.directions()):
            where = f"{name}.layers[{li}].{('fwd', 'bwd')[di]}"
            sizes.append(_foldable_size(cell, where, atol))
            want = in_sizes[-1] if di else (sum(per_layer[-1]) if li else cell.ih.in_features)
            if cell.ih.in_features != want:
                raise ValueError(f"{where}.ih takes {cell.ih.in_features} input features but "
                                 f"{'the previous layer emits' if li else 'the fwd direction takes'} "
                                 f"{want}")
            if di == 0:
                in_sizes.append(cell.ih.in_features)
        per_layer.append(sizes)

    def has_bias(cells: list[GateCell]) -> bool:
        return any(lin.bias is not None for c in cells for lin in (c.ih, c.hh))

    flat = [s for sizes in per_layer for s in sizes]
    if len(set(flat)) == 1:
        native = cls(in_sizes[0], flat[0], num_layers=m.num_layers, bias=has_bias(m.cells()),
                     batch_first=m.batch_first, dropout=m.dropout,
                     bidirectional=m.bidirectional, **kw)
        for li, layer in enumerate(m.layers):
            for di, cell in enumerate(layer.directions()):
                _load_native_cell(native, li, di == 1, cell)
    else:
        entries: list[nn.Module] = []
        for li, layer in enumerate(m.layers):
            cells = layer.directions()
            bias = has_bias(cells)
            if len(set(per_layer[li])) == 1:
                nat = cls(in_sizes[li], per_layer[li][0], num_layers=1, bias=bias,
                          bidirectional=len(cells) == 2, **kw)
                for di, cell in enumerate(cells):
                    _load_native_cell(nat, 0, di == 1, cell)
                entries.append(nat)
            else:                           # both directions, different sizes
                pair = nn.ModuleList(cls(in_sizes[li], s, num_layers=1, bias=bias, **kw)
                                     for s in per_layer[li])
                for nat, cell in zip(pair, cells):
                    _load_native_cell(nat, 0, False, cell)
                entries.append(pair)
        native = StackedRNN(entries, batch_first=m.batch_first, dropout=m.dropout)
    native.train(m.training)
    return native


def to_native(model: nn.Module, *, atol: float = 1e-6) -> nn.Module:
    """Return a copy of ``model`` with every prunable module turned back into native form.

    Sizes are read from the (possibly pruned) ``Linear`` layers: the input size from layer 0's
    ``ih.in_features``, each hidden size from ``ih.out_features // G``.  The result runs on the
    fused kernel again, so the pruned model is as fast, scriptable and exportable as a native one.

    Folding ``hidden_map``: it is applied to the state every step.  It can be dropped only if it
    is still the identity (within ``atol``, zero bias) on the units that were kept, which is what
    a structural change that removes the same units from its rows and its columns leaves behind.
    A non-square map, or a square map that is not the identity (units removed from rows and
    columns differently, or values changed by fine-tuning), sits between the gate nonlinearities
    of consecutive steps and has no native equivalent: ``ValueError``.  Gate layers whose rows
    are not a multiple of G, or that disagree with each other or with the next layer's input,
    also raise ``ValueError``.

    Sizes: if every (layer, direction) has the same hidden size the result is one native
    ``nn.GRU``/``nn.LSTM`` (same ``num_layers``, ``bidirectional``, ``batch_first``,
    ``dropout``).  Otherwise it is a :class:`StackedRNN` of single-layer native modules with the
    same call signature, whose ``h_n`` is a tuple of per-(layer, direction) tensors (a native
    stacked tensor is impossible when sizes differ).  A missing bias on one of ``ih``/``hh`` is
    written as zeros.  ``model`` itself is not modified.
    """
    is_prunable = lambda m: isinstance(m, PrunableRNNBase)  # noqa: E731
    convert = lambda m: _prunable_to_native(m, atol)  # noqa: E731
    if is_prunable(model):
        return convert(model)
    return _replace_modules(copy.deepcopy(model), is_prunable, convert)


# ---------------------------------------------------------------------------------------------
# Structural changes on the explicit form
# ---------------------------------------------------------------------------------------------


def _slice_linear(lin: nn.Linear, rows: Tensor | None = None, cols: Tensor | None = None) -> None:
    """Keep only ``rows`` (output features) and ``cols`` (input features) of ``lin``, in place."""
    with torch.no_grad():
        w = lin.weight
        if rows is not None:
            w = w.index_select(0, rows.to(w.device))
        if cols is not None:
            w = w.index_select(1, cols.to(w.device))
        lin.weight = nn.Parameter(w.clone(), requires_grad=lin.weight.requires_grad)
        if lin.bias is not None and rows is not None:
            lin.bias = nn.Parameter(lin.bias.index_select(0, rows.to(w.device)).clone(),
                                    requires_grad=lin.bias.requires_grad)
    lin.out_features, lin.in_features = lin.weight.shape


def _keep_index(keep: Sequence[int], size: int, what: str) -> Tensor:
    keep = [int(k) for k in keep]
    if not keep:
        raise ValueError(f"{what}: keep must name at least one unit")
    if len(set(keep)) != len(keep):
        raise ValueError(f"{what}: keep has duplicate indices")
    bad = [k for k in keep if not 0 <= k < size]
    if bad:
        raise ValueError(f"{what}: indices {bad} are out of range for {size} units")
    return torch.tensor(keep, dtype=torch.long)


def prune_hidden_units(module: PrunableRNNBase, layer: int, direction: int | str,
                       keep: Sequence[int]) -> Tensor:
    """Keep only the hidden units ``keep`` of one (layer, direction) of an explicit module.

    This is the structural change a pruning tool makes, done by hand and in place: row ``j`` of
    every gate block of ``ih`` and ``hh``, column ``j`` of ``hh``, row and column ``j`` of
    ``hidden_map``, and the matching input column of the next layer's ``ih`` (both directions)
    are removed for every ``j`` not in ``keep``.  Units are kept in the order given (a consistent
    reordering is harmless).  ``direction`` is ``0``/``"fwd"`` or ``1``/``"bwd"``.

    Consumers outside the module are not touched.  The return value is the index tensor of the
    kept features of this layer's output (``fwd`` and ``bwd`` concatenated), to slice them with,
    e.g. the input columns of a ``Linear`` that reads the last layer's output.
    """
    if not isinstance(module, PrunableRNNBase):
        raise TypeError(f"prune_hidden_units needs a PrunableGRU/PrunableLSTM, "
                        f"got {type(module).__name__}")
    if not -module.num_layers <= layer < module.num_layers:
        raise IndexError(f"layer {layer} out of range for {module.num_layers} layers")
    layer %= module.num_layers
    di = {0: 0, 1: 1, "fwd": 0, "bwd": 1, "forward": 0, "backward": 1}.get(direction)
    cells = module.layers[layer].directions()
    if di is None or di >= len(cells):
        raise ValueError(f"direction {direction!r} does not exist in layer {layer}")
    cell = cells[di]
    where = f"{type(module).__name__}.layers[{layer}].{('fwd', 'bwd')[di]}"
    h = cell.check_shapes(where)
    if cell.state_size != h:
        raise ValueError(f"{where}: hidden_map is not square; cannot remove units consistently")
    idx = _keep_index(keep, h, where)
    offset = sum(c.state_size for c in cells[:di])
    total = sum(c.state_size for c in cells)
    kept_out = torch.cat([torch.arange(offset), offset + idx, torch.arange(offset + h, total)])

    rows = torch.cat([idx + g * h for g in range(cell.num_gates)])
    _slice_linear(cell.ih, rows=rows)
    _slice_linear(cell.hh, rows=rows, cols=idx)
    _slice_linear(cell.hidden_map, rows=idx, cols=idx)
    if layer + 1 < module.num_layers:
        for nxt in module.layers[layer + 1].directions():
            _slice_linear(nxt.ih, cols=kept_out)
    return kept_out


def prune_input_features(module: PrunableRNNBase, keep: Sequence[int]) -> None:
    """Keep only the input features ``keep`` (columns of layer 0's ``ih``, every direction).

    The producer of those features (e.g. a preceding ``Linear``) must be sliced the same way by
    the caller.
    """
    if not isinstance(module, PrunableRNNBase):
        raise TypeError(f"prune_input_features needs a PrunableGRU/PrunableLSTM, "
                        f"got {type(module).__name__}")
    idx = _keep_index(keep, module.input_size, f"{type(module).__name__} input")
    for cell in module.layers[0].directions():
        _slice_linear(cell.ih, cols=idx)


def fix_rnn_attributes(m: nn.RNNBase) -> None:
    """Attribute fixes for a native recurrent module whose weights were resized (``load_pruned``)."""
    gates = GATES_BY_MODE.get(m.mode, 1)
    w_ih = getattr(m, "weight_ih_l0")
    m.hidden_size = w_ih.shape[0] // gates
    m.input_size = w_ih.shape[1]
    if hasattr(m, "_init_flat_weights"):
        m._init_flat_weights()
