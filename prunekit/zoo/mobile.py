"""Depthwise separable CNN: ``zoo:mobilenetv2_mini``.

MobileNetV2's inverted residuals: 1x1 expand, depthwise 3x3 (``groups`` equal to the channels, so
the conv's groups shrink with them), 1x1 project, ReLU6, and skips where shapes allow.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch import Tensor

from ..registry import register
from ._common import img_inputs


class ConvBNReLU6(nn.Sequential):
    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = cin * expand_ratio
        self.use_res_connect: bool = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNReLU6(cin, hidden, kernel=1))                   # expand
        layers.append(ConvBNReLU6(hidden, hidden, stride=stride, groups=hidden))  # depthwise
        layers.append(nn.Conv2d(hidden, cout, 1, bias=False))                   # project
        layers.append(nn.BatchNorm2d(cout))
        self.conv = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        if self.use_res_connect:
            return x + self.conv(x)
        return self.conv(x)


class MobileNetV2Mini(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        # (expand_ratio, out_channels, repeats, first stride)
        cfg = [(1, 16, 1, 1), (4, 24, 2, 2), (4, 32, 2, 2), (4, 64, 1, 1)]
        layers: list[nn.Module] = [ConvBNReLU6(3, 16, stride=1)]
        cin = 16
        for t, c, n, s in cfg:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(ConvBNReLU6(cin, 128, kernel=1))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(128, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(x)
        x = torch.flatten(self.avgpool(x), 1)
        return self.classifier(x)


@register("zoo:mobilenetv2_mini", example_inputs=img_inputs(), scriptable=True)
def mobilenetv2_mini() -> nn.Module:
    """Inverted residuals: 1x1 expand, depthwise 3x3 (groups=channels), 1x1 project, ReLU6, skips."""
    return MobileNetV2Mini()
