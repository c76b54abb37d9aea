"""The dashboard's charts as geometry: numbers in, rectangles and points (in SVG pixels) out.

The templates only draw what these return, so every chart is plain SVG made on the server (no
script, no charting library, nothing fetched) and what it shows is testable without a browser.
Three charts: channels kept vs removed per layer (or, for unstructured pruning, weights kept vs
zeroed), seconds per stage, and a sweep's trade-off curve.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

MAX_LAYER_ROWS = 400  # past this the chart says how many more there are (report.json has them all)


@dataclass(frozen=True)
class LayerRow:
    name: str
    label: str  # the name, shortened from the left to fit (the full name is the row's tooltip)
    kept: int | float
    removed: int | float
    note: str  # e.g. "in 64 → 32": what changed besides the output channels
    y: float
    kept_width: float
    removed_width: float


@dataclass
class LayerChart:
    unit: str  # "channels" or "% of weights"
    rows: list[LayerRow]
    more: int
    width: int
    height: int
    label_width: int
    bar_width: int
    row_height: int


def _weight_rows(report: dict) -> list[tuple[str, float, float, str]]:
    """(name, kept, removed, note) per changed weight of two or more dimensions."""
    out = []
    for layer in report.get("layers") or []:
        before, after = layer.get("shape_before") or [], layer.get("shape_after") or []
        if len(before) < 2 or len(after) != len(before):
            continue  # biases and norms follow their weight: one row per layer
        note = f"in {before[1]} → {after[1]}" if after[1] != before[1] else ""
        out.append((str(layer.get("name", "?")), after[0], before[0] - after[0], note))
    return out


def _sparsity_rows(report: dict) -> list[tuple[str, float, float, str]]:
    layers = ((report.get("sparsity") or {}).get("layers")) or {}
    return [(str(name), round(100 * (1 - float(z)), 1), round(100 * float(z), 1), "")
            for name, z in layers.items()]


def layer_chart(report: dict | None, *, label_width: int = 300, bar_width: int = 380,
                row_height: int = 18) -> LayerChart | None:
    """Per layer: what stays and what goes, each bar the layer's own full width."""
    if not report:
        return None
    rows, unit = _weight_rows(report), "channels"
    if not rows and report.get("sparsity"):
        rows, unit = _sparsity_rows(report), "% of weights"
    if not rows:
        return None
    shown = rows[:MAX_LAYER_ROWS]
    out = []
    for i, (name, kept, removed, note) in enumerate(shown):
        total = kept + removed
        kw = bar_width * (kept / total) if total else 0.0
        label = name if len(name) <= 44 else "…" + name[-43:]
        out.append(LayerRow(name, label, kept, removed, note, y=i * row_height, kept_width=round(kw, 2),
                            removed_width=round(bar_width - kw, 2) if total else 0.0))
    return LayerChart(unit, out, len(rows) - len(shown), width=label_width + bar_width + 170,
                      height=len(out) * row_height, label_width=label_width, bar_width=bar_width,
                      row_height=row_height)


@dataclass(frozen=True)
class StageBar:
    stage: str
    seconds: float
    y: float
    width: float


@dataclass
class StageChart:
    bars: list[StageBar]
    total: float
    width: int
    height: int
    label_width: int
    row_height: int


def stage_chart(stage_seconds: dict[str, float] | None, *, label_width: int = 90, bar_width: int = 360,
                row_height: int = 18) -> StageChart | None:
    if not stage_seconds:
        return None
    longest = max(stage_seconds.values()) or 1.0
    bars = [StageBar(stage, float(sec), i * row_height, round(bar_width * float(sec) / longest, 2))
            for i, (stage, sec) in enumerate(stage_seconds.items())]
    return StageChart(bars, round(sum(stage_seconds.values()), 3), label_width + bar_width + 80,
                      len(bars) * row_height, label_width, row_height)


@dataclass(frozen=True)
class Point:
    x: float
    y: float
    value: Any
    pruned: float
    metric: float
    selected: bool


@dataclass(frozen=True)
class Tick:
    at: float
    label: str


@dataclass
class SweepPlot:
    parameter: str
    metric: str
    points: list[Point]
    path: str  # the polyline's points attribute
    x_ticks: list[Tick]
    y_ticks: list[Tick]
    baseline_y: float | None
    failed: list[Any] = field(default_factory=list)  # settings that did not prune anything
    width: int = 560
    height: int = 320
    left: int = 60
    top: int = 16
    plot_width: int = 470
    plot_height: int = 250


def _pruned(row: dict) -> float:
    if row.get("sparsity") is not None:
        return 100.0 * float(row["sparsity"])
    return 100.0 * (1.0 - float(row.get("macs_fraction") or 1.0))


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    step = (hi - lo) / (n - 1)
    return [lo + i * step for i in range(n)]


def _fmt(v: float) -> str:
    return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"


def sweep_plot(sweep: dict | None) -> SweepPlot | None:
    """Amount pruned (%) against held-out accuracy (or loss), the selected setting marked."""
    if not sweep or not sweep.get("rows"):
        return None
    rows = [r for r in sweep["rows"] if r.get("ok")]
    metric = "accuracy" if any(r.get("accuracy") is not None for r in rows) else "loss"
    rows = [r for r in rows if r.get(metric) is not None and math.isfinite(float(r[metric]))]
    if not rows:
        return None
    plot = SweepPlot(str(sweep.get("parameter", "")), metric, [], "", [], [], None,
                     failed=[r.get("value") for r in sweep["rows"] if not r.get("ok")])
    xs = [_pruned(r) for r in rows]
    ys = [float(r[metric]) for r in rows]
    base = (sweep.get("original") or {}).get(metric)
    lo_y, hi_y = min(ys + ([base] if base is not None else [])), max(ys + ([base] if base is not None else []))
    if hi_y - lo_y < 1e-9:
        lo_y, hi_y = lo_y - 0.5 * (abs(lo_y) or 1) * 0.1, hi_y + 0.5 * (abs(hi_y) or 1) * 0.1
    pad = 0.08 * (hi_y - lo_y)
    lo_y, hi_y = lo_y - pad, hi_y + pad
    lo_x, hi_x = 0.0, max(100.0 * math.ceil(max(xs) / 100.0 * 10) / 10, 10.0)

    def px(x: float) -> float:
        return round(plot.left + plot.plot_width * (x - lo_x) / (hi_x - lo_x), 2)

    def py(y: float) -> float:
        return round(plot.top + plot.plot_height * (1 - (y - lo_y) / (hi_y - lo_y)), 2)

    selected = sweep.get("selected")
    pts = sorted(zip(xs, ys, rows), key=lambda t: t[0])
    plot.points = [Point(px(x), py(y), r.get("value"), round(x, 2), y, r.get("value") == selected)
                   for x, y, r in pts]
    plot.path = " ".join(f"{p.x},{p.y}" for p in plot.points)
    plot.x_ticks = [Tick(px(v), f"{v:.0f}%") for v in _ticks(lo_x, hi_x)]
    plot.y_ticks = [Tick(py(v), _fmt(v)) for v in _ticks(lo_y + pad, hi_y - pad)]
    plot.baseline_y = py(float(base)) if base is not None else None
    return plot
