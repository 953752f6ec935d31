"""The inline launcher: the job runs in this process (debugging; a crash here ends the run)."""
from __future__ import annotations

from typing import Any

from bench.worker import Emit, Job, run_job

PASSED_ON = ("result", "log")  # the worker's "start" / "done" only matter to a process monitor


class InlineLauncher:
    def run(self, job: Job, emit: Emit) -> None:
        def forward(kind: str, payload: Any) -> None:
            if kind in PASSED_ON:
                emit(kind, payload)

        run_job(job, forward)
