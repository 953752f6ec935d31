"""The sweep: hand each planned job (bench.plan) to a launcher (bench.launchers), store every
point at once.

Repeats run round after round; a point measured more than once is stored as one row
combined from its repeats (bench.store.combine_repeats).
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

from bench import env
from bench.launchers import make_launcher
from bench.results import OK, Environment, PointResult
from bench.plan import Plan, later_repeats
from bench.store import ResultStore, flatten
from bench.suite import Suite
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
        self._recorded: dict[tuple, list[dict[str, Any]]] = {}  # point -> a resumed file's repeats (Plan.recorded)
        self.launcher = make_launcher(options.inline, suite.point_timeout_s, options.max_worker_memory_mb)

    def run(self, plan_: Plan) -> None:
        """Every job once per repeat, round after round (A, B, C, then A, B, C again), so a slow
        drift of the machine spreads over every point instead of landing on one. Points a resumed
        file holds with fewer repeats get the ones they miss in the same rounds."""
        self._recorded = plan_.recorded
        for repeat in range(self.suite.repeats):
            self.repeat = repeat
            for job in self._jobs_for_repeat(plan_.jobs, plan_.topups):
                self.launcher.run(job, self._emit_for(job))

    def _jobs_for_repeat(self, jobs: list[Job], topups: list[Job]) -> list[Job]:
        """The first round measures every planned point; every round, the points whose first repeat
        is ok and that still miss repeats, as later repeats (plan.later_repeats: no checks, no ladder)."""
        later = []
        for job in (topups if self.repeat == 0 else jobs + topups):
            batches = [b for b in job.batches if self._misses_repeats(_series_key(job, b))]
            if batches:
                later.append(later_repeats(job, batches))
        return (jobs if self.repeat == 0 else []) + later

    def _misses_repeats(self, key: tuple) -> bool:
        statuses = [r["status"] for r in self._recorded.get(key, ())] + [r.status for r in self._series.get(key, ())]
        return bool(statuses) and statuses[0] == OK and len(statuses) < self.suite.repeats

    def _emit_for(self, job: Job):
        def emit(kind: str, payload: Any) -> None:
            if kind == "result":
                self._record(job, payload)
            elif kind == "log":
                self.on_log(payload)
        return emit

    def _record(self, job: Job, result: PointResult) -> None:
        result = result.recorded(self.environment())
        key = _series_key(job, result.point.batch)
        series = self._series.setdefault(key, [])
        series.append(result)
        recorded = self._recorded.get(key, ())
        try:
            if self.suite.repeats > 1:
                self.store.add_repeats(series, recorded)
            else:
                self.store.add(result)
        except OSError as exc:  # full disk, read-only folder: keep measuring, keep the rows in memory
            self.save_errors.append(f"{self.store.path}: {exc.strerror or exc}")
        self.on_row(flatten(result), len(recorded) + len(series) - 1)

    def environment(self) -> Environment:
        return Environment(run_id=self.run_id, suite=self.suite.name, machine=self.machine,
                           timestamp_utc=datetime.now(timezone.utc).isoformat(timespec="seconds"))


def _series_key(job: Job, batch: int) -> tuple:
    return (job.model.sha256, job.model.name, job.runtime, job.precision, job.input_format, job.options_variant,
            job.concurrency, batch)
