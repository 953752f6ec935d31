"""Process CPU utilisation and peak resident memory over the steady-state windows."""
from __future__ import annotations

import time

import psutil

from bench.results import CpuTelemetry
from bench.telemetry.base import PollingThread


class CpuSampler:
    """Sampler: cpu_percent is process CPU time / wall time x 100 (200 = two cores busy), both
    summed over the windows heard; peak_rss_mb the highest resident set seen inside them."""

    def __init__(self, interval_s: float = 0.05):
        self._process = psutil.Process()
        self._poller = PollingThread(self._sample_rss, interval_s)
        self._peak_rss = 0
        self._busy_s = 0.0
        self._wall_s = 0.0

    def _sample_rss(self) -> None:
        self._peak_rss = max(self._peak_rss, self._process.memory_info().rss)

    def _cpu_s(self) -> float:
        times = self._process.cpu_times()
        return times.user + times.system

    def window_started(self) -> None:
        self._cpu0 = self._cpu_s()
        self._t0 = time.perf_counter()
        self._poller.start()

    def window_stopped(self, window=None) -> None:
        self._poller.stop()
        self._wall_s += time.perf_counter() - self._t0
        self._busy_s += self._cpu_s() - self._cpu0

    def figures(self, measurement=None) -> CpuTelemetry:
        return CpuTelemetry(cpu_percent=self._busy_s / self._wall_s * 100.0 if self._wall_s > 0 else None,
                            peak_rss_mb=self._peak_rss / 2**20)
