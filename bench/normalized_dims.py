"""``normalized_dims: prune`` on ConvNeXt-T and ViT-B/16 against Torch-Pruning 1.6.1, in one run.

In ``keep`` mode (the default) a LayerNorm pins the channels it normalises, so the residual width
of a transformer or a ConvNeXt stays and only the blocks' inner widths go.  ``prune`` lets the
residual width go too (the layer norms then normalise over the kept channels, and the check
compares with that reference).  Torch-Pruning always prunes through LayerNorm (it has no check).
This script measures, on the same weights and inputs, at pruning ratio 0.5, L2 magnitude:

* ``pk_keep`` / ``pk_prune``: PruneKit on a ``torchvision:NAME`` state-dict upload with
  ``output_format: export`` (the pruned graph; a state-dict output would run torchvision's own
  ``forward``, and ViT's ``reshape(n, self.hidden_dim, ...)`` hard-codes the residual width), through
  ``prunekit.prune_to_dir`` (what the service runs: pruned, checked, written, loaded back);
* ``tp``: ``MetaPruner(MagnitudeImportance(p=2), pruning_ratio=0.5)``, final classifier ignored,
  as Torch-Pruning's torchvision example runs it (ViT: ``hidden_dim`` set from the pruned patch
  embedding afterwards, or the model does not run; given ``num_heads``, 1.6.1 prunes only 33%).

Weights are torchvision's random initialisation (``weights=None``, seed 0) with the zero-initialised
tensors (ViT's classifier) redrawn N(0, 0.02), so outputs are not identically zero and the
check and the output change mean something.  Parameters and MACs are counted for every row by
one counter (``prunekit.metrics``) at batch 1, 224x224 (with the fused attention fast path of
``nn.MultiheadAttention`` off, which the counter cannot see into).  ``output change`` is the relative L2
change of the logits against the original on the same 2 random inputs (for PruneKit also the
report's own figure on the check's inputs).  Each (model, tool) runs in its own process.

    .venv/bin/python -m bench.normalized_dims          # writes results/normalized_dims.json and .md
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "bench" / "results"
MODELS = ("convnext_tiny", "vit_b_16")
TOOLS = ("pk_keep", "pk_prune", "tp")
RATIO = 0.5
SHAPE = (1, 3, 224, 224)


def _model(name: str):
    import torch

    from prunekit.registry import build

    torch.manual_seed(0)
    model = build(f"torchvision:{name}")
    with torch.no_grad():
        for p in model.parameters():
            if p.is_floating_point() and not p.any():
                p.normal_(0.0, 0.02)
    return model.eval()


def _change(ref, got) -> float:
    return float((got.double() - ref.double()).norm() / ref.double().norm())


def child(name: str, tool: str) -> dict:
    import torch

    from prunekit.metrics import count_macs, count_parameters

    torch.set_num_threads(1)
    # eager nn.MultiheadAttention in eval takes a fused fast path that torch's FLOP counter does
    # not see; the slow path computes the same and is counted, so every row counts attention
    torch.backends.mha.set_fastpath_enabled(False)
    model = _model(name)
    x = torch.randn(*SHAPE, generator=torch.Generator().manual_seed(1))
    probe = torch.randn(2, *SHAPE[1:], generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = model(probe)
    row = {"model": name, "tool": tool, "params_before": count_parameters(model),
           "macs_before": count_macs(model, (x,))}
    t0 = time.perf_counter()
    if tool == "tp":
        import torch.nn as nn
        import torch_pruning as tp

        head = model.heads.head if name.startswith("vit") else model.classifier[-1]
        pruner = tp.pruner.MetaPruner(model, x, importance=tp.importance.MagnitudeImportance(p=2),
                                      pruning_ratio=RATIO, ignored_layers=[head])
        pruner.step()
        if name.startswith("vit"):
            model.hidden_dim = model.conv_proj.out_channels  # Torch-Pruning's example does this by hand
        row["seconds"] = time.perf_counter() - t0
        pruned = model.eval()
        row["check"] = "none (Torch-Pruning does not check)"
        row["mha_embed_dims"] = sorted({m.embed_dim for m in pruned.modules() if isinstance(m, nn.MultiheadAttention)})
    else:
        import prunekit

        mode = tool.split("_")[1]
        with tempfile.TemporaryDirectory() as tmp:
            weights = Path(tmp) / "weights.pt"
            torch.save(model.state_dict(), weights)
            spec = {"architecture": f"torchvision:{name}", "ratio": RATIO, "importance": "l2",
                    "normalized_dims": mode, "output_format": "export",
                    "inputs": [{"shape": list(SHAPE), "dtype": "float32"}]}
            res = prunekit.prune_to_dir(weights, spec, Path(tmp) / "out")
        row["seconds"] = time.perf_counter() - t0
        rep = res.report
        pruned = res.model
        row["check"] = {"passed": rep.check["passed"], "max_rel": rep.check["max_rel"]}
        row["timings"] = rep.timings
        nd = rep.normalized_dims or {}
        row["ops_renormalised"] = nd.get("ops_renormalised", 0)
        row["report_output_change"] = (nd.get("output_change") or {}).get("rel_l2")
        row["groups_pruned"] = f"{rep.groups_pruned}/{rep.groups_found}"
        row["kept"] = [k["param"] for k in rep.kept][:6]
    with torch.no_grad():
        got = pruned(probe)
    row["params_after"] = count_parameters(pruned)
    row["macs_after"] = count_macs(pruned, (x,))
    row["param_reduction_percent"] = round(100 * (1 - row["params_after"] / row["params_before"]), 2)
    row["macs_reduction_percent"] = round(100 * (1 - row["macs_after"] / row["macs_before"]), 2)
    row["output_change"] = _change(ref, got)
    return row


def markdown(out: dict) -> str:
    m = out["meta"]
    lines = ["# `normalized_dims`: PruneKit keep / prune vs Torch-Pruning on ConvNeXt-T and ViT-B/16", "",
             f"`bench/normalized_dims.py`, git {m['git']}: torch {m['torch']}, torchvision {m['torchvision']}, "
             f"Torch-Pruning {m['torch_pruning']}, 1 torch thread per row, load {m['load_avg_start'][0]:.1f} at start "
             "(a shared, noisy machine: compare the ratios, not the seconds). Ratio 0.5, L2 magnitude, random weights "
             "(zero-initialised tensors redrawn), batch 1 at 224x224; params and MACs from one counter.", "",
             "| model | tool | params after | param reduction | MAC reduction | check vs its reference | "
             "output change vs original | seconds |", "|---|---|---|---|---|---|---|---|"]
    names = {"pk_keep": "PruneKit, normalized_dims keep", "pk_prune": "PruneKit, normalized_dims prune",
             "tp": "Torch-Pruning 1.6.1"}
    for r in out["rows"]:
        if "error" in r:
            lines.append(f"| {r['model']} | {names[r['tool']]} | failed: {r['error']} | | | | | |")
            continue
        chk = r["check"] if isinstance(r["check"], str) else (
            f"passed, {r['check']['max_rel']:.1e}" if r["check"]["passed"] else "FAILED")
        lines.append(f"| {r['model']} | {names[r['tool']]} | {r['params_after']:,} / {r['params_before']:,} | "
                     f"**{r['param_reduction_percent']:.2f}%** | {r['macs_reduction_percent']:.2f}% | {chk} | "
                     f"{r['output_change']:.3f} | {r['seconds']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "one":
        Path(argv[3]).write_text(json.dumps(child(argv[1], argv[2]), default=str))
        return 0
    import torch
    from importlib.metadata import version

    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    out = {"meta": {"python": platform.python_version(), "torch": torch.__version__, "torchvision": version("torchvision"),
                    "torch_pruning": version("torch-pruning"), "git": git, "ratio": RATIO,
                    "load_avg_start": os.getloadavg()}, "rows": []}
    for name in MODELS:
        for tool in TOOLS:
            with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
                path = Path(f.name)
            proc = subprocess.run([sys.executable, "-W", "ignore", "-m", "bench.normalized_dims", "one", name, tool,
                                   str(path)], cwd=ROOT, capture_output=True, text=True, timeout=1800)
            if proc.returncode == 0:
                row = json.loads(path.read_text())
            else:
                tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
                row = {"model": name, "tool": tool, "error": tail[:300]}
            path.unlink(missing_ok=True)
            out["rows"].append(row)
            print(json.dumps({k: row.get(k) for k in ("model", "tool", "param_reduction_percent",
                                                        "macs_reduction_percent", "check", "output_change",
                                                        "seconds", "error")}, default=str), flush=True)
    out["meta"]["load_avg_end"] = os.getloadavg()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "normalized_dims.json").write_text(json.dumps(out, indent=2, default=str))
    (RESULTS / "normalized_dims.md").write_text(markdown(out))
    print(f"wrote {RESULTS / 'normalized_dims.json'} and .md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
