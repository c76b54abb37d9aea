"""Encoder/decoder: ``zoo:unet_mini``.

Max-pool down, learned (``ConvTranspose2d``) and nearest-interpolation up, and ``torch.cat`` skips
joining encoder and decoder features.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..registry import register
from ._common import img_inputs


class DoubleConv(nn.Sequential):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        )


class UNetMini(nn.Module):
    def __init__(self, in_channels: int = 3, out_channels: int = 2, base: int = 16) -> None:
        super().__init__()
        self.enc1 = DoubleConv(in_channels, base)
        self.enc2 = DoubleConv(base, 2 * base)
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = DoubleConv(2 * base, 4 * base)
        self.up2 = nn.ConvTranspose2d(4 * base, 2 * base, 2, stride=2)   # learned upsampling
        self.dec2 = DoubleConv(4 * base, 2 * base)
        self.dec1 = DoubleConv(2 * base + base, base)                    # after nearest upsampling
        self.outc = nn.Conv2d(base, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        e1 = self.enc1(x)                       # 32x32
        e2 = self.enc2(self.pool(e1))           # 16x16
        b = self.bottleneck(self.pool(e2))      # 8x8
        d2 = self.dec2(torch.cat([self.up2(b), e2], dim=1))
        d1 = F.interpolate(d2, scale_factor=2.0, mode="nearest")
        d1 = self.dec1(torch.cat([d1, e1], dim=1))
        return self.outc(d1)


@register("zoo:unet_mini", example_inputs=img_inputs(), scriptable=True)
def unet_mini() -> nn.Module:
    """Encoder/decoder with max-pool down, ConvTranspose2d and nearest interpolate up, cat skips."""
    return UNetMini()
