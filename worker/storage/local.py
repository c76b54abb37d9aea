"""The local backend: objects are files under ``DATA_DIR`` (the default; embedded mode).

A key maps to the file of the same relative path under the data folder, which keeps the layout
of earlier versions (``uploads/<job>/…``, ``artifacts/<job>/…``).  An upload streams into
``uploads/.incoming`` and is renamed into place when complete; a worker's scratch sits on the
same file system, so handing a job its input is a hard link and storing an artifact a rename.
Several machines can share this backend only through a shared volume; the S3 backend needs none.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from contextlib import AbstractContextManager
from pathlib import Path
from typing import BinaryIO, Iterator

from ..layout import Layout
from .base import ObjectInfo, ObjectMissing, ObjectStore, StorageUnavailable, UploadSink, check_key


class _FileSink(UploadSink):
    def __init__(self, partial: Path, target: Path) -> None:
        self.partial, self.target = partial, target
        self._file: BinaryIO | None = None

    def write(self, data: bytes) -> None:
        if self._file is None:
            self._file = open(self.partial, "wb")
        self._file.write(data)

    def commit(self) -> None:
        if self._file is None:  # an empty part
            self._file = open(self.partial, "wb")
        self._file.close()
        self.target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.partial, self.target)

    def abort(self) -> None:
        try:
            if self._file is not None:
                self._file.close()
            self.partial.unlink(missing_ok=True)
        except OSError:
            pass


class LocalStore(ObjectStore):
    kind = "local"

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.root = layout.root

    def describe(self) -> str:
        return f"folder {self.root}"

    def path_of(self, key: str) -> Path:
        return self.root / check_key(key)

    def begin_upload(self, key: str) -> UploadSink:
        target = self.path_of(key)
        self.layout.incoming.mkdir(parents=True, exist_ok=True)
        return _FileSink(self.layout.incoming / f"{uuid.uuid4().hex}.part", target)

    def open_read(self, key: str) -> AbstractContextManager[BinaryIO]:
        try:
            return open(self.path_of(key), "rb")
        except FileNotFoundError:
            raise ObjectMissing(key) from None

    def fetch(self, key: str, dest: Path) -> None:
        src = self.path_of(key)
        if not src.is_file():
            raise ObjectMissing(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(src, dest)  # same file system: no copy
        except OSError:
            shutil.copyfile(src, dest)

    def put_file(self, key: str, src: Path, *, sha256: str | None = None) -> None:
        target = self.path_of(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(src, target)
        except OSError:  # another file system: copy beside the target, then rename
            tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.part")
            shutil.copyfile(src, tmp)
            os.replace(tmp, target)

    def stream(self, key: str, chunk: int = 1 << 20) -> Iterator[bytes]:
        try:
            f = open(self.path_of(key), "rb")
        except FileNotFoundError:
            raise ObjectMissing(key) from None

        def chunks() -> Iterator[bytes]:
            with f:
                while block := f.read(chunk):
                    yield block

        return chunks()

    def size(self, key: str) -> int | None:
        try:
            return self.path_of(key).stat().st_size
        except FileNotFoundError:
            return None

    def local_path(self, key: str) -> Path | None:
        path = self.path_of(key)
        return path if path.is_file() else None

    def list(self, prefix: str) -> list[ObjectInfo]:
        base = self.root / prefix.rstrip("/")
        out = []
        if base.is_file():
            candidates = [base]
        elif base.is_dir():
            candidates = [p for p in base.rglob("*") if p.is_file()]
        else:
            candidates = []
        for p in candidates:
            rel = p.relative_to(self.root).as_posix()
            if any(part.startswith(".") for part in rel.split("/")):
                continue  # partial files and probes are not objects
            try:
                st = p.stat()
            except FileNotFoundError:
                continue
            out.append(ObjectInfo(rel, st.st_size, st.st_mtime))
        return sorted(out, key=lambda i: i.key)

    def delete_prefix(self, prefix: str) -> int:
        base = self.root / prefix.rstrip("/")
        if base.is_file():
            base.unlink(missing_ok=True)
            return 1
        n = sum(1 for p in base.rglob("*") if p.is_file()) if base.is_dir() else 0
        shutil.rmtree(base, ignore_errors=True)
        return n

    def remove_abandoned(self, max_age: float) -> list[str]:
        """Partial uploads in ``.incoming`` untouched for ``max_age`` (a live upload writes a
        chunk at least every few seconds, so such a file has no writer left)."""
        removed = []
        cutoff = time.time() - max_age
        try:
            entries = list(self.layout.incoming.iterdir())
        except FileNotFoundError:
            return removed
        for p in entries:
            try:
                if p.is_file() and p.stat().st_mtime < cutoff:
                    p.unlink()
                    removed.append(p.name)
            except FileNotFoundError:  # finished (moved away) or removed meanwhile
                continue
        return removed

    def check(self) -> None:
        """The artifact folder exists and is writable (a real write: mounts can be read-only)."""
        folder = self.layout.artifacts
        probe = folder / f".ready-{uuid.uuid4().hex}"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError as exc:
            raise StorageUnavailable(f"{folder}: {exc.strerror or exc}") from None
