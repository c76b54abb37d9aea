"""A LLaMA-style decoder built from a config (bench-only; used when ``transformers`` is absent).

The large-model case of ``bench/side_by_side.py`` needs a ~1-billion-parameter decoder with random
weights.  This is the usual LLaMA layout, written here so the bench needs no hub and no
``transformers``: token embedding, ``layers`` blocks of RMSNorm → grouped-query attention with
rotary position embeddings (``F.scaled_dot_product_attention``, causal) → RMSNorm → SwiGLU MLP,
a final RMSNorm and an untied LM head.  :data:`LLAMA_1B` is TinyLlama-1.1B's shape (1.10 B
parameters, 4.4 GB of fp32 weights).

``build(config, device="meta")`` makes the module without allocating or initialising weights, so a
1 B model is filled (:func:`randomize`) or loaded (``load_state_dict(assign=True)``) once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass(frozen=True)
class LlamaConfig:
    vocab: int = 32000
    hidden: int = 2048
    intermediate: int = 5632
    layers: int = 22
    heads: int = 32
    kv_heads: int = 4
    rope_theta: float = 10000.0
    eps: float = 1e-5

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    def parameters(self) -> int:
        h, i, hd = self.hidden, self.intermediate, self.head_dim
        attn = 2 * h * h + 2 * h * self.kv_heads * hd
        block = attn + 3 * h * i + 2 * h
        return 2 * self.vocab * h + self.layers * block + h


LLAMA_1B = LlamaConfig()
LLAMA_TINY = LlamaConfig(vocab=512, hidden=128, intermediate=352, layers=2, heads=8, kv_heads=2)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    a, b = x.chunk(2, dim=-1)
    return torch.cat((-b, a), dim=-1)


def _repeat_kv(x: torch.Tensor, rep: int) -> torch.Tensor:
    b, kv, t, d = x.shape
    return x[:, :, None].expand(b, kv, rep, t, d).reshape(b, kv * rep, t, d)


class Attention(nn.Module):
    def __init__(self, c: LlamaConfig) -> None:
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = c.heads, c.kv_heads, c.head_dim
        self.q_proj = nn.Linear(c.hidden, c.heads * c.head_dim, bias=False)
        self.k_proj = nn.Linear(c.hidden, c.kv_heads * c.head_dim, bias=False)
        self.v_proj = nn.Linear(c.hidden, c.kv_heads * c.head_dim, bias=False)
        self.o_proj = nn.Linear(c.heads * c.head_dim, c.hidden, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        shape = (*x.shape[:-1], -1, self.head_dim)  # as transformers' LlamaAttention: widths from the tensors
        q = self.q_proj(x).view(shape).transpose(1, 2)
        k = self.k_proj(x).view(shape).transpose(1, 2)
        v = self.v_proj(x).view(shape).transpose(1, 2)
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        k, v = _repeat_kv(k, self.heads // self.kv_heads), _repeat_kv(v, self.heads // self.kv_heads)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o_proj(out.transpose(1, 2).reshape(*x.shape[:-1], -1))


class MLP(nn.Module):
    def __init__(self, c: LlamaConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(c.hidden, c.intermediate, bias=False)
        self.up_proj = nn.Linear(c.hidden, c.intermediate, bias=False)
        self.down_proj = nn.Linear(c.intermediate, c.hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, c: LlamaConfig) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(c.hidden, c.eps)
        self.self_attn = Attention(c)
        self.post_attention_layernorm = RMSNorm(c.hidden, c.eps)
        self.mlp = MLP(c)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin)
        return x + self.mlp(self.post_attention_layernorm(x))


class LlamaForCausalLM(nn.Module):
    def __init__(self, c: LlamaConfig = LLAMA_1B) -> None:
        super().__init__()
        self.config = c
        self.embed_tokens = nn.Embedding(c.vocab, c.hidden)
        self.layers = nn.ModuleList(DecoderLayer(c) for _ in range(c.layers))
        self.norm = RMSNorm(c.hidden, c.eps)
        self.lm_head = nn.Linear(c.hidden, c.vocab, bias=False)
        inv = 1.0 / (c.rope_theta ** (torch.arange(0, c.head_dim, 2, dtype=torch.float32) / c.head_dim))
        self.register_buffer("inv_freq", inv, persistent=False)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        t = input_ids.shape[1]
        pos = torch.arange(t, device=input_ids.device, dtype=torch.float32)
        freqs = torch.outer(pos, self.inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos()[None, None], emb.sin()[None, None]
        x = self.embed_tokens(input_ids)
        for layer in self.layers:
            x = layer(x, cos, sin)
        return self.lm_head(self.norm(x))


def build(c: LlamaConfig = LLAMA_1B, device: str = "cpu") -> LlamaForCausalLM:
    """The module; on ``device="meta"`` nothing is allocated (fill it with :func:`randomize`)."""
    with torch.device(device):
        m = LlamaForCausalLM(c)
    if device == "meta":  # the rotary frequencies are a non-persistent buffer: compute them for real
        inv = 1.0 / (c.rope_theta ** (torch.arange(0, c.head_dim, 2, dtype=torch.float32) / c.head_dim))
        m.register_buffer("inv_freq", inv, persistent=False)
    return m.eval()


def randomize(m: LlamaForCausalLM, seed: int = 0) -> LlamaForCausalLM:
    """Real random weights (normal, std 0.02; norms around 1) for a model built on ``meta``."""
    g = torch.Generator().manual_seed(seed)
    std = 0.02 / math.sqrt(1.0)
    for name, p in list(m.named_parameters()):
        mod_name, _, attr = name.rpartition(".")
        owner = m.get_submodule(mod_name)
        t = torch.empty(p.shape, dtype=torch.float32)
        if name.endswith("norm.weight") or "layernorm" in name:
            t.uniform_(0.8, 1.2, generator=g)
        else:
            t.normal_(0.0, std, generator=g)
        setattr(owner, attr, nn.Parameter(t, requires_grad=False))
    return m
