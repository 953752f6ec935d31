"""The sweep: plan jobs from a suite, run each in a worker process, store every row at once.

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
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import psutil

from bench import env
from bench.errors import UserError
from bench.models import zoo
from bench.models.info import ModelInfo
from bench.runtimes.registry import check_names, get_runtime
from bench.store import ResultStore
from bench.suite import Suite
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
                batches = [b for b in suite.batches_for(device)
                           if _to_measure(previous.get((info.sha256, info.name, runtime_name, precision, b)),
                                          availability, runtime_name, info, precision, b)]
                if batches:
                    jobs.append(Job(model=info.to_dict(), runtime=runtime_name, precision=precision,
                                    batches=batches, settings=suite.measure, checks=suite.checks,
                                    options=dict(suite.runtime_options.get(runtime_name, {})),
                                    parity_gates=suite.parity_gates,
                                    cache_dir=str(zoo.cache_dir())))
    return Plan(jobs, models)


def previous_points(rows: list[dict[str, Any]]) -> dict[tuple, str]:
    """The status of every point a results file holds (the newest row of a point wins)."""
    return {(r["model_sha256"], r["model"], r["runtime"], r["precision"], r["batch"]): r.get("status") for r in rows}


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
                 on_row: Callable[[dict], None] = lambda _: None, on_log: Callable[[str], None] = lambda _: None):
        self.suite = suite
        self.store = store
        self.options = options
        self.on_row = on_row
        self.on_log = on_log
        self.run_id = uuid.uuid4().hex[:12]
        self.machine = env.fingerprint()
        self.save_errors: list[str] = []

    def run(self, plan_: Plan) -> None:
        for job in plan_.jobs:
            if self.options.inline:
                run_job(job, self._inline_emit(job))
            else:
                self._run_isolated(job)

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
        return {"batch": batch, "runtime": job.runtime, "precision": job.precision,
                "device": get_runtime(job.runtime).device, "status": "failed", "reason": reason}

    def _record(self, job: Job, point: dict[str, Any]) -> None:
        row = {**self.base_row(job.info), **point}
        try:
            self.store.add(row)
        except OSError as exc:  # full disk, read-only folder: keep measuring, keep the rows in memory
            self.save_errors.append(f"{self.store.path}: {exc.strerror or exc}")
        self.on_row(row)

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
