"""Limits per job: archives that inflate, example inputs that are too large, and memory.

A 2 MB archive with a member inflating to 2 GiB was read whole, and spec inputs of
``[1, 3, 20000, 20000]`` drove one job to 19.5 GB on a 24 GB machine.  Each limit fails the
work with a message that names its setting; the memory limit is shown on a real embedded
service whose job would need more than its limit, and which keeps serving afterwards.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import httpx
import pytest
import torch

import prunekit
from prunekit.errors import InvalidSpec, LimitExceeded
from prunekit.io.loading import load_model

from crafted import SPEC, honest_ts


def test_a_member_that_inflates_a_thousandfold_is_refused_unread(tmp_path: Path) -> None:
    archive = honest_ts(tmp_path / "small.pt")
    with zipfile.ZipFile(archive, "a", compression=zipfile.ZIP_DEFLATED) as zf:
        with zf.open("small/extra/bomb", "w", force_zip64=True) as f:
            block = bytes(1 << 20)
            for _ in range(256):  # 256 MiB of zeros, about 256 KiB compressed
                f.write(block)
    assert archive.stat().st_size < 2 << 20
    with pytest.raises(LimitExceeded) as err:
        load_model(archive)
    assert "PRUNEKIT_MAX_ARCHIVE_RATIO" in str(err.value) and "small/extra/bomb" in str(err.value)


def test_the_total_unpacked_size_has_a_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    weights = tmp_path / "weights.pt"
    torch.save({"w": torch.zeros(1 << 20)}, weights)  # a zip of 4 MiB
    monkeypatch.setenv("PRUNEKIT_MAX_UNPACKED_BYTES", "1MiB")
    with pytest.raises(LimitExceeded) as err:
        load_model(weights, architecture="zoo:resnet_mini")
    assert "PRUNEKIT_MAX_UNPACKED_BYTES" in str(err.value) and f"{1 << 20:,}" in str(err.value)


def test_the_member_count_has_a_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = honest_ts(tmp_path / "small.pt")
    monkeypatch.setenv("PRUNEKIT_MAX_ARCHIVE_MEMBERS", "5")
    with pytest.raises(LimitExceeded) as err:
        load_model(archive)
    assert "PRUNEKIT_MAX_ARCHIVE_MEMBERS" in str(err.value)


def test_huge_example_inputs_are_refused_naming_the_field_and_limit(tmp_path: Path) -> None:
    archive = honest_ts(tmp_path / "small.pt")
    with pytest.raises(InvalidSpec) as err:
        prunekit.prune(archive, {"ratio": 0.5, "inputs": [{"shape": [1, 3, 20000, 20000]}]})
    assert "inputs" in str(err.value) and "PRUNEKIT_MAX_INPUT_ELEMENTS" in str(err.value)
    assert "1,200,000,000" in str(err.value)


def test_an_inputs_file_past_the_limit_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from safetensors.torch import save_file

    archive = honest_ts(tmp_path / "small.pt")
    inputs = tmp_path / "inputs.safetensors"
    save_file({"x": torch.randn(2, 3, 16, 16)}, str(inputs))
    monkeypatch.setenv("PRUNEKIT_MAX_INPUT_ELEMENTS", "1000")
    with pytest.raises(LimitExceeded) as err:
        prunekit.prune(archive, {"ratio": 0.5}, inputs=inputs)
    assert "1,536" in str(err.value) and "PRUNEKIT_MAX_INPUT_ELEMENTS" in str(err.value)


class Outer(torch.nn.Module):
    """Tiny weights, enormous activations: an outer product of a 20,000-wide layer (1.6 GB a
    sample), so a batch of 2 needs 3.2 GB at once."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(16, 20000)
        self.head = torch.nn.Linear(20000, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fc(x)
        return self.head((y.unsqueeze(-1) * y.unsqueeze(-2)).mean(-1))


def test_a_job_past_its_memory_limit_fails_and_the_service_keeps_serving(tmp_path: Path) -> None:
    from svc_helpers import base_env, start_api

    from prunekit.client import Client

    model = tmp_path / "outer.pt"
    torch.jit.script(Outer().eval()).save(str(model))
    small = honest_ts(tmp_path / "small.pt")
    env = base_env(PRUNEKIT_DATA_DIR=str(tmp_path / "data"), PRUNEKIT_JOB_MEMORY_LIMIT="2GiB",
                   PRUNEKIT_HEARTBEAT_INTERVAL="1")
    api, url = start_api(env, tmp_path / "api.log")
    try:
        with Client(url) as client:
            job = client.submit(model, {"ratio": 0.5, "inputs": [{"shape": [2, 16]}]})
            done = client.wait(job["id"], timeout=300)
            assert done["status"] == "failed", done
            assert done["error"]["code"] == "memory_limit", done["error"]
            assert "PRUNEKIT_JOB_MEMORY_LIMIT" in done["error"]["message"] and "2.00 GiB" in done["error"]["message"]
            assert httpx.get(url + "/healthz").status_code == 200
            ok = client.wait(client.submit(small, SPEC)["id"], timeout=300)
            assert ok["status"] == "succeeded", ok
    finally:
        api.stop()


@pytest.mark.parametrize("field, spec", [
    ("seed", {**SPEC, "seed": 10**30}),
    ("inputs.0.low", {**SPEC, "inputs": [{"shape": [2, 3, 16, 16], "dtype": "int64", "low": -10**30}]}),
    ("inputs.0.high", {**SPEC, "inputs": [{"shape": [2, 3, 16, 16], "dtype": "int64", "high": 10**30}]}),
])
def test_integers_past_int64_are_refused_naming_the_field(field: str, spec: dict, tmp_path: Path) -> None:
    """torch seeds and draws in int64: a larger number overflowed inside torch (an unexpected
    ValueError, an internal_error for the service) instead of a spec error naming the field."""
    with pytest.raises(InvalidSpec) as err:
        prunekit.prune(honest_ts(tmp_path / "small.pt"), spec)
    assert field in str(err.value)
