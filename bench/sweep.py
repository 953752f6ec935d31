"""The sweep: plan jobs from a suite, run each in a worker process, store every row at once.

A worker that dies (signal, abort, time limit, memory limit) costs only the point it
was measuring: that point becomes a failed row and a new worker takes the rest.
"""
from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import os
import signal
import threading
import time
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
import psutil

from bench import env
from bench.domain import DEFAULT_INPUT_FORMAT
from bench.errors import UserError
from bench.measure.stats import median_interval
from bench.models import zoo
from bench.models.info import ModelInfo
from bench.runtimes.registry import check_names, get_runtime
from bench.store import ResultStore
from bench.suite import Checks, Suite
from bench.worker import Job, child_main, job_to_dict, run_job, static_skip_reason

POLL_S = 0.2


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


def plan(suite: Suite, previous: dict[tuple, str] | None = None,
         on_model: Callable[[str], None] = lambda _: None) -> Plan:
    """Resolve models (building replicas) and list the jobs; `previous` (a resumed file's point
    statuses, from previous_points) leaves out the points that need no measuring again."""
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
            for precision in suite.precisions_for(runtime_name):
                for input_format in suite.inputs_for(ref):
                    batches = [b for b in suite.batches_for(device)
                               if _to_measure(previous.get((info.sha256, info.name, runtime_name, precision,
                                                            input_format, b)),
                                              availability, runtime_name, info, precision, b)]
                    if batches:
                        jobs.append(Job(model=info.to_dict(), runtime=runtime_name, precision=precision,
                                        batches=batches, settings=suite.measure, checks=suite.checks,
                                        options=dict(suite.runtime_options.get(runtime_name, {})),
                                        parity_gates=suite.parity_gates, input_format=input_format,
                                        cache_dir=str(zoo.cache_dir())))
    return Plan(jobs, models)


def previous_points(rows: list[dict[str, Any]]) -> dict[tuple, str]:
    """The status of every point a results file holds (the newest row of a point wins)."""
    return {(r["model_sha256"], r["model"], r["runtime"], r["precision"], r.get("input_format") or DEFAULT_INPUT_FORMAT,
             r["batch"]): r.get("status") for r in rows}


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


def _to_measure(status: str | None, available: _Availability, runtime: str, info, precision: str, batch: int) -> bool:
    """Missing and failed points are measured; ok ones never again; a skipped one only when it
    would now be measured (its runtime became available and nothing else skips it)."""
    if status in (None, "failed"):
        return True
    if status != "skipped" or not available(runtime):
        return False
    return not static_skip_reason(get_runtime(runtime), info, precision, batch)


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

    def run(self, plan_: Plan) -> None:
        """Every job once per repeat, round after round (A, B, C, then A, B, C again), so a slow
        drift of the machine spreads over every point instead of landing on one."""
        for repeat in range(self.suite.repeats):
            self.repeat = repeat
            for job in self._jobs_for_repeat(plan_.jobs):
                if self.options.inline:
                    run_job(job, self._inline_emit(job))
                else:
                    self._run_isolated(job)

    def _jobs_for_repeat(self, jobs: list[Job]) -> list[Job]:
        """The first repeat measures every point; later ones the points it measured, without the
        checks: a fresh session of the same artifact computes the same outputs, and on big models
        the checks cost more than the timing. The point keeps the first repeat's check results."""
        if self.repeat == 0:
            return jobs
        later = []
        for job in jobs:
            batches = [b for b in job.batches if self._series.get(_series_key(job, b), [{}])[0].get("status") == "ok"]
            if batches:
                later.append(replace(job, batches=batches, checks=Checks(contamination=False, parity=False)))
        return later

    def _inline_emit(self, job: Job):
        def emit(kind: str, payload: Any) -> None:
            if kind == "row":
                self._record(job, payload)
            elif kind == "log":
                self.on_log(payload)
        return emit

    def _run_isolated(self, job: Job) -> None:
        remaining = list(job.batches)
        while remaining:
            finished = self._run_worker(replace(job, batches=remaining))
            remaining = [b for b in remaining if b not in finished]

    def _run_worker(self, job: Job) -> set[int]:
        """Run one worker; return the batches it settled (finished, or failed by a fault)."""
        ctx = mp.get_context("spawn")
        reader, writer = ctx.Pipe(duplex=False)
        process = ctx.Process(target=child_main, args=(job_to_dict(job), writer, os.getpid()), daemon=True)
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
                elif kind == "row":
                    self._record(job, payload)
                    settled.add(payload["batch"])
                    current = None
                elif kind == "log":
                    self.on_log(payload)
                elif kind == "done":
                    return settled
            self._fail_unsettled(job, current, settled, fault)
            return settled
        finally:
            _stop(process)
            reader.close()

    def _worker_fault(self, process, current: int | None, started: float) -> str | None:
        if not process.is_alive():
            return _exit_reason(process.exitcode)
        if current is not None and time.monotonic() - started > self.suite.point_timeout_s:
            _stop(process)
            return f"timeout: point exceeded point_timeout_s = {self.suite.point_timeout_s:g} s; worker killed"
        limit = self.options.max_worker_memory_mb
        if limit and _rss_mb(process.pid) > limit:
            _stop(process)
            return f"out of memory: worker exceeded --max-worker-memory {limit:g} MB; worker killed"
        return None

    def _fail_unsettled(self, job: Job, current: int | None, settled: set[int], fault: str) -> None:
        """The point in progress takes the fault; a worker that died between points takes the rest
        of its job with it, rather than a new worker being started for them again and again."""
        batches = [current] if current is not None else [b for b in job.batches if b not in settled]
        for batch in batches:
            self._record(job, self._failed(job, batch, fault))
            settled.add(batch)

    def _failed(self, job: Job, batch: int, reason: str) -> dict[str, Any]:
        return {"batch": batch, "runtime": job.runtime, "precision": job.precision, "input_format": job.input_format,
                "device": get_runtime(job.runtime).device, "status": "failed", "reason": reason}

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
        }


def _series_key(job: Job, batch: int) -> tuple:
    return job.model["sha256"], job.model["name"], job.runtime, job.precision, job.input_format, batch


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


def check_output_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{path}: cannot create the output folder ({exc.strerror}); choose a writable --out") from None
    if not os.access(path, os.W_OK):
        raise UserError(f"{path}: output folder is not writable; choose a writable --out or fix its permissions")
