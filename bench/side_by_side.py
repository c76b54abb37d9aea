"""PruneKit and Torch-Pruning 1.6.1 in the same run, on the same 10 models: ratios, not seconds.

The machine is shared and noisy, so every figure that matters is a ratio taken within one run,
model by model, with the two tools run back to back in fresh subprocesses (1 torch thread):

* ``arr_vs_tp``: PruneKit's own work (``analyse`` + ``rank`` + ``remove`` of a TorchScript upload)
  over Torch-Pruning's ``MetaPruner(...)`` + ``step()``;
* ``job_ts_vs_tp`` / ``job_sd_vs_tp``: the whole ``prunekit.prune_to_dir`` (load, capture, check,
  export and load-back proof included) for a TorchScript upload written as TorchScript, and for a
  state-dict upload written as a state-dict, over the same Torch-Pruning time;
* ``rss_*_per_weight``: peak RSS growth over the process's RSS after its imports, over the fp32
  size of the model's parameters, for PruneKit (both uploads; the model is read from its file
  inside the window) and Torch-Pruning (the model is built inside the window).

Ratio 0.5, l2 / ``MagnitudeImportance(p=2)``, the 1000-way classifier kept by both, batch-1
224x224 inputs, random weights.  The model files are written by a separate subprocess first, so
nothing of building or tracing stays in the measured processes.

Large models (``--large``), PruneKit only, each alone and only with 16 GiB available:

* ``llama_1b``: a LLaMA-style decoder (``bench/_llama.py``, TinyLlama-1.1B's shape, 1.10 B
  parameters, 4.4 GB fp32) uploaded as a state-dict, written as TorchScript, sequence 64; target
  peak RSS 12 GB;
* ``vit_h_14``: torchvision's ViT-H/14 (632 M parameters) as traced TorchScript; target 14 GB.

    .venv/bin/python -m bench.engine --side-by-side                  # the 10 models
    .venv/bin/python -m bench.engine --side-by-side --models resnet50,vit_b_16 --tag quick
    .venv/bin/python -m bench.engine --side-by-side --models resnet50 --repeats 5 --tag r50   # medians
    .venv/bin/python -m bench.engine --side-by-side --large llama_1b,vit_h_14 --models ''

Writes ``bench/results/side_by_side[_TAG].json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench._memory import Rss

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"

MODELS = ["resnet18", "resnet50", "mobilenet_v3_large", "efficientnet_b0", "densenet121", "convnext_tiny",
          "vit_b_16", "regnet_y_1_6gf", "timm:resnet50d", "timm:deit_small_patch16_224"]
LARGE = {"llama_1b": 12_000, "vit_h_14": 14_000}  # target peak RSS, MB
NEED_FREE_GIB = 16
RATIO = 0.5
MB = 1 << 20


# ------------------------------------------------------------------------------------------ models


def build(name: str):
    """A model with random weights, in eval mode (no downloads)."""
    if name.startswith("timm:"):
        import bench._torchvision_shim  # noqa: F401  (timm imports torchvision)
        import timm

        return timm.create_model(name[5:], pretrained=False).eval()
    if name == "llama_1b":
        from bench._llama import LLAMA_1B, build as build_llama, randomize

        return randomize(build_llama(LLAMA_1B, "meta"))
    from bench.zoo import build as tv_build

    return tv_build(name)


def example_spec(name: str) -> list[dict]:
    if name == "llama_1b":
        from bench._llama import LLAMA_1B

        return [{"shape": [1, 64], "dtype": "int64", "low": 0, "high": LLAMA_1B.vocab}]
    return [{"shape": [1, 3, 224, 224], "dtype": "float32"}]


def architecture(name: str):
    """The factory a state-dict upload is rebuilt with (built on ``meta`` where it can be)."""
    if name == "llama_1b":
        from bench._llama import LLAMA_1B, build as build_llama

        return lambda: build_llama(LLAMA_1B, "cpu")
    return lambda: build(name)


# ------------------------------------------------------------------------------------------ memory


# ------------------------------------------------------------------------------------------ children


def child_prep(name: str, d: Path, formats: list[str]) -> dict:
    import torch

    torch.manual_seed(0)
    model = build(name)
    params = sum(p.numel() for p in model.parameters())
    info = {"params": params, "weights_mb": round(4 * params / MB, 1)}
    if "ts" in formats:
        spec = example_spec(name)[0]
        x = torch.randn(2, *spec["shape"][1:])
        with torch.no_grad():
            traced = torch.jit.trace(model, x, check_trace=False, strict=False)
        torch.jit.save(traced, str(d / "model.pt"))
    if "sd" in formats:
        torch.save(model.state_dict(), d / "sd.pt")
    return info


def child_tp(name: str) -> dict:
    import torch
    import torch.nn as nn
    import torch_pruning as tp

    with Rss() as mem:
        t0 = time.perf_counter()
        model = build(name)
        built = time.perf_counter() - t0
        x = torch.randn(1, 3, 224, 224)
        ignored = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))
                   and getattr(m, "out_features", getattr(m, "out_channels", 0)) == 1000]
        params = sum(p.numel() for p in model.parameters())
        t0 = time.perf_counter()
        pruner = tp.pruner.MetaPruner(model, x, importance=tp.importance.MagnitudeImportance(p=2),
                                      pruning_ratio=RATIO, ignored_layers=ignored)
        pruner.step()
        took = time.perf_counter() - t0
    runs_after = True
    try:  # ViTs need the user to fix hidden_dim / num_heads after Torch-Pruning's step; its time still counts
        with torch.no_grad():
            model(x)
    except Exception as exc:
        runs_after = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
    after = sum(p.numel() for p in model.parameters())
    return {"tp_s": round(took, 3), "build_s": round(built, 3), "params_before": params, "params_after": after,
            "runs_after": runs_after,
            "rss_base_mb": round(mem.base / MB), "rss_peak_mb": round(mem.peak / MB),
            "rss_growth_mb": round((mem.peak - mem.base) / MB)}


def child_pk(name: str, upload: str, d: Path) -> dict:
    import prunekit
    from prunekit.preload import preload
    from prunekit.registry import register

    import_s = preload()  # as a worker does when it starts (Torch-Pruning's import is outside its window too)

    spec: dict = {"inputs": example_spec(name), "ratio": RATIO, "importance": "l2"}
    if upload == "sd":
        register(f"bench:{name}", example_inputs=spec["inputs"])(architecture(name))
        spec["architecture"] = f"bench:{name}"
        if name == "llama_1b":  # its forward reads the head counts from its config: see README
            spec["output_format"] = "torchscript"
        path = d / "sd.pt"
    else:
        path = d / "model.pt"
    out = Path(tempfile.mkdtemp(prefix="pkside_out_", dir=d))
    with Rss() as mem:
        t0 = time.perf_counter()
        res = prunekit.prune_to_dir(path, spec, out)
        took = time.perf_counter() - t0
    rep = res.report
    t = rep.timings
    return {"job_s": round(took, 3), "timings_s": t, "preload_s": round(import_s, 3),
            "arr_s": round(sum(t.get(k, 0.0) for k in ("analyse", "rank", "remove")), 3),
            "params_before": rep.params_before, "params_after": rep.params_after,
            "macs_before": rep.macs_before, "macs_after": rep.macs_after,
            "check_max_rel": rep.check.get("max_rel"), "dynamic_batch": rep.dynamic_batch,
            "output_format": rep.output_format,
            "rss_base_mb": round(mem.base / MB), "rss_peak_mb": round(mem.peak / MB),
            "rss_growth_mb": round((mem.peak - mem.base) / MB)}


def child_main(kind: str, name: str, d: Path, out: Path, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    if not name.startswith("llama"):
        import bench._torchvision_shim  # noqa: F401  (imports before the baseline)
    if name.startswith("timm:"):
        import timm  # noqa: F401
    if kind == "prep":
        row = child_prep(name, d, ["sd"] if name == "llama_1b" else ["ts"] if name in LARGE else ["ts", "sd"])
    elif kind == "tp":
        row = child_tp(name)
    else:
        row = child_pk(name, kind[3:], d)
    out.write_text(json.dumps(row))


# ------------------------------------------------------------------------------------------ parent


def run_child(kind: str, name: str, d: Path, threads: int, limit_mb: int, timeout: float = 1800) -> dict:
    """One subprocess, killed (with its process group) past ``limit_mb`` RSS or ``timeout``."""
    import psutil

    out = d / f"{kind}.json"
    cmd = [sys.executable, "-W", "ignore", "-m", "bench.side_by_side", "--child", kind, name, str(d), str(out),
           "--threads", str(threads)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    buf: list[bytes] = []
    reader = threading.Thread(target=lambda: buf.append(proc.stdout.read()), daemon=True)
    reader.start()
    ps, t0, peak, killed = psutil.Process(proc.pid), time.time(), 0, None
    while proc.poll() is None:
        try:
            peak = max(peak, ps.memory_info().rss)
        except psutil.Error:
            pass
        if peak > limit_mb * MB:
            killed = f"killed: RSS above {limit_mb} MB"
        elif time.time() - t0 > timeout:
            killed = f"killed: no result within {timeout:.0f} s"
        if killed:
            os.killpg(proc.pid, signal.SIGKILL)  # the child's own session (start_new_session above)
            proc.wait()
            break
        time.sleep(0.05)
    reader.join(timeout=5)
    if out.exists():
        row = json.loads(out.read_text())
        out.unlink()
        return row
    tail = [ln for ln in b"".join(buf).decode(errors="replace").splitlines() if ln.strip()]
    return {"error": killed or (tail[-1][:400] if tail else f"exit {proc.returncode}"), "rss_peak_seen_mb": peak // MB}


def ratio(a, b):
    return round(a / b, 2) if a is not None and b else None


def _median_run(rows: list[dict], key: str) -> dict:
    """The run whose ``key`` is the median of the runs that finished (the lower middle of an even
    count); the first failure if none finished."""
    ok = sorted((r for r in rows if r.get(key) is not None), key=lambda r: r[key])
    return ok[(len(ok) - 1) // 2] if ok else rows[0]


def compare(name: str, threads: int, limit_mb: int, repeats: int = 1) -> dict:
    d = Path(tempfile.mkdtemp(prefix="pkside_"))
    try:
        row: dict = {"model": name, **run_child("prep", name, d, threads, limit_mb)}
        if "error" in row:
            return row
        runs: dict[str, list[dict]] = {"tp": [], "pk_ts": [], "pk_sd": []}
        for _ in range(max(1, repeats)):  # interleaved, so a burst of load hits all three alike
            for kind in runs:
                runs[kind].append(run_child(kind, name, d, threads, limit_mb))
        tp, ts, sd = (_median_run(runs[k], "tp_s" if k == "tp" else "job_s") for k in ("tp", "pk_ts", "pk_sd"))
        if repeats > 1:
            row["repeats"] = {k: [r.get("tp_s" if k == "tp" else "job_s") for r in v] for k, v in runs.items()}
        row.update(tp=tp, pk_ts=ts, pk_sd=sd)
        w = row["weights_mb"]
        tp_s = tp.get("tp_s")
        row["ratios"] = {
            "arr_vs_tp": ratio(ts.get("arr_s"), tp_s), "arr_sd_vs_tp": ratio(sd.get("arr_s"), tp_s),
            "job_ts_vs_tp": ratio(ts.get("job_s"), tp_s), "job_sd_vs_tp": ratio(sd.get("job_s"), tp_s),
            "rss_pk_ts_per_weight": ratio(ts.get("rss_growth_mb"), w),
            "rss_pk_sd_per_weight": ratio(sd.get("rss_growth_mb"), w),
            "rss_tp_per_weight": ratio(tp.get("rss_growth_mb"), w),
        }
        return row
    finally:
        shutil.rmtree(d, ignore_errors=True)


def large(name: str, threads: int, force: bool) -> dict:
    import psutil

    avail = psutil.virtual_memory().available / (1 << 30)
    if avail < NEED_FREE_GIB and not force:
        return {"model": name, "error": f"skipped: {avail:.1f} GiB available, {NEED_FREE_GIB} needed (shared machine)"}
    target = LARGE[name]
    d = Path(tempfile.mkdtemp(prefix="pkside_"))
    try:
        row: dict = {"model": name, "target_peak_mb": target,
                     **run_child("prep", name, d, threads, target + 4000, timeout=1800)}
        if "error" in row:
            return row
        kind = "pk_sd" if name == "llama_1b" else "pk_ts"
        row[kind] = run_child(kind, name, d, threads, target + 2000, timeout=3000)
        peak = row[kind].get("rss_peak_mb", row[kind].get("rss_peak_seen_mb"))
        row["within_target"] = "error" not in row[kind] and peak <= target
        row["rss_growth_per_weight"] = ratio(row[kind].get("rss_growth_mb"), row["weights_mb"])
        return row
    finally:
        shutil.rmtree(d, ignore_errors=True)


def summary(rows: list[dict], large_rows: list[dict]) -> dict:
    ok = [r for r in rows if "ratios" in r]

    def med(key):
        vals = [r["ratios"][key] for r in ok if r["ratios"].get(key) is not None]
        return round(statistics.median(vals), 2) if vals else None

    def worst(key):
        vals = [r["ratios"][key] for r in ok if r["ratios"].get(key) is not None]
        return max(vals) if vals else None

    r50 = next((r for r in ok if r["model"] == "resnet50"), None)
    out = {"median_arr_vs_tp": med("arr_vs_tp"), "median_arr_sd_vs_tp": med("arr_sd_vs_tp"),
           "median_job_ts_vs_tp": med("job_ts_vs_tp"), "median_job_sd_vs_tp": med("job_sd_vs_tp"),
           "worst_rss_pk_ts_per_weight": worst("rss_pk_ts_per_weight"),
           "worst_rss_pk_sd_per_weight": worst("rss_pk_sd_per_weight"),
           "worst_rss_tp_per_weight": worst("rss_tp_per_weight")}
    if r50:
        out["resnet50_job_ts_vs_tp"] = r50["ratios"]["job_ts_vs_tp"]
        out["resnet50_job_sd_vs_tp"] = r50["ratios"]["job_sd_vs_tp"]
    out["targets"] = {
        "median arr <= 1.0x TP": out["median_arr_vs_tp"] is not None and out["median_arr_vs_tp"] <= 1.0,
        "resnet50 TorchScript job <= 4x TP": bool(r50) and (r50["ratios"]["job_ts_vs_tp"] or 1e9) <= 4.0,
        "resnet50 state-dict job <= 4x TP": bool(r50) and (r50["ratios"]["job_sd_vs_tp"] or 1e9) <= 4.0,
        "peak RSS growth <= 2.5x weights on all 10 (both uploads)": len(ok) == len(rows) and bool(ok) and all(
            (r["ratios"][k] or 1e9) <= 2.5 for r in ok for k in ("rss_pk_ts_per_weight", "rss_pk_sd_per_weight")),
    }
    for r in large_rows:
        out["targets"][f"{r['model']} within {LARGE[r['model']]} MB"] = bool(r.get("within_target"))
    return out


def table(rows: list[dict], large_rows: list[dict], summ: dict) -> str:
    head = ["model", "weights MB", "TP s", "PK arr s (ts/sd)", "arr/TP", "job ts s", "job ts/TP", "job sd s", "job sd/TP",
            "RSS growth/weights PK ts", "PK sd", "TP"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        if "ratios" not in r:
            lines.append(f"| {r['model']} | error: {r.get('error')} |")
            continue
        q, tp, ts, sd = r["ratios"], r["tp"], r["pk_ts"], r["pk_sd"]
        err = lambda x: x.get("error", "")[:60]  # noqa: E731
        lines.append("| " + " | ".join(str(v) for v in [
            r["model"], r["weights_mb"], tp.get("tp_s", err(tp)), f"{ts.get('arr_s', err(ts))} / {sd.get('arr_s', err(sd))}",
            q["arr_vs_tp"], ts.get("job_s", err(ts)), q["job_ts_vs_tp"], sd.get("job_s", err(sd)), q["job_sd_vs_tp"],
            q["rss_pk_ts_per_weight"], q["rss_pk_sd_per_weight"], q["rss_tp_per_weight"]]) + " |")
    lines += ["", "| summary | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in summ.items() if k != "targets"]
    lines += [f"| target: {k} | {'met' if v else 'NOT met'} |" for k, v in summ["targets"].items()]
    for r in large_rows:
        k = next((k for k in ("pk_sd", "pk_ts") if k in r), None)
        x = r.get(k, {}) if k else {}
        lines.append(f"| large: {r['model']} | peak RSS {x.get('rss_peak_mb', x.get('rss_peak_seen_mb'))} MB "
                     f"(target {r.get('target_peak_mb')}), job {x.get('job_s')} s, {x.get('error', '')} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--large", default="", help="comma-separated: llama_1b, vit_h_14 (each alone, 16 GiB free needed)")
    ap.add_argument("--force-large", action="store_true", help="run the large cases whatever memory is available")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--limit-mb", type=int, default=6000, help="RSS above which a child is killed (10 models)")
    ap.add_argument("--repeats", type=int, default=1,
                    help="runs of each tool per model, interleaved; the median run is kept (all times in 'repeats')")
    ap.add_argument("--tag", default="")
    ap.add_argument("--child", nargs=4, metavar=("KIND", "MODEL", "DIR", "OUT"))
    a = ap.parse_args(argv)
    if a.child:
        child_main(a.child[0], a.child[1], Path(a.child[2]), Path(a.child[3]), a.threads)
        return
    from bench.engine import machine

    rows, large_rows = [], []
    for name in [m for m in a.models.split(",") if m]:
        rows.append(compare(name, a.threads, a.limit_mb, a.repeats))
        q = rows[-1].get("ratios", rows[-1].get("error"))
        print(f"{name}: {q}", flush=True)
    for name in [m for m in a.large.split(",") if m]:
        large_rows.append(large(name, a.threads, a.force_large))
        print(f"{name}: {large_rows[-1]}", flush=True)
    summ = summary(rows, large_rows)
    stem = "side_by_side" + (f"_{a.tag}" if a.tag else "")
    RESULTS.mkdir(parents=True, exist_ok=True)
    doc = {"machine": machine(), "ratio": RATIO, "threads": a.threads, "summary": summ, "runs": rows, "large": large_rows}
    (RESULTS / f"{stem}.json").write_text(json.dumps(doc, indent=2))
    text = table(rows, large_rows, summ)
    (RESULTS / f"{stem}.md").write_text(f"# PruneKit vs Torch-Pruning 1.6.1, same run ({stem})\n\n{text}\n")
    print(text)


if __name__ == "__main__":
    main()
