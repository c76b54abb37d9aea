"""A ``.pt2`` archive may hold data only: members that are code are refused before torch opens it.

``torch.export.load`` hands any archive with a ``data/aotinductor/`` folder to AOTInductor's
package loader, which extracts the shared library stored there and loads it into the process.
The library built here writes ``marker`` from its constructor, so loading it would be native
code of the uploader's choosing running in the worker.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import prunekit
from prunekit.errors import UnsafeModelFile
from prunekit.io.loading import load_model

from crafted import SPEC, honest_pt2, rewrite_zip


@pytest.fixture(scope="module")
def honest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return honest_pt2(tmp_path_factory.mktemp("pt2") / "small.pt2")


def _shared_library(tmp_path: Path, marker: Path) -> bytes:
    """A real ELF library whose constructor creates ``marker`` (a stand-in of bytes without a C
    compiler: the refusal is by member name, before any byte of it is read)."""
    if shutil.which("gcc") is None:
        return b"\x7fELF" + b"\0" * 60
    src = tmp_path / "evil.c"
    src.write_text('#include <stdio.h>\n__attribute__((constructor)) static void run(void) '
                   f'{{ FILE *f = fopen("{marker}", "w"); if (f) fclose(f); }}\n')
    lib = tmp_path / "evil.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(lib), str(src)], check=True, timeout=120)
    return lib.read_bytes()


def _with_members(src: Path, dst: Path, extra: dict[str, bytes]) -> Path:
    rewrite_zip(src, dst, lambda _n, data: data)
    root = zipfile.ZipFile(src).namelist()[0].split("/", 1)[0]
    with zipfile.ZipFile(dst, "a") as zf:
        for name, data in extra.items():
            zf.writestr(f"{root}/{name}", data)
    return dst


def test_aotinductor_library_is_refused_unread(honest: Path, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    evil = _with_members(honest, tmp_path / "aoti.pt2", {
        "data/aotinductor/model/model.so": _shared_library(tmp_path, marker),
        "data/aotinductor/model/model_metadata.json": b'{"AOTI_DEVICE_KEY": "cpu"}',
    })
    with pytest.raises(UnsafeModelFile) as err:
        load_model(evil)
    assert "AOTInductor" in str(err.value) and "data/aotinductor/model/model.so" in str(err.value)
    with pytest.raises(UnsafeModelFile) as err2:
        prunekit.prune(evil, SPEC)
    assert err2.value.code == "unsafe_model_file"
    assert not marker.exists()


def test_control_torch_alone_hands_the_archive_to_the_aoti_loader(honest: Path, tmp_path: Path) -> None:
    """Without the layout check, torch.export.load goes straight to AOTInductor's loader."""
    evil = _with_members(honest, tmp_path / "aoti.pt2", {"data/aotinductor/model/model.so": b"\x7fELF"})
    code = f"import torch\ntorch.export.load(open({str(evil)!r}, 'rb'))\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert "_load_aoti" in out.stderr + out.stdout


@pytest.mark.parametrize("member", [
    "data/executorch/model/program.pte",
    "code/evil.py",
    "data/weights/../../evil",
    "models/model.py",
])
def test_members_outside_the_saved_layout_are_refused(member: str, honest: Path, tmp_path: Path) -> None:
    evil = _with_members(honest, tmp_path / "odd.pt2", {member: b"x"})
    with pytest.raises(UnsafeModelFile) as err:
        load_model(evil)
    assert err.value.code == "unsafe_model_file" and "export archive" in str(err.value)


def test_two_roots_are_refused(honest: Path, tmp_path: Path) -> None:
    evil = tmp_path / "roots.pt2"
    rewrite_zip(honest, evil, lambda _n, data: data)
    with zipfile.ZipFile(evil, "a") as zf:
        zf.writestr("other/models/model.json", b"{}")
    with pytest.raises(UnsafeModelFile, match="top-level folders"):
        load_model(evil)


def test_extra_files_and_the_honest_layout_still_load(honest: Path, tmp_path: Path) -> None:
    ok = _with_members(honest, tmp_path / "extra.pt2", {"extra/notes.txt": b"hello"})
    assert load_model(ok).program is not None
