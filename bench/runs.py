"""A run's lifecycle: open (resume or a new results file, locked), plan, measure, settle, upload.

The CLI parses arguments and prints; everything that decides what happens to the results
file lives here: the lock, the checks before resuming (checksum, same machine, writable),
the retry of unsaved points, the copy to a URI and the exit status (docs/reliability.md).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from bench.errors import UserError
from bench.exits import EXIT_INTERRUPTED, EXIT_NOT_SAVED

if TYPE_CHECKING:
    from bench.ladder import LadderRule
    from bench.models.info import ModelInfo
    from bench.suite import Suite
    from bench.worker import Job



@dataclass
class RunRequest:
    """What `facebench run` was asked, beyond the suite."""

    out: str | None = None
    resume: str | None = None
    images: str | None = None
    inline: bool = False
    max_worker_memory_mb: float | None = None


@dataclass
class Run:
    results: Any = None  # bench.store.ResultStore, once the file is chosen
    runner: Any = None  # bench.sweep.Sweep, once measuring starts
    log_path: Path | None = None  # tracebacks of failed points, when there were any


@dataclass
class Settled:
    """What is on disk once measuring stopped."""

    path: str
    saved: int
    pending: int  # measured but not written
    errors: list[str] = field(default_factory=list)


def open_run(suite, request: RunRequest, run: Run, on_status: Callable[[str], None] = lambda _: None):
    """Resume or open the results file, plan (validating every model) and make the sweep; returns the plan.

    Fills `run` as it goes, so whatever was opened is released even if a later step fails.
    """
    from bench import sweep

    images = image_paths(request.images) if request.images else ()
    if request.resume:
        run.results = resumed_store(request.resume)  # before planning: the plan leaves out what it holds
    previous = previous_points(run.results.rows) if run.results else {}
    planned = plan(suite, previous, on_model=lambda m: on_status(f"preparing {m}"))
    planned.use_images(images)
    if run.results is None:
        run.results = new_results_store(request.out, suite.name)
    run.runner = sweep.Sweep(suite, run.results, sweep.SweepOptions(inline=request.inline,
                                                                     max_worker_memory_mb=request.max_worker_memory_mb),
                             on_log=traceback_log(run))
    return planned


def traceback_log(run: Run):
    """Tracebacks of failed points go to FILE.log beside the results (the row keeps one line)."""
    def write(text: str) -> None:
        path = Path(f"{run.results.path}.log")
        try:
            with path.open("a") as handle:
                handle.write(text.rstrip() + "\n\n")
            run.log_path = path
        except OSError:
            pass  # the log is a convenience; the failed row already says what went wrong
    return write


def image_paths(folder: str) -> tuple[str, ...]:
    from bench.models.precision import images_in_folder

    if not Path(folder).is_dir():
        raise UserError(f"--images {folder}: not a folder; give a folder of .jpg/.png pictures")
    return tuple(str(p) for p in images_in_folder(folder))


def settle(run: Run) -> Settled | None:
    """One last try at writing unsaved points (the disk may have room again); None if no file was opened."""
    results = run.results
    if results is None:
        return None
    errors = list(run.runner.save_errors) if run.runner else []
    if results.pending:
        try:
            results.flush()
        except OSError as exc:
            errors.append(f"{results.path}: {exc.strerror or exc}")
    return Settled(path=str(results.path), saved=results.saved, pending=results.pending, errors=errors)


def exit_code(settled: Settled | None, interrupted: bool) -> int:
    if settled is None or interrupted:
        return EXIT_INTERRUPTED
    return EXIT_NOT_SAVED if settled.pending else 0


def upload(out_arg: str | None, run: Run) -> str | None:
    """--out URI: the local file (already complete on disk) is copied to the bucket or remote folder; the target."""
    from bench import store

    if not (out_arg and store.is_uri(out_arg) and run.results and run.results.saved):
        return None
    target = out_arg if out_arg.endswith(".parquet") else store.join_location(out_arg, Path(run.results.path).name)
    store.ensure_parent(target)
    store.write_bytes(target, Path(run.results.path).read_bytes())
    return target


# --------------------------------------------------------------------------- the plan


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
    from bench import ladder, store
    from bench.models import zoo
    from bench.runtimes.registry import check_names, get_runtime
    from bench.worker import Job

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
    from bench.suite import Checks

    return replace(job, batches=batches, checks=Checks(contamination=False, parity=False), ladder=None)


def previous_points(rows: list[dict[str, Any]]) -> dict[tuple, dict[str, Any]]:
    """Every point a results file holds, by its key (the newest row of a point wins)."""
    from bench.domain import DEFAULT_INPUT_FORMAT, DEFAULT_OPTIONS_VARIANT

    return {(r["model_sha256"], r["model"], r["runtime"], r["precision"], r.get("input_format") or DEFAULT_INPUT_FORMAT,
             r.get("options_variant") or DEFAULT_OPTIONS_VARIANT,
             r.get("concurrency_requested") or r.get("concurrency") or 1, r["batch"]): r
            for r in rows}


class _Availability:
    """Runtime availability, asked once per runtime while planning."""

    def __init__(self):
        self._seen: dict[str, bool] = {}

    def __call__(self, runtime: str) -> bool:
        from bench.runtimes.registry import get_runtime

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
    from bench import ladder
    from bench.runtimes.registry import get_runtime
    from bench.worker import static_skip_reason

    status = row.get("status") if row else None
    if status in (None, "failed"):
        return True
    if status != "skipped" or not available(runtime):
        return False
    if ladder.is_ladder_skip(row.get("reason")):
        return not rule.adaptive
    return not static_skip_reason(get_runtime(runtime), info, precision, batch, concurrency)


# --------------------------------------------------------------------------- the results file


def resumed_store(path: str):
    """The file to continue: locked for this run, verified, and writable (else UserError)."""
    from bench import store

    store.read_table(path)  # not there, or not a results file: say so before anything else
    results = store.ResultStore(path)
    writable(path, results.claim)
    try:
        table, check = store.read_table(path)  # again, under the lock: the rows to continue from
        if check.checksum_ok is False:
            raise UserError(f"{check.note}; refusing to resume it: restore the file or start a new run")
        results.rows = table.to_pylist()
        same_machine(path, results.rows)
        writable(path, results.flush)  # fails now, not after the first point, if it cannot be written
    except BaseException:
        results.release()
        raise
    return results


def same_machine(path: str, rows: list[dict]) -> None:
    """A results file holds one machine's points: resuming another machine's file would mix them."""
    from bench import env

    theirs = {r.get("machine_id") for r in rows if r.get("machine_id")}
    here = env.fingerprint()
    if theirs and here["machine_id"] not in theirs:
        other = next(r for r in rows if r.get("machine_id"))
        hardware = other.get("gpu_name") or other.get("cpu_model") or "unknown hardware"
        raise UserError(f"{path} was measured on another machine ({other.get('host')}, {hardware}); resuming it here "
                        "would mix two machines in one file: start a new run with --out and compare the two")


def new_results_store(out_arg: str | None, suite_name: str):
    """A fresh results file, locked for this run: --out FILE (replaced if it exists), or a new
    name in --out FOLDER (results/ by default, and for a URI, which gets a copy at the end)."""
    from bench import store

    local = out_arg and not store.is_uri(out_arg)
    out = Path(out_arg) if local else Path("results")
    if out.suffix != ".parquet":
        check_output_dir(out)
        results = store.ResultStore(writable(out, lambda: store.reserve_results_path(out, suite_name)))
        writable(out, results.claim)
        return results
    check_output_dir(out.parent)
    results = store.ResultStore(out)
    writable(out, results.claim)  # before touching the file: another run may be writing it
    try:
        writable(out, results.flush)  # an empty file now, so a run stopped early leaves no stale results
    except BaseException:
        results.release()
        raise
    return results


def writable(where, action):
    """Run `action`; an OSError (read-only folder, full disk) becomes a one-line UserError."""
    try:
        return action()
    except OSError as exc:
        raise UserError(f"{where}: cannot write results ({exc.strerror or exc}); choose a writable --out") from None


def check_output_dir(path: Path) -> None:
    import os

    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{path}: cannot create the output folder ({exc.strerror}); choose a writable --out") from None
    if not os.access(path, os.W_OK):
        raise UserError(f"{path}: output folder is not writable; choose a writable --out or fix its permissions")
