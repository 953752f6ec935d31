"""Process CPU utilisation and peak resident memory over a window."""
from __future__ import annotations

import time
from typing import Any

import psutil

from bench.telemetry.base import PollingThread


class CpuSampler:
    """cpu_percent is process CPU time / wall time x 100 (200 = two cores busy)."""

    def __init__(self, interval_s: float = 0.05):
        self._process = psutil.Process()
        self._poller = PollingThread(self._sample_rss, interval_s)
        self._peak_rss = 0

    def _sample_rss(self) -> None:
        self._peak_rss = max(self._peak_rss, self._process.memory_info().rss)

    def start(self) -> None:
        self._peak_rss = 0
        self._cpu0 = self._process.cpu_times()
        self._t0 = time.perf_counter()
        self._poller.start()

    def stop(self) -> dict[str, Any]:
        self._poller.stop()
        cpu1 = self._process.cpu_times()
        wall = time.perf_counter() - self._t0
        busy = (cpu1.user - self._cpu0.user) + (cpu1.system - self._cpu0.system)
        return {
            "cpu_percent": busy / wall * 100.0 if wall > 0 else None,
            "peak_rss_mb": self._peak_rss / 2**20,
        }
