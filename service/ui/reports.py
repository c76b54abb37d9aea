"""The full engine report of a finished job, for the dashboard's job page.

The job record keeps only the headline numbers; the per-layer widths, groups, barriers and
kept layers are in the ``report.json`` artifact, read through the artifact store (a folder or
S3, :mod:`worker.storage`).  A finished job's report never changes, so the
parsed copy of the most recently viewed ones is kept (a few, bounded in number).  Reports over
``MAX_REPORT_BYTES`` are not parsed: the page shows the headline numbers and says why.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from threading import Lock
from typing import Any

from worker.storage import ObjectStore, legacy_artifact_key
from worker.store import SUCCEEDED, Job

log = logging.getLogger(__name__)

MAX_REPORT_BYTES = 32 << 20
REPORT_NAME = "report.json"


class ReportTooLarge(Exception):
    pass


class Reports:
    def __init__(self, objects: ObjectStore, keep: int = 16) -> None:
        self.objects, self.keep = objects, keep
        self._cache: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._lock = Lock()  # read from worker threads

    def get(self, job: Job) -> dict[str, Any] | None:
        """The parsed report, None if the job has none (not succeeded, or no report.json)."""
        meta = next((a for a in job.artifacts or [] if a.get("name") == REPORT_NAME), None)
        if job.status != SUCCEEDED or meta is None:
            return None
        with self._lock:
            if job.id in self._cache:
                self._cache.move_to_end(job.id)
                return self._cache[job.id]
        key = meta.get("key") or legacy_artifact_key(job.id, REPORT_NAME)
        size = self.objects.size(key)
        if size is not None and size > MAX_REPORT_BYTES:
            raise ReportTooLarge(f"report.json is over {MAX_REPORT_BYTES >> 20} MiB: download it to read it")
        try:
            with self.objects.open_read(key) as f:
                report = json.loads(f.read(MAX_REPORT_BYTES + 1))
        except Exception as exc:  # gone, unreadable, the store down: the page shows the rest
            log.warning("job %s: cannot read its report: %s", job.id, exc)
            return None
        if not isinstance(report, dict):
            return None
        with self._lock:
            self._cache[job.id] = report
            while len(self._cache) > self.keep:
                self._cache.popitem(last=False)
        return report
