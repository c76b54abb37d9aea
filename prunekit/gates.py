"""How many gate blocks a recurrent layer stacks in its weights: one table for every user.

A GRU stacks 3 blocks (r, z, n) of ``hidden`` rows in ``weight_ih``/``weight_hh``, an LSTM 4
(i, f, g, o), a plain RNN 1.  The channel rules (hidden units leave every block), MAC counting
(per-step work), the explicit conversion (``interop/recurrent.py``) and the rebuild of resized
native modules all read the counts from here.
"""

from __future__ import annotations

GATE_NAMES = {"GRU": ("r", "z", "n"), "LSTM": ("i", "f", "g", "o"), "RNN_TANH": ("h",), "RNN_RELU": ("h",)}
"""Gate blocks by ``nn.RNNBase.mode``, in weight-row order."""

GATES_BY_MODE = {mode: len(names) for mode, names in GATE_NAMES.items()}

GATES_BY_OP = {"gru": 3, "lstm": 4, "rnn_tanh": 1, "rnn_relu": 1,
               "gru_cell": 3, "lstm_cell": 4, "rnn_tanh_cell": 1, "rnn_relu_cell": 1}
"""Gate blocks by ATen op name (``aten.gru.input``, ``aten.lstm_cell``, ...)."""
