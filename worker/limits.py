"""The memory limit of a job process: a runaway job fails with a reason, the machine keeps its memory.

One example input of ``[1, 3, 20000, 20000]`` once drove a job to 19.5 GB on a 24 GB machine.
The engine refuses such inputs up front (``prunekit/limits.py``), but a model can still allocate
without bound (a huge activation, a crafted archive), so each process that runs jobs (an
embedded job process, a Celery pool child) lowers its own address-space limit (``RLIMIT_AS``)
before it runs one.  An allocation past it fails inside torch or Python, the job fails with code
``memory_limit`` naming the limit, and the process lives on (the API and the Celery parent are
never limited).  RLIMIT_AS counts address space, not resident memory: the default leaves room
for torch's own mappings (about 1 GB).  Where the process runs in a cgroup with a memory limit,
the default is computed from that limit instead of the machine's memory.
"""

from __future__ import annotations

import logging
import os
import resource
from pathlib import Path

from prunekit.limits import parse_size

from .settings import WorkerSettings

log = logging.getLogger(__name__)

_applied: int | None = None


def _machine_memory() -> int:
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for f in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(f).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and 0 < int(text) < total:
            total = int(text)
    return total


def memory_limit_bytes(settings: WorkerSettings, concurrency: int) -> int | None:
    """The limit for one job process, or ``None`` for none."""
    if settings.job_memory_limit is not None:
        value = parse_size(settings.job_memory_limit, name="PRUNEKIT_JOB_MEMORY_LIMIT")
        return value or None
    return int(0.8 * _machine_memory() / max(1, concurrency))


def apply_memory_limit(settings: WorkerSettings, concurrency: int) -> int | None:
    """Lower this process's address-space limit for the jobs it will run; returns the limit."""
    global _applied
    limit = memory_limit_bytes(settings, concurrency)
    if limit is None:
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    try:
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    except (ValueError, OSError) as exc:  # e.g. below what the process already maps
        log.warning("could not set the job memory limit to %d bytes: %s", limit, exc)
        return None
    _applied = limit
    return limit


def applied_memory_limit() -> int | None:
    return _applied


def describe(limit: int | None) -> str:
    if not limit:
        return "the machine's memory"
    return f"{limit / 2**30:.2f} GiB" if limit >= 2**30 else f"{limit / 2**20:.0f} MiB"
