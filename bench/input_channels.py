"""What a gather costs next to a narrow: input-channel removal on ResNet-50, batch 1 and 16.

Every 1x1 ``conv1`` of every bottleneck (16 consumers of 4 residual streams, plus their downsample
readers untouched) drops 10% of its input channels, the same scattered set for every reader of a
stream (seeded).  The same spec is pruned three ways, so the weights and MACs of the first two are
identical and only the subselection differs:

* ``gathers``: ``reorder_inputs: false``: each consumer reads an ``index_select`` of its stream;
* ``narrows``: the default: the stream's channels are reordered so every kept set is one run, and
  each consumer reads a free ``slice``;
* ``constrained``: the channels go from their producers and every reader (seed 003's constrained
  mode): no subselection, fewer MACs, but every reader loses them.

All are timed with the captured unpruned graph as the baseline (bench/_timing.py: median after
warm-up, ``torch.inference_mode``).  ResNet-50 is bench/engine.py's own definition (no torchvision).

    .venv/bin/python -m bench.input_channels [--threads 2] [--scale 1]

Writes ``bench/results/input_channels.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from bench._timing import latency
from bench.engine import ResNet50

RESULTS = Path(__file__).resolve().parent / "results"
INPUTS = [{"shape": [1, 3, 224, 224]}]
REPEATS = {1: 20, 16: 5}


def drops(model: torch.nn.Module, fraction: float = 0.1) -> list[dict]:
    out = []
    for name, p in model.named_parameters():
        if name.endswith("conv1.weight") and name.startswith("layer"):
            n = p.shape[1]
            g = torch.Generator().manual_seed(n)  # one set per stream width: every reader of a stream drops the same
            out.append({"param": name, "channels": sorted(torch.randperm(n, generator=g)[: int(n * fraction)].tolist()),
                        "dim": "in"})
    return out


def main() -> None:
    import prunekit
    from prunekit.capture import capture
    from prunekit.io.inputs import from_specs
    from prunekit.io.loading import LoadedModel

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--scale", type=float, default=1.0, help="multiply the repeat counts")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = ResNet50().eval()
    xs = {b: torch.randn(b, 3, 224, 224) for b in (1, 16)}
    reps = {b: max(3, int(r * a.scale)) for b, r in REPEATS.items()}
    entries = drops(model)
    out = {"torch": torch.__version__, "threads": a.threads, "repeats": reps, "consumers": len(entries),
           "load_avg_start": os.getloadavg(), "variants": {}}

    def record(label: str, m, extra: dict) -> None:
        v = dict(extra, latency={})
        for b, x in xs.items():
            v["latency"][str(b)] = latency(m, x, reps[b])
            print(f"{label:12s} batch {b:2d}: {v['latency'][str(b)]['median_ms']:9.2f} ms", flush=True)
        out["variants"][label] = v

    loaded = LoadedModel("state_dict", 0, module=model, param_names={n for n, _ in model.named_parameters()})
    record("captured", capture(loaded, from_specs(INPUTS)).gm, {"params": sum(p.numel() for p in model.parameters())})
    for label, extra in (("gathers", {"reorder_inputs": False}), ("narrows", {}), ("constrained", {"constrained": True})):
        t0 = time.perf_counter()
        res = prunekit.prune(model, {"channels": entries, "inputs": INPUTS, **extra})
        r = res.report
        info = r.inputs or {}
        record(label, res.model, {"prune_s": round(time.perf_counter() - t0, 1), "params": r.params_after,
                                  "macs": r.macs_after, "macs_before": r.macs_before,
                                  "gathers": info.get("gathers"), "narrows": info.get("narrows"),
                                  "reordered": info.get("reordered"), "check_max_rel": r.check["max_rel"]})
    base = out["variants"]["captured"]["latency"]
    for v in out["variants"].values():
        v["vs_captured"] = {b: round(v["latency"][b]["median_ms"] / base[b]["median_ms"], 3) for b in base}
    out["load_avg_end"] = os.getloadavg()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "input_channels.json").write_text(json.dumps(out, indent=2))
    (RESULTS / "input_channels.md").write_text(markdown(out))
    print(markdown(out))


def markdown(out: dict) -> str:
    lines = ["# Input-channel removal on ResNet-50: gathers vs narrows", "",
             f"torch {out['torch']}, {out['threads']} threads; {out['consumers']} consumers each drop 10% of their inputs. "
             "Latency median (ms) and the ratio to the captured unpruned graph.", "",
             "| variant | gathers | narrows | params | MACs | batch 1 | ratio | batch 16 | ratio |", "|---|---|---|---|---|---|---|---|---|"]
    for label, v in out["variants"].items():
        lat, rat = v["latency"], v["vs_captured"]
        macs = f"{v['macs']:,}" if v.get("macs") else "-"
        lines.append(f"| {label} | {v.get('gathers', '-')} | {v.get('narrows', '-')} | {v['params']:,} | {macs} | "
                     f"{lat['1']['median_ms']} | {rat['1']} | {lat['16']['median_ms']} | {rat['16']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
