"""Command line: `facebench SUBCOMMAND ...` (also `python -m bench`): parses arguments and prints.

User errors become one line on stderr and exit status 2, never a traceback. What happens to a
run's results file (resume, lock, same-machine check, upload, exit status) is bench.runs.
"""
from __future__ import annotations

import argparse
import importlib
import json
import signal
import sys

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from bench.console import console
from bench.errors import UserError
from bench.runs import EXIT_INTERRUPTED, EXIT_USER_ERROR, ignore_stop_signals

# Subcommands that live beside their feature; each module has register(subparsers)
# and keeps its heavy imports inside the handlers.
FEATURE_COMMANDS = (
    "bench.commands.batch",  # fix-batch, check-batch
    "bench.commands.compare",  # compare, plot, report
    "bench.commands.pipeline",  # pipeline
)


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
        ignore_stop_signals()
        print("facebench: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _raise_interrupt(signum, frame):
    ignore_stop_signals()
    raise KeyboardInterrupt(f"signal {signum}")


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
    show.add_argument("--latency-budget", metavar="[pXX:]MS",
                      help="add the best configuration under this latency (30ms: p99; p95:30ms)")
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
    from bench import runs

    with runs.signals_held():  # a signal inside a native module's initialisation can crash it (seen with onnx)
        importlib.import_module("bench.sweep")  # numpy, onnx, pyarrow, psutil: every native module a sweep loads
        from bench.suite import load_suite, override, parse_int_list, parse_model_arg

    from bench.models.precision import forced_int8_recipe

    forced_int8_recipe()  # a wrong FACEBENCH_INT8_RECIPE is one line now, not a failed row per point
    from bench.report.model import parse_budget

    parse_budget(args.latency_budget)  # named as the user spelt it, before the suite's checks
    if args.max_worker_memory is not None and not args.max_worker_memory > 0:  # NaN included
        raise UserError(f"--max-worker-memory {args.max_worker_memory:g}: give a positive number of MB, e.g. 4000 "
                        "(leave it out for no limit)")
    suite = load_suite(args.suite)
    suite = override(
        suite,
        models=[parse_model_arg(m) for m in args.models.split(",")] if args.models else None,
        runtimes=[r.strip() for r in args.runtimes.split(",")] if args.runtimes else None,
        precisions=[p.strip() for p in args.precisions.split(",")] if args.precisions else None,
        batches=parse_int_list(args.batches, "batches") if args.batches else None,
        repeats=args.repeats,
        inputs=[f.strip() for f in args.input.split(",")] if args.input else None,
        concurrency=parse_int_list(args.concurrency, "concurrency") if args.concurrency else None,
        full_ladder=args.full_ladder,
        latency_budget=args.latency_budget,
    )
    budget = parse_budget(suite.latency_budget, "--latency-budget" if args.latency_budget else f"{args.suite}: latency_budget")
    request = runs.RunRequest(out=args.out, resume=args.resume, images=args.images, inline=args.inline,
                              max_worker_memory_mb=args.max_worker_memory)
    run = runs.Run()
    with runs.StopOnSignals() as stopper:
        try:
            interrupted = True
            try:
                _measure(suite, request, run)
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


def _measure(suite, request, run) -> None:
    from bench import runs

    with console.status("preparing models") as status:
        planned = runs.open_run(suite, request, run, on_status=status.update)
    repeats = f" x {suite.repeats} repeats, interleaved" if suite.repeats > 1 else ""
    topped = f", and the repeats {len(planned.recorded)} resumed points miss" if planned.recorded else ""
    console.print(f"facebench: {planned.points} points{repeats}{topped} ({len(planned.jobs) + len(planned.topups)} "
                  f"workers) -> {run.results.path}")
    _run_with_progress(run.runner, planned)


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
    from bench.peaks import peaks_for
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
    from bench import store
    from bench.report.model import build_report_model, parse_budget
    from bench.report.tables import print_tables

    budget = parse_budget(args.latency_budget)  # a bad budget is one line before any file is read
    rows = []
    for path in args.files:
        table, check = store.read_table(path)
        if check.note:
            print(f"facebench: warning: {check.note}", file=sys.stderr)  # one line, never wrapped
        rows += table.to_pylist()
    if not rows:
        console.print("no points in these files")
        return 0
    print_tables(build_report_model(rows, budget, ["machine_id"]), console)
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
