"""The sweep: hand each planned job (bench.runs.plan) to a launcher (bench.launchers), store every
point at once.

Repeats run round after round; a point measured more than once is stored as one row
combined from its repeats (bench.store.combine_repeats).
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any, Callable

from bench import env
from bench.launchers import make_launcher
from bench.results import OK, Environment, PointResult
from bench.runs import Plan
from bench.store import ResultStore, flatten
from bench.suite import Checks, Suite
from bench.worker import Job


@dataclass
class SweepOptions:
    inline: bool = False
    max_worker_memory_mb: float | None = None


class Sweep:
    def __init__(self, suite: Suite, store: ResultStore, options: SweepOptions,
                 on_row: Callable[[dict, int], None] = lambda row, repeat: None,
                 on_log: Callable[[str], None] = lambda _: None):
        self.suite = suite
        self.store = store
        self.options = options
        self.on_row = on_row  # each measured repeat's own row and its repeat index (0-based)
        self.on_log = on_log
        self.run_id = uuid.uuid4().hex[:12]
        self.machine = env.fingerprint()
        self.save_errors: list[str] = []
        self.repeat = 0
        self._series: dict[tuple, list[PointResult]] = {}  # point -> its repeats, in order
        self.launcher = make_launcher(options.inline, suite.point_timeout_s, options.max_worker_memory_mb)

    def run(self, plan_: Plan) -> None:
        """Every job once per repeat, round after round (A, B, C, then A, B, C again), so a slow
        drift of the machine spreads over every point instead of landing on one."""
        for repeat in range(self.suite.repeats):
            self.repeat = repeat
            for job in self._jobs_for_repeat(plan_.jobs):
                self.launcher.run(job, self._emit_for(job))

    def _jobs_for_repeat(self, jobs: list[Job]) -> list[Job]:
        """The first repeat measures every point; later ones the points it measured, without the
        checks: a fresh session of the same artifact computes the same outputs, and on big models
        the checks cost more than the timing. The point keeps the first repeat's check results."""
        if self.repeat == 0:
            return jobs
        later = []
        # The ladder was decided on the first repeat; later ones measure what it measured, all of it.
        for job in jobs:
            batches = [b for b in job.batches if (series := self._series.get(_series_key(job, b))) and series[0].status == OK]
            if batches:
                later.append(replace(job, batches=batches, checks=Checks(contamination=False, parity=False), ladder=None))
        return later

    def _emit_for(self, job: Job):
        def emit(kind: str, payload: Any) -> None:
            if kind == "result":
                self._record(job, payload)
            elif kind == "log":
                self.on_log(payload)
        return emit

    def _record(self, job: Job, result: PointResult) -> None:
        result = result.recorded(self.environment())
        try:
            if self.suite.repeats > 1:
                series = self._series.setdefault(_series_key(job, result.point.batch), [])
                series.append(result)
                self.store.add_repeats(series)
            else:
                self.store.add(result)
        except OSError as exc:  # full disk, read-only folder: keep measuring, keep the rows in memory
            self.save_errors.append(f"{self.store.path}: {exc.strerror or exc}")
        self.on_row(flatten(result), self.repeat)

    def environment(self) -> Environment:
        return Environment(run_id=self.run_id, suite=self.suite.name, machine=self.machine,
                           timestamp_utc=datetime.now(timezone.utc).isoformat(timespec="seconds"))


def _series_key(job: Job, batch: int) -> tuple:
    return (job.model.sha256, job.model.name, job.runtime, job.precision, job.input_format, job.options_variant,
            job.concurrency, batch)
