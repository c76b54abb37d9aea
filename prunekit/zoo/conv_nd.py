"""Convolutions in one and three dimensions: ``zoo:conv1d_net``, ``zoo:conv3d_net``.

``Conv1d``/``BatchNorm1d``/``MaxPool1d`` with a residual add, and ``Conv3d``/``BatchNorm3d`` with
an adaptive pool, so the rules are not written for 2-D only.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch import Tensor

from ..registry import register


# --------------------------------------------------------------------------------------------
# 1-D convolutions
# --------------------------------------------------------------------------------------------


class Conv1dNet(nn.Module):
    def __init__(self, in_channels: int = 4, num_classes: int = 6) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(in_channels, 16, 5, padding=2, bias=False)
        self.bn1 = nn.BatchNorm1d(16)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool1d(2)
        self.conv2 = nn.Conv1d(16, 16, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm1d(16)
        self.conv3 = nn.Conv1d(16, 16, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm1d(16)
        self.conv4 = nn.Conv1d(16, 32, 3, stride=2, padding=1, bias=False)
        self.bn4 = nn.BatchNorm1d(32)
        self.avgpool = nn.AdaptiveAvgPool1d(1)
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool(self.relu(self.bn1(self.conv1(x))))
        h = self.relu(self.bn2(self.conv2(x)))
        x = self.relu(x + self.bn3(self.conv3(h)))          # residual
        x = self.relu(self.bn4(self.conv4(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


@register("zoo:conv1d_net", example_inputs=[{"shape": [1, 4, 64], "dtype": "float32"}],
          scriptable=True)
def conv1d_net() -> nn.Module:
    """1-D convolutions: Conv1d, BatchNorm1d, MaxPool1d, a residual add, AdaptiveAvgPool1d."""
    return Conv1dNet()


# --------------------------------------------------------------------------------------------
# 3-D convolutions
# --------------------------------------------------------------------------------------------


class Conv3dNet(nn.Module):
    def __init__(self, in_channels: int = 2, num_classes: int = 4) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(in_channels, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm3d(8)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv3d(8, 16, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm3d(16)
        self.avgpool = nn.AdaptiveAvgPool3d(1)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


@register("zoo:conv3d_net", example_inputs=[{"shape": [1, 2, 8, 16, 16], "dtype": "float32"}],
          scriptable=True)
def conv3d_net() -> nn.Module:
    """3-D convolutions: Conv3d, BatchNorm3d, AdaptiveAvgPool3d, Linear head."""
    return Conv3dNet()
