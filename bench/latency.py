"""CPU latency of original vs PruneKit-pruned torchvision models, next to the MACs reduction.

Models (torchvision 0.28.0 definitions through ``bench/_torchvision_shim.py``, random weights):
ResNet-50, MobileNetV3-Large, ViT-B/16, ConvNeXt-T.  Each is pruned by PruneKit (in-memory module
upload, l2, final classifier kept) at ratios 0.3 and 0.5, and timed at batch 1 and 16 with
``torch.set_num_threads(2)`` under ``torch.inference_mode()``: median of repeated runs after warm-up.

Three baselines are timed per model: the original eager module, and the *unpruned* model captured by
PruneKit's own capture (``torch.export`` -> ``GraphModule``), because the pruned model PruneKit
returns is such a graph: the ratio ``captured / pruned`` isolates what pruning buys from what
running through an FX graph costs (or saves).

    .venv/bin/python -m bench.latency [--models resnet50,...] [--ratios 0.3,0.5] [--threads 2]

Writes ``bench/results/latency.json`` and ``bench/results/latency.md``.
"""

from __future__ import annotations

import argparse
import gc
import json
import time
from pathlib import Path

from bench._timing import latency

import torch

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
MODELS = ("resnet50", "mobilenet_v3_large", "vit_b_16", "convnext_tiny")
REPEATS = {1: 30, 16: 8}


def macs(model, x) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as c:
        model(x)
    return int(c.get_total_flops() // 2)


def bench_model(name: str, ratios: list[float], batches: list[int], scale: float) -> dict:
    import prunekit
    from bench._torchvision_shim import torchvision
    from prunekit.io.inputs import from_specs
    from prunekit.io.loading import LoadedModel
    from prunekit.capture import capture

    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None).eval()
    spec_inputs = [{"shape": [1, 3, 224, 224], "dtype": "float32"}]
    xs = {b: torch.randn(b, 3, 224, 224) for b in batches}
    rep = {b: max(3, int(REPEATS.get(b, 5) * scale)) for b in batches}
    entry: dict = {"model": name, "params": sum(p.numel() for p in model.parameters()), "macs_b1": macs(model, xs[batches[0]][:1]),
                   "variants": {}}

    def record(label: str, m, extra: dict) -> None:
        v = dict(extra)
        v["latency"] = {}
        for b in batches:
            v["latency"][str(b)] = latency(m, xs[b], rep[b])
            print(f"  {name:20s} {label:16s} batch {b:2d}: {v['latency'][str(b)]['median_ms']:9.2f} ms", flush=True)
        entry["variants"][label] = v

    record("original_eager", model, {"params": entry["params"], "macs_b1": entry["macs_b1"]})
    loaded = LoadedModel("state_dict", 0, module=model, param_names={n for n, _ in model.named_parameters()})
    cap = capture(loaded, from_specs(spec_inputs))
    record("original_captured", cap.gm, {"params": entry["params"], "macs_b1": macs(cap.gm, xs[batches[0]][:1])})
    del cap
    gc.collect()
    for r in ratios:
        t0 = time.perf_counter()
        try:
            res = prunekit.prune(model, {"inputs": spec_inputs, "ratio": r, "importance": "l2"})
        except prunekit.PruneKitError as exc:
            entry["variants"][f"pruned_{r}"] = {"error": f"{exc.code}: {exc}"}
            print(f"  {name} ratio {r}: {exc.code}: {exc}", flush=True)
            continue
        pm = res.model
        widths = sorted({int(p.shape[0]) for n, p in pm.named_parameters() if p.dim() > 1})
        record(f"pruned_{r}", pm, {
            "prune_s": round(time.perf_counter() - t0, 2), "params": res.report.params_after,
            "macs_b1": res.report.macs_after, "check": res.report.check,
            "barriers": sorted({b["op"] for b in res.report.barriers}),
            "odd_widths": [w for w in widths if w % 8],
        })
        del res, pm
        gc.collect()
    # ratios: speed-up (vs eager and vs captured) next to MACs reduction.  MACs are compared with the
    # captured graph's: FlopCounterMode misses the fused attention of eager nn.MultiheadAttention
    # (torchvision ViT counts 11.3 GMACs eager vs 16.9 captured).
    base_e, base_c = entry["variants"]["original_eager"], entry["variants"]["original_captured"]
    for label, v in entry["variants"].items():
        if not label.startswith("pruned_") or "error" in v:
            continue
        v["macs_ratio"] = round(base_c["macs_b1"] / v["macs_b1"], 3)
        v["speedup_vs_eager"] = {b: round(base_e["latency"][b]["median_ms"] / v["latency"][b]["median_ms"], 3) for b in v["latency"]}
        v["speedup_vs_captured"] = {b: round(base_c["latency"][b]["median_ms"] / v["latency"][b]["median_ms"], 3) for b in v["latency"]}
    return entry


def markdown(res: dict) -> str:
    lines = ["# CPU latency: original vs PruneKit-pruned", "",
             f"torch {res['torch']}, {res['threads']} threads, inference_mode, median of {res['repeats']} runs per batch "
             "size after 3 warm-up runs; random weights; l2 importance; final classifier kept.", "",
             "| model | variant | params M | GMACs (b1) | MACs ratio | b1 ms | b16 ms | speed-up b1 (vs eager / vs captured) | speed-up b16 (vs eager / vs captured) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for e in res["models"]:
        for label, v in e["variants"].items():
            if "error" in v:
                lines.append(f"| {e['model']} | {label} | failed: {v['error']} | | | | | | |")
                continue
            lat = v["latency"]
            b1, b16 = lat.get("1", {}).get("median_ms", ""), lat.get("16", {}).get("median_ms", "")
            sp = ""
            if "speedup_vs_eager" in v:
                sp = [f"{v['speedup_vs_eager'][b]:.2f}x / {v['speedup_vs_captured'][b]:.2f}x" for b in ("1", "16") if b in lat]
            lines.append(f"| {e['model']} | {label} | {v['params'] / 1e6:.2f} | {v['macs_b1'] / 1e9:.2f} | "
                         f"{v.get('macs_ratio', 1.0):.2f}x{' (uncounted attention)' if label == 'original_eager' and v['macs_b1'] < 0.99 * e['variants']['original_captured']['macs_b1'] else ''} | {b1} | {b16} | {sp[0] if sp else ''} | {sp[1] if len(sp) > 1 else ''} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--ratios", default="0.3,0.5")
    ap.add_argument("--batches", default="1,16")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--scale", type=float, default=1.0, help="multiply the repeat counts")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    ratios = [float(r) for r in a.ratios.split(",")]
    batches = [int(b) for b in a.batches.split(",")]
    out = {"torch": torch.__version__, "threads": a.threads, "ratios": ratios,
           "repeats": {b: max(3, int(REPEATS.get(b, 5) * a.scale)) for b in batches}, "models": []}
    RESULTS.mkdir(parents=True, exist_ok=True)
    prev = RESULTS / "latency.json"
    keep = []
    if prev.exists():  # re-running some models keeps the others' results
        keep = [m for m in json.loads(prev.read_text()).get("models", []) if m["model"] not in a.models.split(",")]
    for name in a.models.split(","):
        print(name, flush=True)
        out["models"].append(bench_model(name, ratios, batches, a.scale))
        gc.collect()
    out["models"] = sorted(keep + out["models"], key=lambda m: MODELS.index(m["model"]) if m["model"] in MODELS else 99)
    out["loadavg_at_end_1_5_15"] = [round(x, 2) for x in __import__("os").getloadavg()]
    prev.write_text(json.dumps(out, indent=2))
    (RESULTS / "latency.md").write_text(markdown(out))
    print(markdown(out))


if __name__ == "__main__":
    main()
