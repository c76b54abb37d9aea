"""Where PruneKit's time and memory go, stage by stage, on a ResNet-50 and a ViT-B/16.

Both models are defined here (no torchvision): a ResNet-50 (bottlenecks [3, 4, 6, 3], BN,
25.6M params) and a ViT-B/16 (patch 16, dim 768, 12 layers, 12 heads, MLP 3072, 86.6M params,
``F.scaled_dot_product_attention``), random weights, 224x224 inputs.

Each model runs in a fresh subprocess: it is built, saved as traced TorchScript (batch 2,
``check_trace=False``, the common upload) or as a state-dict, dropped from memory, and then
``prunekit.prune_to_dir`` prunes the file at ratio 0.5 (l2) with batch-1 spec inputs.  Wall time
per stage comes from ``report.timings``; memory is the process RSS sampled every 10 ms by a
thread (tracemalloc does not see torch's allocator) and attributed to the stage running.

    .venv/bin/python -m bench.engine                      # both models, TorchScript upload
    .venv/bin/python -m bench.engine --formats torchscript,state_dict --repeats 2
    .venv/bin/python -m bench.engine --side-by-side       # next to Torch-Pruning, 10 models (side_by_side.py)

Writes ``bench/results/engine.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
STAGES = ("load", "capture", "analyse", "rank", "remove", "check", "export")


# ------------------------------------------------------------------------------------ ResNet-50


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idt = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + idt)


class ResNet50(nn.Module):
    def __init__(self, layers=(3, 4, 6, 3), num_classes: int = 1000) -> None:
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._stage(64, layers[0], 1)
        self.layer2 = self._stage(128, layers[1], 2)
        self.layer3 = self._stage(256, layers[2], 2)
        self.layer4 = self._stage(512, layers[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2048, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):  # non-trivial BN so bn_scale / masking are exercised
                nn.init.uniform_(m.weight, 0.5, 1.5)
                nn.init.normal_(m.bias, 0, 0.1)

    def _stage(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        down = None
        if stride != 1 or self.inplanes != planes * 4:
            down = nn.Sequential(nn.Conv2d(self.inplanes, planes * 4, 1, stride=stride, bias=False), nn.BatchNorm2d(planes * 4))
        layers = [Bottleneck(self.inplanes, planes, stride, down)]
        self.inplanes = planes * 4
        layers += [Bottleneck(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


# ------------------------------------------------------------------------------------- ViT-B/16


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, -1))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.fc1 = nn.Linear(dim, mlp)
        self.fc2 = nn.Linear(mlp, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class ViTB16(nn.Module):
    def __init__(self, image: int = 224, patch: int = 16, dim: int = 768, depth: int = 12, heads: int = 12,
                 mlp: int = 3072, num_classes: int = 1000) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(3, dim, patch, stride=patch)
        n = (image // patch) ** 2
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, n + 1, dim) * 0.02)
        self.blocks = nn.Sequential(*[Block(dim, heads, mlp) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, num_classes)
        nn.init.normal_(self.cls_token, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        x = self.norm(self.blocks(x))
        return self.head(x[:, 0])


MODELS = {"resnet50": ResNet50, "vit_b_16": ViTB16}


# ---------------------------------------------------------------------------------------- child


def child(name: str, fmt: str, out_path: Path, threads: int) -> None:
    import gc

    import prunekit

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = MODELS[name]().eval()
    n_params = sum(p.numel() for p in model.parameters())
    spec = {"inputs": [{"shape": [1, 3, 224, 224], "dtype": "float32"}], "ratio": 0.5, "importance": "l2"}
    tmp = Path(tempfile.mkdtemp(prefix="pkengine_"))
    if fmt == "torchscript":
        path = tmp / "model.pt"
        with torch.no_grad():
            traced = torch.jit.trace(model, torch.randn(2, 3, 224, 224), check_trace=False)
        torch.jit.save(traced, str(path))
        del traced
    else:
        from prunekit.registry import register

        register(f"bench:{name}", example_inputs=spec["inputs"])(MODELS[name])
        spec["architecture"] = f"bench:{name}"
        path = tmp / "state_dict.pt"
        torch.save(model.state_dict(), path)
    del model
    gc.collect()
    out_dir = tmp / "out"
    from bench._memory import Rss

    mem = Rss()
    t0 = time.perf_counter()
    with mem:
        res = prunekit.prune_to_dir(path, spec, out_dir, progress=mem.progress)
    wall = time.perf_counter() - t0
    rep = res.report
    mb = 1 << 20
    row = {
        "model": name, "format": fmt, "threads": threads, "params_model": n_params,
        "file_mb": round(path.stat().st_size / mb, 1),
        "params_before": rep.params_before, "params_after": rep.params_after,
        "macs_before": rep.macs_before, "macs_after": rep.macs_after,
        "param_reduction_percent": round(rep.param_reduction, 2),
        "macs_reduction_percent": round(100 * (1 - rep.macs_after / rep.macs_before), 2) if rep.macs_before > 0 else None,
        "groups_found": rep.groups_found, "groups_pruned": rep.groups_pruned,
        "barriers": sorted({b["op"] for b in rep.barriers}),
        "check": rep.check, "dynamic_batch": rep.dynamic_batch,
        "wall_s": round(wall, 3), "timings_s": rep.timings, "cpu_s": mem.cpu,
        "rss_base_mb": round(mem.base / mb), "rss_peak_mb": round(mem.peak / mb),
        "ru_maxrss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "stage_rss_peak_mb": {s: round(v / mb) for s, v in mem.stage_peak.items()},
        "stage_rss_growth_mb": {s: round(v / mb) for s, v in mem.stage_growth().items()},
        "warnings": rep.warnings,
    }
    out_path.write_text(json.dumps(row))
    for p in sorted(tmp.rglob("*"), reverse=True):
        p.rmdir() if p.is_dir() else p.unlink()
    tmp.rmdir()


# --------------------------------------------------------------------------------------- parent


def machine() -> dict:
    import psutil

    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "memory_gib": round(psutil.virtual_memory().total / (1 << 30), 1), "torch": torch.__version__,
            "python": platform.python_version(), "os": platform.platform(),
            "loadavg_1_5_15": [round(x, 2) for x in os.getloadavg()]}


def run_child(name: str, fmt: str, threads: int) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = Path(f.name)
    cmd = [sys.executable, "-W", "ignore", "-m", "bench.engine", "--child", name, fmt, str(out), "--threads", str(threads)]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    try:
        if p.returncode != 0:
            return {"model": name, "format": fmt, "error": (p.stderr or p.stdout).strip().splitlines()[-1:]}
        return json.loads(out.read_text())
    finally:
        out.unlink(missing_ok=True)


def table(rows: list[dict]) -> str:
    head = ["model", "format", "params M", "MACs G", "wall s"] + [s for s in STAGES] + ["peak RSS MiB"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['format']} | error: {r['error']} |")
            continue
        t = r["timings_s"]
        lines.append("| " + " | ".join([
            r["model"], r["format"], f"{r['params_before'] / 1e6:.1f}→{r['params_after'] / 1e6:.1f}",
            f"{r['macs_before'] / 1e9:.2f}→{r['macs_after'] / 1e9:.2f}", f"{r['wall_s']:.1f}",
            *[f"{t.get(s, 0):.2f}" for s in STAGES], str(r["rss_peak_mb"])]) + " |")
    lines += ["", "Process CPU seconds per stage (all threads; less sensitive than wall time to other load on the machine):", "",
              "| model | format | " + " | ".join(STAGES) + " | sum |", "|" + "---|" * (3 + len(STAGES))]
    for r in rows:
        if "error" in r:
            continue
        c = r.get("cpu_s", {})
        lines.append(f"| {r['model']} | {r['format']} | " + " | ".join(f"{c.get(s, 0):.2f}" for s in STAGES) +
                     f" | {sum(c.values()):.1f} |")
    lines += ["", "Peak RSS while each stage ran (MiB; growth over the RSS at the stage's start in brackets):", "",
              "| model | format | base | " + " | ".join(STAGES) + " |", "|" + "---|" * (3 + len(STAGES))]
    for r in rows:
        if "error" in r:
            continue
        pk, gr = r["stage_rss_peak_mb"], r["stage_rss_growth_mb"]
        lines.append(f"| {r['model']} | {r['format']} | {r['rss_base_mb']} | " +
                     " | ".join(f"{pk.get(s, '-')} (+{gr.get(s, 0)})" for s in STAGES) + " |")
    return "\n".join(lines)


def main() -> None:
    if "--side-by-side" in sys.argv[1:]:  # PruneKit and Torch-Pruning on the same 10 models (bench/side_by_side.py)
        from bench.side_by_side import main as side_by_side

        side_by_side([x for x in sys.argv[1:] if x != "--side-by-side"])
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="resnet50,vit_b_16")
    ap.add_argument("--formats", default="torchscript")
    ap.add_argument("--repeats", type=int, default=1, help="fresh subprocesses per model; the fastest is kept")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: robust to a busy machine)")
    ap.add_argument("--child", nargs=3, metavar=("MODEL", "FORMAT", "OUT"))
    a = ap.parse_args()
    if a.child:
        child(a.child[0], a.child[1], Path(a.child[2]), a.threads)
        return
    rows = []
    for name in a.models.split(","):
        for fmt in a.formats.split(","):
            runs = [run_child(name, fmt, a.threads) for _ in range(a.repeats)]
            good = [r for r in runs if "error" not in r]
            best = min(good, key=lambda r: r["wall_s"]) if good else runs[0]
            if good and len(good) > 1:
                best["wall_s_all_runs"] = [r["wall_s"] for r in good]
            rows.append(best)
            print(f"{name} {fmt}: {best.get('wall_s', best.get('error'))}", flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "engine.json").write_text(json.dumps({"machine": machine(), "ratio": 0.5, "importance": "l2",
                                                     "input": [1, 3, 224, 224], "runs": rows}, indent=2))
    text = table(rows)
    (RESULTS / "engine.md").write_text("# PruneKit stage times and memory\n\n" + text + "\n")
    print(text)


if __name__ == "__main__":
    main()
