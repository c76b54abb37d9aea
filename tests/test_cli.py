"""The ``prunekit`` command, run as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys

import torch

from prunekit.registry import build

from helpers import save_model

INPUTS = [{"shape": [1, 3, 32, 32]}]


def _prunekit(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "prunekit.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_help_explains_the_commands():
    out = _prunekit("--help")
    assert out.returncode == 0
    for word in ("prune", "architectures", "serve", "submit", "download"):
        assert word in out.stdout
    sub = _prunekit("prune", "--help")
    assert "--spec" in sub.stdout and "output_format" in sub.stdout


def test_prune_writes_model_report_and_summary(tmp_path):
    model = build("zoo:resnet_mini")
    src = save_model(model, "traced", INPUTS, tmp_path / "resnet.pt")
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"ratio": 0.5, "inputs": INPUTS}))
    out = _prunekit("prune", str(src), "--spec", str(spec), "-o", str(tmp_path / "small.pt"))
    assert out.returncode == 0, out.stderr
    assert "parameters" in out.stderr and "check max relative deviation" in out.stderr
    report = json.loads((tmp_path / "small.report.json").read_text())
    pruned = torch.jit.load(str(tmp_path / "small.pt"))
    assert sum(p.numel() for p in pruned.parameters()) == report["params_after"] < report["params_before"]
    assert pruned(torch.randn(3, 3, 32, 32)).shape == (3, 10)


def test_state_dict_with_arch_flag(tmp_path):
    src = save_model(build("zoo:mlp"), "state_dict", [{"shape": [1, 700]}], tmp_path / "w.pt")
    out = _prunekit("prune", str(src), "--arch", "zoo:mlp", "--ratio", "0.5", "-q", "-o", str(tmp_path / "w_small.pt"))
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "w_small.manifest.json").exists()


def test_errors_are_one_line_with_a_code(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a model at all")
    out = _prunekit("prune", str(bad), "--ratio", "0.5", "--input-shape", "1,3,8,8", "-o", str(tmp_path / "x.pt"))
    assert out.returncode == 1
    assert "invalid_model_file" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "x.pt").exists()


def test_prune_with_calibration_prints_the_evaluation_and_sweep(tmp_path):
    import torch
    import torch.nn as nn
    from safetensors.torch import save_file

    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.Linear(32, 3)).eval()
    torch.jit.save(torch.jit.script(m), str(tmp_path / "m.pt"))
    x = torch.rand(64, 4)
    save_file({"inputs": x, "targets": m(x).argmax(1)}, str(tmp_path / "cal.safetensors"))
    r = _prunekit("prune", "m.pt", "--importance", "taylor", "--ratio", "0.25", "--calibration", "cal.safetensors",
                  "-o", "out.pt", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "held-out accuracy" in r.stderr and "held-out loss" in r.stderr
    r = _prunekit("prune", "m.pt", "--method", "unstructured", "--spec", '{"sweep": {"sparsity": [0.3, 0.6]}}',
                  "--calibration", "cal.safetensors", "-o", "sparse.pt", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "sweep over sparsity" in r.stderr and "selected" in r.stderr
    assert (tmp_path / "sparse.sweep.png").read_bytes()[:4] == b"\x89PNG"
    r = _prunekit("prune", "m.pt", "--importance", "taylor", "--ratio", "0.25", "-o", "x.pt", cwd=tmp_path)
    assert r.returncode == 1 and "invalid_calibration" in r.stderr and "Traceback" not in r.stderr
