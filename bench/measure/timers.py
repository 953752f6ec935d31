"""Timers: start/stop around the timed region, returning nanoseconds.

Host and CUDA-event timers return the same sample type, so the protocol never
knows which device it measured.
"""
from __future__ import annotations

import time
from typing import Protocol


class Timer(Protocol):
    def start(self) -> None: ...

    def stop(self) -> int:
        """Elapsed nanoseconds since start()."""
        ...


class HostTimer:
    """time.perf_counter_ns around a synchronous call."""

    def __init__(self) -> None:
        self._t0 = 0

    def start(self) -> None:
        self._t0 = time.perf_counter_ns()

    def stop(self) -> int:
        return time.perf_counter_ns() - self._t0
