"""Command line: `facebench SUBCOMMAND ...` (also `python -m bench`).

User errors become one line on stderr and exit status 2, never a traceback.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from bench.errors import UserError

# Subcommands that live beside their feature; each module has register(subparsers)
# and keeps its heavy imports inside the handlers.
FEATURE_COMMANDS = (
    "bench.checks.commands",  # fix-batch, check-batch
    "bench.report.commands",  # compare, plot, report
    "bench.pipeline.commands",  # pipeline
)
EXIT_NOT_SAVED = 1  # measured points that could not be written (full disk, read-only folder)
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130
# Wide enough for the sweep tables when piped to a file or CI log.
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        return args.handler(args) or 0
    except UserError as exc:
        print(f"facebench: error: {exc}", file=sys.stderr)  # one line, never wrapped
        return EXIT_USER_ERROR
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM outside a sweep (which handles its own)
        _ignore_stop_signals()
        print("facebench: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _raise_interrupt(signum, frame):
    _ignore_stop_signals()
    raise KeyboardInterrupt(f"signal {signum}")


def _ignore_stop_signals() -> None:
    """On the way out after one SIGINT/SIGTERM: a second must not end in a traceback, or in
    Python's default action once it resets handlers at exit."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="facebench", description="Throughput benchmarks for InsightFace models.")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="sweep a suite and write one Parquet file")
    run.add_argument("suite", help="TOML suite, e.g. suites/default.toml")
    run.add_argument("--models", help="comma list of built-in names (scrfd_10g@320) or .onnx paths")
    run.add_argument("--runtimes", help="comma list, e.g. ort-cpu,openvino-cpu (see facebench runtimes)")
    run.add_argument("--precisions", help="comma list: fp32,fp16,int8,simplified,ir")
    run.add_argument("--batches", help="comma list of batch sizes, e.g. 1,2,4")
    run.add_argument("--input", metavar="FORMAT", help="comma list of input formats: float-nchw (default), uint8-nchw, "
                                                       "uint8-nhwc-bgr, uint8-nhwc-rgb (uint8: normalised in the graph)")
    run.add_argument("--out", help="results file (.parquet) or folder (default: results/); a URI (s3://, gs://, "
                                   "file://) gets a copy when the sweep ends, measured locally under results/")
    run.add_argument("--images", metavar="DIR", help="real pictures for INT8 calibration and parity checks")
    run.add_argument("--resume", metavar="FILE", help="continue FILE: measure only missing or failed points, and skipped ones whose runtime is now available")
    run.add_argument("--repeats", type=int, metavar="N",
                     help="measure every point N times, each in a fresh session, interleaved across points; "
                          "the figure is the median with a 95%% interval (what the regression gate needs: 5 is good)")
    run.add_argument("--inline", action="store_true", help="run everything in this process (debugging)")
    run.add_argument("--max-worker-memory", type=float, metavar="MB", help="kill a worker above this resident memory")
    run.set_defaults(handler=cmd_run)

    runtimes = sub.add_parser("runtimes", help="list runtimes, whether each is available, and why not")
    runtimes.add_argument("--probe", action="store_true",
                          help="also show each available runtime's GEMM / conv peaks (cached; measured where missing)")
    runtimes.set_defaults(handler=cmd_runtimes)

    probe = sub.add_parser("probe", help="measure this machine's peaks through each runtime again (GEMM, 3x3 conv, "
                                         "memory or host<->device copies) and cache them for the %% of peak columns")
    probe.add_argument("--runtimes", help="comma list (default: every available runtime)")
    probe.add_argument("--precisions", default="fp32,int8", help="comma list of fp32,fp16,int8 (default fp32,int8; "
                                                                 "those a runtime does not run are left out)")
    probe.set_defaults(handler=cmd_probe)

    show = sub.add_parser("show", help="print the tables of existing results files")
    show.add_argument("files", nargs="+")
    show.set_defaults(handler=cmd_show)

    models = sub.add_parser("models", help="built-in model replicas: list, build, inspect")
    models_sub = models.add_subparsers(dest="models_command", required=True)
    models_sub.add_parser("list", help="list built-in replicas").set_defaults(handler=cmd_models_list)
    build = models_sub.add_parser("build", help="build (or find cached) a replica and print its path")
    build.add_argument("name")
    build.add_argument("--input-size", type=int)
    build.add_argument("--export", default="batched", choices=("batched", "named", "pack"),
                       help="file form: batched [N,3,S,S]; named static [1,3,S,S]; pack as the model packs ship "
                            "(det_10g.onnx: [1,3,?,?], flattened numeric outputs)")
    build.set_defaults(handler=cmd_models_build)
    inspect = models_sub.add_parser("inspect", help="interface, params, MACs, FLOPs and ops of a model")
    inspect.add_argument("model", help="built-in name (scrfd_10g@320) or .onnx path")
    inspect.add_argument("--input-size", type=int)
    inspect.add_argument("--json", action="store_true")
    inspect.set_defaults(handler=cmd_models_inspect)

    for module_name in FEATURE_COMMANDS:
        importlib.import_module(module_name).register(sub)
    return parser


def cmd_run(args) -> int:
    with _signals_held():  # a signal inside a native module's initialisation can crash it (seen with onnx)
        importlib.import_module("bench.sweep")  # numpy, onnx, pyarrow, psutil: every native module a sweep loads
        from bench.suite import load_suite, override, parse_int_list, parse_model_arg

    from bench.models.precision import forced_int8_recipe

    forced_int8_recipe()  # a wrong FACEBENCH_INT8_RECIPE is one line now, not a failed row per point
    suite = load_suite(args.suite)
    suite = override(
        suite,
        models=[parse_model_arg(m) for m in args.models.split(",")] if args.models else None,
        runtimes=[r.strip() for r in args.runtimes.split(",")] if args.runtimes else None,
        precisions=[p.strip() for p in args.precisions.split(",")] if args.precisions else None,
        batches=parse_int_list(args.batches, "batches") if args.batches else None,
        repeats=args.repeats,
        inputs=[f.strip() for f in args.input.split(",")] if args.input else None,
    )
    run = _Run()
    with _StopOnSignals() as stopper:
        try:
            interrupted = True
            try:
                _sweep(args, suite, run)
                stopper.measuring_done()  # from here on a signal interrupts nothing
                interrupted = False
            except KeyboardInterrupt:
                pass
            code = _report_saved(args, run, interrupted)
            if not interrupted and run.results.rows:
                from bench.report.tables import print_tables
                from bench.store import to_table

                print_tables(to_table(run.results.rows).to_pandas(), console)  # every column, as `show` sees it
            _upload(args, run)
        finally:
            if run.results:
                run.results.release()
    return code


@dataclass
class _Run:
    results: Any = None  # bench.store.ResultStore, once the file is chosen
    runner: Any = None  # bench.sweep.Sweep, once measuring starts
    log_path: Path | None = None  # tracebacks of failed points, when there were any


def _sweep(args, suite, run: _Run) -> None:
    """Plan (validating every model), open the results file, measure. Fills `run` as it goes."""
    from bench import sweep

    images = _image_paths(args.images) if args.images else ()
    if args.resume:
        run.results = _resumed_store(args.resume)  # before planning: the plan leaves out what it holds
    previous = sweep.previous_points(run.results.rows) if run.results else {}
    with console.status("preparing models") as status:
        planned = sweep.plan(suite, previous, on_model=lambda m: status.update(f"preparing {m}"))
    planned.use_images(images)
    if run.results is None:
        run.results = new_results_store(args.out, suite.name)
    repeats = f" x {suite.repeats} repeats, interleaved" if suite.repeats > 1 else ""
    console.print(f"facebench: {planned.points} points{repeats} ({len(planned.jobs)} workers) -> {run.results.path}")
    run.runner = sweep.Sweep(suite, run.results, sweep.SweepOptions(inline=args.inline,
                                                                     max_worker_memory_mb=args.max_worker_memory),
                             on_log=_traceback_log(run))
    _run_with_progress(run.runner, planned)


def _traceback_log(run: _Run):
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


def _image_paths(folder: str) -> tuple[str, ...]:
    from bench.models.precision import images_in_folder

    if not Path(folder).is_dir():
        raise UserError(f"--images {folder}: not a folder; give a folder of .jpg/.png pictures")
    return tuple(str(p) for p in images_in_folder(folder))


@contextlib.contextmanager
def _signals_held():
    """Hold SIGINT and SIGTERM back; one that came meanwhile is handled as the block lifts."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class _StopOnSignals:
    """While measuring, SIGINT and SIGTERM stop the run as Ctrl-C does; later signals are ignored.

    Stopping is quick (the worker is killed, not awaited; every finished point is already on
    disk), and a second Ctrl-C must not cut short the report of what was saved. Once measuring
    is done, a signal has nothing left to stop.
    """

    def __enter__(self):
        self._measuring, self._signalled = True, False
        self._previous = {sig: signal.signal(sig, self._stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        return self

    def _stop(self, signum, frame):
        self._signalled = True
        _ignore_stop_signals()
        if self._measuring:
            raise KeyboardInterrupt(f"signal {signum}")

    def measuring_done(self) -> None:
        self._measuring = False

    def __exit__(self, *exc):
        if self._signalled:
            return  # keep ignoring: the process is on its way out (Python would reset a handler to the default on exit)
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _resumed_store(path: str):
    """The file to continue: locked for this run, verified, and writable (else UserError)."""
    from bench import store

    store.read_table(path)  # not there, or not a results file: say so before anything else
    results = store.ResultStore(path)
    _writable(path, results.claim)
    try:
        table, check = store.read_table(path)  # again, under the lock: the rows to continue from
        if check.checksum_ok is False:
            raise UserError(f"{check.note}; refusing to resume it: restore the file or start a new run")
        results.rows = table.to_pylist()
        _same_machine(path, results.rows)
        _writable(path, results.flush)  # fails now, not after the first point, if it cannot be written
    except BaseException:
        results.release()
        raise
    return results


def _same_machine(path: str, rows: list[dict]) -> None:
    """A results file holds one machine's points: resuming another machine's file would mix them."""
    from bench import env

    theirs = {r.get("machine_id") for r in rows if r.get("machine_id")}
    here = env.fingerprint()
    if theirs and here["machine_id"] not in theirs:
        other = next(r for r in rows if r.get("machine_id"))
        hardware = other.get("gpu_name") or other.get("cpu_model") or "unknown hardware"
        raise UserError(f"{path} was measured on another machine ({other.get('host')}, {hardware}); resuming it here "
                        "would mix two machines in one file: start a new run with --out and compare the two")


def _upload(args, run: _Run) -> None:
    """--out URI: the local file (already complete on disk) is copied to the bucket or remote folder."""
    from bench import store

    if not (args.out and store.is_uri(args.out) and run.results and run.results.saved):
        return
    target = args.out if args.out.endswith(".parquet") else store.join_location(args.out, Path(run.results.path).name)
    store.ensure_parent(target)
    store.write_bytes(target, Path(run.results.path).read_bytes())
    console.print(f"copied to {target}", markup=False, soft_wrap=True)


def new_results_store(out_arg: str | None, suite_name: str):
    """A fresh results file, locked for this run: --out FILE (replaced if it exists), or a new
    name in --out FOLDER (results/ by default, and for a URI, which gets a copy at the end)."""
    from bench import store, sweep

    local = out_arg and not store.is_uri(out_arg)
    out = Path(out_arg) if local else Path("results")
    if out.suffix != ".parquet":
        sweep.check_output_dir(out)
        results = store.ResultStore(_writable(out, lambda: store.reserve_results_path(out, suite_name)))
        _writable(out, results.claim)
        return results
    sweep.check_output_dir(out.parent)
    results = store.ResultStore(out)
    _writable(out, results.claim)  # before touching the file: another run may be writing it
    try:
        _writable(out, results.flush)  # an empty file now, so a run stopped early leaves no stale results
    except BaseException:
        results.release()
        raise
    return results


def _writable(where, action):
    """Run `action`; an OSError (read-only folder, full disk) becomes a one-line UserError."""
    try:
        return action()
    except OSError as exc:
        raise UserError(f"{where}: cannot write results ({exc.strerror or exc}); choose a writable --out") from None


def _run_with_progress(runner, planned) -> None:
    """A live bar on a terminal; elsewhere (CI, `| tee log`) one plain line per finished point."""
    total = planned.measurements(runner.suite.repeats)
    if not console.is_terminal:
        _run_with_lines(runner, planned, total)
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("measuring", total=total)

        def on_row(row, repeat):
            what = f"{row['model']} {row['runtime']} {row['precision']} b{row['batch']}{_repeat_text(runner, repeat)}"
            progress.update(task, advance=1, description=f"{what}: {row['status']}")
            _warn_unsaved(runner, progress.console)
        runner.on_row = on_row
        runner.run(planned)


def _run_with_lines(runner, planned, total: int) -> None:
    from bench.report.tables import point_line

    done = 0

    def on_row(row, repeat):
        nonlocal done
        done += 1
        position = f"[{done}/{total}]{_repeat_text(runner, repeat)}"
        console.print(point_line(row, position, checked_earlier=repeat > 0), markup=False, highlight=False, soft_wrap=True)
        _warn_unsaved(runner, console)
    runner.on_row = on_row
    runner.run(planned)


def _repeat_text(runner, repeat: int) -> str:
    return f" repeat {repeat + 1}/{runner.suite.repeats}" if runner.suite.repeats > 1 else ""


def _warn_unsaved(runner, out) -> None:
    """Said once, at the first point that could not be written."""
    if runner.save_errors and len(runner.save_errors) == 1 and runner.store.pending:
        out.print(f"facebench: warning: cannot save results ({runner.save_errors[0]}); "
                  "measuring on and retrying after each point", markup=False)


def _report_saved(args, run: _Run, interrupted: bool) -> int:
    """Say what is on disk and how to go on; the exit status (see docs/reliability.md)."""
    results = run.results
    if results is None:
        console.print("interrupted before any point was measured; no results file written")
        return EXIT_INTERRUPTED
    errors = list(run.runner.save_errors) if run.runner else []
    if results.pending:
        try:
            results.flush()  # one last try: the disk may have room again
        except OSError as exc:
            errors.append(f"{results.path}: {exc.strerror or exc}")
    if results.pending:  # one line, never wrapped
        print(f"facebench: error: {results.pending} measured points could not be saved ({errors[-1]}); "
              f"the file keeps the {results.saved} points written before", file=sys.stderr)
    if run.log_path:
        console.print(f"tracebacks of failed points: {run.log_path}", markup=False, soft_wrap=True)
    prefix = "interrupted: " if interrupted else ""
    console.print(f"{prefix}{results.saved} points saved in {results.path}", markup=False, soft_wrap=True)
    if interrupted or results.pending:
        console.print(f"continue with: facebench run {args.suite} --resume {results.path}", markup=False, soft_wrap=True)
    if interrupted:
        return EXIT_INTERRUPTED
    return EXIT_NOT_SAVED if results.pending else 0


def cmd_runtimes(args) -> int:
    from bench.runtimes.registry import all_statuses

    table = Table(title="runtimes")
    for column in ("runtime", "device", "status", "versions"):
        table.add_column(column)
    for status in all_statuses():
        state = "[green]available[/]" if status.available else f"[yellow]unavailable: {status.reason}[/]"
        table.add_row(status.name, status.device, state, ", ".join(f"{k} {v}" for k, v in status.versions.items()))
    console.print(table)
    if args.probe:
        console.print(_peaks_table([s.name for s in all_statuses() if s.available], ["fp32", "int8"], refresh=False))
    return 0


def cmd_probe(args) -> int:
    from bench.runtimes.registry import all_statuses, check_names

    available = [s.name for s in all_statuses() if s.available]
    names = _comma_list(args.runtimes) if args.runtimes else available
    check_names(names)
    missing = [n for n in names if n not in available]
    if missing:
        raise UserError(f"not available here: {', '.join(missing)} (see facebench runtimes)")
    precisions = _comma_list(args.precisions)
    unknown = [p for p in precisions if p not in ("fp32", "fp16", "int8")]
    if unknown:
        raise UserError(f"--precisions {','.join(unknown)}: probes exist for fp32, fp16 and int8")
    console.print(_peaks_table(names, precisions, refresh=True))
    return 0


def _comma_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _peaks_table(names: list[str], precisions: list[str], refresh: bool):
    from bench.measure.peaks import peaks_for
    from bench.models.zoo import cache_dir
    from bench.report.tables import peaks_table
    from bench.runtimes.registry import get_runtime

    measured = []
    for name in names:
        runtime = get_runtime(name)
        for precision in (p for p in precisions if p in runtime.precisions):
            with console.status(f"probing {name} {precision}"):
                measured.append(peaks_for(runtime, precision, {}, cache_dir(), refresh=refresh))
    return peaks_table(measured)


def cmd_show(args) -> int:
    import pandas as pd

    from bench import store
    from bench.report.tables import print_tables

    frames = []
    for path in args.files:
        table, check = store.read_table(path)
        if check.note:
            print(f"facebench: warning: {check.note}", file=sys.stderr)  # one line, never wrapped
        frames.append(table.to_pandas())
    frame = pd.concat(frames, ignore_index=True)
    if frame.empty:
        console.print("no points in these files")
        return 0
    print_tables(frame, console)
    return 0


def cmd_models_list(args) -> int:
    from bench.models.zoo import BUILTINS

    table = Table(title="built-in replicas (architecture-faithful, seeded random weights)")
    for column in ("name", "family", "input", "what"):
        table.add_column(column)
    for spec in BUILTINS.values():
        size = f"[N,3,{spec.default_size},{spec.default_size}] (@320, @640)" if spec.default_size else "[N,3,112,112]"
        table.add_row(spec.name, spec.family, size, spec.summary)
    console.print(table)
    return 0


def cmd_models_build(args) -> int:
    from bench.models.zoo import build_cached

    with console.status(f"building {args.name}"):
        info = build_cached(args.name, args.input_size, export=args.export)
    console.print(f"{info.name}: {info.path} (sha256 {info.sha256[:16]}, {info.file_bytes / 2**20:.1f} MiB)")
    return 0


def cmd_models_inspect(args) -> int:
    from bench.models import zoo
    from bench.suite import parse_model_arg

    ref = parse_model_arg(args.model)
    if args.input_size:
        ref = type(ref)(name=ref.name, input_size=args.input_size, path=ref.path)
    info = zoo.resolve(ref)
    if args.json:
        print(json.dumps({**info.to_dict(), "flops_per_frame": info.flops_per_frame}, indent=2))
        return 0
    _print_inspection(info)
    return 0


def _counting_rows(info) -> list[tuple[str, str]]:
    at = f"at {info.input_hw[0]}x{info.input_hw[1]}"
    if info.macs_per_frame is None:
        return [("MACs / frame", f"unknown {at}: {info.macs_note}")]
    return [("MACs / frame", f"{info.macs_per_frame:,} ({info.macs_per_frame / 1e9:.3f} G {at}; conv + gemm)"),
            ("FLOPs / frame", f"{info.flops_per_frame / 1e9:.3f} G (= 2 x MACs)")]


def _print_inspection(info) -> None:
    table = Table(title=f"{info.name} ({info.family})", show_header=False)
    table.add_column("field")
    table.add_column("value")
    rows = [
        ("file", f"{info.path} ({info.file_bytes:,} bytes)"), ("sha256", info.sha256),
        ("input", f"{info.input_name} {info.input_dims} -> runs at {info.input_hw[0]}x{info.input_hw[1]}"),
        ("preprocessing", f"RGB, (x - {info.mean}) / {info.std}"),
        ("outputs", ", ".join(f"{n} {d}" for n, d in info.outputs)),
        ("params", f"{info.params:,} ({info.params / 1e6:.2f} M)"),
        *_counting_rows(info),
        ("batch", "fixed at 1" if info.batch_fixed else "dynamic"),
        ("output layout", "flattened (frames interleave at batch > 1)" if info.flattened_outputs else "batched [N, ...]"),
        ("ops", ", ".join(f"{k} {v}" for k, v in sorted(info.op_counts.items(), key=lambda kv: -kv[1]))),
    ]
    rows += [("note", note) for note in info.layout_notes]
    for key, value in rows:
        table.add_row(key, str(value))
    console.print(table)


if __name__ == "__main__":
    sys.exit(main())
