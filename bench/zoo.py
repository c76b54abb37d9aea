"""Prune the torchvision model zoo with PruneKit and with Torch-Pruning 1.6.1, one subprocess per run.

Tools (one row each per model in ``bench/results/zoo.csv``):

* ``pk_ts``  PruneKit on a traced TorchScript upload (``torch.jit.trace`` at batch 2, check_trace=False);
* ``pk_sd``  PruneKit on a state-dict upload (architecture ``tv:<name>`` registered in the child);
  both through ``prunekit.prune_to_dir`` (what the service runs: the pruned model is written in the
  upload's format, loaded back and proven), and the model loaded back is the one checked here;
* ``tp``     Torch-Pruning ``MetaPruner`` (MagnitudeImportance(p=2), pruning_ratio=0.5, the final
  classifier ignored), pruned in place.

All at ratio 0.5, l2 importance, random weights (``weights=None``, no downloads), batch-1 spec inputs.
Every (model, tool) runs in its own subprocess with a wall-clock limit and an RSS limit, so a hang
or crash costs one row.  The run is resumable: rows already in the CSV are skipped.

    .venv/bin/python -m bench.zoo run                 # everything (hours on 2 cores), resumable
    .venv/bin/python -m bench.zoo run --models resnet18,vgg11 --tools pk_ts,tp
    .venv/bin/python -m bench.zoo summary             # rewrite zoo.md from zoo.csv
    .venv/bin/python -m bench.zoo run --suite timm    # timm / Hugging Face suites: bench/zoo_suites.py
    .venv/bin/python -m bench.zoo run --suite hf      # (pk_pt2, pk_ts, tp; results/zoo_<suite>.json)

While ``bench/results/zoo.pause`` exists the runner waits before starting the next run (used by
the latency benchmarks to get a quiet machine).
"""

from __future__ import annotations

import argparse
import csv
import gc
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
CSV_PATH = RESULTS / "zoo.csv"
MD_PATH = RESULTS / "zoo.md"
LOG_DIR = RESULTS / "zoo_logs"
PAUSE = RESULTS / "zoo.pause"
STATE = RESULTS / "zoo.state"

TOOLS = ("pk_ts", "pk_sd", "tp")
RATIO = 0.5

SEGMENTATION = ["lraspp_mobilenet_v3_large", "deeplabv3_mobilenet_v3_large", "fcn_resnet50", "deeplabv3_resnet50"]
DETECTION = ["ssdlite320_mobilenet_v3_large", "fasterrcnn_mobilenet_v3_large_320_fpn", "retinanet_resnet50_fpn",
             "fcos_resnet50_fpn"]
SMALL_DETECTION_INPUT = {"retinanet_resnet50_fpn", "fcos_resnet50_fpn"}  # resize to 224 instead of 800

COLUMNS = [
    "model", "task", "tool", "status", "reason", "input", "params_before", "params_after", "macs_before",
    "macs_after", "param_red_pct", "macs_red_pct", "time_s", "total_s", "peak_rss_mb", "base_rss_mb",
    "check_passed", "check_max_rel", "runs_after", "shape_same", "groups_found", "groups_pruned",
    "barrier_ops", "stage_times", "error_where",
]


# ----------------------------------------------------------------------------------------- models


def task_of(name: str) -> str:
    if name in SEGMENTATION:
        return "segmentation"
    if name in DETECTION:
        return "detection"
    return "classification"


def num_classes(name: str) -> int:
    return {"segmentation": 21, "detection": 91}.get(task_of(name), 1000)


def image_size(name: str) -> int:
    return 299 if name == "inception_v3" else 224


def build(name: str):
    from bench._torchvision_shim import torchvision

    kwargs = {"weights": None}
    if task_of(name) != "classification":
        kwargs["weights_backbone"] = None
    if task_of(name) == "detection":
        from bench._torchvision_shim import install_python_nms

        install_python_nms()  # a Python torchvision::nms; the compiled ops do not load here
        if name in SMALL_DETECTION_INPUT:
            kwargs.update(min_size=224, max_size=224)
    return torchvision.models.get_model(name, **kwargs).eval()


def all_models() -> list[str]:
    """Classification models, then segmentation, detection; cheapest first by torchvision's metadata."""
    from bench._torchvision_shim import torchvision

    m = torchvision.models
    names = list(m.list_models(module=m)) + SEGMENTATION + DETECTION

    def cost(n: str) -> float:
        try:
            meta = m.get_model_weights(n).DEFAULT.meta
            ops = float(meta.get("_ops", 0.0))
            if n.startswith("vit_h_14"):
                ops = ops * (224 / 518) ** 2  # meta is at 518, we run at 224
            return ops + meta.get("num_params", 0) / 1e8
        except Exception:
            return 1e9

    return sorted(names, key=cost)


# ---------------------------------------------------------------------------------- child helpers


class RssPeak:
    """Sample this process's RSS in a thread (tracemalloc does not see torch's allocations)."""

    def __init__(self, interval: float = 0.02) -> None:
        import psutil

        self.proc, self.interval, self.peak, self._stop = psutil.Process(), interval, 0, threading.Event()
        self.base = self.proc.memory_info().rss
        self.peak = self.base

    def __enter__(self):
        self._t = threading.Thread(target=self._loop, daemon=True)
        self._t.start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(self.interval)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)


def _shapes(out):
    """Output tensor shapes; for detection outputs (lists of dicts) the number of boxes is data
    dependent, so only the trailing dims are compared."""
    import torch
    from torch.utils._pytree import tree_flatten

    det = isinstance(out, (list, tuple)) and out and isinstance(out[0], dict)
    return [tuple(t.shape[1:] if det else t.shape) for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]


def _macs(model, x) -> int:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    try:
        with torch.no_grad(), FlopCounterMode(display=False) as c:
            model(x)
        return int(c.get_total_flops() // 2)
    except Exception:
        return -1


def _nparams(model) -> int:
    return sum(p.numel() for p in model.parameters())


def _where(tb) -> str:
    """The innermost frame in prunekit/ or torch_pruning/ (else the innermost frame)."""
    frames = traceback.extract_tb(tb)
    pick = None
    for f in frames:
        if "/prunekit/" in f.filename or "/torch_pruning/" in f.filename:
            pick = f
    pick = pick or (frames[-1] if frames else None)
    if pick is None:
        return ""
    fn = pick.filename.split("site-packages/")[-1].replace(str(ROOT) + "/", "")
    return f"{fn}:{pick.lineno} in {pick.name}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    return f"{type(exc).__name__}: {line}"[:400]


def child(name: str, tool: str, out_path: Path, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    s = image_size(name)
    row: dict = {"model": name, "task": task_of(name), "tool": tool, "input": f"1x3x{s}x{s}"}
    log = LOG_DIR / f"{name}__{tool}.txt"

    def finish(status: str, reason: str = "", exc: BaseException | None = None) -> None:
        row["status"], row["reason"] = status, reason
        if exc is not None:
            row["error_where"] = _where(exc.__traceback__)
            LOG_DIR.mkdir(parents=True, exist_ok=True)
            log.write_text("".join(traceback.format_exception(exc)))
        out_path.write_text(json.dumps(row))

    try:
        model = build(name)
    except Exception as exc:
        return finish("build_failed", _first_line(exc), exc)
    x1 = torch.randn(1, 3, s, s)
    x2 = torch.randn(2, 3, s, s)
    try:
        with torch.no_grad():
            ref_shapes = _shapes(model(x1))
    except Exception as exc:
        return finish("original_fails", _first_line(exc), exc)
    row["params_before"] = _nparams(model)
    row["macs_before"] = _macs(model, x1)

    if tool == "tp":
        return _child_tp(name, model, x1, x2, ref_shapes, row, finish)
    return _child_pk(name, tool, model, x1, x2, ref_shapes, row, finish)


def _child_pk(name, tool, model, x1, x2, ref_shapes, row, finish) -> None:
    import torch

    import prunekit
    from prunekit.errors import PruneKitError

    s = image_size(name)
    spec = {"inputs": [{"shape": [1, 3, s, s], "dtype": "float32"}], "ratio": RATIO, "importance": "l2"}
    tmp = Path(tempfile.mkdtemp(prefix="pkzoo_"))
    try:
        if tool == "pk_ts":
            path = tmp / "model.pt"
            try:
                with torch.no_grad():
                    traced = torch.jit.trace(model, x2, check_trace=False, strict=False)
                torch.jit.save(traced, str(path))
                del traced
            except Exception as exc:
                return finish("trace_failed", _first_line(exc), exc)
        else:
            from prunekit.registry import register

            register(f"tv:{name}", example_inputs=spec["inputs"])(lambda: build(name))
            spec["architecture"] = f"tv:{name}"
            path = tmp / "state_dict.pt"
            torch.save(model.state_dict(), path)
        del model
        gc.collect()
        t0 = time.perf_counter()
        with RssPeak() as mem:
            try:
                res = prunekit.prune_to_dir(path, spec, tmp / "out")  # what the service runs
            except PruneKitError as exc:
                row["total_s"] = round(time.perf_counter() - t0, 3)
                row["peak_rss_mb"], row["base_rss_mb"] = mem.peak >> 20, mem.base >> 20
                return finish("failed", f"{exc.code}: {str(exc).splitlines()[0] if str(exc) else ''}"[:400], exc)
            except Exception as exc:  # not a PruneKitError: an engine bug
                row["total_s"] = round(time.perf_counter() - t0, 3)
                row["peak_rss_mb"], row["base_rss_mb"] = mem.peak >> 20, mem.base >> 20
                return finish("crashed", "uncaught " + _first_line(exc), exc)
        row["total_s"] = round(time.perf_counter() - t0, 3)
        row["peak_rss_mb"], row["base_rss_mb"] = mem.peak >> 20, mem.base >> 20
        rep = res.report
        t = rep.timings
        row["time_s"] = round(sum(t.get(k, 0.0) for k in ("capture", "analyse", "rank", "remove")), 3)
        row["output_type"] = type(res.model).__name__
        row["stage_times"] = ";".join(f"{k}={v:.2f}" for k, v in t.items())
        # what the tool saw: a traced googlenet/inception has no aux classifier, so "before" is the report's
        row["params_before"], row["macs_before"] = rep.params_before, rep.macs_before
        row["params_after"], row["macs_after"] = rep.params_after, rep.macs_after
        row["check_passed"] = bool(rep.check.get("passed"))
        row["check_max_rel"] = rep.check.get("max_rel")
        row["groups_found"], row["groups_pruned"] = rep.groups_found, rep.groups_pruned
        row["barrier_ops"] = ";".join(sorted({b["op"] for b in rep.barriers}))
        _after(res.model, x1, x2, ref_shapes, row, dynamic=rep.dynamic_batch)
        _set_reductions(row)
        ok = row["check_passed"] and row["runs_after"] and row["shape_same"]
        reason = "" if ok else ("output shape changed" if row["runs_after"] else "pruned model does not run")
        if ok and row["groups_pruned"] == 0:
            ok, reason = False, "nothing pruned (no prunable group)"
        finish("ok" if ok else "wrong", reason)
    finally:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


def _after(model, x1, x2, ref_shapes, row, dynamic=True) -> None:
    import torch

    try:
        with torch.no_grad():
            got = _shapes(model(x1))
            if dynamic:
                model(x2)
        row["runs_after"], row["shape_same"] = True, got == ref_shapes
    except Exception as exc:
        row["runs_after"], row["shape_same"] = False, False
        row["after_error"] = _first_line(exc)


def _set_reductions(row) -> None:
    for k in ("params", "macs"):
        b, a = row.get(f"{k}_before"), row.get(f"{k}_after")
        if b and a is not None and b > 0 and a >= 0:
            row[f"{'param' if k == 'params' else 'macs'}_red_pct"] = round(100 * (1 - a / b), 2)


def _child_tp(name, model, x1, x2, ref_shapes, row, finish) -> None:
    import torch
    import torch.nn as nn

    import torch_pruning as tp

    nc = num_classes(name)
    ignored = [
        m for m in model.modules()
        if (isinstance(m, nn.Linear) and m.out_features == nc) or (isinstance(m, nn.Conv2d) and m.out_channels == nc)
    ]
    t0 = time.perf_counter()
    with RssPeak() as mem:
        try:
            imp = tp.importance.MagnitudeImportance(p=2)
            pruner = tp.pruner.MetaPruner(model, x1, importance=imp, pruning_ratio=RATIO, ignored_layers=ignored)
            pruner.step()
        except Exception as exc:
            row["total_s"] = round(time.perf_counter() - t0, 3)
            row["peak_rss_mb"], row["base_rss_mb"] = mem.peak >> 20, mem.base >> 20
            return finish("failed", _first_line(exc), exc)
    row["time_s"] = row["total_s"] = round(time.perf_counter() - t0, 3)
    row["peak_rss_mb"], row["base_rss_mb"] = mem.peak >> 20, mem.base >> 20
    model.eval()
    row["params_after"] = _nparams(model)
    row["macs_after"] = _macs(model, x1)
    _after(model, x1, x2, ref_shapes, row)
    _set_reductions(row)
    ok = row["runs_after"] and row["shape_same"]
    reason = "" if ok else ("output shape changed" if row["runs_after"] else "pruned model does not run: " + row.get("after_error", ""))
    if ok and row["params_after"] == row["params_before"]:
        ok, reason = False, "nothing pruned"
    finish("ok" if ok else "wrong", reason)


# ---------------------------------------------------------------------------------------- runner


def done_rows() -> list[dict]:
    if not CSV_PATH.exists():
        return []
    with CSV_PATH.open() as f:
        return list(csv.DictReader(f))


def append_row(row: dict) -> None:
    new = not CSV_PATH.exists()
    with CSV_PATH.open("a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        if new:
            w.writeheader()
        w.writerow({k: row.get(k, "") for k in COLUMNS})


def run_one(name: str, tool: str, timeout: float, mem_limit_mb: int, threads: int, suite: str = "torchvision") -> dict:
    import psutil

    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = Path(f.name)
    out.unlink()
    cmd = [sys.executable, "-W", "ignore", "-m", "bench.zoo", "one", name, tool, str(out), "--threads", str(threads)]
    if suite != "torchvision":  # timm / hf: bench/zoo_suites.py's child
        cmd = [sys.executable, "-W", "ignore", "-m", "bench.zoo_suites", suite, name, tool, str(out), str(threads)]
    t0 = time.time()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    ps = psutil.Process(proc.pid)
    status, peak, tail = None, 0, b""
    reader = threading.Thread(target=lambda: setattr(run_one, "_buf", proc.stdout.read()), daemon=True)
    reader.start()
    while proc.poll() is None:
        try:
            rss = sum(p.memory_info().rss for p in [ps] + ps.children(recursive=True))
            peak = max(peak, rss)
        except psutil.Error:
            pass
        if time.time() - t0 > timeout:
            status = "timeout"
        elif peak > mem_limit_mb << 20:
            status = "memory_limit"
        if status:
            os.killpg(proc.pid, signal.SIGKILL)  # the child's own session, started above
            proc.wait()
            break
        time.sleep(0.2)
    reader.join(timeout=5)
    tail = getattr(run_one, "_buf", b"") or b""
    wall = round(time.time() - t0, 1)
    row = {"model": name, "tool": tool, "task": task_of(name) if suite == "torchvision" else suite}
    if out.exists():
        row.update(json.loads(out.read_text()))
        out.unlink()
    elif status == "timeout":
        row.update(status="timeout", reason=f"no result within {timeout:.0f} s", peak_rss_mb=peak >> 20)
    elif status == "memory_limit":
        row.update(status="memory_limit", reason=f"RSS above {mem_limit_mb} MiB (killed)", peak_rss_mb=peak >> 20)
    else:
        last = [ln for ln in tail.decode(errors="replace").splitlines() if ln.strip()]
        row.update(status="crashed", reason=f"child exited rc={proc.returncode}: {(last[-1] if last else '')[:300]}",
                   peak_rss_mb=peak >> 20)
        if suite == "torchvision":
            LOG_DIR.mkdir(parents=True, exist_ok=True)
            (LOG_DIR / f"{name}__{tool}.txt").write_text(tail.decode(errors="replace")[-20000:])
        else:
            row["traceback_tail"] = tail.decode(errors="replace")[-3000:]
    row["wall_s"] = wall
    return row


def run(args) -> None:
    if args.suite != "torchvision":
        from bench.zoo_suites import run_suite

        return run_suite(args, run_one)
    RESULTS.mkdir(parents=True, exist_ok=True)
    names = args.models.split(",") if args.models else all_models()
    tools = args.tools.split(",") if args.tools else list(TOOLS)
    have = {(r["model"], r["tool"]) for r in done_rows()}
    todo = [(n, t) for n in names for t in tools if (n, t) not in have]
    print(f"{len(todo)} runs to do ({len(have)} already in {CSV_PATH.name})", flush=True)
    for i, (name, tool) in enumerate(todo):
        while PAUSE.exists():
            STATE.write_text("paused\n")
            time.sleep(3)
        STATE.write_text(f"running {name} {tool}\n")
        row = run_one(name, tool, args.timeout, args.mem_limit_mb, args.threads)
        append_row(row)
        print(f"[{i + 1}/{len(todo)}] {name:38s} {tool:6s} {row.get('status'):14s} "
              f"t={row.get('time_s', '')} total={row.get('total_s', '')} rss={row.get('peak_rss_mb', '')}MiB "
              f"{row.get('reason', '')}"[:300], flush=True)
        STATE.write_text("idle\n")
        if (i + 1) % 10 == 0:
            summary()
    STATE.write_text("finished\n")
    summary()


# --------------------------------------------------------------------------------------- summary


def _f(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def summary() -> None:
    rows = done_rows()
    if not rows:
        return
    models = sorted({r["model"] for r in rows})
    lines = ["# Zoo benchmark: PruneKit vs Torch-Pruning 1.6.1 on torchvision 0.28.0 models", "",
             "Generated by `python -m bench.zoo summary` from `zoo.csv`. Ratio 0.5, L2 magnitude, random weights, "
             "batch-1 inputs (224x224; inception_v3 299x299), final classifier kept. One subprocess per row, "
             "1 torch thread, limits 300 s and 14000 MiB RSS per row. `pk_ts` = PruneKit on a traced TorchScript upload, "
             "`pk_sd` = PruneKit on a state-dict upload, `tp` = Torch-Pruning MetaPruner.", "",
             "PruneKit `time` = capture+analyse+rank+remove stages; `total` = the whole `prune_to_dir()` call "
             "(load, capture, analyse, rank, remove, check with MAC counting, export: write the pruned model in the "
             "upload's format, load it back and prove it). PruneKit params/MACs 'before' are the report's (a traced "
             "googlenet/inception_v3 has no aux classifier). MACs are torch's FlopCounterMode, which does not count "
             "`aten._native_multi_head_attention` (traced torchvision ViTs). Torch-Pruning `time` = `MetaPruner(...)` "
             "+ `pruner.step()` (it does no check).", ""]
    lines += ["## Overall", "", "| tool | ok / run | ok / models where the original runs | median time s | worst time s (model) | median total s | median peak RSS MiB |",
              "|---|---|---|---|---|---|---|"]
    for tool in TOOLS:
        tr = [r for r in rows if r["tool"] == tool]
        if not tr:
            continue
        ok = [r for r in tr if r["status"] == "ok"]
        runnable = [r for r in tr if r["status"] not in ("original_fails", "build_failed")]
        times = [(_f(r["time_s"]), r["model"]) for r in ok if _f(r["time_s"]) is not None]
        tot = [_f(r["total_s"]) for r in ok if _f(r["total_s"]) is not None]
        rss = [_f(r["peak_rss_mb"]) for r in ok if _f(r["peak_rss_mb"]) is not None]
        worst = max(times) if times else (None, "")
        lines.append(
            f"| {tool} | {len(ok)} / {len(tr)} | {len(ok)} / {len(runnable)} | "
            f"{statistics.median(t for t, _ in times):.2f} | {worst[0]:.1f} ({worst[1]}) | "
            f"{statistics.median(tot):.2f} | {statistics.median(rss):.0f} |" if times else
            f"| {tool} | {len(ok)} / {len(tr)} | {len(ok)} / {len(runnable)} | - | - | - | - |")
    tasks = ("classification", "segmentation", "detection")
    lines += ["", "| tool | " + " | ".join(f"{t}: ok / run" for t in tasks) + " |", "|---|---|---|---|"]
    for tool in TOOLS:
        tr = [r for r in rows if r["tool"] == tool]
        cells = []
        for t in tasks:
            tt = [r for r in tr if r["task"] == t]
            cells.append(f"{sum(r['status'] == 'ok' for r in tt)} / {len(tt)}")
        lines.append(f"| {tool} | " + " | ".join(cells) + " |")
    both = [m for m in models if all(any(r["model"] == m and r["tool"] == t and r["status"] == "ok" for r in rows) for t in ("pk_ts", "tp"))]
    if both:
        pk = {r["model"]: _f(r["time_s"]) for r in rows if r["tool"] == "pk_ts" and r["model"] in both}
        tpt = {r["model"]: _f(r["time_s"]) for r in rows if r["tool"] == "tp" and r["model"] in both}
        ratios = sorted(pk[m] / tpt[m] for m in both if tpt[m])
        lines += ["", f"On the {len(both)} models both `pk_ts` and `tp` pruned, PruneKit's capture+analyse+prune time is "
                  f"{statistics.median(ratios):.2f}x Torch-Pruning's (median; min {ratios[0]:.2f}x, max {ratios[-1]:.2f}x)."]
    lines += ["", "## Failures", ""]
    for tool in TOOLS:
        bad = [r for r in rows if r["tool"] == tool and r["status"] != "ok"]
        if not bad:
            continue
        lines += [f"### {tool} ({len(bad)})", "", "| model | status | reason | where |", "|---|---|---|---|"]
        for r in sorted(bad, key=lambda r: (r["status"], r["reason"], r["model"])):
            reason = r["reason"].replace("|", "\\|").replace("\n", " ")
            lines.append(f"| {r['model']} | {r['status']} | {reason} | {r.get('error_where', '')} |")
        lines.append("")
    lines += ["## Per model", "",
              "| model | tool | status | params M before→after | MACs G before→after | MAC red. % | time s | total s | peak RSS MiB | check | barriers |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    order = {t: i for i, t in enumerate(TOOLS)}
    for r in sorted(rows, key=lambda r: (r["model"], order.get(r["tool"], 9))):
        pb, pa, mb, ma = (_f(r[k]) for k in ("params_before", "params_after", "macs_before", "macs_after"))
        p = f"{pb / 1e6:.2f}→{pa / 1e6:.2f}" if pb and pa is not None else ""
        m = f"{mb / 1e9:.2f}→{ma / 1e9:.2f}" if mb and ma is not None and ma >= 0 else ""
        chk = "" if r["tool"] == "tp" else ("pass" if r["check_passed"] == "True" else ("" if not r["check_passed"] else "FAIL"))
        lines.append(f"| {r['model']} | {r['tool']} | {r['status']} | {p} | {m} | {r['macs_red_pct']} | {r['time_s']} | "
                     f"{r['total_s']} | {r['peak_rss_mb']} | {chk} | {r['barrier_ops']} |")
    MD_PATH.write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--models", default="")
    r.add_argument("--tools", default="")
    r.add_argument("--timeout", type=float, default=300)
    r.add_argument("--mem-limit-mb", type=int, default=14000)
    r.add_argument("--threads", type=int, default=1)
    r.add_argument("--suite", choices=("torchvision", "timm", "hf"), default="torchvision",
                   help="timm / hf: bench/zoo_suites.py (tools pk_pt2, pk_ts, tp; JSON in results/zoo_<suite>.json)")
    r.add_argument("--redo", action="store_true", help="timm / hf: rerun rows already in the JSON")
    o = sub.add_parser("one")
    o.add_argument("model")
    o.add_argument("tool", choices=TOOLS)
    o.add_argument("out")
    o.add_argument("--threads", type=int, default=1)
    sub.add_parser("summary")
    sub.add_parser("list")
    a = ap.parse_args()
    if a.cmd == "run":
        run(a)
    elif a.cmd == "one":
        child(a.model, a.tool, Path(a.out), a.threads)
    elif a.cmd == "summary":
        summary()
    else:
        print("\n".join(all_models()))


if __name__ == "__main__":
    main()
