"""Bound what an uploaded zip archive may unpack to, before anything reads a member.

TorchScript, ``torch.export`` and ``torch.save`` files are zip archives, and every reader of them
(Python's ``zipfile``, torch's C++ reader) trusts the sizes in the archive's directory and
allocates accordingly.  A 2 MB upload whose member inflates to 2 GiB would be read whole.  The
directory is read here, without inflating anything, and the archive is refused when the member
count, the total uncompressed size or one member's compression ratio passes its limit.  Torch
writes members stored (ratio 1); a user who re-zips gets deflate ratios near 1 for weights, so
only bombs meet the ratio limit.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from ...errors import InvalidModelFile, LimitExceeded
from ...limits import Limits

_SMALL = 1 << 20  # members below 1 MiB may compress as well as they like (JSON, code, zeros)
_READABLE = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED}


def check_zip(path: "str | Path", limits: Limits) -> list[zipfile.ZipInfo]:
    """Return the archive's directory once it is within ``limits``; raise otherwise."""
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise InvalidModelFile(f"the model file is a damaged or truncated zip archive ({exc})") from None
    if len(infos) > limits.max_archive_members:
        raise LimitExceeded(
            f"the archive has {len(infos):,} members, more than the limit of {limits.max_archive_members:,} "
            "(PRUNEKIT_MAX_ARCHIVE_MEMBERS)"
        )
    total = 0
    for info in infos:
        if info.flag_bits & 0x1:
            raise InvalidModelFile(f"archive member {info.filename!r} is encrypted")
        if info.compress_type not in _READABLE:
            raise InvalidModelFile(f"archive member {info.filename!r} uses an unsupported compression method")
        total += info.file_size
        if info.file_size > _SMALL and info.file_size > limits.max_archive_ratio * max(info.compress_size, 1):
            ratio = info.file_size / max(info.compress_size, 1)
            raise LimitExceeded(
                f"archive member {info.filename!r} inflates {ratio:,.0f}-fold ({info.compress_size:,} to "
                f"{info.file_size:,} bytes), past the limit of {limits.max_archive_ratio} "
                "(PRUNEKIT_MAX_ARCHIVE_RATIO)"
            )
    if total > limits.max_unpacked_bytes:
        raise LimitExceeded(
            f"the archive unpacks to {total:,} bytes, more than the limit of {limits.max_unpacked_bytes:,} "
            "(PRUNEKIT_MAX_UNPACKED_BYTES)"
        )
    return infos


def read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int) -> bytes:
    """Read one member, never more than ``limit`` bytes whatever its header claims."""
    with zf.open(info) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise LimitExceeded(f"archive member {info.filename!r} is larger than {limit:,} bytes")
    return data
