"""Attribute fixes for native recurrent modules whose weights were resized."""

from __future__ import annotations

import torch.nn as nn


def fix_rnn_attributes(m: nn.RNNBase) -> None:
    gates = {"LSTM": 4, "GRU": 3}.get(m.mode, 1)
    w_ih = getattr(m, "weight_ih_l0")
    m.hidden_size = w_ih.shape[0] // gates
    m.input_size = w_ih.shape[1]
    if hasattr(m, "_init_flat_weights"):
        m._init_flat_weights()
