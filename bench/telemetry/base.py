"""Samplers: the one protocol telemetry follows to run beside steady-state windows.

bench.measure.protocol.measure calls window_started() / window_stopped(window) around
every steady-state window (never warm-up); after the point the caller asks each sampler
for its figures. A sampler accumulates over all the windows it heard.
"""
from __future__ import annotations

import threading
from typing import Any, Callable, Protocol


class Sampler(Protocol):
    def window_started(self) -> None: ...

    def window_stopped(self, window) -> None:
        """`window`: the bench.measure.loops.Window just measured (None outside the protocol)."""
        ...

    def figures(self, measurement) -> dict[str, Any]:
        """Row fields over the measurement's used windows (schema column names). `measurement`: the
        point's bench.measure.protocol.Measurement (also for figures derived from it, e.g. GPU
        compute-only fps)."""
        ...


def used_readings(readings: list, measurement) -> list:
    """A sampler's per-window readings of the windows the figures come from (all without a measurement)."""
    used = getattr(measurement, "used_windows", None)
    return readings[-used:] if used else list(readings)


class PollingThread:
    """Calls `poll` every `interval_s` in a daemon thread until stopped."""

    def __init__(self, poll: Callable[[], None], interval_s: float):
        self._poll = poll
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True, name="facebench-sampler")
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            self._poll()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._poll()  # one last reading so short windows still have a sample
