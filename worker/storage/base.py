"""The artifact store's interface: where uploads and artifacts live, whoever runs the job.

The API writes uploads and serves artifacts; workers read uploads and write artifacts.  With the
local backend (:mod:`worker.storage.local`) that is a folder under ``DATA_DIR`` that every process
sees (embedded mode, or a shared volume); with the S3 backend (:mod:`worker.storage.s3`) it is a
bucket, and the API and each worker keep only their own scratch space.  Both backends answer the
same small interface, so the routes, the runner and the sweepers never ask which one they use.

Keys are ``/``-separated and built here only, from job ids (our own hex) and fixed names::

    uploads/<job_id>/<field>                      model, inputs, calibration (as received)
    artifacts/<job_id>/attempt-<n>/<name>         the files one attempt produced

An artifact key names its attempt, so an attempt that dies half-way through its uploads, or one
superseded by a redelivery, can never overwrite the files of the attempt that is recorded as the
job's result; the winner deletes the others' leftovers.  An object is visible only once it is
complete (a rename, or a completed multipart upload), never half-written.

Errors: :class:`StorageUnavailable` when the store cannot be reached or refuses us (the API
answers 503, readiness fails), :class:`ObjectMissing` for a key that is not there.
"""

from __future__ import annotations

import re
import time
from abc import ABC, abstractmethod
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator

from ..layout import check_job_id

UPLOADS, ARTIFACTS = "uploads", "artifacts"
_SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,199}$")


class StorageUnavailable(Exception):
    """The store cannot be reached, or refused the operation; the message is one line."""


class ObjectMissing(Exception):
    """No object under that key."""


def check_key(key: str) -> str:
    """Keys are built from our own ids and names; anything else is a bug, never a path."""
    parts = key.split("/")
    if not parts or any(not _SEGMENT.match(p) for p in parts):
        raise ValueError(f"malformed storage key {key!r}")
    return key


def upload_key(job_id: str, field: str) -> str:
    return check_key(f"{UPLOADS}/{check_job_id(job_id)}/{field}")


def artifact_prefix(job_id: str) -> str:
    return f"{ARTIFACTS}/{check_job_id(job_id)}/"


def attempt_prefix(job_id: str, attempt: int) -> str:
    return f"{artifact_prefix(job_id)}attempt-{int(attempt)}/"


def artifact_key(job_id: str, attempt: int, name: str) -> str:
    return check_key(attempt_prefix(job_id, attempt) + name)


def legacy_artifact_key(job_id: str, name: str) -> str:
    """Where artifacts lived before keys named the attempt (records written by older versions)."""
    return check_key(artifact_prefix(job_id) + name)


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    modified: float  # seconds since the epoch


class UploadSink(ABC):
    """One object being written in order; invisible under its key until :meth:`commit`.

    ``write`` may block (a part upload, a disk write): callers run it in a worker thread.
    """

    @abstractmethod
    def write(self, data: bytes) -> None: ...

    @abstractmethod
    def commit(self) -> None: ...

    @abstractmethod
    def abort(self) -> None:
        """Drop what was written; never raises."""


class ObjectStore(ABC):
    """What the API, the workers and the sweepers need from the store."""

    kind: str = ""

    @abstractmethod
    def describe(self) -> str:
        """Where the objects are, for logs and readiness details (no credentials)."""

    @abstractmethod
    def begin_upload(self, key: str) -> UploadSink: ...

    @abstractmethod
    def open_read(self, key: str) -> AbstractContextManager[BinaryIO]:
        """A seekable binary file over the object (ranged reads where it is remote)."""

    @abstractmethod
    def fetch(self, key: str, dest: Path) -> None:
        """Copy the object to the local file ``dest`` (the worker's scratch)."""

    @abstractmethod
    def put_file(self, key: str, src: Path, *, sha256: str | None = None) -> None:
        """Store the local file ``src`` under ``key`` (it may be moved away: a scratch file)."""

    @abstractmethod
    def stream(self, key: str, chunk: int = 1 << 20) -> Iterator[bytes]:
        """The object's bytes in order; raises ObjectMissing (before the first chunk)."""

    @abstractmethod
    def size(self, key: str) -> int | None:
        """The object's size, or None if it does not exist."""

    def local_path(self, key: str) -> Path | None:
        """A file the object can be served from directly, where there is one."""
        return None

    def presigned_get(self, key: str, *, expires: int, disposition: str, content_type: str) -> str | None:
        """A URL that lets its bearer download the object for ``expires`` seconds, where the
        store supports that (and the deployment enabled it); else None."""
        return None

    @abstractmethod
    def list(self, prefix: str) -> list[ObjectInfo]: ...

    @abstractmethod
    def delete_prefix(self, prefix: str) -> int:
        """Delete every object under ``prefix`` (and unfinished uploads there); returns how many."""

    @abstractmethod
    def remove_abandoned(self, max_age: float) -> list[str]:
        """Drop unfinished uploads untouched for ``max_age`` seconds (their writer died)."""

    @abstractmethod
    def check(self) -> None:
        """Raise StorageUnavailable unless objects can be written and read right now."""

    def close(self) -> None:
        return None

    # -- shared by both backends ----------------------------------------------------------------

    def remove_job(self, job_id: str, *, artifacts: bool = True) -> None:
        """Delete a job's uploads (and artifacts); what is missing is fine."""
        self.delete_prefix(f"{UPLOADS}/{check_job_id(job_id)}/")
        if artifacts:
            self.delete_prefix(artifact_prefix(job_id))

    def upload_ages(self) -> dict[str, float]:
        """Job id → seconds since its newest upload object was written."""
        now = time.time()
        newest: dict[str, float] = {}
        for info in self.list(f"{UPLOADS}/"):
            parts = info.key.split("/")
            if len(parts) == 3:
                newest[parts[1]] = max(newest.get(parts[1], 0.0), info.modified)
        return {job_id: now - t for job_id, t in newest.items()}
