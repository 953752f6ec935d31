"""Exit statuses and the stop signals (SIGINT, SIGTERM): light enough for the CLI to import first."""
from __future__ import annotations

import contextlib
import signal

EXIT_NOT_SAVED = 1  # measured points that could not be written (full disk, read-only folder)
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def ignore_stop_signals() -> None:
    """On the way out after one SIGINT/SIGTERM: a second must not end in a traceback, or in
    Python's default action once it resets handlers at exit."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)


@contextlib.contextmanager
def signals_held():
    """Hold SIGINT and SIGTERM back; one that came meanwhile is handled as the block lifts."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class StopOnSignals:
    """While measuring, SIGINT and SIGTERM stop the run as Ctrl-C does; later signals are ignored.

    Stopping is quick (the worker is killed, not awaited; every finished point is already on
    disk), and a second Ctrl-C must not cut short the report of what was saved. Once measuring
    is done, a signal has nothing left to stop.
    """

    def __enter__(self):
        self._measuring, self._signalled = True, False
        self._previous = {sig: signal.signal(sig, self._stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        return self

    def _stop(self, signum, frame):
        self._signalled = True
        ignore_stop_signals()
        if self._measuring:
            raise KeyboardInterrupt(f"signal {signum}")

    def measuring_done(self) -> None:
        self._measuring = False

    def __exit__(self, *exc):
        if self._signalled:
            return  # keep ignoring: the process is on its way out (Python would reset a handler to the default on exit)
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
