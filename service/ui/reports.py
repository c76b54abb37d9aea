"""The full engine report of a finished job, for the dashboard's job page.

The job record keeps only the headline numbers; the per-layer widths, groups, barriers and
kept layers are in the ``report.json`` artifact.  A finished job's report never changes, so the
parsed copy of the most recently viewed ones is kept (a few, bounded in number).  Reports over
``MAX_REPORT_BYTES`` are not parsed: the page shows the headline numbers and says why.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from threading import Lock
from typing import Any

from worker.layout import Layout
from worker.store import SUCCEEDED, Job

log = logging.getLogger(__name__)

MAX_REPORT_BYTES = 32 << 20
REPORT_NAME = "report.json"


class ReportTooLarge(Exception):
    pass


class Reports:
    def __init__(self, layout: Layout, keep: int = 16) -> None:
        self.layout, self.keep = layout, keep
        self._cache: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._lock = Lock()  # read from worker threads

    def get(self, job: Job) -> dict[str, Any] | None:
        """The parsed report, None if the job has none (not succeeded, or no report.json)."""
        if job.status != SUCCEEDED or not any(a.get("name") == REPORT_NAME for a in job.artifacts or []):
            return None
        with self._lock:
            if job.id in self._cache:
                self._cache.move_to_end(job.id)
                return self._cache[job.id]
        path = self.layout.artifact_dir(job.id) / REPORT_NAME
        try:
            if path.stat().st_size > MAX_REPORT_BYTES:
                raise ReportTooLarge(f"report.json is over {MAX_REPORT_BYTES >> 20} MiB: download it to read it")
            report = json.loads(path.read_bytes())
        except (OSError, ValueError) as exc:
            log.warning("job %s: cannot read its report: %s", job.id, exc)
            return None
        if not isinstance(report, dict):
            return None
        with self._lock:
            self._cache[job.id] = report
            while len(self._cache) > self.keep:
                self._cache.popitem(last=False)
        return report
