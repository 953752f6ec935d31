"""Process CPU utilisation, the machine's other load and peak resident memory over the steady-state windows."""
from __future__ import annotations

import time
from dataclasses import dataclass

import psutil

from bench.telemetry.base import PollingThread, used_readings


@dataclass
class CpuTelemetry:
    """bench.telemetry.cpu.CpuSampler over the windows."""

    cpu_percent: float | None = None
    peak_rss_mb: float | None = None
    other_cpu_percent: float | None = None  # every other process on the machine, same unit
    cpu_steal_percent: float | None = None  # VM cores given to other guests


@dataclass
class _WindowReading:
    wall_s: float
    busy_s: float  # this process's CPU time
    machine_busy_s: float
    steal_s: float
    peak_rss: int


class CpuSampler:
    """Sampler: cpu_percent is process CPU time / wall time x 100 (200 = two cores busy), both
    summed over the windows the figures come from (the measurement's trailing used windows);
    peak_rss_mb the highest resident set seen inside them.

    other_cpu_percent is the CPU time every other process on the machine used meanwhile (the
    machine's busy time less this process's), in the same unit: a run that shared its cores
    measured the sharing, not the model, and the regression gate will not judge it.
    cpu_steal_percent is the time a hypervisor gave this VM's cores to other guests.
    """

    def __init__(self, interval_s: float = 0.05):
        self._process = psutil.Process()
        self._poller = PollingThread(self._sample_rss, interval_s)
        self._peak_rss = 0
        self._readings: list[_WindowReading] = []

    def _sample_rss(self) -> None:
        self._peak_rss = max(self._peak_rss, self._process.memory_info().rss)

    def _cpu_s(self) -> float:
        times = self._process.cpu_times()
        return times.user + times.system

    def window_started(self) -> None:
        self._machine0 = psutil.cpu_times()
        self._cpu0 = self._cpu_s()
        self._peak_rss = 0
        self._t0 = time.perf_counter()
        self._poller.start()

    def window_stopped(self, window=None) -> None:
        self._poller.stop()
        wall = time.perf_counter() - self._t0
        busy = self._cpu_s() - self._cpu0
        machine = psutil.cpu_times()
        self._readings.append(_WindowReading(
            wall, busy, _busy_s(machine) - _busy_s(self._machine0),
            getattr(machine, "steal", 0.0) - getattr(self._machine0, "steal", 0.0), self._peak_rss))

    def figures(self, measurement=None) -> CpuTelemetry:
        """Over the measurement's used windows (every window heard without a measurement)."""
        readings = used_readings(self._readings, measurement)
        wall = sum(r.wall_s for r in readings)
        peak_mb = max((r.peak_rss for r in readings), default=self._peak_rss) / 2**20
        if wall <= 0:
            return CpuTelemetry(peak_rss_mb=peak_mb)
        busy = sum(r.busy_s for r in readings)
        # The machine's counters tick in 10 ms steps: a short window can read a little below this process.
        other = max(0.0, sum(r.machine_busy_s for r in readings) - busy)
        return CpuTelemetry(cpu_percent=busy / wall * 100.0, peak_rss_mb=peak_mb,
                            other_cpu_percent=other / wall * 100.0,
                            cpu_steal_percent=sum(r.steal_s for r in readings) / wall * 100.0)


def _busy_s(times) -> float:
    """CPU seconds the machine's cores ran anything (Linux's guest time is inside user already)."""
    return sum(getattr(times, name, 0.0) for name in ("user", "nice", "system", "irq", "softirq"))
