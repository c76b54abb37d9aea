"""Fully connected: ``zoo:mlp`` (formerly ``zoo:mlp_seed001``).

A plain Linear/ReLU stack with layers with and without bias, exactly the layout of torch.ao's
pruning example (700 -> 500 -> 800 -> 600 -> 4, 1,233,500 parameters), so its published result
can be checked number for number.
"""

from __future__ import annotations

import torch.nn as nn
from torch import Tensor

from ..registry import register


class MLPNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.seq = nn.Sequential(
            nn.Linear(700, 500, bias=True),
            nn.ReLU(),
            nn.Linear(500, 800, bias=False),
            nn.ReLU(),
            nn.Linear(800, 600, bias=True),
            nn.ReLU(),
        )
        self.linear = nn.Linear(600, 4, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(self.seq(x))


@register("zoo:mlp", example_inputs=[{"shape": [1, 700], "dtype": "float32"}],
          scriptable=True, aliases=("zoo:mlp_seed001",))
def mlp() -> nn.Module:
    """Plain Linear/ReLU stack with mixed bias=True/False layers (1,233,500 parameters)."""
    return MLPNet()


# Former names, importable for one release.
MLPSeed001 = MLPNet
mlp_seed001 = mlp
