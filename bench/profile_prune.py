"""Profile one PruneKit prune with pyinstrument (where the time goes, next to Torch-Pruning's total).

    .venv/bin/python -m bench.profile_prune shufflenet_v2_x1_0 --upload torchscript
    .venv/bin/python -m bench.profile_prune resnet50 --upload state_dict

Writes ``bench/results/profile_<model>_<upload>.txt`` (pyinstrument's text tree, 1 torch thread).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def main() -> None:
    from pyinstrument import Profiler

    import prunekit
    from bench.zoo import build, image_size
    from prunekit.registry import register

    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--upload", choices=("torchscript", "state_dict"), default="torchscript")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    s = image_size(a.model)
    model = build(a.model)
    spec = {"inputs": [{"shape": [1, 3, s, s], "dtype": "float32"}], "ratio": 0.5, "importance": "l2"}
    tmp = Path(tempfile.mkdtemp())
    if a.upload == "torchscript":
        path = tmp / "m.pt"
        with torch.no_grad():
            torch.jit.save(torch.jit.trace(model, torch.randn(2, 3, s, s), check_trace=False, strict=False), str(path))
    else:
        register(f"tv:{a.model}", example_inputs=spec["inputs"])(lambda: build(a.model))
        spec["architecture"] = f"tv:{a.model}"
        path = tmp / "sd.pt"
        torch.save(model.state_dict(), path)

    import torch_pruning as tp

    m2 = build(a.model)
    t0 = time.perf_counter()
    try:
        tp.pruner.MetaPruner(m2, torch.randn(1, 3, s, s), importance=tp.importance.MagnitudeImportance(p=2), pruning_ratio=0.5,
                             ignored_layers=[m for m in m2.modules() if isinstance(m, torch.nn.Linear) and m.out_features == 1000]).step()
        tp_s = f"{time.perf_counter() - t0:.2f} s"
    except Exception as exc:
        tp_s = f"failed ({type(exc).__name__}: {exc})"

    prof = Profiler(interval=0.002)
    t0 = time.perf_counter()
    prof.start()
    res = prunekit.prune(path, spec)
    prof.stop()
    pk_s = time.perf_counter() - t0
    head = (f"# {a.model}, {a.upload} upload, ratio 0.5, {a.threads} thread(s)\n"
            f"# PruneKit prune(): {pk_s:.2f} s  stages: {res.report.timings}\n"
            f"# Torch-Pruning MetaPruner+step: {tp_s}\n\n")
    text = prof.output_text(unicode=False, color=False, show_all=False)
    flat = prof.output_text(unicode=False, color=False, flat=True)
    text = text + "\n\n# Flat: self time per function\n" + "\n".join(flat.splitlines()[:50])
    out = HERE / "results" / f"profile_{a.model}_{a.upload}.txt"
    out.write_text(head + text)
    print(head + text[:6000])
    for p in tmp.iterdir():
        p.unlink()
    tmp.rmdir()


if __name__ == "__main__":
    main()
