"""Checkpoint archives (zip, tar, tar.gz) as an attacker writes them: names that leave the
folder, links, devices, bombs, too many members, lying headers.  Each is refused before anything
is written outside the folder the unpacker made, with an error that says what was wrong."""

from __future__ import annotations

import io
import json
import stat
import tarfile
import time
import zipfile
from pathlib import Path

import pytest

import prunekit
from prunekit.errors import InvalidModelFile, LimitExceeded, UnsafeModelFile
from prunekit.io.checkpoint import peek_config
from prunekit.io.safety.archives import unpack_checkpoint
from prunekit.limits import Limits

CONFIG = json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}).encode()
WEIGHTS = b"\x08\x00\x00\x00\x00\x00\x00\x00{}      "  # an empty safetensors file


def _zip(path: Path, members: list[tuple[str, bytes]], *, symlink: str | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members:
            zf.writestr(name, data)
        if symlink is not None:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, "/etc/passwd")
    return path


def _tar(path: Path, members: list[tarfile.TarInfo | tuple[str, bytes]], mode: str = "w") -> Path:
    with tarfile.open(path, mode) as tf:
        for m in members:
            if isinstance(m, tarfile.TarInfo):
                tf.addfile(m)
            else:
                info = tarfile.TarInfo(m[0])
                info.size = len(m[1])
                tf.addfile(info, io.BytesIO(m[1]))
    return path


def _special(name: str, kind: bytes, target: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


def _unpack(tmp_path: Path, archive: Path, limits: Limits | None = None) -> Path:
    return unpack_checkpoint(archive, tmp_path / "unpacked" / "ckpt", limits or Limits())


def _nothing_escaped(tmp_path: Path) -> None:
    assert not any(p.name.startswith("evil") for p in tmp_path.rglob("*") if "unpacked" not in p.parts)
    assert not Path("/tmp/evil.safetensors").exists()


@pytest.mark.parametrize("name", ["../evil.safetensors", "ckpt/../../evil.safetensors", "/tmp/evil.safetensors",
                                  "..\\evil.safetensors", "C:/evil.safetensors"])
def test_names_that_leave_the_folder_are_refused(tmp_path, name):
    archive = _zip(tmp_path / "slip.zip", [("config.json", CONFIG), ("model.safetensors", WEIGHTS), (name, WEIGHTS)])
    with pytest.raises(UnsafeModelFile, match="(outside|absolute|unusable)"):
        _unpack(tmp_path, archive)
    tar = _tar(tmp_path / "slip.tar", [("config.json", CONFIG), ("model.safetensors", WEIGHTS), (name, WEIGHTS)])
    with pytest.raises(UnsafeModelFile):
        _unpack(tmp_path, tar)
    _nothing_escaped(tmp_path)


def test_a_zip_symlink_is_refused(tmp_path):
    archive = _zip(tmp_path / "link.zip", [("config.json", CONFIG)], symlink="model.safetensors")
    with pytest.raises(UnsafeModelFile, match="not a regular file"):
        _unpack(tmp_path, archive)


@pytest.mark.parametrize("member", [
    _special("model.safetensors", tarfile.SYMTYPE, "/etc/passwd"),
    _special("model.safetensors", tarfile.LNKTYPE, "config.json"),
    _special("model.safetensors", tarfile.CHRTYPE),
    _special("model.safetensors", tarfile.FIFOTYPE),
    _special("docs/readme", tarfile.SYMTYPE, "../../../etc"),  # even where no checkpoint file is
])
def test_tar_links_devices_and_fifos_are_refused(tmp_path, member):
    archive = _tar(tmp_path / "special.tar", [("config.json", CONFIG), member])
    with pytest.raises(UnsafeModelFile, match="not a regular file"):
        _unpack(tmp_path, archive)
    _nothing_escaped(tmp_path)


def test_a_compressed_tar_bomb_is_refused_before_it_inflates(tmp_path):
    archive = tmp_path / "bomb.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.addfile(tarfile.TarInfo("config.json"), io.BytesIO(b""))
        info = tarfile.TarInfo("model.safetensors")
        info.size = 1 << 30  # 1 GiB of zeros: about 1 MiB compressed

        class Zeros(io.RawIOBase):
            left = info.size

            def readable(self):
                return True

            def readinto(self, b):  # type: ignore[override]
                n = min(len(b), self.left)
                b[:n] = bytes(n)
                self.left -= n
                return n

        tf.addfile(info, io.BufferedReader(Zeros(), 1 << 20))
    assert archive.stat().st_size < 4 << 20
    t0 = time.perf_counter()
    with pytest.raises(LimitExceeded, match="PRUNEKIT_MAX_ARCHIVE_RATIO"):
        _unpack(tmp_path, archive)
    assert time.perf_counter() - t0 < 10  # refused from its header, not after inflating a gigabyte
    assert not any((tmp_path / "unpacked").rglob("*.safetensors"))


def test_member_count_and_total_size_are_limited(tmp_path):
    many = [("config.json", CONFIG)] + [(f"junk/{i}", b"x") for i in range(50)]
    for archive in (_zip(tmp_path / "many.zip", many), _tar(tmp_path / "many.tar", many)):
        with pytest.raises(LimitExceeded, match="PRUNEKIT_MAX_ARCHIVE_MEMBERS"):
            _unpack(tmp_path / archive.suffix[1:], archive, Limits(max_archive_members=20))
    big = [("config.json", CONFIG), ("model.safetensors", bytes(3 << 20))]
    with pytest.raises(LimitExceeded, match="PRUNEKIT_MAX_UNPACKED_BYTES"):
        _unpack(tmp_path, _tar(tmp_path / "big.tar", big), Limits(max_unpacked_bytes=2 << 20))


def test_a_tar_header_that_claims_more_than_the_archive_holds(tmp_path):
    archive = _tar(tmp_path / "ok.tar", [("config.json", CONFIG), ("model.safetensors", bytes(4096))])
    raw = bytearray(archive.read_bytes())
    cut = tmp_path / "cut.tar"
    cut.write_bytes(bytes(raw[: 512 * 3 + 1000]))  # the weights member ends early
    with pytest.raises(InvalidModelFile, match="(truncated|damaged)"):
        _unpack(tmp_path, cut)


def test_duplicates_and_two_checkpoints_are_refused(tmp_path):
    dup = tmp_path / "dup.zip"
    with zipfile.ZipFile(dup, "w") as zf:
        zf.writestr("config.json", CONFIG)
        zf.writestr("model.safetensors", WEIGHTS)
        with pytest.warns(UserWarning):
            zf.writestr("model.safetensors", b"second copy")
    with pytest.raises(UnsafeModelFile, match="twice"):
        _unpack(tmp_path, dup)
    two = _zip(tmp_path / "two.zip", [("a/config.json", CONFIG), ("a/model.safetensors", WEIGHTS),
                                      ("b/config.json", CONFIG), ("b/model.safetensors", WEIGHTS)])
    with pytest.raises(InvalidModelFile, match="2 checkpoints"):
        _unpack(tmp_path, two)


def test_only_the_checkpoint_files_of_its_folder_are_written(tmp_path):
    archive = _tar(tmp_path / "repo.tar.gz", [("repo/config.json", CONFIG), ("repo/model.safetensors", WEIGHTS),
                                              ("repo/tokenizer.json", b"{}"), ("repo/onnx/model.safetensors", WEIGHTS),
                                              ("repo/run.py", b"import os")], mode="w:gz")
    out = _unpack(tmp_path, archive)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]


def test_the_service_reads_a_zips_config_without_unpacking(tmp_path):
    archive = _zip(tmp_path / "ok.zip", [("m/config.json", CONFIG), ("m/model.safetensors", WEIGHTS)])
    assert peek_config(archive, "zip", Limits()) == json.loads(CONFIG)
    slip = _zip(tmp_path / "slip.zip", [("config.json", CONFIG), ("../evil.safetensors", WEIGHTS)])
    with pytest.raises(UnsafeModelFile):
        peek_config(slip, "zip", Limits())
    assert peek_config(_tar(tmp_path / "t.tar", [("config.json", CONFIG)]), "tar", Limits()) is None


def test_a_hostile_archive_fails_the_prune_with_its_reason(tmp_path):
    archive = _zip(tmp_path / "slip.zip", [("config.json", CONFIG), ("model.safetensors", WEIGHTS),
                                           ("../../evil.safetensors", WEIGHTS)])
    with pytest.raises(UnsafeModelFile, match="outside"):
        prunekit.prune(archive, {"ratio": 0.5})
    _nothing_escaped(tmp_path)
