"""A run's lifecycle: open (resume or a new results file, locked), plan, measure, settle, upload.

The CLI parses arguments and prints; everything that decides what happens to the results
file lives here: the lock, the checks before resuming (checksum, same machine, writable),
the retry of unsaved points, the copy to a URI and the exit status (docs/reliability.md).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from bench import env, store, sweep
from bench.errors import UserError
from bench.exits import EXIT_INTERRUPTED, EXIT_NOT_SAVED
from bench.models.precision import images_in_folder
from bench.plan import plan, previous_points
from bench.report.model import parse_budget
from bench.suite import Suite, load_suite, override, parse_int_list, parse_model_arg



@dataclass
class RunRequest:
    """What `facebench run` was asked, beyond the suite."""

    out: str | None = None
    resume: str | None = None
    images: str | None = None
    inline: bool = False
    max_worker_memory_mb: float | None = None
    machine: str | None = None  # the fleet's name for this machine (the `machine` column)
    fleet_mixed: str | None = None  # how this machine differs from the fleet's driver, under --allow-mixed


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


def suite_for_run(suite_path: str, options) -> Suite:
    """The suite file with the `facebench run` options that override it (--models, --batches, ...),
    checked: a bad option or suite is one line (UserError). `options`: the parsed arguments."""
    parse_budget(options.latency_budget)  # named as the user spelt it, before the suite's checks
    if options.max_worker_memory is not None and not options.max_worker_memory > 0:  # NaN included
        raise UserError(f"--max-worker-memory {options.max_worker_memory:g}: give a positive number of MB, e.g. 4000 "
                        "(leave it out for no limit)")
    return override(
        load_suite(suite_path),
        models=[parse_model_arg(m) for m in options.models.split(",")] if options.models else None,
        runtimes=[r.strip() for r in options.runtimes.split(",")] if options.runtimes else None,
        precisions=[p.strip() for p in options.precisions.split(",")] if options.precisions else None,
        batches=parse_int_list(options.batches, "batches") if options.batches else None,
        repeats=options.repeats,
        inputs=[f.strip() for f in options.input.split(",")] if options.input else None,
        concurrency=parse_int_list(options.concurrency, "concurrency") if options.concurrency else None,
        full_ladder=options.full_ladder,
        latency_budget=options.latency_budget,
    )


def open_run(suite, request: RunRequest, run: Run, on_status: Callable[[str], None] = lambda _: None):
    """Resume or open the results file, plan (validating every model) and make the sweep; returns the plan.

    Fills `run` as it goes, so whatever was opened is released even if a later step fails.
    """
    images = image_paths(request.images) if request.images else ()
    if request.resume:
        run.results = resumed_store(request.resume, request.machine)  # before planning: the plan leaves out what it holds
    previous = previous_points(run.results.rows) if run.results else {}
    planned = plan(suite, previous, on_model=lambda m: on_status(f"preparing {m}"))
    planned.use_images(images)
    if run.results is None:
        run.results = new_results_store(request.out, suite.name)
    run.results.mirror = upload_target(request.out, run.results)
    run.runner = sweep.Sweep(suite, run.results, sweep.SweepOptions(inline=request.inline,
                                                                     max_worker_memory_mb=request.max_worker_memory_mb),
                             on_log=traceback_log(run))
    run.runner.machine = {**run.runner.machine, "machine": request.machine, "fleet_mixed": request.fleet_mixed}
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


def upload_target(out_arg: str | None, results) -> str | None:
    """--out URI: where the local results file is copied (after every point): the URI, or the file's name in it."""
    if not (out_arg and store.is_uri(out_arg)):
        return None
    named = store.location_name(out_arg).endswith(".parquet")  # the URI's path: a query may follow it
    target = out_arg if named else store.join_location(out_arg, Path(results.path).name)
    store.ensure_parent(target)  # an unwritable bucket is one line now, before any point
    return target


def upload(out_arg: str | None, run: Run) -> str | None:
    """--out URI: the local file (already complete on disk) is copied to the bucket or remote folder once
    more, in case the copy after the last point failed; the target."""
    if not (out_arg and store.is_uri(out_arg) and run.results and run.results.saved):
        return None
    target = upload_target(out_arg, run.results)
    if run.results.mirror == target and not run.results.pending:
        return target  # copied after the last point already
    store.write_bytes(target, Path(run.results.path).read_bytes())
    return target


# --------------------------------------------------------------------------- the results file


def resumed_store(path: str, machine: str | None = None):
    """The file to continue: locked for this run, verified, and writable (else UserError).
    `machine`: the fleet's name for this machine, which a replacement node of the same name keeps."""
    store.read_table(path)  # not there, or not a results file: say so before anything else
    results = store.ResultStore(path)
    writable(path, results.claim)
    try:
        table, check = store.read_table(path)  # again, under the lock: the rows to continue from
        if check.checksum_ok is False:
            raise UserError(f"{check.note}; refusing to resume it: restore the file or start a new run")
        results.rows = table.to_pylist()
        same_machine(path, results.rows, machine)
        writable(path, results.flush)  # fails now, not after the first point, if it cannot be written
    except BaseException:
        results.release()
        raise
    return results


def same_machine(path: str, rows: list[dict], machine: str | None = None) -> None:
    """A results file holds one machine's points: resuming another machine's file would mix them.
    In a fleet the machine's name is its identity (a replacement node takes over a lost one's name)."""
    names = {r.get("machine") for r in rows if r.get("machine")}
    if machine and names:
        if names != {machine}:
            raise UserError(f"{path} holds machine {', '.join(sorted(names))}, not {machine}; resume it with "
                            "--machine set to that name")
        return
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
