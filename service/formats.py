"""What kind of model file an upload is, decided from its bytes before a job is queued.

The engine owns the rules (:mod:`prunekit.io.formats`); this module adapts them to what the API
needs: the format name, whether a state-dict is safetensors (for naming the stored file), and a
check that the optional example-inputs upload is a well-formed safetensors file.  Nothing here
unpickles or executes anything: zip archives are inspected through their member list, pickles
by their first byte only (the worker loads them with ``weights_only=True``).

    zip with ``code/`` (TorchScript)                             → ``torchscript``
    zip with ``models/``, ``archive_format`` or
        ``serialized_exported_program*`` (torch.export .pt2)      → ``export``
    other zip with ``data.pkl``, or a raw pickle (0x80 ...)        → ``state_dict``
    safetensors (u64 little-endian header length, then ``{``)    → ``state_dict``
    zip with ``config.json`` (and no torch markers), or a tar
        (plain, gz, bz2, xz): a checkpoint folder                 → ``checkpoint``

Anything else (an empty file, random bytes, a truncated zip) raises ``InvalidModelFile``.
"""

from __future__ import annotations

import io
import struct
from pathlib import Path
from typing import BinaryIO

from prunekit.io import formats as engine_formats
from prunekit.errors import InvalidModelFile

TORCHSCRIPT, EXPORT, STATE_DICT, CHECKPOINT = "torchscript", "export", "state_dict", "checkpoint"
EAGER_FORMATS = engine_formats.EAGER_FORMATS  # outputs run by the architecture's own forward


def detect(source: "Path | BinaryIO") -> tuple[str, str]:
    """``(format, container)``; container is ``zip``, ``pickle``, ``safetensors`` or ``tar``.

    ``source`` is a path or a seekable binary file (an upload read back from the artifact store)."""
    source = Path(source) if isinstance(source, (str, Path)) else source
    fmt, container = engine_formats.detect_format(source)
    if container == "safetensors":
        engine_formats.safetensors_header(source)  # a header that does not parse is not a model
    return fmt, container


def detect_format(path: Path) -> str:
    """Return ``torchscript``, ``export`` or ``state_dict``; raise InvalidModelFile otherwise."""
    return detect(path)[0]


def is_safetensors(source: "Path | BinaryIO") -> bool:
    """True for a file with a parseable safetensors header (the example-inputs upload)."""
    if isinstance(source, (str, Path)):
        with open(source, "rb") as f:
            return is_safetensors(f)
    size = source.seek(0, io.SEEK_END)
    if size < 10:
        return False
    source.seek(0)
    head = source.read(9)
    (n,) = struct.unpack("<Q", head[:8])
    if head[8:9] != b"{" or n > size - 8:
        return False
    try:
        return isinstance(engine_formats.safetensors_header(source), dict)
    except (InvalidModelFile, UnicodeDecodeError, struct.error):
        return False
