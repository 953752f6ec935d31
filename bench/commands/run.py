"""`facebench run`: sweep a suite and write one Parquet file (bench.runs decides what happens to the file).

Handlers import what a sweep loads (numpy, onnx, pyarrow) when they run, so `facebench --help` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from bench import exits
from bench.console import console


def register(sub) -> None:
    run = sub.add_parser("run", help="sweep a suite and write one Parquet file")
    run.add_argument("suite", help="TOML suite, e.g. suites/default.toml")
    run.add_argument("--models", help="comma list of built-in names (scrfd_10g@320) or .onnx paths")
    run.add_argument("--runtimes", help="comma list, e.g. ort-cpu,openvino-cpu (see facebench runtimes)")
    run.add_argument("--precisions", help="comma list: fp32,fp16,bf16,int8,simplified,ir")
    run.add_argument("--batches", help="comma list of batch sizes, e.g. 1,2,4")
    run.add_argument("--input", metavar="FORMAT", help="comma list of input formats: float-nchw (default), uint8-nchw, "
                                                       "uint8-nhwc-bgr, uint8-nhwc-rgb (uint8: normalised in the graph)")
    run.add_argument("--out", help="results file (.parquet) or folder (default: results/); a URI (s3://, gs://, "
                                   "file://) gets a copy after every point, measured locally under results/")
    run.add_argument("--images", metavar="DIR", help="real pictures for INT8 calibration and parity checks")
    run.add_argument("--resume", metavar="FILE",
                     help="continue FILE: measure only missing or failed points, skipped ones whose runtime is now "
                          "available, and the repeats a point has fewer of than --repeats asks")
    run.add_argument("--repeats", type=int, metavar="N",
                     help="measure every point N times, each in a fresh session, interleaved across points; "
                          "the figure is the median with a 95%% interval (what the regression gate needs: 5 is good)")
    run.add_argument("--concurrency", metavar="N,...",
                     help="comma list of requests in flight per point, e.g. 1,2,4 (ort-cpu: N sessions, "
                          "openvino-cpu: N streams and infer requests, ort-cuda: N sessions on N CUDA streams, "
                          "trt: N execution contexts on N streams)")
    run.add_argument("--full-ladder", action="store_true",
                     help="measure every batch; by default a series stops at a frames/s plateau ([ladder] in the suite)")
    run.add_argument("--latency-budget", metavar="[pXX:]MS",
                     help="answer with the most frames/s whose latency percentile meets it: 30ms (p99), p95:30ms")
    run.add_argument("--inline", action="store_true", help="run everything in this process (debugging)")
    run.add_argument("--max-worker-memory", type=float, metavar="MB", help="kill a worker above this resident memory")
    run.add_argument("--machine", metavar="NAME",
                     help="name this machine in the rows (the machine column; facebench fleet sets it, a Slurm or "
                          "Kubernetes task can too) so that gather and compare tell machines of one model apart")
    run.add_argument("--fleet-mixed", help=argparse.SUPPRESS)  # the fleet driver: how this machine differs from it
    run.add_argument("--events", action="store_true", help=argparse.SUPPRESS)  # one JSON line per event, for the fleet
    run.set_defaults(handler=cmd_run)


def cmd_run(args) -> int:
    from bench import runs

    with exits.signals_held():  # a signal inside a native module's initialisation can crash it (seen with onnx)
        importlib.import_module("bench.sweep")  # numpy, onnx, pyarrow, psutil: every native module a sweep loads

    from bench.models.precision import forced_int8_recipe

    forced_int8_recipe()  # a wrong FACEBENCH_INT8_RECIPE is one line now, not a failed row per point
    from bench.report.model import parse_budget

    suite = runs.suite_for_run(args.suite, args)
    budget = parse_budget(suite.latency_budget, "--latency-budget" if args.latency_budget else f"{args.suite}: latency_budget")
    request = runs.RunRequest(out=args.out, resume=args.resume, images=args.images, inline=args.inline,
                              max_worker_memory_mb=args.max_worker_memory, machine=args.machine,
                              fleet_mixed=args.fleet_mixed)
    run = runs.Run()
    with exits.StopOnSignals() as stopper:
        try:
            interrupted = True
            try:
                _measure(suite, request, run, args.events)
                stopper.measuring_done()  # from here on a signal interrupts nothing
                interrupted = False
            except KeyboardInterrupt:
                pass
            settled = runs.settle(run)
            _print_settled(args.suite, run, settled, interrupted)
            if not interrupted and run.results.rows:
                from bench.report.model import build_report_model
                from bench.report.tables import print_tables
                from bench.store import to_table

                rows = to_table(run.results.rows).to_pylist()  # every column, as `show` sees it
                print_tables(build_report_model(rows, budget, ["machine_id"]), console)
            target = runs.upload(args.out, run)
            if target:
                console.print(f"copied to {target}", markup=False, soft_wrap=True)
        finally:
            if run.results:
                run.results.release()
    return runs.exit_code(settled, interrupted)


def _measure(suite, request, run, events: bool = False) -> None:
    from bench import runs

    with console.status("preparing models") as status:
        planned = runs.open_run(suite, request, run, on_status=status.update)
    repeats = f" x {suite.repeats} repeats, interleaved" if suite.repeats > 1 else ""
    topped = f", and the repeats {len(planned.recorded)} resumed points miss" if planned.recorded else ""
    console.print(f"facebench: {planned.points} points{repeats}{topped} ({len(planned.jobs) + len(planned.topups)} "
                  f"workers) -> {run.results.path}")
    _run_with_progress(run.runner, planned, events)


def _run_with_progress(runner, planned, events: bool = False) -> None:
    """A live bar on a terminal; elsewhere (CI, `| tee log`) one plain line per finished point;
    with `events` (a fleet's machine) one JSON line per event for the fleet's driver."""
    total = planned.measurements(runner.suite.repeats)
    if events:
        from bench.fleet_store import point_events

        point_events(runner, planned, total)
        return
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
    from bench.report.tables import point_line, skip_group, skipped_line

    done = 0
    skipped = []  # consecutive skipped points of one model, runtime and reason: printed as one line

    def print_skipped():
        if skipped:
            console.print(skipped_line(skipped, f"[{done}/{total}]"), markup=False, highlight=False, soft_wrap=True)
            skipped.clear()

    def on_row(row, repeat):
        nonlocal done
        joins = row["status"] == "skipped" and (not skipped or skip_group(row) == skip_group(skipped[0]))
        if not joins:
            print_skipped()
        done += 1
        if row["status"] == "skipped":
            skipped.append(row)
        else:
            position = f"[{done}/{total}]{_repeat_text(runner, repeat)}"
            console.print(point_line(row, position, checked_earlier=repeat > 0), markup=False, highlight=False,
                          soft_wrap=True)
        _warn_unsaved(runner, console)
    runner.on_row = on_row
    try:
        runner.run(planned)
    finally:
        print_skipped()


def _repeat_text(runner, repeat: int) -> str:
    return f" repeat {repeat + 1}/{runner.suite.repeats}" if runner.suite.repeats > 1 else ""


def _warn_unsaved(runner, out) -> None:
    """Said once, at the first point that could not be written."""
    if runner.save_errors and len(runner.save_errors) == 1 and runner.store.pending:
        out.print(f"facebench: warning: cannot save results ({runner.save_errors[0]}); "
                  "measuring on and retrying after each point", markup=False)


def _print_settled(suite_arg: str, run, settled, interrupted: bool) -> None:
    """Say what is on disk and how to go on."""
    if settled is None:
        console.print("interrupted before any point was measured; no results file written")
        return
    if settled.pending:  # one line, never wrapped
        print(f"facebench: error: {settled.pending} measured points could not be saved ({settled.errors[-1]}); "
              f"the file keeps the {settled.saved} points written before", file=sys.stderr)
    if run.log_path:
        console.print(f"tracebacks of failed points: {run.log_path}", markup=False, soft_wrap=True)
    prefix = "interrupted: " if interrupted else ""
    console.print(f"{prefix}{settled.saved} points saved in {settled.path}", markup=False, soft_wrap=True)
    if interrupted or settled.pending:
        console.print(f"continue with: facebench run {suite_arg} --resume {settled.path}", markup=False, soft_wrap=True)
