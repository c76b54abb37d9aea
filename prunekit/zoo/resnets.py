"""Residual CNNs: ``zoo:resnet_mini``, ``zoo:se_net``, ``zoo:resnext_mini``.

Residual adds couple the channels of every block they join (including through a strided 1x1
conv+BN shortcut); squeeze-excite gates multiply channels by a bottlenecked global descriptor
(through 1x1 convs or through Linears after a flatten); ResNeXt bottlenecks add grouped 3x3 convs
that are not depthwise.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch import Tensor

from ..registry import register
from ._common import img_inputs


# --------------------------------------------------------------------------------------------
# ResNet (BasicBlock)
# --------------------------------------------------------------------------------------------


class BasicBlock(nn.Module):
    expansion: int = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample: nn.Module = nn.Identity()
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )

    def forward(self, x: Tensor) -> Tensor:
        identity = self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNetMini(nn.Module):
    def __init__(self, widths: tuple[int, ...] = (16, 32, 64), blocks: int = 2,
                 num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        inplanes = widths[0]
        for i, w in enumerate(widths):
            stride = 1 if i == 0 else 2
            layer = nn.Sequential(*[
                BasicBlock(inplanes if b == 0 else w, w, stride if b == 0 else 1)
                for b in range(blocks)
            ])
            self.add_module(f"layer{i + 1}", layer)
            inplanes = w
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(inplanes, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


@register("zoo:resnet_mini", example_inputs=img_inputs(), scriptable=True)
def resnet_mini() -> nn.Module:
    """Residual adds coupling channels across BasicBlocks, incl. a strided 1x1 conv+BN shortcut."""
    return ResNetMini()


# --------------------------------------------------------------------------------------------
# Squeeze-and-excitation
# --------------------------------------------------------------------------------------------


class SqueezeExcite(nn.Module):
    """Gate channels by a bottlenecked global descriptor; ``use_conv`` picks 1x1 convs or Linears."""

    def __init__(self, channels: int, reduction: int = 4, use_conv: bool = True) -> None:
        super().__init__()
        hidden = max(channels // reduction, 4)
        self.use_conv: bool = use_conv
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        if use_conv:
            self.fc1: nn.Module = nn.Conv2d(channels, hidden, 1)
            self.fc2: nn.Module = nn.Conv2d(hidden, channels, 1)
        else:
            self.fc1 = nn.Linear(channels, hidden)
            self.fc2 = nn.Linear(hidden, channels)
        self.relu = nn.ReLU(inplace=True)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: Tensor) -> Tensor:
        s = self.avg_pool(x)
        if not self.use_conv:
            s = torch.flatten(s, 1)
        s = self.sigmoid(self.fc2(self.relu(self.fc1(s))))
        if not self.use_conv:
            s = s.reshape(s.shape[0], s.shape[1], 1, 1)
        return x * s


class SEBasicBlock(BasicBlock):
    def __init__(self, inplanes: int, planes: int, stride: int = 1, use_conv: bool = True) -> None:
        super().__init__(inplanes, planes, stride)
        self.se = SqueezeExcite(planes, use_conv=use_conv)

    def forward(self, x: Tensor) -> Tensor:
        identity = self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.se(self.bn2(self.conv2(out)))
        return self.relu(out + identity)


class SENet(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        # layer1: SE via 1x1 convs; layer2: SE via Linears after flatten (plus a strided shortcut)
        self.layer1 = nn.Sequential(SEBasicBlock(16, 16, 1, True), SEBasicBlock(16, 16, 1, True))
        self.layer2 = nn.Sequential(SEBasicBlock(16, 32, 2, False), SEBasicBlock(32, 32, 1, False))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer2(self.layer1(x))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


@register("zoo:se_net", example_inputs=img_inputs(), scriptable=True)
def se_net() -> nn.Module:
    """Squeeze-excite gating (pool, reduce, ReLU, expand, sigmoid, multiply) inside residual blocks."""
    return SENet()


# --------------------------------------------------------------------------------------------
# ResNeXt
# --------------------------------------------------------------------------------------------


class ResNeXtBottleneck(nn.Module):
    expansion: int = 2

    def __init__(self, inplanes: int, width: int, groups: int, stride: int = 1) -> None:
        super().__init__()
        out = width * self.expansion
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module = nn.Identity()
        if stride != 1 or inplanes != out:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, out, 1, stride=stride, bias=False), nn.BatchNorm2d(out)
            )

    def forward(self, x: Tensor) -> Tensor:
        identity = self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNeXtMini(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(32)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = nn.Sequential(ResNeXtBottleneck(32, 32, groups=4),
                                    ResNeXtBottleneck(64, 32, groups=4))
        self.layer2 = nn.Sequential(ResNeXtBottleneck(64, 64, groups=8, stride=2),
                                    ResNeXtBottleneck(128, 64, groups=8))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(128, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer2(self.layer1(x))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


@register("zoo:resnext_mini", example_inputs=img_inputs(), scriptable=True)
def resnext_mini() -> nn.Module:
    """Grouped 3x3 convs (groups=4 and 8, not depthwise) in residual bottleneck blocks."""
    return ResNeXtMini()
