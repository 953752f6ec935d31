"""The sweep: plan jobs from a suite, hand each to a launcher (bench.launchers), store every row at once.

Repeats run round after round; a point measured more than once is stored as one row
combined from its repeats.
"""
from __future__ import annotations

import itertools
import json
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any, Callable

import numpy as np
from bench import env, ladder
from bench.domain import DEFAULT_INPUT_FORMAT, DEFAULT_OPTIONS_VARIANT
from bench.measure.stats import median_interval
from bench.models import zoo
from bench.models.info import ModelInfo
from bench.runtimes.registry import check_names, get_runtime
from bench.store import ResultStore
from bench.suite import Checks, Suite
from bench.launchers import make_launcher
from bench.worker import Job, static_skip_reason


@dataclass
class SweepOptions:
    inline: bool = False
    max_worker_memory_mb: float | None = None


@dataclass
class Plan:
    jobs: list[Job]
    models: list[ModelInfo]

    def use_images(self, images: tuple[str, ...]) -> None:
        """Real pictures for every job's INT8 calibration and parity frames."""
        self.jobs = [replace(job, images=images) for job in self.jobs]

    @property
    def points(self) -> int:
        return sum(len(j.batches) for j in self.jobs)

    def measurements(self, repeats: int) -> int:
        """Points times repeats: what a progress bar counts (later repeats of a failed point are not run)."""
        return self.points * repeats


def plan(suite: Suite, previous: dict[tuple, dict[str, Any]] | None = None,
         on_model: Callable[[str], None] = lambda _: None) -> Plan:
    """Resolve models (building replicas) and list the jobs; `previous` (a resumed file's points,
    from previous_points) leaves out the points that need no measuring again and gives the
    adaptive ladder the points already measured."""
    check_names(suite.runtimes)
    previous = previous or {}
    availability = _Availability()
    models, jobs = [], []
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
                if batches:
                    jobs.append(Job(model=info.to_dict(), runtime=runtime_name, precision=precision,
                                    batches=batches, settings=suite.measure, checks=suite.checks,
                                    options=options, options_variant=variant,
                                    parity_gates=suite.parity_gates, input_format=input_format,
                                    cache_dir=str(zoo.cache_dir()), concurrency=concurrency,
                                    ladder=suite.ladder,
                                    ladder_measured=ladder.points_from_rows(r for r in before.values() if r)))
    return Plan(jobs, models)


def previous_points(rows: list[dict[str, Any]]) -> dict[tuple, dict[str, Any]]:
    """Every point a results file holds, by its key (the newest row of a point wins)."""
    return {(r["model_sha256"], r["model"], r["runtime"], r["precision"], r.get("input_format") or DEFAULT_INPUT_FORMAT,
             r.get("options_variant") or DEFAULT_OPTIONS_VARIANT, r.get("concurrency") or 1, r["batch"]): r
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
                batch: int, concurrency: int, rule: ladder.LadderRule) -> bool:
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
    return not static_skip_reason(get_runtime(runtime), info, precision, batch, concurrency)


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
        self._series: dict[tuple, list[dict[str, Any]]] = {}  # point -> its repeats' rows, in order
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
            batches = [b for b in job.batches if self._series.get(_series_key(job, b), [{}])[0].get("status") == "ok"]
            if batches:
                later.append(replace(job, batches=batches, checks=Checks(contamination=False, parity=False), ladder=None))
        return later

    def _emit_for(self, job: Job):
        def emit(kind: str, payload: Any) -> None:
            if kind == "row":
                self._record(job, payload)
            elif kind == "log":
                self.on_log(payload)
        return emit

    def _record(self, job: Job, point: dict[str, Any]) -> None:
        row = {**self.base_row(job.info), **point}
        stored, folded = row, False
        if self.suite.repeats > 1:
            series = self._series.setdefault(_series_key(job, row["batch"]), [])
            series.append(row)
            stored, folded = combine_repeats(series), len(series) > 1
        try:
            self.store.add(stored, replaces_ok=folded)
        except OSError as exc:  # full disk, read-only folder: keep measuring, keep the rows in memory
            self.save_errors.append(f"{self.store.path}: {exc.strerror or exc}")
        self.on_row(row, self.repeat)

    def base_row(self, info: ModelInfo) -> dict[str, Any]:
        return {
            "run_id": self.run_id, "suite": self.suite.name, "kind": "model",
            "timestamp_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            **self.machine,
            "model": info.name, "model_source": info.source, "model_path": info.path,
            "model_sha256": info.sha256, "family": info.family, "input_name": info.input_name,
            "input_shape": ",".join(str(d) for d in info.input_dims), "input_size": info.input_hw[0],
            "params": info.params, "macs_per_frame": info.macs_per_frame, "flops_per_frame": info.flops_per_frame,
            "macs_note": info.macs_note,
        }


def _series_key(job: Job, batch: int) -> tuple:
    return (job.model["sha256"], job.model["name"], job.runtime, job.precision, job.input_format, job.options_variant,
            job.concurrency, batch)


# Figures of one repeat that the point's row gives as the median over its repeats.
REPEAT_FIGURES = ("fps", "ms_per_frame", "lat_mean_ms", "lat_p50_ms", "lat_p90_ms", "lat_p95_ms", "lat_p99_ms",
                  "gflops_achieved", "pct_gemm_peak", "pct_conv_peak", "fps_compute", "gpu_power_mean_w")
# What each repeat keeps in repeats_json beside those.
REPEAT_KEPT = ("status", "reason", "timestamp_utc", "fps", "ms_per_frame", "lat_p50_ms", "lat_p99_ms",
               "window_spread_pct", "verdict", "fps_compute", "gpu_power_mean_w")
CHECK_PREFIXES = ("contamination_", "parity_")


def combine_repeats(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One point's row from its repeats' rows (in the order measured).

    Its figures are the medians over the repeats that finished, with a bootstrap interval of the
    median frames/s; every other column comes from the repeat nearest the median (so frames,
    iterations and wall time belong together), the checks from the first repeat (the only one
    that runs them). Each repeat's own figures stay in repeats_json, failed repeats included.
    """
    ok = [r for r in rows if r["status"] == "ok"]
    if not ok:
        return rows[0]
    fps = [r["fps"] for r in ok]
    interval = median_interval(fps)
    combined = dict(min(ok, key=lambda r: abs(r["fps"] - interval.estimate)))
    combined.update({k: v for k, v in rows[0].items() if k.startswith(CHECK_PREFIXES)})
    for column in REPEAT_FIGURES:
        values = [r[column] for r in ok if r.get(column) is not None]
        if values:
            combined[column] = float(np.median(values))
    valid = sum(r.get("verdict") == "VALID" for r in ok)
    combined["verdict"] = "VALID" if 2 * valid > len(ok) else "UNSTABLE"  # most repeats settled
    combined["timestamp_utc"] = rows[-1]["timestamp_utc"]
    combined["repeats"] = len(ok)
    if len(ok) >= 2:
        combined["fps_ci_low"], combined["fps_ci_high"] = interval.low, interval.high
    combined["repeats_json"] = json.dumps(
        [{"repeat": i, **{k: r.get(k) for k in REPEAT_KEPT if r.get(k) is not None}} for i, r in enumerate(rows)])
    return combined
