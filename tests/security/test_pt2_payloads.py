"""A ``.pt2``'s stored payloads: pickles that ask for code, and tensors declared past their bytes.

torch.export.load unpickles weights and constants marked ``use_pickle`` and the sample inputs
with ``weights_only=False`` (the latter after a weights-only attempt fails), and an ``opaque_obj_``
constant with plain ``pickle.loads``.  It also builds each stored tensor from its config line
alone: an empty record becomes ``torch.zeros`` of the declared size, a zero stride views a few
bytes as a tensor of any size.  Each attack has a control showing torch alone runs it, and a
test that PruneKit refuses it before torch opens the file (or, for pickles, forces weights-only).
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest
import torch

from prunekit.errors import LimitExceeded, UnsafeModelFile
from prunekit.io.loading import load_model

from crafted import honest_pt2, rewrite_zip


class RunsACommand:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def honest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return honest_pt2(tmp_path_factory.mktemp("honest") / "model.pt2")


def _pickled(marker: Path) -> bytes:
    buf = io.BytesIO()
    torch.save(RunsACommand(marker), buf)
    return buf.getvalue()


def _with_constant(honest: Path, dst: Path, record: str, data: bytes, use_pickle: bool = True) -> Path:
    """The archive with one more constant stored as ``record`` (added to the constants config)."""
    import zipfile

    with zipfile.ZipFile(honest) as zin, zipfile.ZipFile(dst, "w") as zout:
        root = zin.namelist()[0].split("/", 1)[0]
        for info in zin.infolist():
            body = zin.read(info.filename)
            if info.filename.endswith("model_constants_config.json"):
                doc = json.loads(body)
                doc["config"]["evil"] = {"path_name": record, "is_param": False, "use_pickle": use_pickle,
                                         "tensor_meta": None}
                body = json.dumps(doc).encode()
            zout.writestr(info, body)
        zout.writestr(f"{root}/data/constants/{record}", data)
    return dst


def pickle_attacks(honest: Path, tmp: Path, marker: Path) -> dict[str, Path]:
    payload = _pickled(marker)

    def weight(name: str, data: bytes) -> bytes:
        if name.endswith("weights/weight_4"):
            return payload
        if name.endswith("model_weights_config.json"):
            doc = json.loads(data)
            doc["config"]["fc.weight"]["use_pickle"] = True
            return json.dumps(doc).encode()
        return data

    def sample_inputs(name: str, data: bytes) -> bytes:
        return payload if name.endswith("sample_inputs/model.pt") else data

    return {
        "weight": rewrite_zip(honest, tmp / "weight.pt2", weight),
        "sample_inputs": rewrite_zip(honest, tmp / "sample.pt2", sample_inputs),
        "tensor_constant": _with_constant(honest, tmp / "tconst.pt2", "tensor_c0", payload),
        "opaque_constant": _with_constant(honest, tmp / "opaque.pt2", "opaque_obj_0",
                                          __import__("pickle").dumps(RunsACommand(marker))),
    }


@pytest.mark.parametrize("where", ["weight", "sample_inputs", "tensor_constant", "opaque_constant"])
def test_control_torch_alone_runs_a_pickle_stored_in_a_pt2(where: str, honest: Path, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    path = pickle_attacks(honest, tmp_path, marker)[where]
    try:
        torch.export.load(str(path))
    except Exception:
        pass  # what torch does after running the payload does not matter
    assert marker.exists(), f"torch alone did not run the {where} pickle: the attack is not real"


@pytest.mark.parametrize("where", ["weight", "sample_inputs", "tensor_constant", "opaque_constant"])
def test_a_pickle_stored_in_a_pt2_is_never_run(where: str, honest: Path, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    path = pickle_attacks(honest, tmp_path, marker)[where]
    with pytest.raises(UnsafeModelFile) as err:
        load_model(path)
    assert "pickle" in str(err.value)
    assert not marker.exists()


def test_a_custom_object_constant_is_refused_unpickled(honest: Path, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    path = _with_constant(honest, tmp_path / "custom.pt2", "custom_obj_0", _pickled(marker))
    with pytest.raises(UnsafeModelFile, match="pickle"):
        load_model(path)
    assert not marker.exists()


# -- tensors declared past their bytes ----------------------------------------------------------


def declared(honest: Path, dst: Path, sizes: list[int], strides: list[int], empty: bool = False) -> Path:
    """``fc.weight`` (a 128-byte record) declared with other sizes and strides."""
    def edit(name: str, data: bytes) -> bytes:
        if name.endswith("weights/weight_4") and empty:
            return b""
        if name.endswith("model_weights_config.json"):
            doc = json.loads(data)
            meta = doc["config"]["fc.weight"]["tensor_meta"]
            meta["sizes"] = [{"as_int": s} for s in sizes]
            meta["strides"] = [{"as_int": s} for s in strides]
            return json.dumps(doc).encode()
        return data

    return rewrite_zip(honest, dst, edit)


def test_control_torch_alone_zero_fills_the_declared_size_of_an_empty_record(honest: Path, tmp_path: Path) -> None:
    path = declared(honest, tmp_path / "empty.pt2", [1_000_000, 8], [8, 1], empty=True)
    weight = torch.export.load(str(path)).state_dict["fc.weight"]
    assert weight.shape == (1_000_000, 8) and weight.untyped_storage().nbytes() == 32_000_000  # allocated


def test_control_torch_alone_views_a_record_at_any_size_with_zero_strides(honest: Path, tmp_path: Path) -> None:
    path = declared(honest, tmp_path / "stride0.pt2", [10**12, 8], [0, 1])
    assert torch.export.load(str(path)).state_dict["fc.weight"].shape == (10**12, 8)


@pytest.mark.parametrize("sizes, strides, empty", [
    ([10**12, 8], [8, 1], True),   # 32 TB of zeros
    ([1_000_000, 8], [8, 1], True),  # 32 MB of zeros from a 24 kB file
    ([10**12, 8], [0, 1], False),  # 8e12 elements over 128 bytes
])
def test_tensors_declared_past_what_the_archive_holds_are_refused_unread(
        sizes: list[int], strides: list[int], empty: bool, honest: Path, tmp_path: Path) -> None:
    path = declared(honest, tmp_path / "big.pt2", sizes, strides, empty)
    with pytest.raises(LimitExceeded) as err:
        load_model(path)
    assert "fc.weight" in str(err.value) and "PRUNEKIT_MAX_ARCHIVE_RATIO" in str(err.value)


@pytest.mark.parametrize("sizes, strides, why", [
    ([100, 8], [8, 1], "reaches past its 128-byte record"),
    ([4, 8], [8, -1], "not a non-negative integer"),
    ([1] * 65, [1] * 65, "at most 64"),
])
def test_views_that_do_not_fit_their_record_are_refused(sizes: list[int], strides: list[int], why: str,
                                                         honest: Path, tmp_path: Path) -> None:
    path = declared(honest, tmp_path / "bad.pt2", sizes, strides)
    with pytest.raises(UnsafeModelFile, match=why):
        load_model(path)


def test_a_config_naming_a_record_outside_its_folder_is_refused(honest: Path, tmp_path: Path) -> None:
    def edit(name: str, data: bytes) -> bytes:
        if name.endswith("model_weights_config.json"):
            doc = json.loads(data)
            doc["config"]["fc.weight"]["path_name"] = "../../models/model.json"
            return json.dumps(doc).encode()
        return data

    with pytest.raises(UnsafeModelFile, match="not a record of the archive"):
        load_model(rewrite_zip(honest, tmp_path / "path.pt2", edit))


def test_a_value_of_huge_rank_is_refused_unread(honest: Path, tmp_path: Path) -> None:
    from crafted import edit_model_json

    def edit(doc: dict) -> None:  # torch took 20 s to deserialize this
        x = doc["graph_module"]["graph"]["tensor_values"]["x"]
        x["sizes"] += [{"as_int": 1}] * 100_000
        x["strides"] += [{"as_int": 1}] * 100_000

    with pytest.raises(UnsafeModelFile, match="more than the 64 dimensions"):
        load_model(edit_model_json(honest, tmp_path / "rank.pt2", edit))


def test_an_error_torch_only_logs_is_the_reason_given(honest: Path, tmp_path: Path,
                                                      capfd: pytest.CaptureFixture[str]) -> None:
    """torch.export.load logs what stopped it and raises "check the warnings above"."""
    from crafted import edit_model_json
    from prunekit.errors import InvalidModelFile

    def edit(doc: dict) -> None:
        tv = doc["graph_module"]["graph"]["tensor_values"]
        name = next(k for k in tv if "conv" in k)
        tv[name]["sizes"] = [tv[name]["sizes"][0]] + [{"as_int": 10**9}, {"as_int": 10**6}, {"as_int": 10**6}]

    with pytest.raises(InvalidModelFile, match="integer multiplication overflow"):
        load_model(edit_model_json(honest, tmp_path / "overflow.pt2", edit))
    assert "Traceback" not in capfd.readouterr().err
