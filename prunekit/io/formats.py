"""Detect what kind of model file some bytes are, from the bytes alone.

File names lie (a ``.pt`` may be TorchScript, a pickled state-dict or an export archive), so the
engine and the service look inside: TorchScript and ``torch.export`` archives are zip files with
distinctive members, ``torch.save`` writes a zip around ``data.pkl`` (or a raw pickle in the legacy
format), and safetensors starts with a little-endian header length followed by JSON.  A
*checkpoint* is a folder of ``config.json`` + safetensors weights (``checkpoint.py``), uploaded
as the folder itself (CLI, Python) or as a zip or tar (optionally gz/bz2/xz) archive of it.
"""

from __future__ import annotations

import io
import json
import struct
import zipfile
from pathlib import Path
from typing import BinaryIO, Literal

from ..errors import InvalidModelFile

ModelFormat = Literal["torchscript", "export", "state_dict", "checkpoint"]
EAGER_FORMATS = ("state_dict", "checkpoint")  # outputs the architecture's own forward runs

_PICKLE_PROTOCOL_MARK = 0x80


def _is_safetensors(head: bytes, total: int) -> bool:
    if len(head) < 10:
        return False
    (n,) = struct.unpack("<Q", head[:8])
    return 2 <= n <= total - 8 and head[8:9] == b"{"


def detect_format(source: "str | Path | bytes | BinaryIO") -> tuple[ModelFormat, str]:
    """Return ``(format, container)`` where container is ``zip``, ``pickle``, ``safetensors``,
    ``tar`` or ``folder`` (the last two: checkpoints only).

    ``source`` may also be a seekable binary file object (the service reads uploads that live in
    an object store through ranged reads: only the head and the zip directory are fetched).
    Raises :class:`InvalidModelFile` with a reason a person can act on.
    """
    data: bytes | None = None
    fileobj: BinaryIO | None = None
    if isinstance(source, (bytes, bytearray)):
        data = bytes(source)
        total = len(data)
        head = data[:512]
    elif hasattr(source, "read") and hasattr(source, "seek"):
        fileobj = source  # type: ignore[assignment]
        total = fileobj.seek(0, io.SEEK_END)
        fileobj.seek(0)
        head = fileobj.read(512)
    else:
        path = Path(source)
        if not path.exists():
            raise InvalidModelFile(f"model file not found: {path}")
        if path.is_dir():
            if (path / "config.json").is_file():
                return "checkpoint", "folder"
            raise InvalidModelFile(f"{path} is a folder without config.json: a checkpoint folder holds config.json "
                                   "and model.safetensors")
        total = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(512)
    if total == 0:
        raise InvalidModelFile("the model file is empty")
    if head[:4] == b"PK\x03\x04":
        try:
            zf = zipfile.ZipFile(io.BytesIO(data) if data is not None else fileobj if fileobj is not None else Path(source))
            names = zf.namelist()
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise InvalidModelFile(f"the model file is a damaged or truncated zip archive ({exc})") from None
        finally:
            try:
                zf.close()  # type: ignore[possibly-undefined]
            except Exception:
                pass
        parts = [n.split("/") for n in names]
        inner = {p[1] for p in parts if len(p) > 1}
        leaf = {p[-1] for p in parts}
        if "models" in inner or "serialized_exported_program.json" in leaf or "archive_format" in leaf:
            return "export", "zip"
        if "code" in inner or "constants.pkl" in leaf:
            return "torchscript", "zip"
        if "data.pkl" in leaf:
            return "state_dict", "zip"
        if "config.json" in leaf:
            return "checkpoint", "zip"
        raise InvalidModelFile(
            "the zip archive is neither TorchScript (torch.jit.save), a torch.export archive "
            "(torch.export.save), a torch.save file nor a checkpoint folder (config.json + model.safetensors)"
        )
    if head[:1] == bytes([_PICKLE_PROTOCOL_MARK]):
        return "state_dict", "pickle"
    if _is_safetensors(head, total):
        return "state_dict", "safetensors"
    if is_tar_head(head):
        return "checkpoint", "tar"
    raise InvalidModelFile(
        "unrecognised model file: expected TorchScript, a torch.export .pt2 archive, a torch.save "
        "state-dict, a .safetensors file or a checkpoint archive (zip or tar of config.json + model.safetensors)"
    )


_COMPRESSED = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00")  # gzip, bzip2, xz: a compressed tar


def is_tar_head(head: bytes) -> bool:
    """A tar archive, plain or compressed, from its first 512 bytes."""
    return (len(head) >= 262 and head[257:262] == b"ustar") or any(head.startswith(m) for m in _COMPRESSED)


def safetensors_header(source: "Path | BinaryIO") -> dict:
    """Read and parse a safetensors header (used to validate before loading): a path, or a
    seekable binary file object read from its start."""
    if hasattr(source, "read") and hasattr(source, "seek"):
        f = source
        f.seek(0)  # type: ignore[union-attr]
        raw = _read_safetensors_header(f)  # type: ignore[arg-type]
    else:
        with open(source, "rb") as f:  # type: ignore[arg-type]
            raw = _read_safetensors_header(f)
    try:
        header = json.loads(raw)
    except (ValueError, RecursionError):  # not JSON, not UTF-8 text, or nested too deeply
        raise InvalidModelFile("safetensors header is not valid JSON") from None
    if not isinstance(header, dict):
        raise InvalidModelFile("safetensors header is not a JSON object")
    return header


def _read_safetensors_header(f: BinaryIO) -> bytes:
    (n,) = struct.unpack("<Q", f.read(8))
    if n > 100_000_000:
        raise InvalidModelFile("safetensors header is implausibly large")
    return f.read(n)
