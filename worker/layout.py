"""Where a job's files live under ``DATA_DIR``.

One module owns the layout so the API (which writes uploads and serves artifacts) and the worker
(which reads uploads and writes artifacts) cannot drift apart::

    DATA_DIR/uploads/.incoming/<random>     an upload still streaming in
    DATA_DIR/uploads/<job_id>/model.<ext>   the accepted model (and inputs.safetensors)
    DATA_DIR/work/<job_id>/<attempt>/        scratch space of one attempt
    DATA_DIR/artifacts/<job_id>/            the finished artifacts, moved in atomically

Everything is on one file system so that the final moves are atomic renames.
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

_JOB_ID = re.compile(r"^[0-9a-f]{32}$")


def check_job_id(job_id: str) -> str:
    """Job ids become path components: refuse anything that is not our own hex format."""
    if not _JOB_ID.match(job_id):
        raise ValueError(f"malformed job id {job_id!r}")
    return job_id


class Layout:
    def __init__(self, data_dir: Path) -> None:
        self.root = Path(data_dir).resolve()

    @property
    def uploads(self) -> Path:
        return self.root / "uploads"

    @property
    def incoming(self) -> Path:
        return self.uploads / ".incoming"

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    @property
    def work(self) -> Path:
        return self.root / "work"

    def ensure(self) -> None:
        for p in (self.incoming, self.artifacts, self.work):
            p.mkdir(parents=True, exist_ok=True)

    def upload_dir(self, job_id: str) -> Path:
        return self.uploads / check_job_id(job_id)

    def artifact_dir(self, job_id: str) -> Path:
        return self.artifacts / check_job_id(job_id)

    def work_dir(self, job_id: str) -> Path:
        return self.work / check_job_id(job_id)

    def remove_job_files(self, job_id: str, *, artifacts: bool = True) -> None:
        """Delete a job's upload and scratch (and artifacts); missing files are fine."""
        dirs = [self.upload_dir(job_id), self.work_dir(job_id)]
        if artifacts:
            dirs.append(self.artifact_dir(job_id))
        for d in dirs:
            shutil.rmtree(d, ignore_errors=True)

    def remove_abandoned_incoming(self, max_age: float) -> list[str]:
        """Delete uploads left half-written in ``.incoming`` by an API process that died mid-upload.

        A live upload writes a chunk at least every few seconds, so a file untouched for
        ``max_age`` seconds has no writer left.  Returns the names removed.
        """
        removed = []
        cutoff = time.time() - max_age
        try:
            entries = list(self.incoming.iterdir())
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
