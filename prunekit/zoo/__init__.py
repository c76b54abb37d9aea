"""PruneKit's reference zoo: small architectures registered as ``zoo:*``.

Each model here stands for one structural pattern the pruning engine has to handle (residual adds,
depthwise and grouped convolutions, channel concatenation, squeeze-excite gating, fused attention
projections, ``nn.MultiheadAttention``, encoder/decoder skips, 1-D and 3-D convolutions, recurrent
layers, free-standing per-channel parameters, ...).  They are what the tests, the benchmarks and the
service's "build from a name" path use, so they obey a few rules:

* small and fast: a forward pass at batch 2 takes milliseconds and no model has more than ~2M
  parameters; weights are randomly initialised (nothing is downloaded);
* capturable: every model runs in eval mode, traces with ``torch.jit.trace``, exports with
  ``torch.export.export`` with a dynamic batch dimension, and scripts with ``torch.jit.script``
  unless registered with ``scriptable=False``;
* prunable: ``forward`` never hard-codes a width that ``__init__`` chose (it uses ``-1`` or tensor
  shapes instead; the number of attention heads is the one exception), so a model keeps working
  after the engine has shrunk its channels;
* torchvision-like parameter names (``layer1.1.conv1.weight``, ``features.denseblock1...``, ...),
  so specs and tests can address layers by familiar names.

Each factory takes no arguments and returns a fresh ``nn.Module``; the registry puts it in eval mode.
"""

from __future__ import annotations

from typing import List

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..registry import register


def _img(c: int = 3, h: int = 32, w: int = 32) -> list[dict]:
    return [{"shape": [1, c, h, w], "dtype": "float32"}]


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


@register("zoo:resnet_mini", example_inputs=_img(), scriptable=True)
def resnet_mini() -> nn.Module:
    """Residual adds coupling channels across BasicBlocks, incl. a strided 1x1 conv+BN shortcut."""
    return ResNetMini()


# --------------------------------------------------------------------------------------------
# MobileNetV2
# --------------------------------------------------------------------------------------------


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


@register("zoo:mobilenetv2_mini", example_inputs=_img(), scriptable=True)
def mobilenetv2_mini() -> nn.Module:
    """Inverted residuals: 1x1 expand, depthwise 3x3 (groups=channels), 1x1 project, ReLU6, skips."""
    return MobileNetV2Mini()


# --------------------------------------------------------------------------------------------
# DenseNet
# --------------------------------------------------------------------------------------------


class DenseLayer(nn.Module):
    def __init__(self, cin: int, growth: int, bn_size: int = 2) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(cin)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(cin, bn_size * growth, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(bn_size * growth, growth, 3, padding=1, bias=False)

    def forward(self, features: List[Tensor]) -> Tensor:
        x = torch.cat(features, 1)
        x = self.conv1(self.relu1(self.norm1(x)))
        return self.conv2(self.relu2(self.norm2(x)))


class DenseBlock(nn.ModuleDict):
    def __init__(self, num_layers: int, cin: int, growth: int) -> None:
        super().__init__()
        for i in range(num_layers):
            self.add_module(f"denselayer{i + 1}", DenseLayer(cin + i * growth, growth))

    def forward(self, x: Tensor) -> Tensor:
        features = [x]
        for _, layer in self.items():
            features.append(layer(features))
        return torch.cat(features, 1)


class Transition(nn.Sequential):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.add_module("norm", nn.BatchNorm2d(cin))
        self.add_module("relu", nn.ReLU(inplace=True))
        self.add_module("conv", nn.Conv2d(cin, cout, 1, bias=False))
        self.add_module("pool", nn.AvgPool2d(2, 2))


class DenseNetMini(nn.Module):
    def __init__(self, growth: int = 8, block_config: tuple[int, ...] = (3, 3),
                 init_features: int = 16, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential()
        self.features.add_module("conv0", nn.Conv2d(3, init_features, 3, padding=1, bias=False))
        self.features.add_module("norm0", nn.BatchNorm2d(init_features))
        self.features.add_module("relu0", nn.ReLU(inplace=True))
        c = init_features
        for i, n in enumerate(block_config):
            self.features.add_module(f"denseblock{i + 1}", DenseBlock(n, c, growth))
            c = c + n * growth
            if i != len(block_config) - 1:
                self.features.add_module(f"transition{i + 1}", Transition(c, c // 2))
                c = c // 2
        self.features.add_module("norm5", nn.BatchNorm2d(c))
        self.relu = nn.ReLU(inplace=True)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.features(x))
        x = torch.flatten(self.avgpool(x), 1)
        return self.classifier(x)


@register("zoo:densenet_mini", example_inputs=_img(), scriptable=True)
def densenet_mini() -> nn.Module:
    """Dense connectivity: torch.cat of all earlier features, BN-ReLU-1x1conv-avgpool transitions."""
    return DenseNetMini()


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


@register("zoo:se_net", example_inputs=_img(), scriptable=True)
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


@register("zoo:resnext_mini", example_inputs=_img(), scriptable=True)
def resnext_mini() -> nn.Module:
    """Grouped 3x3 convs (groups=4 and 8, not depthwise) in residual bottleneck blocks."""
    return ResNeXtMini()


# --------------------------------------------------------------------------------------------
# Vision Transformer
# --------------------------------------------------------------------------------------------


class PatchEmbed(nn.Module):
    def __init__(self, in_chans: int, dim: int, patch: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, patch, stride=patch)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # [B, N, dim]


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        B, N = x.shape[0], x.shape[1]
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]                      # [B, heads, N, head_dim]
        x = F.scaled_dot_product_attention(q, k, v)
        x = x.transpose(1, 2).reshape(B, N, -1)
        return self.proj(x)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class TransformerBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: int = 4) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, dim * mlp_ratio)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViTMini(nn.Module):
    def __init__(self, img_size: int = 32, patch: int = 8, dim: int = 64, depth: int = 2,
                 num_heads: int = 4, num_classes: int = 10) -> None:
        super().__init__()
        num_patches = (img_size // patch) ** 2
        self.patch_embed = PatchEmbed(3, dim, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, num_patches + 1, dim) * 0.02)
        nn.init.normal_(self.cls_token, std=0.02)
        self.blocks = nn.Sequential(*[TransformerBlock(dim, num_heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.patch_embed(x)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        x = torch.cat((cls, x), dim=1) + self.pos_embed
        x = self.norm(self.blocks(x))
        return self.head(x[:, 0])


@register("zoo:vit_mini", example_inputs=_img(), scriptable=True)
def vit_mini() -> nn.Module:
    """ViT: conv patch embedding, cls token and pos-embed Parameters, fused qkv Linear + SDPA heads."""
    return ViTMini()


# --------------------------------------------------------------------------------------------
# nn.MultiheadAttention sequence model
# --------------------------------------------------------------------------------------------


class MHAEncoderLayer(nn.Module):
    def __init__(self, dim: int, num_heads: int, ff: int) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.norm1 = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, ff), nn.ReLU(inplace=True), nn.Linear(ff, dim))
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        h = self.norm1(x)
        a, _ = self.self_attn(h, h, h, need_weights=False)
        x = x + a
        return x + self.ff(self.norm2(x))


class MHATransformer(nn.Module):
    def __init__(self, dim: int = 32, num_heads: int = 4, depth: int = 2, num_classes: int = 5) -> None:
        super().__init__()
        self.layers = nn.Sequential(*[MHAEncoderLayer(dim, num_heads, 2 * dim) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.norm(self.layers(x))
        return self.head(x.mean(dim=1))


@register("zoo:mha_transformer", example_inputs=[{"shape": [1, 10, 32], "dtype": "float32"}],
          scriptable=True)
def mha_transformer() -> nn.Module:
    """nn.MultiheadAttention (packed in_proj_weight, batch_first) with LayerNorm, FFN and residuals."""
    return MHATransformer()


# --------------------------------------------------------------------------------------------
# UNet
# --------------------------------------------------------------------------------------------


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


@register("zoo:unet_mini", example_inputs=_img(), scriptable=True)
def unet_mini() -> nn.Module:
    """Encoder/decoder with max-pool down, ConvTranspose2d and nearest interpolate up, cat skips."""
    return UNetMini()


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
# Published examples, reproduced exactly
# --------------------------------------------------------------------------------------------


class MLPSeed001(nn.Module):
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


@register("zoo:mlp_seed001", example_inputs=[{"shape": [1, 700], "dtype": "float32"}],
          scriptable=True)
def mlp_seed001() -> nn.Module:
    """Plain Linear/ReLU stack with mixed bias=True/False layers (1,233,500 parameters)."""
    return MLPSeed001()


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


@register("zoo:custom_layer_seed002", example_inputs=[{"shape": [1, 128], "dtype": "float32"}],
          scriptable=True)
def custom_layer_seed002() -> nn.Module:
    """A user-defined module holding free per-channel nn.Parameters (scale, bias) next to a Linear."""
    return FullyConnectedNet(input_size=128, num_classes=10, HIDDEN_UNITS=256)


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


# --------------------------------------------------------------------------------------------
# GRU
# --------------------------------------------------------------------------------------------


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


@register("zoo:gru_seed000", example_inputs=[{"shape": [1, 5, 16], "dtype": "float32"}],
          scriptable=True)
def gru_seed000() -> nn.Module:
    """Recurrent layer: nn.GRU (packed gate weights, batch_first) between Linear layers."""
    return GRUNet()
