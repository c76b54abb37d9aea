"""The statuses a service job goes through, defined once for the client, the worker and the API.

``queued → running → succeeded | failed | cancelled``.  They are part of the service's public
JSON (and of the job store's rows), and the HTTP client (:mod:`prunekit.client`) and the CLI's
client commands decide by them when a job is over.  They live in the engine package because
the client does and the dependency direction is ``service → worker → prunekit``: the job store
(:mod:`worker.store`) and the API's schemas (:mod:`service.schemas`) import them from here.
"""

from __future__ import annotations

from typing import Literal, get_args

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
STATUSES: tuple[str, ...] = get_args(JobStatus)
QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = STATUSES
ACTIVE: tuple[str, ...] = (QUEUED, RUNNING)
TERMINAL: tuple[str, ...] = (SUCCEEDED, FAILED, CANCELLED)
