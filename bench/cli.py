"""Command line: `facebench SUBCOMMAND ...` (also `python -m bench`).

User errors become one line on stderr and exit status 2, never a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import json
import signal
import sys
from pathlib import Path

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


def _raise_interrupt(signum, frame):
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
    run.add_argument("--out", help="results file (.parquet) or folder (default: results/)")
    run.add_argument("--resume", metavar="FILE", help="continue FILE: measure only missing or failed points")
    run.add_argument("--inline", action="store_true", help="run everything in this process (debugging)")
    run.add_argument("--max-worker-memory", type=float, metavar="MB", help="kill a worker above this resident memory")
    run.set_defaults(handler=cmd_run)

    runtimes = sub.add_parser("runtimes", help="list runtimes, whether each is available, and why not")
    runtimes.set_defaults(handler=cmd_runtimes)

    show = sub.add_parser("show", help="print the tables of existing results files")
    show.add_argument("files", nargs="+")
    show.set_defaults(handler=cmd_show)

    models = sub.add_parser("models", help="built-in model replicas: list, build, inspect")
    models_sub = models.add_subparsers(dest="models_command", required=True)
    models_sub.add_parser("list", help="list built-in replicas").set_defaults(handler=cmd_models_list)
    build = models_sub.add_parser("build", help="build (or find cached) a replica and print its path")
    build.add_argument("name")
    build.add_argument("--input-size", type=int)
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
    from bench import store, sweep
    from bench.report.tables import print_tables
    from bench.suite import load_suite, override, parse_int_list, parse_model_arg

    suite = load_suite(args.suite)
    suite = override(
        suite,
        models=[parse_model_arg(m) for m in args.models.split(",")] if args.models else None,
        runtimes=[r.strip() for r in args.runtimes.split(",")] if args.runtimes else None,
        precisions=[p.strip() for p in args.precisions.split(",")] if args.precisions else None,
        batches=parse_int_list(args.batches, "batches") if args.batches else None,
    )
    previous = store.read_rows(args.resume) if args.resume else []
    results = _results_store(args, suite.name, previous)
    with console.status("preparing models") as status:
        planned = sweep.plan(suite, sweep.done_points(previous), on_model=lambda m: status.update(f"preparing {m}"))
    console.print(f"facebench: {planned.points} points ({len(planned.jobs)} workers) -> {results.path}")
    runner = sweep.Sweep(suite, results, sweep.SweepOptions(inline=args.inline, max_worker_memory_mb=args.max_worker_memory))
    try:
        _run_with_progress(runner, planned)
    except KeyboardInterrupt:
        _report_saved(results, runner, interrupted=True)
        return EXIT_INTERRUPTED
    _report_saved(results, runner, interrupted=False)
    import pandas as pd

    print_tables(pd.DataFrame(results.rows), console)
    return 0


def _results_store(args, suite_name: str, previous: list[dict]):
    from bench import store, sweep

    if args.resume:
        # Keep what finished; failed points are measured again and replace their rows.
        kept = [r for r in previous if r.get("status") in ("ok", "skipped")]
        results = store.ResultStore(args.resume, kept)
        results.replace(kept)
        return results
    out = Path(args.out) if args.out else Path("results")
    if out.suffix == ".parquet":
        sweep.check_output_dir(out.parent)
        return store.ResultStore(out)
    sweep.check_output_dir(out)
    return store.ResultStore(store.reserve_results_path(out, suite_name))


def _run_with_progress(runner, planned) -> None:
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("measuring", total=planned.points)

        def on_row(row):
            what = f"{row['model']} {row['runtime']} {row['precision']} b{row['batch']}"
            progress.update(task, advance=1, description=f"{what}: {row['status']}")
        runner.on_row = on_row
        runner.run(planned)


def _report_saved(results, runner, interrupted: bool) -> None:
    saved = len(results.rows)
    if runner.save_errors:
        err_console.print(f"facebench: warning: could not save every point: {runner.save_errors[-1]}; "
                          f"the file keeps the points written before that", markup=False)
    prefix = "interrupted: " if interrupted else ""
    console.print(f"{prefix}{saved} points saved in {results.path}")


def cmd_runtimes(args) -> int:
    from bench.runtimes.registry import all_statuses

    table = Table(title="runtimes")
    for column in ("runtime", "device", "status", "versions"):
        table.add_column(column)
    for status in all_statuses():
        state = "[green]available[/]" if status.available else f"[yellow]unavailable: {status.reason}[/]"
        table.add_row(status.name, status.device, state, ", ".join(f"{k} {v}" for k, v in status.versions.items()))
    console.print(table)
    return 0


def cmd_show(args) -> int:
    import pandas as pd

    from bench import store
    from bench.report.tables import print_tables

    frames = []
    for path in args.files:
        table, check = store.read_table(path)
        if check.note:
            err_console.print(f"facebench: warning: {check.note}", markup=False)
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
        info = build_cached(args.name, args.input_size)
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
        ("MACs / frame", f"{info.macs_per_frame:,} ({info.macs_per_frame / 1e9:.3f} G; conv + gemm)"),
        ("FLOPs / frame", f"{info.flops_per_frame / 1e9:.3f} G (= 2 x MACs)"),
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
