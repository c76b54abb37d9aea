"""Sweeps: several settings of one parameter, each pruned, checked and evaluated, and one kept.

A pipeline rarely knows in advance which ``gradient_threshold`` (or ``ratio``, or ``sparsity``)
its accuracy budget allows.  A sweep answers that in one job: every setting is pruned from the same
capture (and, for GradProbe, the same two gradient records), checked like any prune, and evaluated
on the held-out samples.  ``sweep.json`` holds a row per setting, ``sweep.png`` draws the trade-off
(how much is pruned against accuracy or loss), and the job's model is the selected setting's:
``sweep.select`` if given, else the most pruned one whose accuracy stays within
``max_accuracy_drop`` of the original (for ``mse``: whose loss grows by at most that fraction).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from .io.export import atomic_path

SWEEP_JSON = "sweep.json"
SWEEP_PNG = "sweep.png"


def row(parameter: str, value: float, setting) -> dict:
    """One setting's figures, from its checked prune and its evaluation."""
    c = setting.checked
    r = {"parameter": parameter, "value": value, "ok": True,
         "macs_fraction": (c.macs_after / c.macs_before) if c.macs_before > 0 else None,
         "params_fraction": (c.params_after / c.params_before) if c.params_before else None,
         "params_removed": c.params_before - c.params_after}
    sp = setting.extra.get("sparsity")
    if sp is not None:
        r.update(sparsity=sp["reached"], weights_pruned=sp["weights_zeroed"])
    else:
        r.update(sparsity=1.0 - r["params_fraction"] if r["params_fraction"] is not None else None,
                 weights_pruned=r["params_removed"])
    ev = setting.evaluation or {}
    pruned = ev.get("pruned", {})
    r.update(loss=pruned.get("loss"), accuracy=pruned.get("accuracy", pruned.get("agreement")),
             accuracy_drop=ev.get("accuracy_drop"), loss_increase=ev.get("loss_increase"),
             check_max_rel=c.result.max_rel)
    gp = setting.extra.get("importance", {}).get("gradprobe")
    if gp:
        r["gradprobe"] = {k: gp[k] for k in ("candidates", "pruned", "restored")}
    return r


def failed_row(parameter: str, value: float, reason: str) -> dict:
    return {"parameter": parameter, "value": value, "ok": False, "reason": reason}


@dataclass
class SweepResult:
    parameter: str
    rows: list[dict]
    index: int                      # the selected row
    reason: str                     # why that one
    original: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def selected(self) -> float:
        return self.rows[self.index]["value"]

    def to_dict(self) -> dict:
        return {"parameter": self.parameter, "selected": self.selected, "reason": self.reason,
                "original": self.original, "rows": self.rows, "warnings": self.warnings,
                "artifacts": [SWEEP_JSON, SWEEP_PNG]}


def _pruned_amount(r: dict) -> float:
    if r.get("sparsity") is not None:
        return r["sparsity"]
    return 1.0 - (r.get("macs_fraction") or 1.0)


def select(spec, rows: list[dict], original: dict | None = None) -> SweepResult:
    from .errors import InvalidSpec

    sw = spec.sweep
    ok = [i for i, r in enumerate(rows) if r["ok"]]
    if not ok:
        raise InvalidSpec(f"sweep: no setting of {sw.parameter} prunes anything ({rows[0]['reason']})")
    if sw.select is not None:
        i = next(i for i, r in enumerate(rows) if r["value"] == sw.select)
        if not rows[i]["ok"]:
            raise InvalidSpec(f"sweep.select: the setting {sw.select} failed: {rows[i]['reason']}")
        return SweepResult(sw.parameter, rows, i, "named in sweep.select", original or {})

    def within(r: dict) -> bool:
        if r.get("accuracy_drop") is not None:
            return r["accuracy_drop"] <= sw.max_accuracy_drop + 1e-12
        if r.get("loss_increase") is not None and original and original.get("loss"):
            return r["loss_increase"] <= sw.max_accuracy_drop * abs(original["loss"]) + 1e-12
        return True

    fits = [i for i in ok if within(rows[i])]
    if fits:
        i = max(fits, key=lambda i: (_pruned_amount(rows[i]), -i))
        return SweepResult(sw.parameter, rows, i, f"the most pruned setting within max_accuracy_drop {sw.max_accuracy_drop}",
                           original or {})
    i = min(ok, key=lambda i: (rows[i].get("accuracy_drop") or 0.0, -_pruned_amount(rows[i])))
    return SweepResult(sw.parameter, rows, i, "no setting stays within max_accuracy_drop: the one that loses least",
                       original or {}, [f"no setting of {sw.parameter} stays within max_accuracy_drop {sw.max_accuracy_drop}"])


def plot(result: SweepResult, path: Path) -> None:
    """The trade-off curve: amount pruned against accuracy (or loss), the selected setting marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in result.rows if r["ok"]]
    use_acc = any(r.get("accuracy") is not None for r in rows)
    metric = "accuracy" if use_acc else "loss"
    xs = [100 * _pruned_amount(r) for r in rows]
    ys = [r.get(metric) if r.get(metric) is not None else float("nan") for r in rows]
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    ax.plot(xs, ys, "o-", color="#2b6cb0")
    for x, y, r in zip(xs, ys, rows):
        ax.annotate(f"{r['value']:g}", (x, y), textcoords="offset points", xytext=(4, 6), fontsize=8)
    sel = result.rows[result.index]
    ax.plot([100 * _pruned_amount(sel)], [sel.get(metric)], "*", ms=16, color="#dd6b20", label=f"selected ({sel['value']:g})")
    base = result.original.get(metric) if result.original else None
    if base is not None:
        ax.axhline(base, ls="--", color="grey", lw=1, label=f"original {metric}")
    unit = "sparsity reached (%)" if rows and rows[0].get("weights_pruned") is not None and "macs" not in result.parameter \
        else "pruned (%)"
    ax.set_xlabel(unit)
    ax.set_ylabel(f"held-out {metric}")
    ax.set_title(f"sweep over {result.parameter}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def write(result: SweepResult, out_dir: Path) -> dict[str, Path]:
    out_dir = Path(out_dir)
    jpath, ppath = out_dir / SWEEP_JSON, out_dir / SWEEP_PNG
    with atomic_path(jpath) as tmp:
        tmp.write_text(json.dumps(result.to_dict(), indent=2))
    plot(result, ppath)
    return {SWEEP_JSON: jpath, SWEEP_PNG: ppath}


def table(sweep: dict) -> list[list[str]]:
    """Rows for a printed table (the CLI's): setting, pruned, accuracy, loss, selected."""
    out = []
    for r in sweep["rows"]:
        if not r["ok"]:
            out.append([f"{r['value']:g}", "-", "-", "-", r["reason"][:60]])
            continue
        acc = "-" if r.get("accuracy") is None else f"{100 * r['accuracy']:.2f}%"
        loss = "-" if r.get("loss") is None else f"{r['loss']:.4f}"
        mark = "◀ selected" if r["value"] == sweep["selected"] else ""
        out.append([f"{r['value']:g}", f"{100 * _pruned_amount(r):.1f}%", acc, loss, mark])
    return out
