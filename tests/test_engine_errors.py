"""Bad input gets a clear error with a stable code; nothing uploaded is executed."""

from __future__ import annotations

import io
import os
import pickle
import zipfile

import pytest
import torch

import prunekit
from prunekit.errors import (
    CaptureFailed, InvalidModelFile, InvalidSpec, StateDictMismatch, UnknownArchitecture, UnsafeModelFile,
)
from prunekit.io.formats import detect_format
from prunekit.registry import build

from helpers import save_model

INPUTS = [{"shape": [1, 3, 32, 32]}]


class _RunsCode:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_detects_formats_from_bytes_not_names(tmp_path):
    m = build("zoo:resnet_mini")
    for fmt, expected in [("state_dict", "state_dict"), ("traced", "torchscript"), ("export", "export")]:
        p = save_model(m, fmt, INPUTS, tmp_path / "model.bin")  # same misleading name each time
        assert detect_format(p)[0] == expected
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(tmp_path / "w.weights"))
    assert detect_format(tmp_path / "w.weights") == ("state_dict", "safetensors")


@pytest.mark.parametrize(
    "content,match",
    [
        (b"", "empty"),
        (os.urandom(4096), "unrecognised"),
        (b"PK\x03\x04" + os.urandom(200), "damaged or truncated zip"),
    ],
)
def test_malformed_files(tmp_path, content, match):
    p = tmp_path / "model.pt"
    p.write_bytes(content)
    with pytest.raises(InvalidModelFile, match=match):
        prunekit.prune(p, {"ratio": 0.5, "inputs": INPUTS, "architecture": "zoo:resnet_mini"})


def test_truncated_torchscript(tmp_path):
    p = save_model(build("zoo:resnet_mini"), "traced", INPUTS, tmp_path / "m.pt")
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(InvalidModelFile):
        prunekit.prune(p, {"ratio": 0.5, "inputs": INPUTS})


@pytest.mark.parametrize("wrap_in_zip", [False, True])
def test_pickle_that_runs_code_is_refused(tmp_path, wrap_in_zip):
    marker = tmp_path / "pwned"
    p = tmp_path / "evil.pt"
    if wrap_in_zip:
        torch.save({"w": _RunsCode(str(marker))}, p)  # torch.save's zip format around the pickle
    else:
        p.write_bytes(pickle.dumps({"w": _RunsCode(str(marker))}, protocol=2))
    with pytest.raises(UnsafeModelFile, match="weights_only"):
        prunekit.prune(p, {"ratio": 0.5, "inputs": INPUTS, "architecture": "zoo:resnet_mini"})
    assert not marker.exists()


def test_missing_parameter_lists_close_matches():
    spec = {"channels": [{"param": "layer1.1.conv.weight", "channels": [0]}], "inputs": INPUTS}
    with pytest.raises(InvalidSpec, match=r"layer1\.1\.conv1\.weight"):
        prunekit.prune(build("zoo:resnet_mini"), spec)


def test_unknown_architecture_lists_registered(tmp_path):
    p = save_model(build("zoo:resnet_mini"), "state_dict", INPUTS, tmp_path / "sd.pt")
    with pytest.raises(UnknownArchitecture, match="zoo:resnet_mini") as err:
        prunekit.prune(p, {"ratio": 0.5, "inputs": INPUTS, "architecture": "zoo:resnet_mni"})
    assert "Did you mean" in str(err.value)


def test_state_dict_of_another_architecture(tmp_path):
    p = save_model(build("zoo:resnet_mini"), "state_dict", INPUTS, tmp_path / "sd.pt")
    with pytest.raises(StateDictMismatch, match="does not fit"):
        prunekit.prune(p, {"ratio": 0.5, "inputs": INPUTS, "architecture": "zoo:se_net"})


@pytest.mark.parametrize(
    "spec,path",
    [
        ({"ratio": 1.5, "inputs": INPUTS}, "ratio"),
        ({"ratio": 0.5, "inputs": [{"shape": [1, 0, 3]}]}, "inputs.0.shape"),
        ({"ratio": 0.5, "importance": "magic", "inputs": INPUTS}, "importance"),
        ({"ratio": 0.5, "ratios": 0.2, "inputs": INPUTS}, "ratios"),
        ({"inputs": INPUTS}, "prunes nothing"),
        ({"layers": {"fc.weight": 1.0}, "inputs": INPUTS}, "layers"),
    ],
)
def test_invalid_specs_name_the_field(spec, path):
    with pytest.raises(InvalidSpec, match=path.replace(".", r"\.")):
        prunekit.prune(build("zoo:resnet_mini"), spec)


def test_spec_that_would_remove_everything_is_refused():
    spec = {"channels": [{"param": "fc1.weight", "channels": list(range(256))}], "inputs": [{"shape": [1, 128]}]}
    with pytest.raises(InvalidSpec, match="every channel"):
        prunekit.prune(build("zoo:custom_scale_layer"), spec)


def test_model_that_cannot_be_captured():
    class DataDependent(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(8, 8)

        def forward(self, x):
            y = self.fc(x)
            if y.sum() > 0:  # data-dependent Python control flow
                return y * 2
            return y

    with pytest.raises(CaptureFailed, match="could not capture"):
        prunekit.prune(DataDependent(), {"ratio": 0.5, "inputs": [{"shape": [1, 8]}]})


def test_nothing_prunable_is_explained():
    class OnlyOutput(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(8, 4)

        def forward(self, x):
            return self.fc(x)

    with pytest.raises(InvalidSpec, match="nothing to prune"):
        prunekit.prune(OnlyOutput(), {"ratio": 0.5, "inputs": [{"shape": [1, 8]}]})


def test_export_archive_with_a_code_running_pickle_is_refused(tmp_path):
    """torch.export.load would unpickle an archive's sample inputs with weights_only=False after
    a failed safe attempt; PruneKit never lets it."""
    p = save_model(build("zoo:resnet_mini"), "export", INPUTS, tmp_path / "m.pt2")
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt2"
    with zipfile.ZipFile(p) as src, zipfile.ZipFile(evil, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename.endswith("sample_inputs/model.pt"):
                buf = io.BytesIO()
                torch.save({"x": _RunsCode(str(marker))}, buf)
                data = buf.getvalue()
            dst.writestr(item, data)
    with pytest.raises((UnsafeModelFile, InvalidModelFile)):
        prunekit.prune(evil, {"ratio": 0.5, "inputs": INPUTS})
    assert not marker.exists()
