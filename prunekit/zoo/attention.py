"""Attention: ``zoo:vit_mini``, ``zoo:mha_transformer``.

The ViT has a conv patch embedding, cls-token and position-embedding Parameters and a fused qkv
Linear split into heads for ``scaled_dot_product_attention``; the sequence model uses
``nn.MultiheadAttention`` (packed ``in_proj_weight``, ``batch_first``) with LayerNorm, a
feed-forward block and residuals.  The number of heads is the one width ``forward`` may know.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..registry import register
from ._common import img_inputs


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


@register("zoo:vit_mini", example_inputs=img_inputs(), scriptable=True)
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
