"""The process launcher: each job in a spawned worker process, watched from here.

A worker that dies (signal, abort, time limit, memory limit) costs only the point it
was measuring: that point becomes a failed row and a new worker takes the rest.
"""
from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
import threading
import time
from dataclasses import replace
from typing import Any

import psutil

from bench.results import ModelFacts, PointResult
from bench.runtimes.registry import get_runtime
from bench.worker import Emit, Job, child_main, point_identity

POLL_S = 0.2


class ProcessLauncher:
    def __init__(self, point_timeout_s: float, max_worker_memory_mb: float | None = None):
        self.point_timeout_s = point_timeout_s
        self.max_worker_memory_mb = max_worker_memory_mb

    def run(self, job: Job, emit: Emit) -> None:
        remaining, results = list(job.batches), []

        def keep(kind: str, payload: Any) -> None:
            if kind == "result":
                results.append(payload)
            emit(kind, payload)

        while remaining:
            # A new worker's ladder goes on from the points the last one measured.
            measured = [*job.ladder_measured, *filter(None, (r.ladder_point() for r in results))]
            finished = self._run_worker(replace(job, batches=remaining, ladder_measured=measured), keep)
            remaining = [b for b in remaining if b not in finished]

    def _run_worker(self, job: Job, emit: Emit) -> set[int]:
        """Run one worker; return the batches it settled (finished, or failed by a fault)."""
        ctx = mp.get_context("spawn")
        reader, writer = ctx.Pipe(duplex=False)
        process = ctx.Process(target=child_main, args=(job, writer, os.getpid()), daemon=True)
        settled: set[int] = set()
        current, started, fault = None, time.monotonic(), None
        try:
            with _start_guarded():
                process.start()
            writer.close()  # the worker holds the only writing end: its death reads as end of file
            while True:
                if not reader.poll(POLL_S):
                    fault = fault or self._worker_fault(process, current, started)
                    if fault and not reader.poll(0):
                        break
                    continue  # still working, or gone with messages (or end of file) left to read
                try:
                    kind, payload = reader.recv()
                except (EOFError, OSError):  # gone, possibly halfway through a message
                    process.join(timeout=5)
                    fault = fault or _exit_reason(process.exitcode)
                    break
                if kind == "start":
                    current, started = payload, time.monotonic()
                elif kind == "result":
                    emit("result", payload)
                    settled.add(payload.point.batch)
                    current = None
                elif kind == "log":
                    emit("log", payload)
                elif kind == "done":
                    return settled
            self._fail_unsettled(job, current, settled, fault, emit)
            return settled
        finally:
            _stop(process)
            reader.close()

    def _worker_fault(self, process, current: int | None, started: float) -> str | None:
        if not process.is_alive():
            return _exit_reason(process.exitcode)
        if current is not None and time.monotonic() - started > self.point_timeout_s:
            _stop(process)
            return f"timeout: point exceeded point_timeout_s = {self.point_timeout_s:g} s; worker killed"
        limit = self.max_worker_memory_mb
        if limit and _rss_mb(process.pid) > limit:
            _stop(process)
            return f"out of memory: worker exceeded --max-worker-memory {limit:g} MB; worker killed"
        return None

    def _fail_unsettled(self, job: Job, current: int | None, settled: set[int], fault: str, emit: Emit) -> None:
        """The point in progress takes the fault; a worker that died between points takes the rest
        of its job with it, rather than a new worker being started for them again and again."""
        batches = [current] if current is not None else [b for b in job.batches if b not in settled]
        for batch in batches:
            emit("result", _failed(job, batch, fault))
            settled.add(batch)


def _failed(job: Job, batch: int, reason: str) -> PointResult:
    point = point_identity(job, get_runtime(job.runtime), batch, available=False)
    return PointResult.failed(point, ModelFacts.of(job.model), reason)


def _exit_reason(code: int | None) -> str:
    if code is None:
        return "worker vanished"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = " (killed: out of memory?)" if name == "SIGKILL" else ""
        return f"worker died with {name}{hint}"
    return f"worker exited with status {code} before finishing the point"


def _rss_mb(pid: int) -> float:
    try:
        process = psutil.Process(pid)
        return sum(p.memory_info().rss for p in [process, *process.children(recursive=True)]) / 2**20
    except psutil.Error:
        return 0.0


def _stop(process) -> None:
    if process.pid is None:  # never started
        return
    if process.is_alive():
        process.kill()
    process.join(timeout=10)


@contextlib.contextmanager
def _start_guarded():
    """Start a worker so that no Ctrl-C cuts its start in half.

    SIGINT and SIGTERM wait until the worker holds its job: their Python handlers run in this
    (main) thread whichever thread the signal lands on, so the handlers are swapped for a recorder
    and the signals raised again afterwards. And the worker inherits SIGINT blocked, so a Ctrl-C
    to the process group during its imports leaves it alone (once running it ignores SIGINT:
    stopping it is the harness's job).
    """
    stops = (signal.SIGINT, signal.SIGTERM)
    swappable = threading.current_thread() is threading.main_thread() and None not in map(signal.getsignal, stops)
    if not swappable or not hasattr(signal, "pthread_sigmask"):  # not the main thread, or handlers set outside Python
        yield
        return
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()  # starting it later would unblock SIGINT under us
    held: list[int] = []
    handlers = {sig: signal.signal(sig, lambda signum, frame: held.append(signum))
                for sig in stops}
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # a SIGINT pending here reaches the recorder
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        for signum in dict.fromkeys(held):
            signal.raise_signal(signum)  # now to the real handler
