"""Resource limits for untrusted work, with defaults that fit one machine and a setting for each.

A job that is handed hostile or just enormous input must fail with a reason that names the
limit, not exhaust the machine.  The engine enforces the limits it can check before any work
(the size of example inputs, the unpacked size of archives); the worker adds the process's
memory limit (``worker/limits.py``).  Each limit is read from the environment, so the API, the
Celery workers and the embedded job processes agree without passing settings around:

=============================== ============================================ ===============
variable                        what it bounds                               default
=============================== ============================================ ===============
``PRUNEKIT_MAX_INPUT_ELEMENTS`` elements of one example (all inputs, at the  16,777,216
                                batch size the spec gives)
``PRUNEKIT_MAX_UNPACKED_BYTES`` total uncompressed size of an archive        8 GiB
``PRUNEKIT_MAX_ARCHIVE_RATIO``  uncompressed/compressed size of one member   200
``PRUNEKIT_MAX_ARCHIVE_MEMBERS`` members of one archive                      100,000
``PRUNEKIT_MAX_CODE_BYTES``     TorchScript source text in one archive       64 MiB
=============================== ============================================ ===============
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 1000**2, "mb": 1000**2, "mib": 1024**2,
          "g": 1000**3, "gb": 1000**3, "gib": 1024**3, "t": 1000**4, "tb": 1000**4, "tib": 1024**4}


def parse_size(text: "str | int", *, name: str) -> int:
    """``"8GiB"``, ``"512 MB"``, ``"1073741824"`` → bytes.  Raises ``ValueError`` naming ``name``."""
    if isinstance(text, int):
        value = text
    else:
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(text))
        if not m or m.group(2).lower() not in _UNITS:
            raise ValueError(f"{name}: {text!r} is not a size (e.g. 8GiB, 512MiB or a number of bytes)")
        value = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    if value < 0:
        raise ValueError(f"{name}: a size cannot be negative")
    return value


def _env_int(name: str, default: int, *, size: bool = False) -> int:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    if size:
        return parse_size(raw, name=name)
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name}: {raw!r} is not a whole number") from None
    if value < 1:
        raise ValueError(f"{name}: must be at least 1")
    return value


@dataclass(frozen=True)
class Limits:
    max_input_elements: int = 1 << 24
    max_unpacked_bytes: int = 8 << 30
    max_archive_ratio: int = 200
    max_archive_members: int = 100_000
    max_code_bytes: int = 64 << 20

    @classmethod
    def from_env(cls) -> "Limits":
        d = cls()
        return cls(
            max_input_elements=_env_int("PRUNEKIT_MAX_INPUT_ELEMENTS", d.max_input_elements),
            max_unpacked_bytes=_env_int("PRUNEKIT_MAX_UNPACKED_BYTES", d.max_unpacked_bytes, size=True),
            max_archive_ratio=_env_int("PRUNEKIT_MAX_ARCHIVE_RATIO", d.max_archive_ratio),
            max_archive_members=_env_int("PRUNEKIT_MAX_ARCHIVE_MEMBERS", d.max_archive_members),
            max_code_bytes=_env_int("PRUNEKIT_MAX_CODE_BYTES", d.max_code_bytes, size=True),
        )


def current() -> Limits:
    """The limits in force now (read from the environment at each call: cheap, and tests may set it)."""
    return Limits.from_env()
