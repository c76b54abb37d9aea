"""Calibration data through the real service and a real Celery worker: an unstructured job whose
artifact really has the zeros its report claims, a sweep's plot and table, and the refusals."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from svc_helpers import Stack, wait_job

pytestmark = pytest.mark.timeout(300)


def _mlp_files(tmp_path: Path, *, width: int = 4, n: int = 64) -> tuple[Path, Path]:
    import torch
    import torch.nn as nn
    from safetensors.torch import save_file

    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(width, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 3)).eval()
    model = tmp_path / "mlp.pt"
    torch.jit.save(torch.jit.script(m), str(model))
    x = torch.rand(n, width)
    cal = tmp_path / f"cal{width}.safetensors"
    save_file({"inputs": x, "targets": m(x).argmax(1)}, str(cal))
    return model, cal


def _post(c, model: Path, spec: dict, cal: Path | None):
    import json

    files = {"model": (model.name, model.read_bytes(), "application/octet-stream")}
    if cal is not None:
        files["calibration"] = (cal.name, cal.read_bytes(), "application/octet-stream")
    return c.post("/v1/jobs", files=files, data={"spec": json.dumps(spec)})


def test_unstructured_job_reports_its_sparsity_and_the_artifact_has_the_zeros(stack: Stack, tmp_path: Path) -> None:
    import torch

    model, cal = _mlp_files(tmp_path)
    c = stack.client()
    r = _post(c, model, {"method": "unstructured", "sparsity": 0.5, "importance": "wanda", "batch_size": 16}, cal)
    assert r.status_code == 202, r.text
    assert r.json()["input"]["calibration"]["size"] == cal.stat().st_size
    done, seen = wait_job(c, r.json()["id"])
    assert done["status"] == "succeeded", done
    res = done["result"]
    assert res["sparsity"]["reached"] == pytest.approx(0.5, abs=0.01)
    assert "evaluate" in res["stages"] and res["evaluation"]["pruned"]["accuracy"] is not None
    blob = c.get(f"/v1/jobs/{done['id']}/artifacts/model.pt").content
    pruned = torch.jit.load(io.BytesIO(blob))
    mats = [p for p in pruned.parameters() if p.dim() == 2]
    zeros = sum(int((p == 0).sum()) for p in mats)
    assert zeros / sum(p.numel() for p in mats) == pytest.approx(res["sparsity"]["reached"], abs=1e-6)
    assert all(float((p == 0).float().mean()) == pytest.approx(0.5, abs=0.05) for p in mats)


def test_sweep_job_serves_its_plot_and_table(stack: Stack, tmp_path: Path) -> None:
    model, cal = _mlp_files(tmp_path)
    c = stack.client()
    spec = {"method": "unstructured", "sweep": {"sparsity": [0.2, 0.5, 0.8]}, "batch_size": 16}
    r = _post(c, model, spec, cal)
    assert r.status_code == 202, r.text
    done, seen = wait_job(c, r.json()["id"])
    assert done["status"] == "succeeded", done
    assert any(s["progress"]["stage"] == "sweep" for s in seen if s["status"] == "running") or "sweep" in done["result"]["stages"]
    png = c.get(f"/v1/jobs/{done['id']}/artifacts/sweep.png")
    assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n"
    table = c.get(f"/v1/jobs/{done['id']}/artifacts/sweep.json").json()
    assert [row["value"] for row in table["rows"]] == [0.2, 0.5, 0.8]
    assert done["result"]["sweep"]["selected"] in (0.2, 0.5, 0.8)


def test_wrong_shaped_calibration_fails_the_job_naming_the_field(stack: Stack, tmp_path: Path) -> None:
    model, _ = _mlp_files(tmp_path)
    (tmp_path / "other").mkdir()
    _, wrong = _mlp_files(tmp_path / "other", width=5)
    c = stack.client()
    r = _post(c, model, {"ratio": 0.25, "importance": "taylor", "inputs": [{"shape": [2, 4]}], "batch_size": 16}, wrong)
    assert r.status_code == 202, r.text
    done, _ = wait_job(c, r.json()["id"])
    assert done["status"] == "failed"
    assert done["error"]["code"] == "invalid_calibration"
    assert "calibration.inputs" in done["error"]["message"]


def test_data_spec_without_calibration_is_refused_naming_the_field(stack: Stack, tmp_path: Path) -> None:
    model, _ = _mlp_files(tmp_path)
    c = stack.client()
    r = _post(c, model, {"ratio": 0.25, "importance": "taylor", "inputs": [{"shape": [2, 4]}]}, None)
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["code"] == "invalid_calibration" and err["details"][0]["path"] == "calibration"
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not safetensors at all")
    r = _post(c, model, {"ratio": 0.25, "importance": "taylor", "inputs": [{"shape": [2, 4]}]}, bad)
    assert r.status_code == 422 and r.json()["error"]["details"][0]["path"] == "calibration"


def test_input_channel_job_reports_its_subselections_and_the_artifact_equals_the_zeroed_upload(
        stack: Stack, tmp_path: Path) -> None:
    """Seed 003 through the service: the only reader of a stream drops two input channels, so the
    producer loses them outright; the artifact equals the upload with those columns zeroed."""
    import torch

    model, _ = _mlp_files(tmp_path)
    c = stack.client()
    spec = {"pruned_inputs": [["2.weight", 3], ["2.weight", 7]], "inputs": [{"shape": [1, 4]}]}
    r = _post(c, model, spec, None)
    assert r.status_code == 202, r.text
    done, _ = wait_job(c, r.json()["id"])
    assert done["status"] == "succeeded", done
    info = done["result"]["inputs"]
    assert info["removed_outright"] == [{"param": "0.weight", "channels": [3, 7]}]
    assert info["gathers"] + info["narrows"] == 0
    pruned = torch.jit.load(io.BytesIO(c.get(f"/v1/jobs/{done['id']}/artifacts/model.pt").content))
    original = torch.jit.load(str(model))
    ref = torch.nn.Sequential(torch.nn.Linear(4, 32), torch.nn.ReLU(), torch.nn.Linear(32, 16), torch.nn.ReLU(),
                              torch.nn.Linear(16, 3))
    ref.load_state_dict(original.state_dict())
    with torch.no_grad():
        ref[2].weight[:, [3, 7]] = 0
    x = torch.rand(5, 4)
    assert torch.allclose(pruned(x), ref(x), rtol=1e-5, atol=1e-6)
    assert dict(pruned.named_parameters())["2.weight"].shape == (16, 30)
    assert dict(pruned.named_parameters())["0.weight"].shape == (30, 4)


def test_input_channels_into_a_state_dict_output_are_refused_at_submit(stack: Stack, tmp_path: Path) -> None:
    model, _ = _mlp_files(tmp_path)
    c = stack.client()
    spec = {"pruned_inputs": [["2.weight", 3]], "output_format": "state_dict", "inputs": [{"shape": [1, 4]}]}
    r = _post(c, model, spec, None)
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["code"] == "invalid_spec" and [d["path"] for d in err["details"]] == ["output_format", "channels"]
    assert "constrained" in err["message"]
    r = _post(c, model, dict(spec, constrained=True), None)  # the constrained mode needs no subselection
    assert r.status_code == 202, r.text
