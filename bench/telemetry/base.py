"""What the samplers share: the readings of the used windows and a polling thread. The protocol
they follow (bench.measure.protocol.Sampler) sits beside the measurement that calls it."""
from __future__ import annotations

import threading
from typing import Callable


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
