"""A user-defined layer: ``zoo:custom_scale_layer`` (formerly ``zoo:custom_layer_seed002``).

``CustomizedLayer`` holds free per-channel ``nn.Parameter``s (a scale and a bias) next to a Linear,
the module Torch-Pruning's example needed a hand-written pruner for; the graph rules have to find
that the parameters share the preceding layer's channels on their own.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..registry import register


class CustomizedLayer(nn.Module):
    def __init__(self, in_dim: int) -> None:
        super().__init__()
        self.in_dim = in_dim
        self.scale = nn.Parameter(torch.randn(in_dim))
        self.bias = nn.Parameter(torch.randn(in_dim))
        self.fc = nn.Linear(in_dim, in_dim)

    def forward(self, x: Tensor) -> Tensor:
        norm = x.pow(2).sum(dim=1, keepdim=True).sqrt()
        x = torch.div(x, norm)
        return self.fc(x * self.scale + self.bias)


class FullyConnectedNet(nn.Module):
    def __init__(self, input_size: int = 128, num_classes: int = 10, HIDDEN_UNITS: int = 256) -> None:
        super().__init__()
        self.fc1 = nn.Linear(input_size, HIDDEN_UNITS)
        self.customized_layer = CustomizedLayer(HIDDEN_UNITS)
        self.fc2 = nn.Linear(HIDDEN_UNITS, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.fc1(x))
        x = self.customized_layer(x)
        return self.fc2(x)


@register("zoo:custom_scale_layer", example_inputs=[{"shape": [1, 128], "dtype": "float32"}],
          scriptable=True, aliases=("zoo:custom_layer_seed002",))
def custom_scale_layer() -> nn.Module:
    """A user-defined module holding free per-channel nn.Parameters (scale, bias) next to a Linear."""
    return FullyConnectedNet(input_size=128, num_classes=10, HIDDEN_UNITS=256)


# Former name, importable for one release.
custom_layer_seed002 = custom_scale_layer
