"""Hugging Face models as users upload them: small configs with random weights, each family saved
as a ``.pt2`` (``torch.export``, dynamic batch, ``strict=False``) and as traced TorchScript,
pruned at ratio 0.5, loaded back and run at another batch (and, for token models, another sequence
length: their sequence dim is exported dynamic or declared in the spec's ``dims``).  Attention heads must go (not only MLP
width) and be counted in the report; parameters must go down.

transformers is a test extra (the engine never imports it); models are built from configs, nothing
is downloaded.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
import torch.nn as nn

import prunekit
from helpers import example, load_output, save_model

# token models take any sequence length: exported with a dynamic sequence dim (.pt2) or declared
# so in the spec (traced TorchScript), and run back at another one
TOKENS = [{"shape": [1, 16], "dtype": "int64", "low": 0, "high": 100, "dims": [0, 1]}]
PIXELS = [{"shape": [1, 3, 32, 32]}]
# wav2vec2's audio length stays fixed: export derives it as a multiple of the conv strides (10 here),
# which a plain dynamic dim cannot say and the check's second size (one less) does not meet
AUDIO = [{"shape": [1, 400]}]


def _t():
    from prunekit.providers.transformers_models import _transformers

    return _transformers()  # imports torchvision's shim first where torchvision is installed


class First(nn.Module):
    """What a user exports: the model called on its inputs, one output tensor (named ``key``)."""

    def __init__(self, model: nn.Module, key: str = "last_hidden_state") -> None:
        super().__init__()
        self.model, self.key = model, key

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return getattr(self.model(x), self.key)


class EncoderDecoder(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=x, decoder_input_ids=x).last_hidden_state


def _small(**extra):
    return dict(num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, **extra)


def build(family: str) -> tuple[nn.Module, list[dict], int]:
    """(model, inputs, heads per attention before pruning)."""
    t = _t()
    torch.manual_seed(0)
    if family == "bert":
        m = t.BertModel(t.BertConfig(hidden_size=64, vocab_size=100, **_small()), add_pooling_layer=False)
        return First(m), TOKENS, 4
    if family == "gpt2":
        m = t.GPT2Model(t.GPT2Config(n_embd=64, n_layer=2, n_head=4, vocab_size=100, n_positions=64, use_cache=False))
        return First(m), TOKENS, 4
    if family == "llama":
        cfg = t.LlamaConfig(hidden_size=64, vocab_size=100, num_key_value_heads=2, tie_word_embeddings=False,
                            use_cache=False, **_small())
        return First(t.LlamaForCausalLM(cfg), "logits"), TOKENS, 4
    if family == "t5":
        cfg = t.T5Config(d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4, vocab_size=100, use_cache=False)
        return EncoderDecoder(t.T5Model(cfg)), TOKENS, 4
    if family == "bart":
        cfg = t.BartConfig(d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                           decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128, vocab_size=100,
                           max_position_embeddings=64, use_cache=False)
        return EncoderDecoder(t.BartModel(cfg)), TOKENS, 4
    if family == "vit":
        cfg = t.ViTConfig(hidden_size=64, image_size=32, patch_size=8, **_small())
        return First(t.ViTModel(cfg, add_pooling_layer=False)), PIXELS, 4
    if family == "wav2vec2":
        cfg = t.Wav2Vec2Config(hidden_size=64, conv_dim=(32, 32), conv_stride=(5, 2), conv_kernel=(10, 3),
                               num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4, vocab_size=32,
                               **_small())
        return First(t.Wav2Vec2Model(cfg)), AUDIO, 4
    if family == "clip_text":
        cfg = t.CLIPTextConfig(hidden_size=64, vocab_size=100, max_position_embeddings=64, **_small())
        return First(t.CLIPTextModel(cfg), "pooler_output"), TOKENS, 4
    if family == "clip_vision":
        cfg = t.CLIPVisionConfig(hidden_size=64, image_size=32, patch_size=8, **_small())
        return First(t.CLIPVisionModel(cfg), "pooler_output"), PIXELS, 4
    raise ValueError(family)


FAMILIES = ["bert", "gpt2", "llama", "t5", "bart", "vit", "wav2vec2", "clip_text", "clip_vision"]
FORMATS = {"export": ("model.pt2", "export"), "traced": ("model.pt", "torchscript")}
CASES = [(f, fmt) for f in FAMILIES for fmt in FORMATS]


@pytest.mark.parametrize("family,fmt", CASES, ids=[f"{f}-{fmt}" for f, fmt in CASES])
def test_family_prunes_heads_and_runs_at_another_batch(family, fmt, tmp_path):
    model, inputs, heads = build(family)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = save_model(model, fmt, inputs, tmp_path / ("m.pt2" if fmt == "export" else "m.pt"))
        res = prunekit.prune_to_dir(path, {"ratio": 0.5, "inputs": inputs}, tmp_path / "out")
    rep = res.report
    assert rep.check["passed"], rep.check
    assert not rep.barriers, rep.barriers
    assert rep.params_after < 0.8 * rep.params_before
    # every attention lost whole heads (half of them), keeping its head width
    assert rep.attention and len(rep.attention) >= 2, rep.attention
    for att in rep.attention:
        assert att["heads_before"] == heads and att["heads_after"] == heads // 2, att
        assert att["kv_heads_after"] < att["kv_heads_before"], att
        assert att["head_width_after"] == att["head_width_before"], att
    assert rep.to_dict()["attention"] == rep.attention  # in report.json as well
    name, out_fmt = FORMATS[fmt]
    loaded = load_output(res.artifacts[name], out_fmt)
    x = example(inputs, 3, seed=3)
    if inputs is TOKENS:  # another batch and another sequence length than the example's 2 x 16
        x = tuple(torch.randint(0, 100, (3, 24), generator=torch.Generator().manual_seed(3)) for _ in x)
    with torch.no_grad():
        y, ref = loaded(*x), res.model(*x)
    y, ref = (y[0] if isinstance(y, (tuple, list)) else y), (ref[0] if isinstance(ref, (tuple, list)) else ref)
    assert y.shape[0] == 3 and torch.isfinite(y).all()
    assert torch.allclose(y, ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_grouped_query_heads_go_with_their_key_value_head(fmt, tmp_path):
    """LLaMA with 4 query heads on 2 key/value heads: a pruned key/value head takes its two query
    heads with it, so the query projection keeps 2 of 4 heads and key/value 1 of 2.  Traced
    TorchScript keeps the whole slices (``x[:, :]``) of the key/value repeat the heads walk through."""
    model, inputs, _ = build("llama")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = save_model(model, fmt, inputs, tmp_path / ("m.pt2" if fmt == "export" else "m.pt"))
        res = prunekit.prune(path, {"ratio": 0.5, "inputs": inputs})
    params = dict(res.model.named_parameters())
    for i in (0, 1):
        attn = f"model.model.layers.{i}.self_attn"
        assert params[f"{attn}.q_proj.weight"].shape[0] == 2 * 16
        assert params[f"{attn}.k_proj.weight"].shape[0] == params[f"{attn}.v_proj.weight"].shape[0] == 16
        assert params[f"{attn}.o_proj.weight"].shape[1] == 2 * 16
        mlp = f"model.model.layers.{i}.mlp"  # the gated MLP: gate and up lose the same rows
        assert params[f"{mlp}.gate_proj.weight"].shape[0] == params[f"{mlp}.up_proj.weight"].shape[0] == 64
    assert [(a["kv_heads_before"], a["kv_heads_after"]) for a in res.report.attention] == [(2, 1), (2, 1)]
