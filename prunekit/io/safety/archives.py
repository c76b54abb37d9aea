"""Unpack an uploaded checkpoint archive (zip or tar, optionally gz/bz2/xz) without trusting it.

A checkpoint folder (``config.json`` + ``model.safetensors``) travels as an archive, and an
archive is a classic way to make a server write where it should not or unpack forever.  So:

* nothing is extracted by the archive library's own ``extractall``: every member is checked and
  copied here, into a fresh directory of ours, under its *base name* only, so no name can reach
  outside it (``../``, absolute paths, drive letters and backslashes are refused outright);
* only regular files are read: a symbolic or hard link, a device or a FIFO anywhere in the
  archive fails the upload;
* only the files a checkpoint consists of are written (``config.json``, ``*.safetensors``,
  ``model.safetensors.index.json``), and only those in the checkpoint's folder: the archive's
  root or the one folder that holds the shallowest ``config.json``;
* sizes are bounded while reading, with the limits the zip check uses (``PRUNEKIT_MAX_ARCHIVE_*``,
  ``PRUNEKIT_MAX_UNPACKED_BYTES``): member count, the total declared size, the inflation ratio
  against the archive's own size, and the bytes actually read (never more than declared);
* a zip's directory goes through :func:`zip_limits.check_zip` first (encryption, compression
  methods, per-member ratio); a tar is read member by member, each header checked before the
  stream moves past its data, so a compressed tar cannot make the server inflate more than the
  limits allow before it is refused.
"""

from __future__ import annotations

import shutil
import stat
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO, IO, Iterator

from ...errors import InvalidModelFile, LimitExceeded, UnsafeModelFile
from ...limits import Limits
from ..formats import is_tar_head
from .zip_limits import check_zip, read_member

CHUNK = 1 << 20
_SMALL = 1 << 20  # below this, an archive may compress as well as it likes
WANTED_NAMES = ("config.json", "model.safetensors.index.json")
WANTED_SUFFIX = ".safetensors"


def is_tar(path: Path) -> bool:
    with open(path, "rb") as f:
        return is_tar_head(f.read(512))


def wanted(name: str) -> bool:
    base = PurePosixPath(name).name
    return base in WANTED_NAMES or base.endswith(WANTED_SUFFIX)


def safe_name(raw: str) -> PurePosixPath:
    """The member's path, or :class:`UnsafeModelFile` for any name that could leave the folder."""
    if not raw or "\x00" in raw or "\\" in raw or len(raw) > 1024:
        raise UnsafeModelFile(f"the archive holds a member with an unusable name ({raw[:80]!r})")
    p = PurePosixPath(raw)
    if p.is_absolute() or (p.parts and ":" in p.parts[0]):
        raise UnsafeModelFile(f"the archive holds a member with an absolute path ({raw[:80]!r})")
    if any(part in ("..",) for part in p.parts):
        raise UnsafeModelFile(f"the archive holds a member that points outside it ({raw[:80]!r})")
    parts = [part for part in p.parts if part not in ("", ".")]
    if not parts or any(len(part) > 255 for part in parts):
        raise UnsafeModelFile(f"the archive holds a member with an unusable name ({raw[:80]!r})")
    return PurePosixPath(*parts)


@dataclass
class _Member:
    name: PurePosixPath
    size: int
    handle: object  # ZipInfo or TarInfo


class _Budget:
    """The total bytes declared and read, against the limits."""

    def __init__(self, limits: Limits, archive_bytes: int) -> None:
        self.limits, self.archive_bytes = limits, max(archive_bytes, 1)
        self.declared = 0
        self.members = 0

    def add(self, size: int) -> None:
        self.members += 1
        if self.members > self.limits.max_archive_members:
            raise LimitExceeded(f"the archive has more than {self.limits.max_archive_members:,} members "
                                "(PRUNEKIT_MAX_ARCHIVE_MEMBERS)")
        self.declared += max(size, 0)
        if self.declared > self.limits.max_unpacked_bytes:
            raise LimitExceeded(f"the archive unpacks to more than {self.limits.max_unpacked_bytes:,} bytes "
                                "(PRUNEKIT_MAX_UNPACKED_BYTES)")
        if self.declared > _SMALL and self.declared > self.limits.max_archive_ratio * self.archive_bytes:
            raise LimitExceeded(f"the archive inflates more than {self.limits.max_archive_ratio}-fold "
                                f"({self.archive_bytes:,} bytes to more than {self.declared:,}; "
                                "PRUNEKIT_MAX_ARCHIVE_RATIO)")


def _copy(src: IO[bytes], dest: Path, declared: int, name: str) -> None:
    """Copy at most ``declared`` bytes; an archive whose member holds more (or less) is damaged."""
    seen = 0
    with open(dest, "xb") as out:
        while True:
            chunk = src.read(min(CHUNK, declared - seen + 1))
            if not chunk:
                break
            seen += len(chunk)
            if seen > declared:
                raise InvalidModelFile(f"archive member {name!r} holds more bytes than its header says")
            out.write(chunk)
    if seen != declared:
        raise InvalidModelFile(f"archive member {name!r} is truncated ({seen:,} of {declared:,} bytes)")


def _zip_members(zf: zipfile.ZipFile, infos: list[zipfile.ZipInfo], budget: _Budget) -> Iterator[_Member]:
    for info in infos:
        name = safe_name(info.filename)
        # Unix-made zips keep the file type in the high bits; a typed entry must be a file or a folder
        kind = stat.S_IFMT(info.external_attr >> 16) if info.create_system == 3 else 0
        if kind and kind not in (stat.S_IFREG, stat.S_IFDIR):
            raise UnsafeModelFile(f"the archive holds {info.filename!r}, which is not a regular file (a link or a device)")
        budget.add(info.file_size)
        if info.is_dir():
            continue
        yield _Member(name, info.file_size, info)


def _root(names: list[PurePosixPath]) -> PurePosixPath:
    """The folder of the shallowest ``config.json`` (exactly one at that depth)."""
    configs = [n for n in names if n.name == "config.json"]
    if not configs:
        raise InvalidModelFile("the archive holds no config.json: a checkpoint archive is a folder with config.json and "
                               "model.safetensors (or model.safetensors.index.json and its shards)")
    depth = min(len(n.parts) for n in configs)
    top = [n for n in configs if len(n.parts) == depth]
    if len(top) > 1:
        raise InvalidModelFile(f"the archive holds {len(top)} checkpoints ({', '.join(str(n.parent) for n in top[:3])}); "
                               "upload one")
    return top[0].parent


def unpack_checkpoint(path: "str | Path", dest: "str | Path", limits: Limits) -> Path:
    """Extract the checkpoint files of the archive at ``path`` into the empty folder ``dest``;
    return ``dest``.  Raises ``UnsafeModelFile``, ``LimitExceeded`` or ``InvalidModelFile``."""
    path, dest = Path(path), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    size = path.stat().st_size
    budget = _Budget(limits, size)
    if zipfile.is_zipfile(path):
        infos = check_zip(path, limits)
        with zipfile.ZipFile(path) as zf:
            members = list(_zip_members(zf, infos, budget))
            _unique(members)
            root = _root([m.name for m in members])
            for m in members:
                if m.name.parent == root and wanted(str(m.name)):
                    try:
                        with zf.open(m.handle) as src:  # type: ignore[arg-type]
                            _copy(src, dest / m.name.name, m.size, str(m.name))
                    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
                        raise InvalidModelFile(f"archive member {str(m.name)!r} is damaged: {exc}") from None
        return dest
    if not is_tar(path):
        raise InvalidModelFile("the checkpoint archive is neither a zip nor a tar file")
    staged: list[tuple[PurePosixPath, Path]] = []
    seen: set[PurePosixPath] = set()
    try:
        with tarfile.open(path, mode="r:*") as tf:
            k = 0
            while True:
                info = tf.next()  # reads past the previous member's data: only after its header was accepted
                if info is None:
                    break
                name = safe_name(info.name)
                if not (info.isreg() or info.isdir()):
                    raise UnsafeModelFile(f"the archive holds {info.name!r}, which is not a regular file "
                                          "(a link, a device or a FIFO)")
                budget.add(info.size)
                if info.isdir():
                    continue
                if name in seen:
                    raise UnsafeModelFile(f"the archive holds {str(name)!r} twice")
                seen.add(name)
                if wanted(str(name)):
                    target = dest / f".member-{k}"
                    k += 1
                    src = tf.extractfile(info)
                    if src is None:
                        raise InvalidModelFile(f"archive member {info.name!r} cannot be read")
                    _copy(src, target, info.size, info.name)
                    staged.append((name, target))
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        raise InvalidModelFile(f"the checkpoint archive is damaged or truncated: {exc}") from None
    root = _root([n for n, _ in staged])
    for name, target in staged:
        if name.parent == root:
            target.rename(dest / name.name)
        else:
            target.unlink()
    return dest


def zip_config(path: "str | Path | BinaryIO", limits: Limits, limit: int) -> bytes:
    """The checkpoint's ``config.json`` from a zip archive, without unpacking anything else: the
    directory is checked as :func:`unpack_checkpoint` checks it, then that one member is read
    (at most ``limit`` bytes).  For the service, which validates a configuration before it
    queues a job (``path`` may be a seekable binary file: an upload read from the object store)."""
    infos = check_zip(path, limits)  # type: ignore[arg-type]
    size = path.seek(0, 2) if hasattr(path, "seek") else Path(path).stat().st_size  # type: ignore[union-attr]
    budget = _Budget(limits, size)
    with zipfile.ZipFile(path) as zf:
        members = list(_zip_members(zf, infos, budget))
        _unique(members)
        root = _root([m.name for m in members])
        member = next(m for m in members if m.name == root / "config.json")
        return read_member(zf, member.handle, limit)  # type: ignore[arg-type]


def _unique(members: list[_Member]) -> None:
    seen: set[PurePosixPath] = set()
    for m in members:
        if m.name in seen:
            raise UnsafeModelFile(f"the archive holds {str(m.name)!r} twice")
        seen.add(m.name)


def remove(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
