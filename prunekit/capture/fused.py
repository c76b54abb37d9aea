"""Open up fused transformer kernels so their heads and feed-forward channels can be pruned.

``nn.MultiheadAttention`` and ``nn.TransformerEncoderLayer`` in eval mode take a "fast path":
traced TorchScript records one opaque op per layer (``aten._native_multi_head_attention``,
``aten._transformer_encoder_layer_fwd``) with every weight of the layer as an argument. An op like
that is a barrier, so a traced transformer would keep every channel of its attention and MLP.

This pass swaps each fused op for what the module's own slow path computes
(``F.multi_head_attention_forward``, layer norms, the two feed-forward linears) through
``ExportedProgram.run_decompositions`` with a table of just these ops. The result is plain ATen
(linear, view, transpose, scaled_dot_product_attention, layer_norm) that the op table already
knows. The decomposed program is kept only if it computes what the fused one does on the
example; otherwise the fused op stays a barrier and the report says why.

A TorchScript upload is opened before the converter's retrace instead (:func:`open_fused_graph`):
each fused call in the converter's graph is checked against its decomposition on the values it
takes at the example, then replaced by it, so the one retrace records the decomposed ops and no
second export (``run_decompositions``: 3.3 s of CPU on ViT-B/16) is needed.

To open another fused op: write its decomposition below and add it to ``DECOMPOSITIONS``.
"""

from __future__ import annotations

import operator
from typing import Any, Callable

import torch
import torch.nn.functional as F

from ..verify.check import same_outputs

aten = torch.ops.aten

# mask_type of the native kernels: 0 an attention mask (L, S), 1 a key-padding mask (B, S),
# 2 both merged into (B, heads, L, S).
_ATTN_MASK, _KEY_PADDING_MASK, _MERGED_MASK = 0, 1, 2


def _to_seq_first(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor):
    """The fused kernels are batch-first; ``F.multi_head_attention_forward`` is sequence-first.

    Identity matters: the functional form uses one packed projection (and one weight) only when
    ``query is key is value``, which is what keeps the packed ``in_proj_weight`` whole.
    """
    q = query.transpose(0, 1)
    k = q if key is query else key.transpose(0, 1)
    v = k if value is key else (q if value is query else value.transpose(0, 1))
    return q, k, v


def _split_mask(mask: torch.Tensor | None, mask_type: int | None, batch: Any, heads: int):
    """The native merged mask → (attn_mask, key_padding_mask) of the functional form."""
    if mask is None:
        return None, None
    if mask_type == _KEY_PADDING_MASK:
        return None, mask
    if mask_type == _MERGED_MASK:
        return mask.reshape(batch * heads, mask.shape[-2], mask.shape[-1]), None
    return mask, None


def native_multi_head_attention(
    query, key, value, embed_dim, num_head, qkv_weight, qkv_bias, proj_weight, proj_bias,
    mask=None, need_weights=True, average_attn_weights=True, mask_type=None,
):
    q, k, v = _to_seq_first(query, key, value)
    attn_mask, key_padding_mask = _split_mask(mask, mask_type, query.shape[0], num_head)
    out, weights = F.multi_head_attention_forward(
        q, k, v, embed_dim, num_head, qkv_weight, qkv_bias, None, None, False, 0.0,
        proj_weight, proj_bias, training=False, key_padding_mask=key_padding_mask,
        need_weights=need_weights, attn_mask=attn_mask, average_attn_weights=average_attn_weights,
    )
    # The op's schema returns two tensors; weights that were not asked for become an empty one.
    return out.transpose(0, 1), (weights if weights is not None else query.new_empty(0))


def transformer_encoder_layer_fwd(
    src, embed_dim, num_heads, qkv_weight, qkv_bias, proj_weight, proj_bias, use_gelu, norm_first,
    eps, norm_weight_1, norm_bias_1, norm_weight_2, norm_bias_2, ffn_weight_1, ffn_bias_1,
    ffn_weight_2, ffn_bias_2, mask=None, mask_type=None,
):
    activation = F.gelu if use_gelu else F.relu

    def attention(x):
        return native_multi_head_attention(
            x, x, x, embed_dim, num_heads, qkv_weight, qkv_bias, proj_weight, proj_bias,
            mask=mask, need_weights=False, mask_type=mask_type,
        )[0]

    def feed_forward(x):
        return F.linear(activation(F.linear(x, ffn_weight_1, ffn_bias_1)), ffn_weight_2, ffn_bias_2)

    def norm(x, weight, bias):
        return F.layer_norm(x, (embed_dim,), weight, bias, eps)

    x = src
    if norm_first:
        x = x + attention(norm(x, norm_weight_1, norm_bias_1))
        return x + feed_forward(norm(x, norm_weight_2, norm_bias_2))
    x = norm(x + attention(x), norm_weight_1, norm_bias_1)
    return norm(x + feed_forward(x), norm_weight_2, norm_bias_2)


DECOMPOSITIONS: dict[Any, Callable[..., Any]] = {
    aten._native_multi_head_attention.default: native_multi_head_attention,
    aten._transformer_encoder_layer_fwd.default: transformer_encoder_layer_fwd,
}


def fused_ops(ep: "torch.export.ExportedProgram") -> list[str]:
    """Names of the fused ops in the program that have a decomposition here."""
    return sorted({str(n.target) for n in ep.graph.nodes if n.op == "call_function" and n.target in DECOMPOSITIONS})


def open_fused_ops(ep: "torch.export.ExportedProgram", example: tuple, notes: list[str]):
    """Return ``ep`` with its fused transformer ops decomposed, or ``ep`` itself when there are
    none or the decomposition does not reproduce the fused result (a note says which)."""
    found = fused_ops(ep)
    if not found:
        return ep
    try:
        opened = ep.run_decompositions(dict(DECOMPOSITIONS))  # a copy: torch may add to the table
        with torch.no_grad():
            same = same_outputs(ep.module()(*example), opened.module()(*example))
    except Exception as exc:  # an unusual variant: the fused op stays, as a barrier
        notes.append(_decided(found, f"could not be decomposed: {type(exc).__name__}"))
        return ep
    if not same:
        notes.append(_decided(found, "its decomposition did not reproduce it"))
        return ep
    notes.append(_decided(found, None))
    return opened


def _decided(found: list[str], why: str | None) -> str:
    if why is None:
        return f"fused {', '.join(found)} decomposed into prunable ops"
    return f"fused {', '.join(found)} kept whole ({why})"


def _used(node: "torch.fx.Node", *outs):
    """The parts of a fused op's tuple output the graph reads (``getitem``), or all of it: the
    attention weights nobody asked for are ``None`` from the kernel and empty from the
    decomposition."""
    if not all(isinstance(o, (tuple, list)) for o in outs) or any(u.target is not operator.getitem for u in node.users):
        return outs
    used = sorted({u.args[1] for u in node.users})
    return tuple([o[i] for i in used] for o in outs)


def open_fused_graph(gm: "torch.fx.GraphModule", example: tuple, notes: list[str]) -> bool | None:
    """Replace the fused calls of a graph about to be traced (TS2EPConverter's, before its
    retrace) by their decompositions, so that the trace records prunable ops.

    The graph is run once on the example; at every fused call the decomposition is computed on
    the same inputs and must give what the fused kernel gives (the comparison
    :func:`open_fused_ops` makes on the whole program, made op by op).  Any difference or error
    keeps every fused call (a barrier), as there.  Returns None when the graph has none, else
    whether they were replaced; the note says so either way."""
    fused = [n for n in gm.graph.nodes if n.op == "call_function" and n.target in DECOMPOSITIONS]
    if not fused:
        return None
    found = sorted({str(n.target) for n in fused})
    verdict: list[str] = []

    class Compare(torch.fx.Interpreter):
        def run_node(self, n):
            out = super().run_node(n)
            if n.op == "call_function" and n.target in DECOMPOSITIONS and not verdict:
                args, kwargs = self.fetch_args_kwargs_from_env(n)
                if not same_outputs(*_used(n, out, DECOMPOSITIONS[n.target](*args, **kwargs))):
                    verdict.append("its decomposition did not reproduce it")
            return out

    try:
        with torch.no_grad():
            Compare(gm).run(*example)
    except Exception as exc:  # an unusual variant: the fused ops stay, as barriers
        verdict.append(f"could not be decomposed: {type(exc).__name__}")
    notes.append(_decided(found, verdict[0] if verdict else None))
    if verdict:
        return False
    for n in fused:
        n.target = DECOMPOSITIONS[n.target]
    gm.recompile()
    return True
