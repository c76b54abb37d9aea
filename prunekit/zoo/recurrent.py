"""Recurrent: ``zoo:gru_classifier`` (formerly ``zoo:gru_seed000``).

An ``nn.GRU`` (packed gate weights, ``batch_first``) between Linear layers, classifying from the last
time step: the gates tie the hidden channels across ``weight_ih``, ``weight_hh`` and both biases.
"""

from __future__ import annotations

import torch.nn as nn
from torch import Tensor

from ..registry import register


class GRUNet(nn.Module):
    def __init__(self, in_features: int = 16, embed: int = 32, hidden: int = 48,
                 num_classes: int = 10) -> None:
        super().__init__()
        self.fc_in = nn.Linear(in_features, embed)
        self.relu = nn.ReLU()
        self.gru = nn.GRU(embed, hidden, batch_first=True)
        self.fc_out = nn.Linear(hidden, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.fc_in(x))
        out, _ = self.gru(x)
        return self.fc_out(out[:, -1, :])


@register("zoo:gru_classifier", example_inputs=[{"shape": [1, 5, 16], "dtype": "float32"}],
          scriptable=True, aliases=("zoo:gru_seed000",))
def gru_classifier() -> nn.Module:
    """Recurrent layer: nn.GRU (packed gate weights, batch_first) between Linear layers."""
    return GRUNet()


# Former name, importable for one release.
gru_seed000 = gru_classifier
