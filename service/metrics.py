"""Prometheus metrics, computed from the job store at scrape time.

Jobs finish in worker processes the API never hears from, so in-process counters would only
ever see what this API process did.  Instead a custom collector asks the store (shared by all
processes) at every scrape: jobs by status, run durations as a histogram, queue depth.
"""

from __future__ import annotations

import logging
from typing import Iterable

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from worker.store import QUEUED, STATUSES, JobStore

from .queue import JobQueue

log = logging.getLogger(__name__)

DURATION_BUCKETS = (1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)


class JobCollector(Collector):
    def __init__(self, store: JobStore, queue: JobQueue) -> None:
        self.store, self.queue = store, queue

    def collect(self) -> Iterable[Metric]:
        jobs = GaugeMetricFamily("prunekit_jobs", "Jobs in the store by status.", labels=["status"])
        counts = self.store.counts_by_status()
        for status in STATUSES:
            jobs.add_metric([status], counts.get(status, 0))
        yield jobs

        hist = HistogramMetricFamily(
            "prunekit_job_duration_seconds", "Run time of finished jobs (start to finish).", labels=["status"]
        )
        for status, stats in self.store.duration_stats(DURATION_BUCKETS).items():
            buckets = [(str(b), c) for b, c in zip(DURATION_BUCKETS, stats.buckets)]
            buckets.append(("+Inf", stats.count))
            hist.add_metric([status], buckets, sum_value=stats.total)
        yield hist

        depth = GaugeMetricFamily("prunekit_queue_depth", "Jobs waiting for a worker (status queued).")
        depth.add_metric([], counts.get(QUEUED, 0))
        yield depth

        try:
            broker_depth = self.queue.depth()
        except Exception as exc:  # a scrape must not fail because the broker is down
            log.warning("could not read the broker queue length: %s", exc)
            broker_depth = None
        if broker_depth is not None:
            g = GaugeMetricFamily("prunekit_broker_queue_length", "Messages waiting in the broker queue.")
            g.add_metric([], broker_depth)
            yield g


class Metrics:
    """The registry served at /metrics plus the few counters the API itself updates."""

    def __init__(self, store: JobStore, queue: JobQueue) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(JobCollector(store, queue))
        self.submitted = Counter(
            "prunekit_jobs_submitted", "Jobs accepted by this API process.", registry=self.registry
        )
        self.rejected = Counter(
            "prunekit_submissions_rejected", "Submissions refused, by error code.", ["code"], registry=self.registry
        )
        self.upload_bytes = Counter(
            "prunekit_upload_bytes", "Bytes of accepted uploads.", registry=self.registry
        )
