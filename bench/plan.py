"""Planning a run: the jobs and points a suite asks for, what a resumed file already holds
(previous points), and the later repeats of a point. Below the sweep, which runs the plan."""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from bench import ladder, store
from bench.domain import DEFAULT_INPUT_FORMAT, DEFAULT_OPTIONS_VARIANT
from bench.ladder import LadderRule
from bench.models import zoo
from bench.models.info import ModelInfo
from bench.runtimes.registry import check_names, get_runtime
from bench.suite import Checks, Suite
from bench.worker import Job, native_precision_problem, static_skip_reason


@dataclass
class Plan:
    jobs: list[Job]
    models: list[ModelInfo]
    # A resumed file's ok points with fewer repeats than the run asks: their repeats' rows as the
    # file keeps them (store.recorded_repeats), and jobs that measure only the repeats they miss.
    recorded: dict[tuple, list[dict[str, Any]]] = field(default_factory=dict)
    topups: list[Job] = field(default_factory=list)

    def use_images(self, images: tuple[str, ...]) -> None:
        """Real pictures for every job's INT8 calibration and parity frames."""
        self.jobs = [replace(job, images=images) for job in self.jobs]
        self.topups = [replace(job, images=images) for job in self.topups]

    @property
    def points(self) -> int:
        return sum(len(j.batches) for j in self.jobs)

    def measurements(self, repeats: int) -> int:
        """Points times repeats, and the repeats resumed points miss: what a progress bar counts
        (later repeats of a failed point are not run)."""
        return self.points * repeats + sum(max(0, repeats - len(rows)) for rows in self.recorded.values())


def plan(suite: Suite, previous: dict[tuple, dict[str, Any]] | None = None,
         on_model: Callable[[str], None] = lambda _: None) -> Plan:
    """Resolve models (building replicas) and list the jobs; `previous` (a resumed file's points,
    from previous_points) leaves out the points that need no measuring again and gives the
    adaptive ladder the points already measured."""
    check_names(suite.runtimes)
    previous = previous or {}
    availability = _Availability()
    models, jobs, topups, recorded = [], [], [], {}
    for ref in suite.models:
        on_model(ref.label)
        info = zoo.resolve(ref)
        models.append(info)
        for runtime_name in suite.runtimes:
            device = get_runtime(runtime_name).device
            for precision, input_format, (variant, options), concurrency in itertools.product(
                    suite.precisions_for(runtime_name), suite.inputs_for(ref), suite.option_variants(runtime_name),
                    suite.concurrency):
                series = (info.sha256, info.name, runtime_name, precision, input_format, variant, concurrency)
                before = {b: previous.get((*series, b)) for b in suite.batches_for(device)}
                batches = [b for b, row in before.items()
                           if _to_measure(row, availability, runtime_name, info, precision, b, concurrency,
                                          suite.ladder)]
                job = Job(model=info, runtime=runtime_name, precision=precision,
                          batches=batches, settings=suite.measure, checks=suite.checks,
                          options=options, options_variant=variant,
                          parity_gates=suite.parity_gates, input_format=input_format,
                          cache_dir=str(zoo.cache_dir()), concurrency=concurrency,
                          ladder=suite.ladder,
                          ladder_measured=ladder.points_from_rows(r for r in before.values() if r))
                if batches:
                    jobs.append(job)
                kept = {b: store.recorded_repeats(row) for b, row in before.items() if row and row.get("status") == "ok"}
                short = {b: rows for b, rows in kept.items() if len(rows) < suite.repeats}
                if short:
                    recorded.update({(*series, b): rows for b, rows in short.items()})
                    topups.append(later_repeats(job, list(short)))
    return Plan(jobs, models, recorded, topups)


def later_repeats(job: Job, batches: list[int]) -> Job:
    """`job` as its repeats after the first measure `batches`: without the checks (a fresh session of
    the same artifact computes the same outputs, and on big models the checks cost more than the
    timing; the point keeps its first repeat's) and without the ladder (the first repeat decided it)."""
    return replace(job, batches=batches, checks=Checks(contamination=False, parity=False), ladder=None)


def previous_points(rows: list[dict[str, Any]]) -> dict[tuple, dict[str, Any]]:
    """Every point a results file holds, by its key (the newest row of a point wins)."""
    return {(r["model_sha256"], r["model"], r["runtime"], r["precision"], r.get("input_format") or DEFAULT_INPUT_FORMAT,
             r.get("options_variant") or DEFAULT_OPTIONS_VARIANT,
             r.get("concurrency_requested") or r.get("concurrency") or 1, r["batch"]): r
            for r in rows}


class _Availability:
    """Runtime availability, asked once per runtime while planning."""

    def __init__(self):
        self._seen: dict[str, bool] = {}

    def __call__(self, runtime: str) -> bool:
        if runtime not in self._seen:
            try:
                self._seen[runtime] = get_runtime(runtime).available()[0]
            except Exception:  # a broken install: the worker will say why
                self._seen[runtime] = False
        return self._seen[runtime]


def _to_measure(row: dict[str, Any] | None, available: _Availability, runtime: str, info, precision: str,
                batch: int, concurrency: int, rule: LadderRule) -> bool:
    """Missing and failed points are measured; ok ones never again; a skipped one only when it
    would now be measured (its runtime became available and nothing else skips it; a ladder
    skip only under --full-ladder, else the ladder's decision stands)."""
    status = row.get("status") if row else None
    if status in (None, "failed"):
        return True
    if status != "skipped" or not available(runtime):
        return False
    if ladder.is_ladder_skip(row.get("reason")):
        return not rule.adaptive
    found = get_runtime(runtime)
    return not (static_skip_reason(found, info, precision, batch, concurrency)
                or native_precision_problem(found, precision))
