"""Every reference architecture, uploaded every way, pruned at 0.3 and 0.5.

For each: the masked-vs-pruned check passes, the written artifact loads with the standard loader
of its format and runs at batch 1 and 7, and the reported parameter count is the loaded model's.
"""

from __future__ import annotations

import pytest
import torch

import prunekit
from prunekit.errors import CaptureFailed
from prunekit.registry import build, get_architecture, list_architectures

from helpers import example, load_output, save_model

ZOO = [n for n in list_architectures() if n.startswith("zoo:")]
UPLOADS = ["state_dict", "traced", "scripted", "export"]
OUT_FORMAT = {"state_dict": "state_dict", "traced": "torchscript", "scripted": "torchscript", "export": "export"}
# Uploads the converter cannot take (none since scripted control flow is specialised).
CONVERTER_LIMITS: set = set()


def _cases():
    for name in ZOO:
        for upload in UPLOADS:
            if upload == "scripted" and not get_architecture(name).scriptable:
                continue
            for ratio in (0.3, 0.5):
                yield name, upload, ratio


@pytest.mark.parametrize("name,upload,ratio", list(_cases()))
def test_prune_zoo(name, upload, ratio, tmp_path):
    arch = get_architecture(name)
    torch.manual_seed(0)
    model = build(name)
    path = save_model(model, upload, arch.example_inputs, tmp_path / f"model.{upload}")
    spec = {"ratio": ratio, "inputs": arch.example_inputs}
    if upload == "state_dict":
        spec["architecture"] = name
    if (name, upload) in CONVERTER_LIMITS:
        with pytest.raises(CaptureFailed, match="TorchScript"):
            prunekit.prune_to_dir(path, spec, tmp_path / "out")
        return
    result = prunekit.prune_to_dir(path, spec, tmp_path / "out")
    rep = result.report
    assert rep.check["passed"] and rep.check["max_rel"] <= 1e-4
    assert rep.channels_removed > 0 and rep.params_after < rep.params_before
    assert rep.output_format == OUT_FORMAT[upload]
    assert not rep.barriers, rep.barriers
    files = {p.name: p for p in result.artifacts.values()}
    assert "report.json" in files
    model_file = files[prunekit.api.ARTIFACT_NAMES[rep.output_format]]
    loaded = load_output(model_file, rep.output_format, name, files.get("manifest.json"))
    counted = sum(p.numel() for p in loaded.parameters())
    assert counted == rep.params_after
    with torch.no_grad():
        ref_out = model(*example(arch.example_inputs, 1))
        for batch in (1, 7):
            y = loaded(*example(arch.example_inputs, batch, seed=batch))
            y = y[0] if isinstance(y, (tuple, list)) else y
            assert y.shape[0] == batch and torch.isfinite(y).all()
            assert y.shape[1:] == ref_out.shape[1:]  # the model's outputs keep their width
