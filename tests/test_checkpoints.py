"""Hugging Face checkpoint folders (config.json + safetensors) as uploads: folder, zip and tar;
sharded and tied; pruned to the same form or to .pt2; the config checked as data."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
import torch

import prunekit
from prunekit.errors import InvalidConfig, InvalidModelFile
from prunekit.providers.transformers_models import _transformers

from helpers import hf_checkpoint

TOKENS = [{"shape": [1, 16], "dtype": "int64", "low": 0, "high": 100}]


def _llama(tmp: Path, tie: bool = True) -> Path:
    return hf_checkpoint(tmp, "llama", tie=tie)


def _bert(tmp: Path) -> Path:
    return hf_checkpoint(tmp, "bert")


def _logits(model, x):
    with torch.no_grad():
        out = model(x)
    return out.logits if hasattr(out, "logits") else (out["logits"] if isinstance(out, dict) else out[0])


def _zip(folder: Path, dest: Path) -> Path:
    with zipfile.ZipFile(dest, "w") as zf:
        for p in sorted(folder.iterdir()):
            zf.write(p, arcname=f"{folder.name}/{p.name}")
    return dest


def test_llama_folder_through_the_cli_to_a_loadable_pruned_folder(tmp_path):
    src = _llama(tmp_path)
    assert not (src / "model.safetensors.index.json").exists()
    out = subprocess.run([sys.executable, "-m", "prunekit.cli", "prune", str(src), "--ratio", "0.5", "-q",
                          "-o", str(tmp_path / "small")], capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr
    small = tmp_path / "small"
    assert {"model.safetensors", "config.json", "manifest.json", "report.json"} <= {p.name for p in small.iterdir()}
    report = json.loads((small / "report.json").read_text())
    assert report["input_format"] == report["output_format"] == "checkpoint"
    assert report["architecture"] == "hf:LlamaForCausalLM" and report["check"]["passed"]
    assert report["params_after"] < 0.8 * report["params_before"]
    assert json.loads((small / "config.json").read_text()) == json.loads((src / "config.json").read_text())
    model = prunekit.load_pruned(small)
    assert model.lm_head.weight is model.model.embed_tokens.weight  # the tie survives pruning and rebuilding
    assert sum(p.numel() for p in model.parameters()) == report["params_after"]
    x = torch.randint(0, 100, (3, 16))
    result = prunekit.prune_to_dir(src, {"ratio": 0.5}, tmp_path / "again")  # the same plan, in this process
    assert torch.allclose(_logits(model, x), _logits(result.model, x), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("packing", ["zip", "tar.gz"])
def test_sharded_bert_archive_prunes_to_a_checkpoint(tmp_path, packing):
    src = _bert(tmp_path)
    assert len(list(src.glob("model-*.safetensors"))) > 1
    if packing == "zip":
        archive = _zip(src, tmp_path / "bert.zip")
    else:
        archive = tmp_path / "bert.tar.gz"
        with tarfile.open(archive, "w:gz") as tf:
            tf.add(src, arcname="bert")
    res = prunekit.prune_to_dir(archive, {"ratio": 0.5}, tmp_path / "out")
    assert res.report.input_format == "checkpoint" and res.report.architecture == "hf:BertForMaskedLM"
    assert res.report.params_after < res.report.params_before and res.report.check["passed"]
    rebuilt = prunekit.load_pruned(tmp_path / "out")
    x = torch.randint(0, 100, (2, 16))
    assert torch.allclose(_logits(rebuilt, x), _logits(res.model, x), atol=1e-4, rtol=1e-4)


def test_checkpoint_to_export_when_asked(tmp_path):
    src = _llama(tmp_path, tie=False)
    res = prunekit.prune_to_dir(src, {"ratio": 0.5, "output_format": "export"}, tmp_path / "out")
    assert set(res.artifacts) == {"model.pt2", "report.json"}
    ep = torch.export.load(str(tmp_path / "out" / "model.pt2"))
    x = torch.randint(0, 100, (2, 16))
    with torch.no_grad():
        assert torch.allclose(_logits(ep.module(), x), _logits(res.model, x), atol=1e-4, rtol=1e-4)


def _config_case(tmp_path: Path, edit) -> Path:
    src = _llama(tmp_path)
    cfg = json.loads((src / "config.json").read_text())
    edit(cfg)
    (src / "config.json").write_text(json.dumps(cfg))
    return src


@pytest.mark.parametrize("edit, field, words", [
    (lambda c: c.update(auto_map={"AutoModelForCausalLM": "modeling_evil.Evil"}), "config.json.auto_map", "custom"),
    (lambda c: c.update(architectures=["EvilForCausalLM"]), "config.json.architectures", "not a model class"),
    (lambda c: c.update(architectures=["os"]), "config.json.architectures", "not a model class"),
    (lambda c: c.update(quantization_config={"quant_method": "bitsandbytes"}), "config.json.quantization_config",
     "quantizer"),
    (lambda c: c.update(text_config={"trust_remote_code": True}), "config.json.text_config.trust_remote_code", "code"),
    (lambda c: c.update(model_type="bert"), "config.json.model_type", "does not fit"),
    (lambda c: c.update(model_type="nonexistent"), "config.json.model_type", "not one transformers"),
    (lambda c: c.pop("architectures"), "config.json.architectures", "names no model class"),
])
def test_configs_that_ask_for_code_or_do_not_fit_are_refused_naming_the_field(tmp_path, edit, field, words):
    src = _config_case(tmp_path, edit)
    with pytest.raises(InvalidConfig) as err:
        prunekit.prune(src, {"ratio": 0.5, "inputs": TOKENS})
    assert err.value.details[0]["path"] == field and words in str(err.value)


def test_a_config_whose_buffers_would_be_huge_is_refused_before_memory_is_taken(tmp_path):
    src = _bert(tmp_path)
    cfg = json.loads((src / "config.json").read_text())
    cfg["max_position_embeddings"] = 1 << 36  # BERT keeps position ids as a buffer: 512 GiB of them
    (src / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(InvalidConfig, match="bytes of buffers"):
        prunekit.prune(src, {"ratio": 0.5, "inputs": TOKENS})


def test_the_attention_implementation_is_never_the_files(tmp_path):
    src = _config_case(tmp_path, lambda c: c.update(_attn_implementation="kernels-community/evil",
                                                    attn_implementation="kernels-community/evil"))
    res = prunekit.prune(src, {"ratio": 0.5, "inputs": TOKENS})
    assert res.report.check["passed"]


def test_pickled_weights_are_refused_with_the_way_out(tmp_path):
    src = _llama(tmp_path)
    (src / "model.safetensors").rename(src / "pytorch_model.bin")
    with pytest.raises(InvalidModelFile, match="pickles, which are not read.*safetensors"):
        prunekit.prune(src, {"ratio": 0.5})


def _misplace_one(weight_map: dict) -> None:
    """Say one tensor of a shard that holds several is in another shard."""
    counts: dict = {}
    for v in weight_map.values():
        counts[v] = counts.get(v, 0) + 1
    k = next(k for k, v in weight_map.items() if counts[v] > 1)
    weight_map[k] = next(v for v in counts if v != weight_map[k])


@pytest.mark.parametrize("damage, words", [
    (lambda idx, folder: idx["weight_map"].update({next(iter(idx["weight_map"])): "../outside.safetensors"}),
     "not a shard file name"),
    (lambda idx, folder: idx["weight_map"].update({next(iter(idx["weight_map"])): "/etc/passwd.safetensors"}),
     "not a shard file name"),
    (lambda idx, folder: next(folder.glob("model-00002-*")).unlink(), "names shards the checkpoint does not hold"),
    (lambda idx, folder: idx["weight_map"].update({"extra.weight": idx["weight_map"][next(iter(idx["weight_map"]))]}),
     "lists tensors no shard holds"),
    (lambda idx, folder: _misplace_one(idx["weight_map"]), "but model.safetensors.index.json says"),
])
def test_a_damaged_shard_index_is_refused(tmp_path, damage, words):
    src = _bert(tmp_path)
    idx_path = src / "model.safetensors.index.json"
    idx = json.loads(idx_path.read_text())
    damage(idx, src)
    idx_path.write_text(json.dumps(idx))
    with pytest.raises(InvalidModelFile, match=words):
        prunekit.prune(src, {"ratio": 0.5})


def test_hf_names_need_their_config():
    from prunekit.registry import get_architecture

    with pytest.raises(InvalidConfig, match="config.json uploaded with the weights"):
        get_architecture("hf:LlamaForCausalLM")


def test_tied_embeddings_lose_their_residual_columns_together(tmp_path):
    """normalized_dims prune cuts the residual width, which the tied embedding and output layer
    share: one tensor, sliced once, written once, counted once, tied again when rebuilt."""
    src = _llama(tmp_path)
    res = prunekit.prune_to_dir(src, {"ratio": 0.5, "normalized_dims": "prune"}, tmp_path / "out")
    assert res.report.normalized_dims["function_changed"] and res.report.check["passed"]
    model = prunekit.load_pruned(tmp_path / "out")
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert tuple(model.model.embed_tokens.weight.shape) == (100, 32)
    assert sum(p.numel() for p in model.parameters()) == res.report.params_after
    x = torch.randint(0, 100, (2, 16))
    assert torch.allclose(_logits(model, x), _logits(res.model, x), atol=1e-4, rtol=1e-4)


def test_gpt2_conv1d_layers_rebuild_at_their_pruned_width(tmp_path):
    """GPT-2 stores its linear layers as transformers' Conv1D ([in, out], forward reads ``nf``):
    the rebuilt checkpoint sets ``nf`` from the pruned weight, so its own forward runs."""
    t = _transformers()
    torch.manual_seed(0)
    cfg = t.GPT2Config(n_embd=64, n_layer=2, n_head=4, vocab_size=100, n_positions=64, bos_token_id=0,
                       eos_token_id=0, architectures=["GPT2LMHeadModel"])
    t.GPT2LMHeadModel(cfg).save_pretrained(tmp_path / "gpt2")
    res = prunekit.prune_to_dir(tmp_path / "gpt2", {"ratio": 0.5}, tmp_path / "out")
    assert res.report.params_after < res.report.params_before and res.report.check["passed"]
    model = prunekit.load_pruned(tmp_path / "out")
    fc = model.transformer.h[0].mlp.c_fc
    assert fc.nf == fc.weight.shape[1] < 256
    x = torch.randint(0, 100, (2, 16))
    assert torch.allclose(_logits(model, x), _logits(res.model, x), atol=1e-4, rtol=1e-4)
