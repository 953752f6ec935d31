"""Launchers: how a job's points are run, in this process (inline) or in a worker process (process).

One interface: `run(job, emit)` measures every batch of the job and emits ("result", PointResult)
for each, a failed one where a fault cost a point, and ("log", text) for tracebacks. The
sweep records what is emitted and never knows which launcher ran it.
"""
from __future__ import annotations

from typing import Protocol

from bench.launchers.inline import InlineLauncher
from bench.launchers.process import ProcessLauncher
from bench.worker import Emit, Job


class Launcher(Protocol):
    def run(self, job: Job, emit: Emit) -> None:
        """Settle every batch of `job`: one emitted result each."""


def make_launcher(inline: bool, point_timeout_s: float, max_worker_memory_mb: float | None = None) -> Launcher:
    if inline:
        return InlineLauncher()
    return ProcessLauncher(point_timeout_s, max_worker_memory_mb)
