"""The zoo beyond torchvision: a dozen timm models and ~15 small Hugging Face families, pruned by
PruneKit (uploaded as ``.pt2`` and as traced TorchScript) and by Torch-Pruning 1.6.1 on the same
modules, so that what users bring from the two biggest model sources is measured, not assumed.

Driven from ``bench/zoo.py``::

    .venv/bin/python -m bench.zoo run --suite timm            # bench/results/zoo_timm.json
    .venv/bin/python -m bench.zoo run --suite hf --models bert,gpt2 --tools pk_pt2,tp

Tools (one row each per model):

* ``pk_pt2``  PruneKit on a ``torch.export`` upload (``strict=False``, dynamic batch; token models
  also a dynamic sequence, falling back to a static one where export refuses);
* ``pk_ts``   PruneKit on a traced TorchScript upload (batch 2; token models declare the sequence
  dynamic in the spec's ``dims``);
  both through ``prunekit.prune_to_dir`` (written in the upload's format, loaded back, proven);
* ``tp``      Torch-Pruning ``MetaPruner`` (MagnitudeImportance(p=2), ratio 0.5, the output head
  ignored (HF: also embeddings and patch convs, so the residual width stays as PruneKit keeps it;
  timm attention with one `qkv` Linear: `num_heads` on it and `num_heads` updated after, as in
  TP's timm ViT example); for HF attention ``num_heads`` on the q/k/v projections with ``prune_num_heads=True``,
  head width kept, and the attention modules' head counts updated afterwards, as TP's HF examples do).

Ratio 0.5, l2, random weights, nothing downloaded.  One subprocess per (model, tool) with a
wall-clock limit; rows are kept in the suite's JSON and a rerun skips rows already there.
Every row has a short ``cause`` for grouping failures.
"""

from __future__ import annotations

import gc
import json
import re
import shutil
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

from bench.zoo import _first_line, _where  # one formatting of errors for every suite

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
TOOLS = ("pk_pt2", "pk_ts", "tp")
RATIO = 0.5

TIMM = ["resnet18", "resnet50d", "resnext50_32x4d", "efficientnet_b0", "mobilenetv3_large_100", "regnety_016",
        "convnext_atto", "deit_tiny_patch16_224", "vit_tiny_patch16_224", "ghostnet_100", "mobilevit_xxs",
        "levit_128s", "densenet121", "poolformer_s12", "edgenext_xx_small", "efficientformer_l1",
        "mobilenetv4_conv_small", "repvit_m1"]
HF = ["bert", "distilbert", "albert", "roberta", "gpt2", "gpt_neox", "llama", "qwen2", "mistral", "t5", "bart",
      "vit", "wav2vec2", "clip_text", "clip_vision", "mamba"]
SUITES = {"timm": TIMM, "hf": HF}

VOCAB = 100
TOKENS = [{"shape": [1, 16], "dtype": "int64", "low": 0, "high": VOCAB, "dims": [0, 1]}]
PIXELS = [{"shape": [1, 3, 32, 32]}]
# Mamba's sequence stays static in both uploads: export refuses a dynamic one and the trace unrolls
# the selective scan's Python loop at the example's length, so the spec must not declare it dynamic
TOKENS_STATIC = [{"shape": [1, 16], "dtype": "int64", "low": 0, "high": VOCAB, "dims": [0]}]
AUDIO = [{"shape": [1, 400]}]  # wav2vec2: export ties the length to the conv strides; kept static


# ----------------------------------------------------------------------------------------- models


def _nn():
    import torch.nn as nn

    class First(nn.Module):
        """What a user exports: the model called on its inputs, one output tensor (``key``)."""

        def __init__(self, model, key="last_hidden_state"):
            super().__init__()
            self.model, self.key = model, key

        def forward(self, x):
            return getattr(self.model(x), self.key)

    class EncoderDecoder(nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, x):
            return self.model(input_ids=x, decoder_input_ids=x).last_hidden_state

    return First, EncoderDecoder


def _small(**extra):
    return dict(num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, **extra)


def build_hf(name: str):
    """(module, spec inputs, heads per attention)."""
    import torch

    from bench._torchvision_shim import torchvision  # noqa: F401  (transformers imports torchvision)
    import transformers as t

    First, EncoderDecoder = _nn()
    torch.manual_seed(0)
    if name == "bert":
        return First(t.BertModel(t.BertConfig(hidden_size=64, vocab_size=VOCAB, **_small()), add_pooling_layer=False)), TOKENS, 4
    if name == "distilbert":
        cfg = t.DistilBertConfig(dim=64, hidden_dim=128, n_layers=2, n_heads=4, vocab_size=VOCAB)
        return First(t.DistilBertModel(cfg)), TOKENS, 4
    if name == "albert":
        cfg = t.AlbertConfig(hidden_size=64, embedding_size=32, vocab_size=VOCAB, **_small())
        return First(t.AlbertModel(cfg, add_pooling_layer=False)), TOKENS, 4
    if name == "roberta":
        cfg = t.RobertaConfig(hidden_size=64, vocab_size=VOCAB, max_position_embeddings=80, **_small())
        return First(t.RobertaModel(cfg, add_pooling_layer=False)), TOKENS, 4
    if name == "gpt2":
        cfg = t.GPT2Config(n_embd=64, n_layer=2, n_head=4, vocab_size=VOCAB, n_positions=64, use_cache=False)
        return First(t.GPT2LMHeadModel(cfg), "logits"), TOKENS, 4  # lm_head tied to wte
    if name == "gpt_neox":
        cfg = t.GPTNeoXConfig(hidden_size=64, vocab_size=VOCAB, max_position_embeddings=64, use_cache=False, **_small())
        return First(t.GPTNeoXForCausalLM(cfg), "logits"), TOKENS, 4
    if name == "llama":
        cfg = t.LlamaConfig(hidden_size=64, vocab_size=VOCAB, num_key_value_heads=2, tie_word_embeddings=False,
                            use_cache=False, **_small())
        return First(t.LlamaForCausalLM(cfg), "logits"), TOKENS, 4
    if name == "qwen2":
        cfg = t.Qwen2Config(hidden_size=64, vocab_size=VOCAB, num_key_value_heads=2, tie_word_embeddings=True,
                            use_cache=False, **_small())
        return First(t.Qwen2ForCausalLM(cfg), "logits"), TOKENS, 4
    if name == "mistral":
        cfg = t.MistralConfig(hidden_size=64, vocab_size=VOCAB, num_key_value_heads=2, sliding_window=None,
                              use_cache=False, **_small())
        return First(t.MistralForCausalLM(cfg), "logits"), TOKENS, 4
    if name == "t5":
        cfg = t.T5Config(d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4, vocab_size=VOCAB, use_cache=False)
        return EncoderDecoder(t.T5Model(cfg)), TOKENS, 4
    if name == "bart":
        cfg = t.BartConfig(d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                           decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128, vocab_size=VOCAB,
                           max_position_embeddings=64, use_cache=False)
        return EncoderDecoder(t.BartModel(cfg)), TOKENS, 4
    if name == "vit":
        return First(t.ViTModel(t.ViTConfig(hidden_size=64, image_size=32, patch_size=8, **_small()),
                                add_pooling_layer=False)), PIXELS, 4
    if name == "wav2vec2":
        cfg = t.Wav2Vec2Config(hidden_size=64, conv_dim=(32, 32), conv_stride=(5, 2), conv_kernel=(10, 3),
                               num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4, vocab_size=32, **_small())
        return First(t.Wav2Vec2Model(cfg)), AUDIO, 4
    if name == "clip_text":
        cfg = t.CLIPTextConfig(hidden_size=64, vocab_size=VOCAB, max_position_embeddings=64, **_small())
        return First(t.CLIPTextModel(cfg), "pooler_output"), TOKENS, 4
    if name == "clip_vision":
        cfg = t.CLIPVisionConfig(hidden_size=64, image_size=32, patch_size=8, **_small())
        return First(t.CLIPVisionModel(cfg), "pooler_output"), PIXELS, 4
    if name == "mamba":
        cfg = t.MambaConfig(hidden_size=64, state_size=8, num_hidden_layers=2, vocab_size=VOCAB, use_cache=False)
        return First(t.MambaForCausalLM(cfg), "logits"), TOKENS_STATIC, 0
    raise ValueError(name)


def build_timm(name: str):
    from bench._torchvision_shim import torchvision  # noqa: F401  (timm imports torchvision)
    import timm
    import torch

    torch.manual_seed(0)
    m = timm.create_model(name, pretrained=False).eval()
    size = list(m.pretrained_cfg.get("input_size", (3, 224, 224)))
    return m, [{"shape": [1] + size}], 0


def build(suite: str, name: str):
    return (build_timm if suite == "timm" else build_hf)(name)


# ---------------------------------------------------------------------------------------- helpers


def _example(inputs, batch, seq=None, seed=0):
    from prunekit.io.inputs import from_specs, sample_inputs

    xs = sample_inputs(from_specs(inputs), batch, seed)
    if seq is not None and inputs is TOKENS:
        import torch

        g = torch.Generator().manual_seed(seed)
        xs = tuple(torch.randint(0, VOCAB, (batch, seq), generator=g) for _ in xs)
    return xs


def _nparams(model) -> int:
    """Unique parameters (a tied matrix once)."""
    seen, n = set(), 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            n += p.numel()
    return n


def _macs(model, xs) -> int:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    try:
        with torch.no_grad(), FlopCounterMode(display=False) as c:
            model(*xs)
        return int(c.get_total_flops() // 2)
    except Exception:
        return -1


def _out(y):
    import torch
    from torch.utils._pytree import tree_flatten

    return [t for t in tree_flatten(y)[0] if isinstance(t, torch.Tensor)]


def cause_of(reason: str) -> str:
    """A short, groupable cause: numbers, names in quotes and shapes dropped."""
    r = reason.split("\n")[0]
    r = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", r)
    r = re.sub(r"\[[^\]]*\]|\([^)]*\)", "(…)", r)
    r = re.sub(r"\d+(\.\d+)?", "N", r)
    return r[:120]


# ------------------------------------------------------------------------------------------ child


def child(suite: str, name: str, tool: str, out_path: Path, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    warnings.simplefilter("ignore")
    row: dict = {"suite": suite, "model": name, "tool": tool}
    import subprocess

    row["engine_commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE.parent,
                                          capture_output=True, text=True).stdout.strip()

    def finish(status, reason="", exc=None):
        row["status"], row["reason"] = status, reason
        row["cause"] = cause_of(reason) if status != "ok" else ""
        if exc is not None:
            row["error_where"] = _where(exc.__traceback__)
            row["traceback_tail"] = "".join(traceback.format_exception(exc))[-3000:]
        out_path.write_text(json.dumps(row))

    try:
        model, inputs, heads = build(suite, name)
        model.eval()
    except Exception as exc:
        return finish("build_failed", _first_line(exc), exc)
    row["input"] = "x".join(map(str, inputs[0]["shape"])) + (" (" + inputs[0]["dtype"] + ")" if "dtype" in inputs[0] else "")
    x1 = _example(inputs, 1)
    try:
        with torch.no_grad():
            ref = [tuple(t.shape) for t in _out(model(*x1))]
    except Exception as exc:
        return finish("original_fails", _first_line(exc), exc)
    row["params_before"] = _nparams(model)
    row["macs_before"] = _macs(model, x1)
    if tool == "tp":
        return _tp(suite, name, model, inputs, heads, ref, row, finish)
    return _pk(tool, model, inputs, ref, row, finish)


def _export(model, inputs, path: Path, row: dict) -> None:
    import torch

    x = _example(inputs, 2)
    batch = torch.export.Dim("batch", min=1, max=1024)
    shapes = [{0: batch} for _ in x]
    if inputs is TOKENS:
        seq = torch.export.Dim("seq", min=2, max=64)
        try:
            ep = torch.export.export(model, x, dynamic_shapes=tuple({0: batch, 1: seq} for _ in x), strict=False)
            row["export_dims"] = "batch,seq"
            torch.export.save(ep, str(path))
            return
        except Exception as exc:
            row["export_note"] = "dynamic seq refused: " + _first_line(exc)[:200]
    ep = torch.export.export(model, x, dynamic_shapes=tuple(shapes), strict=False)
    row["export_dims"] = "batch"
    torch.export.save(ep, str(path))


def _pk(tool, model, inputs, ref, row, finish) -> None:
    import torch

    import prunekit
    from prunekit.errors import PruneKitError

    tmp = Path(tempfile.mkdtemp(prefix="pkzoo_"))
    try:
        try:
            if tool == "pk_pt2":
                path = tmp / "model.pt2"
                _export(model, inputs, path, row)
            else:
                path = tmp / "model.pt"
                with torch.no_grad():
                    torch.jit.save(torch.jit.trace(model, _example(inputs, 2), check_trace=False, strict=False), str(path))
        except Exception as exc:
            return finish("upload_failed", ("export: " if tool == "pk_pt2" else "trace: ") + _first_line(exc), exc)
        del model
        gc.collect()
        if inputs is TOKENS and row.get("export_dims") == "batch":  # a .pt2 with a static sequence
            inputs = TOKENS_STATIC
        spec = {"inputs": inputs, "ratio": RATIO, "importance": "l2"}
        t0 = time.perf_counter()
        try:
            res = prunekit.prune_to_dir(path, spec, tmp / "out")
        except PruneKitError as exc:
            row["total_s"] = round(time.perf_counter() - t0, 2)
            return finish("failed", f"{exc.code}: {str(exc).splitlines()[0] if str(exc) else ''}"[:400], exc)
        except Exception as exc:
            row["total_s"] = round(time.perf_counter() - t0, 2)
            return finish("crashed", "uncaught " + _first_line(exc), exc)
        row["total_s"] = round(time.perf_counter() - t0, 2)
        rep = res.report
        t = rep.timings
        row["time_s"] = round(sum(t.get(k, 0.0) for k in ("capture", "analyse", "rank", "remove")), 2)
        row["params_before"], row["params_after"] = rep.params_before, rep.params_after
        row["macs_before"], row["macs_after"] = rep.macs_before, rep.macs_after
        row["params_written"] = _nparams(res.model)
        row["check_passed"] = bool(rep.check.get("passed"))
        row["check_max_rel"] = rep.check.get("max_rel")
        row["groups_found"], row["groups_pruned"] = rep.groups_found, rep.groups_pruned
        row["barrier_ops"] = sorted({b["op"] for b in rep.barriers})
        if rep.attention:
            row["attentions"] = len(rep.attention)
            row["heads_before"] = sum(a["heads_before"] for a in rep.attention)
            row["heads_after"] = sum(a["heads_after"] for a in rep.attention)
        _after(res.model, inputs, ref, row, dynamic=rep.dynamic_batch)
        ok = row["check_passed"] and row["runs_after"] and row["shape_same"]
        reason = ""
        if not row["check_passed"]:
            reason = f"check failed (max_rel {row['check_max_rel']})"
        elif not row["runs_after"]:
            reason = "written model does not run: " + row.get("after_error", "")
        elif not row["shape_same"]:
            reason = "output shape changed"
        if ok and row["groups_pruned"] == 0:
            ok, reason = False, "nothing pruned (no prunable group)"
        finish("ok" if ok else "wrong", reason)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _after(model, inputs, ref, row, dynamic=True) -> None:
    """Run the pruned model at batch 1 (shapes compared) and at batch 3 (and, for token models,
    sequence 24): what the upload accepted."""
    import torch

    try:
        with torch.no_grad():
            got = [tuple(t.shape) for t in _out(model(*_example(inputs, 1)))]
        row["runs_after"], row["shape_same"] = True, got == ref
    except Exception as exc:
        row["runs_after"], row["shape_same"] = False, False
        row["after_error"] = _first_line(exc)[:300]
        return
    if dynamic:
        try:
            with torch.no_grad():
                model(*_example(inputs, 3, seed=3))
            row["runs_batch3"] = True
        except Exception as exc:
            row["runs_batch3"], row["batch3_error"] = False, _first_line(exc)[:300]
    if inputs is TOKENS:
        try:
            with torch.no_grad():
                model(*_example(inputs, 3, seq=24, seed=3))
            row["runs_seq24"] = True
        except Exception as exc:
            row["runs_seq24"], row["seq24_error"] = False, _first_line(exc)[:300]


# ------------------------------------------------------------------------------------ Torch-Pruning

_QKV = [("q_proj", "k_proj", "v_proj"), ("query", "key", "value"), ("q_lin", "k_lin", "v_lin"), ("q", "k", "v")]
_HEAD_ATTRS = ("num_heads", "num_attention_heads", "n_heads", "n_head", "head_count")


def _attentions(model):
    """(attention module, q, k, v, heads, kv heads, head_dim) for every attention whose projections are
    separate nn.Linear (GPT-2's fused Conv1D and GPT-NeoX's fused query_key_value are not listed:
    TP's num_heads wants one projection per q/k/v)."""
    import torch.nn as nn

    found = []
    for m in model.modules():
        for q, k, v in _QKV:
            lq, lk, lv = (getattr(m, n, None) for n in (q, k, v))
            if all(isinstance(x, nn.Linear) for x in (lq, lk, lv)):
                heads = next((getattr(m, a) for a in _HEAD_ATTRS if isinstance(getattr(m, a, None), int)), None)
                cfg = getattr(m, "config", None)
                if heads is None and cfg is not None:
                    heads = getattr(cfg, "num_attention_heads", None)
                hd = getattr(m, "head_dim", None) or getattr(m, "attention_head_size", None) or getattr(m, "key_value_proj_dim", None)
                if heads and not hd:
                    hd = lq.out_features // heads
                if heads and hd:
                    found.append((m, lq, lk, lv, lq.out_features // hd, lk.out_features // hd, hd))
    return found


def _tp(suite, name, model, inputs, heads, ref, row, finish) -> None:
    import torch
    import torch.nn as nn

    import torch_pruning as tp

    x1 = _example(inputs, 1)
    ignored = []
    if suite == "timm":
        head = model.get_classifier()
        ignored = [head] if isinstance(head, nn.Module) and not isinstance(head, nn.Identity) else []
        nc = getattr(model, "num_classes", 1000)
        ignored += [m for m in model.modules() if isinstance(m, nn.Linear) and m.out_features == nc and m not in ignored]
    else:
        # the output head, and what fixes the residual width (embeddings, ViT/CLIP patch convs): PruneKit
        # keeps the model's output shape, and a TP run that narrows the hidden state changes it
        ignored = [m for n, m in model.named_modules()
                   if n.endswith("lm_head") or isinstance(m, (nn.Embedding, nn.Conv2d))]
    kw = {}
    atts = _attentions(model) if suite == "hf" else []
    fused = [m for m in model.modules() if suite == "timm" and isinstance(getattr(m, "qkv", None), nn.Linear)
             and isinstance(getattr(m, "num_heads", None), int) and isinstance(getattr(m, "head_dim", None), int)]
    if fused:  # timm's Attention (one qkv Linear): what TP's timm ViT example does
        kw = dict(num_heads={m.qkv: m.num_heads for m in fused}, prune_num_heads=True, prune_head_dims=False,
                  head_pruning_ratio=RATIO)
        row["heads_before"], row["attentions"] = sum(m.num_heads for m in fused), len(fused)
    if atts:
        num_heads = {}
        for _, q, k, v, h, kvh, _hd in atts:
            num_heads[q] = h
            num_heads[k] = kvh
            num_heads[v] = kvh
        kw = dict(num_heads=num_heads, prune_num_heads=True, prune_head_dims=False, head_pruning_ratio=RATIO)
        row["heads_before"] = sum(a[4] for a in atts)
        row["attentions"] = len(atts)
    t0 = time.perf_counter()
    try:
        imp = tp.importance.MagnitudeImportance(p=2)
        pruner = tp.pruner.MetaPruner(model, x1, importance=imp, pruning_ratio=RATIO, ignored_layers=ignored, **kw)
        pruner.step()
    except Exception as exc:
        row["total_s"] = round(time.perf_counter() - t0, 2)
        return finish("failed", _first_line(exc), exc)
    row["time_s"] = row["total_s"] = round(time.perf_counter() - t0, 2)
    if fused:
        for m in fused:
            m.num_heads = m.qkv.out_features // (3 * m.head_dim)
        row["heads_after"] = sum(m.num_heads for m in fused)
    # what TP's HF examples do after step(): tell each attention its new head counts
    if atts:
        after = 0
        for m, q, k, _v, _h, _kvh, hd in atts:
            nh, nkv = q.out_features // hd, k.out_features // hd
            after += nh
            for a in ("num_heads", "num_attention_heads", "n_heads", "n_head"):
                if isinstance(getattr(m, a, None), int):
                    setattr(m, a, nh)
            if isinstance(getattr(m, "all_head_size", None), int):
                m.all_head_size = nh * hd
            if isinstance(getattr(m, "inner_dim", None), int):
                m.inner_dim = nh * hd
            if isinstance(getattr(m, "num_key_value_heads", None), int):
                m.num_key_value_heads = nkv
            if isinstance(getattr(m, "num_key_value_groups", None), int) and nkv:
                m.num_key_value_groups = nh // nkv
        row["heads_after"] = after
    model.eval()
    row["params_after"] = _nparams(model)
    row["macs_after"] = _macs(model, x1)
    _after(model, inputs, ref, row)
    ok = row["runs_after"] and row["shape_same"]
    reason = ""
    if not row["runs_after"]:
        reason = "pruned model does not run: " + row.get("after_error", "")
    elif not row["shape_same"]:
        reason = "output shape changed"
    if ok and row["params_after"] == row["params_before"]:
        ok, reason = False, "nothing pruned"
    finish("ok" if ok else "wrong", reason)


# ----------------------------------------------------------------------------------------- runner


def json_path(suite: str) -> Path:
    return RESULTS / f"zoo_{suite}.json"


def load_rows(suite: str) -> list[dict]:
    p = json_path(suite)
    return json.loads(p.read_text())["rows"] if p.exists() else []


def save_rows(suite: str, rows: list[dict], meta: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    json_path(suite).write_text(json.dumps({"meta": meta, "rows": rows, "summary": summarise(rows)}, indent=1) + "\n")


def summarise(rows: list[dict]) -> dict:
    out = {}
    for tool in TOOLS:
        tr = [r for r in rows if r["tool"] == tool]
        causes: dict[str, list[str]] = {}
        for r in tr:
            if r["status"] != "ok":
                causes.setdefault(f"{r['status']}: {r.get('cause', '')}", []).append(r["model"])
        out[tool] = {"ok": sum(r["status"] == "ok" for r in tr), "total": len(tr), "failures_by_cause": causes}
    return out


def run_suite(args, run_one) -> None:
    import subprocess

    suite = args.suite
    names = args.models.split(",") if args.models else SUITES[suite]
    tools = args.tools.split(",") if args.tools else list(TOOLS)
    rows = load_rows(suite)
    if args.redo:
        rows = [r for r in rows if not (r["model"] in names and r["tool"] in tools)]
    have = {(r["model"], r["tool"]) for r in rows}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE.parent, capture_output=True,
                            text=True).stdout.strip()
    meta = {"commit": commit, "ratio": RATIO, "importance": "l2", "timeout_s": args.timeout, "threads": args.threads,
            "tools": {"pk_pt2": "PruneKit, torch.export upload", "pk_ts": "PruneKit, traced TorchScript upload",
                      "tp": "Torch-Pruning 1.6.1 MetaPruner"}}
    todo = [(n, t) for n in names for t in tools if (n, t) not in have]
    print(f"{len(todo)} runs to do ({len(have)} already in {json_path(suite).name}), commit {commit}", flush=True)
    for i, (name, tool) in enumerate(todo):
        row = run_one(name, tool, args.timeout, args.mem_limit_mb, args.threads, suite=suite)
        row.update(suite=suite, commit=commit)
        row.setdefault("cause", cause_of(row.get("reason", "")) if row.get("status") != "ok" else "")
        rows.append(row)
        save_rows(suite, rows, meta)
        print(f"[{i + 1}/{len(todo)}] {name:24s} {tool:6s} {row.get('status'):12s} t={row.get('time_s', '')} "
              f"total={row.get('total_s', '')} wall={row.get('wall_s', '')} "
              f"params {row.get('params_before', '')}->{row.get('params_after', '')} "
              f"heads {row.get('heads_before', '')}->{row.get('heads_after', '')} {row.get('reason', '')}"[:400], flush=True)
    save_rows(suite, rows, meta)


def _fmt_int(v) -> str:
    return f"{v:,}" if isinstance(v, int) and v >= 0 else ""


def markdown(suite: str) -> str:
    """The suite's table for bench/README.md (also written to results/zoo_<suite>.md)."""
    rows = load_rows(suite)
    if not rows:
        return ""
    names = [n for n in SUITES[suite] if any(r["model"] == n for r in rows)]
    by = {(r["model"], r["tool"]): r for r in rows}
    s = summarise(rows)
    out = ["| tool | prunes / total |", "|---|---|"]
    for tool in TOOLS:
        out.append(f"| {tool} | {s[tool]['ok']} / {s[tool]['total']} |")
    out += ["", "| model | tool | status | params before → after | MACs before → after | heads | check max_rel | "
            "time s (total) | runs b3 / seq24 | cause / barriers |", "|---|---|---|---|---|---|---|---|---|---|"]
    for n in names:
        for tool in TOOLS:
            r = by.get((n, tool))
            if not r:
                continue
            heads = f"{r['heads_before']} → {r.get('heads_after', '')}" if r.get("heads_before") is not None else ""
            mr = r.get("check_max_rel")
            mr = f"{mr:.1e}" if isinstance(mr, (int, float)) else ""
            t = f"{r.get('time_s', '')} ({r.get('total_s', r.get('wall_s', ''))})"
            runs = "/".join({True: "y", False: "n"}.get(r.get(k), "-") for k in ("runs_batch3", "runs_seq24"))
            note = r.get("reason", "") if r["status"] != "ok" else ", ".join(r.get("barrier_ops") or [])
            pw = r.get("params_written")
            if r["status"] == "ok" and isinstance(pw, int) and pw != r.get("params_after"):
                note = (note + "; " if note else "") + f"written model: {pw:,} unique params"
            if r.get("export_note"):
                note = (note + "; " if note else "") + ".pt2 with a static sequence (export refused a dynamic one)"
            note = note.replace("|", "\\|")[:160]
            out.append(f"| {n} | {tool} | {r['status']} | {_fmt_int(r.get('params_before'))} → "
                       f"{_fmt_int(r.get('params_after'))} | {_fmt_int(r.get('macs_before'))} → "
                       f"{_fmt_int(r.get('macs_after'))} | {heads} | {mr} | {t} | {runs} | {note} |")
    out += ["", "Failures by cause:", ""]
    for tool in TOOLS:
        for cause, models in sorted(s[tool]["failures_by_cause"].items(), key=lambda kv: -len(kv[1])):
            out.append(f"- {tool} ({len(models)}): `{cause}`: {', '.join(models)}")
    text = "\n".join(out) + "\n"
    (RESULTS / f"zoo_{suite}.md").write_text(text)
    return text


if __name__ == "__main__":
    if sys.argv[1] == "md":
        print(markdown(sys.argv[2]))
        sys.exit(0)
    child(sys.argv[1], sys.argv[2], sys.argv[3], Path(sys.argv[4]), int(sys.argv[5]) if len(sys.argv) > 5 else 1)
