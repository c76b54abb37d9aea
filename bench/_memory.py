"""One RSS sampler for every bench: peak process RSS seen by a thread every few milliseconds.

tracemalloc does not see torch's allocator, so memory is the process's resident set size, read
by a background thread (``psutil``) at a fixed interval.  ``Rss`` gives the peak over its window
and the RSS at its start (``base``); when it is also handed as a PruneKit progress callback
(``progress``), the peak is attributed to the stage running, with each stage's CPU seconds.
``bench/engine.py`` and ``bench/side_by_side.py`` both measure with it, so their figures are
comparable.
"""

from __future__ import annotations

import threading
import time


class Rss:
    """``with Rss() as mem: ...`` → ``mem.base``, ``mem.peak`` (bytes), per stage ``mem.stage_peak``,
    ``mem.stage_start`` and ``mem.cpu`` (seconds) when ``mem.progress`` was the progress callback."""

    def __init__(self, interval: float = 0.005) -> None:
        import psutil

        self.proc, self.interval = psutil.Process(), interval
        self.base = self.peak = self.proc.memory_info().rss
        self.stage: str | None = None
        self.stage_start: dict[str, int] = {}
        self.stage_peak: dict[str, int] = {}
        self._cpu_start: dict[str, float] = {}
        self.cpu: dict[str, float] = {}  # process CPU seconds per stage (less sensitive to a busy machine)
        self._stop = threading.Event()

    def _sample(self) -> int:
        rss = self.proc.memory_info().rss
        self.peak = max(self.peak, rss)
        st = self.stage
        if st is not None:
            self.stage_peak[st] = max(self.stage_peak.get(st, 0), rss)
        return rss

    def progress(self, stage: str, fraction: float, message: str) -> None:
        """A PruneKit progress callback: attributes samples to the stage that runs."""
        rss, cpu = self._sample(), time.process_time()
        if message.endswith(" done"):
            self.cpu[stage] = round(cpu - self._cpu_start.get(stage, cpu), 3)
            self.stage = None
        elif stage != self.stage:  # a stage starts (other calls are ticks inside it)
            self.stage = stage
            self.stage_start[stage] = rss
            self.stage_peak[stage] = rss
            self._cpu_start[stage] = cpu

    def stage_growth(self) -> dict[str, int]:
        return {s: self.stage_peak[s] - self.stage_start[s] for s in self.stage_peak if s in self.stage_start}

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._sample()
            time.sleep(self.interval)

    def __enter__(self) -> "Rss":
        self._t = threading.Thread(target=self._loop, daemon=True)
        self._t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join()
        self._sample()
