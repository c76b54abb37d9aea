"""Latency measurement shared by the benchmarks: warm up, then the median of repeated runs."""

from __future__ import annotations

import statistics
import time

import torch


def latency(model, x, repeats: int, warmup: int = 3) -> dict:
    """Median, min and p90 wall time (ms) of ``model(x)`` under ``torch.inference_mode``."""
    with torch.inference_mode():
        for _ in range(warmup):
            model(x)
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(x)
            ts.append(time.perf_counter() - t0)
    q = sorted(ts)
    return {"median_ms": round(1e3 * statistics.median(ts), 2), "min_ms": round(1e3 * q[0], 2),
            "p90_ms": round(1e3 * q[int(0.9 * (len(q) - 1))], 2), "repeats": repeats}
