"""Does data-driven pruning keep more accuracy than pruning by weight norms, and at what cost?

The other benchmarks measure PruneKit on random weights: time, memory, coverage, latency.  None of
them can say whether a criterion chooses *well*, because a random network has no accuracy to lose.
This one trains real (small) models on real data and measures test accuracy after pruning:

* data: scikit-learn's handwritten digits (``load_digits``: 1,797 8x8 images shipped inside the
  package, nothing downloaded), one fixed stratified split (1,347 train / 450 test), fixed seeds;
* models: a small CNN with BatchNorm (conv 1->16->32, BN+ReLU each, max-pool, linear), an MLP
  (64->128->64->10) and a pre-norm residual MLP with LayerNorm ("ln": 64 -> width 64, three blocks
  x + fc2(gelu(fc1(LN(x)))) with hidden 128, final LN, linear), trained to convergence with Adam
  (CPU seconds);
* for the LayerNorm model, ``normalized_dims`` ``keep`` (the residual width stays: only hidden
  widths go) against ``prune`` (the residual width goes too; statistics over the kept channels)
  at the same MACs targets, with l2 and taylor;
* (a) structured pruning to 70% and 50% of the MACs with PruneKit's l2, bn_scale, taylor,
  gradprobe (and random as a floor), each with and without ``recalibrate_bn``, and Torch-Pruning
  1.6.1's MagnitudeImportance / TaylorImportance (MetaPruner, global pruning, the pruning ratio
  bisected until its own MAC counter reaches the same fraction);
* (b) unstructured sparsity 50% and 80% with magnitude, wanda and gradprobe;
* every pruned model also fine-tuned for 2 epochs on the train set (unstructured: the mask
  re-applied after every step, so the zeros stay zeros);
* a ``gradient_threshold`` sweep run through the engine's own sweep (calibration with a holdout),
  drawn next to the test accuracy of each setting (``quality_sweep.png``).

PruneKit gets the training set as calibration data (``holdout: 0`` outside the sweep); every
model, PruneKit's or Torch-Pruning's, is evaluated by this script on the same test set, and MACs
are counted for all of them by one counter (``prunekit.metrics.count_macs``), so the rows compare.

Fine-tuning runs with BatchNorm in eval mode for every model: PruneKit's pruned GraphModule is a
captured eval-mode graph (its batch norms are hard-coded ``training=False``), so its statistics
cannot move during training; Torch-Pruning's models are fine-tuned the same way (frozen running
statistics, trainable affine parameters) so that the fine-tune rows compare too.

    .venv/bin/pip install scikit-learn torch-pruning==1.6.1 --no-deps
    .venv/bin/python -m bench.quality            # full run, a few minutes on 2 cores
    .venv/bin/python -m bench.quality --quick    # one target, one sparsity, shorter training
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import prunekit  # noqa: E402
from prunekit.metrics import count_macs, count_parameters  # noqa: E402

RESULTS = ROOT / "bench" / "results"
SEED = 0
STRUCTURED = ("l2", "bn_scale", "taylor", "gradprobe", "random")
UNSTRUCTURED = ("magnitude", "wanda", "gradprobe")
# the seed's example range (0 .. 0.5) plus larger values: on a converged model scaling a whole
# candidate set to 0.1x raises most candidates' gradients several-fold, so the range that trades
# accuracy for size lies above 0.5
THRESHOLDS = (0.0, 0.1, 0.5, 1.0, 2.0, 5.0)


# ---------------------------------------------------------------------------------------------
# data and models


def load_data():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)
    y = d.target.astype(np.int64)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.25, random_state=SEED, stratify=y)
    return torch.from_numpy(xtr), torch.from_numpy(ytr), torch.from_numpy(xte), torch.from_numpy(yte)


def make_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(32 * 4 * 4, 10),
    )


def make_mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10))


class _PreNormBlock(nn.Module):
    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(F.gelu(self.fc1(self.norm(x))))


def make_ln() -> nn.Module:
    """A pre-norm residual MLP: every block's LayerNorm normalises the residual width."""
    return nn.Sequential(nn.Linear(64, 64), *[_PreNormBlock(64, 128) for _ in range(3)], nn.LayerNorm(64),
                         nn.Linear(64, 10))


def shaped(name: str, x: torch.Tensor) -> torch.Tensor:
    """The digits as each model takes them: (N, 1, 8, 8) for the CNN, (N, 64) for the MLPs."""
    return x.reshape(len(x), 1, 8, 8) if name == "cnn" else x.reshape(len(x), 64)


def final_layer(model: nn.Module) -> nn.Module:
    return [m for m in model.modules() if isinstance(m, nn.Linear)][-1]


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    return float((model(x).argmax(1) == y).float().mean())


def train(model: nn.Module, x, y, *, epochs: int, lr: float, seed: int, batch: int = 32, bn_train: bool = True,
          masks: dict[str, torch.Tensor] | None = None) -> list[float]:
    """Adam on cross-entropy; ``masks`` are re-applied after every step (zeros stay zeros)."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    params = dict(model.named_parameters())
    losses = []
    for _ in range(epochs):
        model.train(bn_train)
        order = torch.randperm(len(x), generator=g)
        total = 0.0
        for i in range(0, len(x), batch):
            sel = order[i:i + batch]
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x[sel]), y[sel])
            loss.backward()
            opt.step()
            if masks:
                with torch.no_grad():
                    for n, m in masks.items():
                        params[n].mul_(m)
            total += float(loss.detach()) * len(sel)
        losses.append(total / len(x))
    model.eval()
    return losses


# ---------------------------------------------------------------------------------------------
# the pruners


def pk_prune(model: nn.Module, spec: dict, cal: dict):
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = prunekit.prune(copy.deepcopy(model), spec, calibration=cal)
    return res, time.perf_counter() - t0


def tp_prune(model: nn.Module, criterion: str, fraction: float, example: torch.Tensor, cal_batches, steps: int):
    """Torch-Pruning 1.6.1: global MetaPruner, the ratio bisected until its MACs reach ``fraction``."""
    import torch_pruning as tp

    base_macs, _ = tp.utils.count_ops_and_params(model, example)

    def pruned_at(ratio: float):
        m = copy.deepcopy(model).eval()
        imp = tp.importance.MagnitudeImportance(p=2) if criterion == "magnitude" else tp.importance.TaylorImportance()
        pruner = tp.pruner.MetaPruner(m, example, importance=imp, global_pruning=True, pruning_ratio=ratio,
                                      ignored_layers=[final_layer(m)])
        if criterion == "taylor":
            m.zero_grad()
            for xb, yb in cal_batches:
                F.cross_entropy(m(xb), yb).backward()
        pruner.step()
        m.zero_grad(set_to_none=True)
        macs, _ = tp.utils.count_ops_and_params(m, example)
        return m, macs / base_macs

    t0 = time.perf_counter()
    lo, hi = 0.0, 0.95
    best = pruned_at(hi)
    if best[1] > fraction:
        raise RuntimeError(f"torch-pruning {criterion}: ratio {hi} keeps {best[1]:.3f} of the MACs > {fraction}")
    for _ in range(steps):
        mid = (lo + hi) / 2
        cand = pruned_at(mid)
        if cand[1] <= fraction:
            hi, best = mid, cand
        else:
            lo = mid
    return best[0], {"ratio": hi, "tp_macs_fraction": best[1], "seconds": time.perf_counter() - t0}


def weight_sparsity(model: nn.Module) -> float:
    ws = [p for p in model.parameters() if p.dim() >= 2]
    return float(sum(int((p == 0).sum()) for p in ws) / sum(p.numel() for p in ws))


# ---------------------------------------------------------------------------------------------
# the run


def run(args) -> dict:
    torch.manual_seed(SEED)
    np.random.seed(SEED)
    xtr, ytr, xte, yte = load_data()
    epochs = 12 if args.quick else 40
    targets = (0.5,) if args.quick else (0.7, 0.5)
    sparsities = (0.8,) if args.quick else (0.5, 0.8)
    thresholds = (0.0, 0.5, 2.0) if args.quick else THRESHOLDS
    bisect = 8 if args.quick else 14
    out = {"meta": {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
                    "quick": bool(args.quick), "seed": SEED, "train_samples": len(xtr), "test_samples": len(xte),
                    "train_epochs": epochs, "finetune_epochs": args.ft_epochs, "finetune_lr": args.ft_lr,
                    "calibration": {"samples": len(xtr), "batch_size": 64, "holdout": 0.0},
                    "load_avg_start": os.getloadavg()},
           "models": {}, "rows": [], "sweeps": []}
    try:
        import sklearn
        import torch_pruning as tp

        from importlib.metadata import version

        del tp  # imported to fail early; its __version__ string lags the wheel's (1.6.1 says 1.6.0)
        out["meta"].update(sklearn=sklearn.__version__, torch_pruning=version("torch-pruning"))
    except ImportError as exc:
        raise SystemExit(f"bench/quality.py needs {exc.name}: .venv/bin/pip install scikit-learn "
                         "torch-pruning==1.6.1 --no-deps") from None

    for name, make in (("cnn", make_cnn), ("mlp", make_mlp), ("ln", make_ln)):
        xtr_m, xte_m = shaped(name, xtr), shaped(name, xte)
        example = xtr_m[:2]
        torch.manual_seed(SEED)
        model = make()
        t0 = time.perf_counter()
        losses = train(model, xtr_m, ytr, epochs=epochs, lr=1e-3, seed=SEED)
        base_acc = accuracy(model, xte_m, yte)
        base_macs, base_params = count_macs(model, (example,)), count_parameters(model)
        out["models"][name] = {"test_accuracy": base_acc, "train_accuracy": accuracy(model, xtr_m, ytr),
                               "train_seconds": time.perf_counter() - t0, "final_train_loss": losses[-1],
                               "params": base_params, "macs": base_macs}
        _TRAINED[name] = model
        print(f"[{name}] trained {epochs} epochs in {out['models'][name]['train_seconds']:.1f}s: "
              f"test {100 * base_acc:.2f}%  params {base_params}  MACs {base_macs}", flush=True)
        cal = {"inputs": xtr_m, "targets": ytr}
        cal_batches = [(xtr_m[i:i + 64], ytr[i:i + 64]) for i in range(0, 64 * (len(xtr) // 64), 64)]
        has_bn = any(isinstance(m, nn.BatchNorm2d) for m in model.modules())

        def finish(row: dict, pruned: nn.Module, masks=None) -> None:
            """Test accuracy of ``pruned``, then of a fine-tuned copy; counted with one MAC counter."""
            row.update(model=name, acc_before=base_acc, acc_after=accuracy(pruned, xte_m, yte),
                       params=count_parameters(pruned), params_fraction=count_parameters(pruned) / base_params,
                       macs_fraction=count_macs(pruned, (example,)) / base_macs)
            ft = copy.deepcopy(pruned)
            for p in ft.parameters():
                p.requires_grad_(True)
            train(ft, xtr_m, ytr, epochs=args.ft_epochs, lr=args.ft_lr, seed=SEED + 1, bn_train=False, masks=masks)
            row["acc_after_ft"] = accuracy(ft, xte_m, yte)
            if masks:
                row["sparsity_after_ft"] = weight_sparsity(ft)
            out["rows"].append(row)
            print(f"  {row['method']:<12} {row['tool']:<9} {row['criterion']:<10} recal={str(row.get('recal', '-')):<5} "
                  + (f"norm={row['normalized_dims']:<5} " if row.get("normalized_dims") else "")
                  + f"{row['setting']:<12} acc {100 * row['acc_after']:6.2f}% -> ft {100 * row['acc_after_ft']:6.2f}%  "
                  f"MACs {row['macs_fraction']:.3f}  params {row['params']}"
                  + (f"  sparsity {row['sparsity_reached']:.3f}" if row.get("sparsity_reached") is not None else "")
                  + f"  ({row['seconds']:.1f}s)", flush=True)

        has_ln = any(isinstance(m, nn.LayerNorm) for m in model.modules())
        # (a) structured, to a MACs target (with LayerNorm: residual width kept, and pruned too)
        for frac in targets:
            settings = [(c, r, n) for c in (("l2", "taylor") if has_ln else STRUCTURED)
                        for r in ((False, True) if has_bn else (False,))
                        for n in (("keep", "prune") if has_ln else (None,))]
            for crit, recal, nd in settings:
                spec = {"importance": crit, "target": {"macs": frac}, "recalibrate_bn": recal,
                        "holdout": 0.0, "batch_size": 64, **({"normalized_dims": nd} if nd else {})}
                res, secs = pk_prune(model, spec, cal)
                rep = res.report.to_dict()
                row = {"method": "structured", "tool": "prunekit", "criterion": crit, "recal": recal,
                       "normalized_dims": nd, "output_change": ((rep.get("normalized_dims") or {})
                                                                .get("output_change") or {}).get("rel_l2"),
                       "setting": f"macs {frac}", "target": frac, "seconds": secs,
                       "target_reached": (rep.get("target") or {}).get("reached"),
                       "target_met": (rep.get("target") or {}).get("met"),
                       "report_macs_fraction": rep["macs_after"] / rep["macs_before"],
                       "warnings": [w for w in rep.get("warnings", []) if "importance" in w]}
                gp = (rep.get("importance_details") or {}).get("gradprobe")
                if gp:
                    row["gradprobe"] = {k: gp.get(k) for k in ("candidates", "pruned", "restored", "rounds")}
                finish(row, res.model)
            for crit in ("magnitude", "taylor"):
                tpm, info = tp_prune(model, crit, frac, example, cal_batches, bisect)
                row = {"method": "structured", "tool": "tp", "criterion": crit, "recal": None,
                       "setting": f"macs {frac}", "target": frac, "seconds": info["seconds"],
                       "tp_ratio": info["ratio"], "tp_macs_fraction": info["tp_macs_fraction"]}
                finish(row, tpm)

        # (b) unstructured (not for the LayerNorm model: it is there for normalized_dims)
        for sp in (() if has_ln else sparsities):
            for crit in UNSTRUCTURED:
                spec = {"method": "unstructured", "sparsity": sp, "importance": crit, "holdout": 0.0, "batch_size": 64}
                res, secs = pk_prune(model, spec, cal)
                rep = res.report.to_dict()
                masks = {n: (p != 0).to(p.dtype) for n, p in res.model.named_parameters() if p.dim() >= 2}
                row = {"method": "unstructured", "tool": "prunekit", "criterion": crit, "recal": None,
                       "setting": f"sparsity {sp}", "target": sp, "seconds": secs,
                       "sparsity_reached": rep["sparsity"]["reached"],
                       "sparsity_of_all_parameters": rep["sparsity"]["of_all_parameters"],
                       "sparsity_layers": rep["sparsity"]["layers"]}
                gp = (rep.get("importance_details") or {}).get("gradprobe")
                if gp:
                    row["gradprobe"] = {k: gp[k] for k in ("candidates", "pruned", "restored")}
                finish(row, res.model, masks)

    # the gradient_threshold sweeps, through the engine (calibration with a holdout)
    if not args.no_sweep:
        # structured by ratio, not by target: with a target the search replaces restored channels
        # by the next candidates, so the threshold moves which channels go more than how many
        sweep_cases = [("cnn", {"importance": "gradprobe", "ratio": 0.5}, "structured, ratio 0.5"),
                       ("mlp", {"method": "unstructured", "importance": "gradprobe", "sparsity": 0.8},
                        "unstructured, sparsity 0.8")]
        for name, base_spec, label in sweep_cases:
            out["sweeps"].append(run_sweep(name, label, base_spec, thresholds, xtr, ytr, xte, yte, out))
        plot_sweeps(out["sweeps"], args.out / f"quality_sweep{'_quick' if args.quick else ''}.png")
    out["meta"]["load_avg_end"] = os.getloadavg()
    return out


_TRAINED: dict[str, nn.Module] = {}


def run_sweep(name, label, base_spec, thresholds, xtr, ytr, xte, yte, out) -> dict:
    model = _TRAINED[name]
    xtr_m, xte_m = shaped(name, xtr), shaped(name, xte)
    cal = {"inputs": xtr_m, "targets": ytr}
    spec = dict(base_spec, holdout=0.2, batch_size=64,
                sweep={"gradient_threshold": list(thresholds), "max_accuracy_drop": 0.01})
    res, secs = pk_prune(model, spec, cal)
    sw = res.report.to_dict()["sweep"]
    rows = []
    for r in sw["rows"]:
        one, _ = pk_prune(model, dict(base_spec, holdout=0.2, batch_size=64, gradient_threshold=r["value"]), cal)
        rows.append({"gradient_threshold": r["value"], "ok": r["ok"], "holdout_accuracy": r.get("accuracy"),
                     "accuracy_drop": r.get("accuracy_drop"), "macs_fraction": r.get("macs_fraction"),
                     "sparsity": r.get("sparsity"), "gradprobe": r.get("gradprobe"),
                     "test_accuracy": accuracy(one.model, xte_m, yte)})
    sel_model_test = accuracy(res.model, xte_m, yte)
    entry = {"model": name, "case": label, "spec": spec, "seconds": secs, "selected": sw["selected"],
             "reason": sw["reason"], "holdout_original": sw.get("original"), "selected_test_accuracy": sel_model_test,
             "test_original": out["models"][name]["test_accuracy"], "warnings": sw.get("warnings", []), "rows": rows}
    print(f"[sweep {name}] {label}: selected gradient_threshold {sw['selected']:g} ({sw['reason']}) in {secs:.1f}s",
          flush=True)
    for r in rows:
        print(f"    thr {r['gradient_threshold']:<5g} holdout {r['holdout_accuracy']}  test {r['test_accuracy']:.4f}  "
              f"MACs {r['macs_fraction']}  sparsity {r['sparsity']}  {r['gradprobe']}", flush=True)
    return entry


def plot_sweeps(sweeps: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(sweeps), figsize=(6.0 * len(sweeps), 4.3), dpi=110, squeeze=False)
    for ax, sw in zip(axes[0], sweeps):
        rows = [r for r in sw["rows"] if r["ok"]]
        structured = rows and rows[0]["gradprobe"] is not None and sw["spec"].get("method") != "unstructured"
        xs = [100 * (1 - r["macs_fraction"]) if structured else 100 * r["sparsity"] for r in rows]
        ax.plot(xs, [100 * r["holdout_accuracy"] for r in rows], "o-", color="#2b6cb0", label="held-out (engine's sweep)")
        ax.plot(xs, [100 * r["test_accuracy"] for r in rows], "s--", color="#2f855a", label="test set (this script)")
        for x, r in zip(xs, rows):
            ax.annotate(f"{r['gradient_threshold']:g}", (x, 100 * r["holdout_accuracy"]), textcoords="offset points",
                        xytext=(4, 6), fontsize=8)
        sel = next(r for r in rows if r["gradient_threshold"] == sw["selected"])
        sx = 100 * (1 - sel["macs_fraction"]) if structured else 100 * sel["sparsity"]
        ax.plot([sx], [100 * sel["holdout_accuracy"]], "*", ms=16, color="#dd6b20",
                label=f"selected (threshold {sw['selected']:g})")
        if sw.get("holdout_original", {}).get("accuracy") is not None:
            ax.axhline(100 * sw["holdout_original"]["accuracy"], ls=":", color="#2b6cb0", lw=1, label="original, held-out")
        ax.axhline(100 * sw["test_original"], ls=":", color="#2f855a", lw=1, label="original, test")
        ax.set_xlabel("MACs removed (%)" if structured else "weight sparsity reached (%)")
        ax.set_ylabel("top-1 accuracy (%)")
        ax.set_title(f"{sw['model']}: gradprobe, {sw['case']}\n(labels: gradient_threshold)", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------
# markdown


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.2f}"


def _keep_vs_prune(out: dict) -> list[str]:
    """The LayerNorm model: the same criterion and MACs target with the residual width kept and pruned."""
    rows = {(r["criterion"], r["target"], r["normalized_dims"]): r for r in out["rows"]
            if r.get("normalized_dims") and r["method"] == "structured"}
    if not rows:
        return []
    lines = ["", "## LayerNorm model: `normalized_dims` keep vs prune at the same MACs target", "",
             "`keep`: the residual width stays (only hidden widths go); `prune`: it goes too, the layer norms "
             "normalise over the kept channels (the model computes something else by design: `output change` is "
             "the report's relative L2 change of the output vs the upload on the check's inputs). Test accuracy %.", "",
             "| criterion | MACs kept (target) | keep: MACs, params | keep: acc | keep: + fine-tune | prune: MACs, params | "
             "prune: acc | prune: + fine-tune | prune: output change |", "|---|---|---|---|---|---|---|---|---|"]
    for (crit, target, nd), r in sorted(rows.items()):
        if nd != "keep" or (crit, target, "prune") not in rows:
            continue
        q = rows[(crit, target, "prune")]
        lines.append(f"| {crit} | {target} | {r['macs_fraction']:.3f}, {r['params']:,} | {_pct(r['acc_after'])} | "
                     f"{_pct(r['acc_after_ft'])} | {q['macs_fraction']:.3f}, {q['params']:,} | {_pct(q['acc_after'])} | "
                     f"{_pct(q['acc_after_ft'])} | {q['output_change']:.3f} |")
    return lines


def markdown(out: dict) -> str:
    m = out["meta"]
    lines = ["# Pruning quality on scikit-learn digits", "",
             f"`bench/quality.py`{' --quick' if m['quick'] else ''}: torch {m['torch']}, Torch-Pruning "
             f"{m.get('torch_pruning')}, scikit-learn {m.get('sklearn')}, {m['threads']} torch thread(s); "
             f"{m['train_samples']} train / {m['test_samples']} test samples, seed {m['seed']}. "
             f"Accuracies are top-1 on the test set (%), measured by the script for every tool; fine-tune = "
             f"{m['finetune_epochs']} epochs of Adam (lr {m['finetune_lr']}) on the train set, BatchNorm statistics frozen. "
             "MACs fraction and params counted by one counter (`prunekit.metrics.count_macs`) for every row.", ""]
    lines += ["| model | params | MACs | train epochs | test accuracy |", "|---|---|---|---|---|"]
    for name, info in out["models"].items():
        lines.append(f"| {name} | {info['params']:,} | {info['macs']:,} | {m['train_epochs']} | {_pct(info['test_accuracy'])} |")
    for method in ("structured", "unstructured"):
        rows = [r for r in out["rows"] if r["method"] == method]
        if not rows:
            continue
        lines += ["", f"## {method}", ""]
        if method == "structured":
            lines += ["| model | tool | criterion | target (MACs kept) | recal BN | acc before | acc after | after fine-tune | params | MACs fraction | note |",
                      "|---|---|---|---|---|---|---|---|---|---|---|"]
        else:
            lines += ["| model | tool | criterion | target sparsity | acc before | acc after | after fine-tune | params | sparsity reached | note |",
                      "|---|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            note = []
            if r.get("gradprobe"):
                g = r["gradprobe"]
                note.append(f"gradprobe restored {g['restored']}/{g['candidates']}"
                            + (f" in {g['rounds']} rounds" if g.get("rounds") else ""))
            if r.get("target_met") is False:
                note.append("**target not met**")
            if r["tool"] == "tp":
                note.append(f"ratio {r['tp_ratio']:.3f}, TP counter {r['tp_macs_fraction']:.3f}")
            if r.get("warnings"):
                note.append("; ".join(w.split(":")[-1].strip() for w in r["warnings"]))
            tool = "Torch-Pruning" if r["tool"] == "tp" else "PruneKit"
            if method == "structured":
                recal = "-" if r["recal"] is None else ("yes" if r["recal"] else "no")
                crit = r["criterion"] + (f", normalized_dims {r['normalized_dims']}" if r.get("normalized_dims") else "")
                lines.append(f"| {r['model']} | {tool} | {crit} | {r['target']} | {recal} | {_pct(r['acc_before'])} | "
                             f"{_pct(r['acc_after'])} | {_pct(r['acc_after_ft'])} | {r['params']:,} | {r['macs_fraction']:.3f} | "
                             f"{', '.join(note)} |")
            else:
                lines.append(f"| {r['model']} | {tool} | {r['criterion']} | {r['target']} | {_pct(r['acc_before'])} | "
                             f"{_pct(r['acc_after'])} | {_pct(r['acc_after_ft'])} | {r['params']:,} | "
                             f"{r['sparsity_reached']:.3f} | {', '.join(note)} |")
    lines += _keep_vs_prune(out)
    for sw in out["sweeps"]:
        lines += ["", f"## gradient_threshold sweep: {sw['model']}, {sw['case']}", "",
                  f"Engine sweep, calibration = train set with holdout 0.2 (held-out accuracy is the engine's, on "
                  f"{int(0.2 * m['train_samples'])} train samples); test accuracy from a separate prune per setting. "
                  f"Selected: **{sw['selected']:g}** ({sw['reason']}); its model scores {_pct(sw['selected_test_accuracy'])}% "
                  f"on the test set (original {_pct(sw['test_original'])}%). `quality_sweep.png` draws it.", "",
                  "| gradient_threshold | restored / candidates | MACs fraction | sparsity | held-out acc | test acc |",
                  "|---|---|---|---|---|---|"]
        for r in sw["rows"]:
            g = r["gradprobe"] or {}
            lines.append(f"| {r['gradient_threshold']:g} | {g.get('restored', '-')}/{g.get('candidates', '-')} | "
                         f"{r['macs_fraction']:.3f} | {r['sparsity']:.3f} | {_pct(r['holdout_accuracy'])} | {_pct(r['test_accuracy'])} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one target, one sparsity, 12 training epochs, 3 thresholds")
    ap.add_argument("--out", type=Path, default=RESULTS, help="directory for quality.json/.md and quality_sweep.png")
    ap.add_argument("--ft-epochs", type=int, default=2)
    ap.add_argument("--ft-lr", type=float, default=1e-3)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: repeatable on a shared machine)")
    ap.add_argument("--no-sweep", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=FutureWarning)  # torch's own deprecations, not ours
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    out = run(args)
    out["meta"]["total_seconds"] = time.perf_counter() - t0
    suffix = "_quick" if args.quick else ""
    (args.out / f"quality{suffix}.json").write_text(json.dumps(out, indent=2, default=float))
    (args.out / f"quality{suffix}.md").write_text(markdown(out))
    print(f"wrote {args.out}/quality{suffix}.json, .md{'' if args.no_sweep else f' and quality_sweep{suffix}.png'} "
          f"in {out['meta']['total_seconds']:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
