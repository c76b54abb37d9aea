"""CPU latency of a 2-layer GRU(512) language model before and after pruning half its hidden units.

Model: ``Embedding(10000, 512) -> nn.GRU(512, 512, num_layers=2, batch_first=True) -> Linear(512, 10000)``,
token ids at batch 8 x sequence 128.  PruneKit prunes it at ratio 0.5 (l2) through its ``aten.gru``
rule, which keeps the native fused GRU call.  The model is uploaded as traced TorchScript (the common
upload) and, separately, as an in-memory ``nn.Module``; the latency of each pruned model is measured
next to the original eager module and next to the unpruned captured graph (same graph machinery,
no pruning) so the speed-up is not confounded with capture overhead.

    .venv/bin/python -m bench.recurrent [--threads 2] [--repeats 30]

Writes ``bench/results/recurrent.json``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from bench._timing import latency

import torch
import torch.nn as nn

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
VOCAB, DIM, BATCH, SEQ = 10000, 512, 8, 128


class GRULM(nn.Module):
    def __init__(self, vocab: int = VOCAB, dim: int = DIM, layers: int = 2) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.gru = nn.GRU(dim, dim, num_layers=layers, batch_first=True)
        self.head = nn.Linear(dim, vocab)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        out, _ = self.gru(self.embed(tokens))
        return self.head(out)


def _macs(model, x) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as c:
        model(x)
    return int(c.get_total_flops() // 2)


def gru_macs(hidden: list[int], inp: int, batch: int, seq: int, vocab: int) -> int:
    """Analytic MACs (FlopCounterMode does not count aten.gru): 3 gates x (in + hidden) x hidden per step."""
    total, i = 0, inp
    for h in hidden:
        total += batch * seq * 3 * h * (i + h)
        i = h
    return total + batch * seq * i * vocab


def gru_sizes(model) -> list[int]:
    """Hidden sizes of every GRU layer, read from its ``weight_hh_l*`` tensors."""
    sizes = {}
    for n, p in list(model.named_parameters()) + list(model.named_buffers()):
        if "weight_hh_l" in n:
            sizes[n] = p.shape[1]
    return [sizes[k] for k in sorted(sizes, key=lambda n: n.split("weight_hh_l")[-1])]


def main() -> None:
    import prunekit
    from prunekit.errors import PruneKitError

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--ratio", type=float, default=0.5)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = GRULM().eval()
    x = torch.randint(0, VOCAB, (BATCH, SEQ))
    spec = {"inputs": [{"shape": [BATCH, SEQ], "dtype": "int64", "low": 0, "high": VOCAB}],
            "ratio": a.ratio, "importance": "l2"}

    out: dict = {"model": "Embedding(10000,512) -> GRU(512,512,2 layers) -> Linear(512,10000)",
                 "batch": BATCH, "seq": SEQ, "threads": a.threads, "torch": torch.__version__, "ratio": a.ratio,
                 "original": {"params": sum(p.numel() for p in model.parameters()),
                              "gru_hidden": gru_sizes(model),
                              "macs_flopcounter": _macs(model, x),
                              "macs_analytic": gru_macs(gru_sizes(model), DIM, BATCH, SEQ, VOCAB),
                              "latency": latency(model, x, a.repeats)},
                 "uploads": {}}
    print("original eager:", out["original"]["latency"], flush=True)

    tmp = Path(tempfile.mkdtemp(prefix="pkgru_"))
    ts_path = tmp / "gru.pt"
    with torch.no_grad():
        torch.jit.save(torch.jit.trace(model, x, check_trace=False), str(ts_path))
    for upload, src in (("torchscript", ts_path), ("module", model)):
        entry: dict = {}
        t0 = time.perf_counter()
        try:
            res = prunekit.prune(src, spec)
        except PruneKitError as exc:
            entry = {"status": "failed", "error": f"{exc.code}: {exc}"}
            out["uploads"][upload] = entry
            print(upload, entry, flush=True)
            continue
        entry["prune_wall_s"] = round(time.perf_counter() - t0, 2)
        rep = res.report
        pm = res.model
        hid = gru_sizes(pm)
        with torch.no_grad():
            same_shape = tuple(pm(x).shape) == tuple(model(x).shape)
        aten_gru = [n for n in pm.graph.nodes if n.op == "call_function" and "gru" in str(n.target)] if hasattr(pm, "graph") else []
        entry.update({
            "status": "ok", "timings_s": rep.timings, "check": rep.check,
            "params_before": rep.params_before, "params_after": rep.params_after,
            "macs_before_report": rep.macs_before, "macs_after_report": rep.macs_after,
            "gru_hidden_after": hid,
            "macs_analytic_after": gru_macs(hid, _embed_dim(pm), BATCH, SEQ, VOCAB) if hid else None,
            "native_gru_ops_in_graph": [str(n.target) for n in aten_gru],
            "output_shape_same": same_shape,
            "barriers": sorted({b["op"] for b in rep.barriers}),
            "layers_changed": [f"{lc.name}: {lc.shape_before}->{lc.shape_after}" for lc in rep.layers],
        })
        # the unpruned model through the same capture, for a like-for-like baseline
        try:
            from prunekit.io.inputs import from_specs
            from prunekit.io.loading import LoadedModel, load_model
            from prunekit.capture import capture

            loaded = load_model(ts_path) if upload == "torchscript" else LoadedModel(
                "state_dict", 0, module=model, param_names={n for n, _ in model.named_parameters()})
            cap = capture(loaded, from_specs(spec["inputs"]))
            entry["captured_unpruned_latency"] = latency(cap.gm, x, a.repeats)
        except Exception as exc:  # the baseline is a nicety
            entry["captured_unpruned_latency"] = {"error": str(exc)[:200]}
        entry["pruned_latency"] = latency(pm, x, a.repeats)
        base = out["original"]["latency"]["median_ms"]
        entry["speedup_vs_original"] = round(base / entry["pruned_latency"]["median_ms"], 3)
        cu = entry["captured_unpruned_latency"].get("median_ms")
        if cu:
            entry["speedup_vs_captured_unpruned"] = round(cu / entry["pruned_latency"]["median_ms"], 3)
        out["uploads"][upload] = entry
        print(upload, {k: entry[k] for k in ("params_after", "gru_hidden_after", "pruned_latency", "speedup_vs_original")}, flush=True)
    for p in tmp.iterdir():
        p.unlink()
    tmp.rmdir()
    RESULTS.mkdir(parents=True, exist_ok=True)
    out["loadavg_at_end_1_5_15"] = [round(x, 2) for x in __import__("os").getloadavg()]
    (RESULTS / "recurrent.json").write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))


def _embed_dim(pm) -> int:
    for n, p in pm.named_parameters():
        if n.endswith("embed.weight"):
            return p.shape[1]
    return DIM


if __name__ == "__main__":
    main()
