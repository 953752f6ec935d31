"""Samplers run beside a steady-state window and return aggregated row fields."""
from __future__ import annotations

import threading
from typing import Any, Callable, Protocol


class Sampler(Protocol):
    def start(self) -> None: ...

    def stop(self) -> dict[str, Any]:
        """Row fields aggregated over the window (schema column names)."""
        ...


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
