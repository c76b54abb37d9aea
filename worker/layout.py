"""Where things live under ``DATA_DIR``: this process's scratch space, and the local store.

Every process keeps its own scratch folder here (``work/<job_id>/attempt-…``): a worker downloads
a job's inputs into it, the engine writes its outputs there, and the artifacts leave it for the
artifact store (:mod:`worker.storage`).  With the local backend (no ``STORAGE_URL``) the store is
this folder too, and the API and the workers must then share it::

    DATA_DIR/uploads/.incoming/<random>.part   an upload still streaming in (local backend)
    DATA_DIR/uploads/<job_id>/<field>           the accepted uploads (model, inputs, calibration)
    DATA_DIR/artifacts/<job_id>/attempt-<n>/    the artifacts of the attempt that succeeded
    DATA_DIR/work/<job_id>/attempt-<n>-<rand>/  scratch space of one attempt (always local)

Everything is on one file system so that the local store's final moves are atomic renames.
"""

from __future__ import annotations

import re
import shutil
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

    def remove_scratch(self, job_id: str) -> None:
        """Delete this machine's scratch space of a job (every attempt); missing is fine."""
        shutil.rmtree(self.work_dir(job_id), ignore_errors=True)
