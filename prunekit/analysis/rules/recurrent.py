"""Recurrent layers: the fused ops stay fused; hidden units are removed from every gate block."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch.fx as fx

from ..context import Ctx
from ...gates import GATES_BY_OP
from ._common import _ops, rule


_GATES = GATES_BY_OP


def _couple_hidden(ctx: Ctx, hidden: np.ndarray | None, w_ih, w_hh, biases: list, gates: int, size: int):
    """Hidden unit j is row j of every gate block of w_ih, w_hh and the biases, and column j of
    w_hh; all of them are coupled to ``hidden[j]``."""
    wi, wh = ctx.lab(w_ih), ctx.lab(w_hh)
    blocks = [rows[g * size : (g + 1) * size] for rows in [wi[0], wh[0]] + [ctx.lab(b)[0] for b in biases]
              if rows is not None for g in range(gates)]
    for block in blocks + [wh[1]]:
        hidden = block if hidden is None else ctx.unify(hidden, block)
    return hidden, wi


@rule(*_ops("gru", "lstm", "rnn_tanh", "rnn_relu"))
def recurrent(ctx: Ctx, node: fx.Node) -> Any:
    """``aten.gru.input(x, hx, params, has_biases, num_layers, dropout, train, bidirectional, batch_first)``.

    Every layer and direction of one fused op shares a hidden size, so unit j goes from all of
    them at once: the native op (and its speed) survives the prune.
    """
    name = node.target.overloadpacket.__name__
    if node.target._overloadname != "input":
        ctx.barrier("packed sequences are not pruned")
        return None
    args = ctx.args
    x, hx, params = args["input"], args["hx"], args["params"]
    has_biases, num_layers, bidirectional = args["has_biases"], args["num_layers"], args["bidirectional"]
    gates, dirs = _GATES[name], 2 if bidirectional else 1
    per = 4 if has_biases else 2
    if len(params) != num_layers * dirs * per:
        ctx.barrier("recurrent layer with projections (proj_size)")
        return None
    size = ctx.shape(params[1])[1]
    hidden = None
    layer_in = ctx.lab(x)[-1]
    for layer in range(num_layers):
        for d in range(dirs):
            w = params[(layer * dirs + d) * per : (layer * dirs + d + 1) * per]
            hidden, wi = _couple_hidden(ctx, hidden, w[0], w[1], list(w[2:]), gates, size)
            ctx.unify(layer_in, wi[1])
        layer_in = np.concatenate([hidden] * dirs) if hidden is not None else None
    states = list(hx) if isinstance(hx, (list, tuple)) else [hx]
    for h in states:
        ctx.unify(ctx.lab(h)[-1], hidden)
    xl = ctx.lab(x)
    out = tuple(xl[:-1]) + (layer_in,)
    state_lab = (None, None, hidden) if len(ctx.shape(states[0])) == 3 else (None, hidden)
    return [out] + [state_lab for _ in states]


@rule(*_ops("gru_cell", "lstm_cell", "rnn_tanh_cell", "rnn_relu_cell"))
def recurrent_cell(ctx: Ctx, node: fx.Node) -> Any:
    """``aten.gru_cell(x, hx, w_ih, w_hh, b_ih, b_hh)``; LSTM cells take ``[hx, cx]``."""
    name = node.target.overloadpacket.__name__
    args = ctx.args
    x, hx, w_ih, w_hh = args["input"], args["hx"], args["w_ih"], args["w_hh"]
    biases = [b for b in (args.get("b_ih"), args.get("b_hh")) if isinstance(b, fx.Node)]
    gates = _GATES[name]
    size = ctx.shape(w_hh)[1]
    hidden, wi = _couple_hidden(ctx, None, w_ih, w_hh, biases, gates, size)
    ctx.unify(ctx.lab(x)[-1], wi[1])
    states = list(hx) if isinstance(hx, (list, tuple)) else [hx]
    out = []
    for h in states:
        hl = ctx.lab(h)
        hidden = ctx.unify(hl[-1], hidden)
        out.append(tuple(hl[:-1]) + (hidden,))
    return out if name == "lstm_cell" else out[0]
