"""`facebench fix-batch` and `facebench check-batch`."""
from __future__ import annotations

from rich.console import Console
from rich.table import Table

DEFAULT_CHECK_BATCHES = "2,4,8"
EXIT_CONTAMINATED = 1


def register(subparsers) -> None:
    fix = subparsers.add_parser("fix-batch", help="rewrite a batch-1 InsightFace detector or embedder export into true dynamic batch")
    fix.add_argument("input", metavar="IN.onnx")
    fix.add_argument("output", metavar="OUT.onnx")
    fix.add_argument("--input-size", type=int, help="freeze H and W (e.g. 320, as the batch-optimised re-exports)")
    fix.add_argument("--verify-batch", type=int, default=4, help="batch used to verify the rewrite (default 4)")
    fix.set_defaults(handler=cmd_fix_batch)

    check = subparsers.add_parser("check-batch", help="prove a frame gives the same outputs alone and inside a batch")
    check.add_argument("model", help="built-in name (scrfd_500m@320) or .onnx path")
    check.add_argument("--runtime", default="ort-cpu")
    check.add_argument("--batches", default=DEFAULT_CHECK_BATCHES, help=f"comma list (default {DEFAULT_CHECK_BATCHES})")
    check.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "bf16", "int8"),
                       help="tolerance to apply (fp32 1e-4 relative, fp16 1e-2, bf16 and int8 5e-2)")
    check.set_defaults(handler=cmd_check_batch)


def cmd_fix_batch(args) -> int:
    from bench.models.batchfix import fix_batch

    console = Console()
    with console.status(f"rewriting {args.input} and verifying at batch {args.verify_batch}"):
        report = fix_batch(args.input, args.output, input_size=args.input_size, verify_batch=args.verify_batch)
    for line in report.lines():
        console.print(line, markup=False, highlight=False)
    return 0


def cmd_check_batch(args) -> int:
    from bench.errors import UserError
    from bench.models import zoo
    from bench.runtimes.registry import get_runtime
    from bench.suite import parse_int_list, parse_model_arg

    batches = parse_int_list(args.batches, "batches")
    if not batches or min(batches) <= 0:
        raise UserError(f"--batches '{args.batches}': give positive batch sizes, e.g. 2,4,8")
    info = zoo.resolve(parse_model_arg(args.model))
    runtime = get_runtime(args.runtime)
    ok, reason = runtime.available()
    if not ok:
        raise UserError(f"runtime {args.runtime} is unavailable: {reason}")
    console = Console()
    table = Table(title=f"cross-frame contamination: {info.name} on {args.runtime} ({args.precision} tolerance)")
    for column in ("batch", "position", "max abs diff", "max rel diff", "tolerance", "result"):
        table.add_column(column, justify="right" if column != "result" else "left")
    failures = 0
    for batch in batches:
        cells = _check_one(runtime, info, batch, args.precision)
        failures += cells[-1] != "[green]clean[/]"
        table.add_row(str(batch), *cells)
    console.print(table)
    if failures:
        console.print(f"[red]{failures} of {len(batches)} batch sizes are not clean[/]: frames mix inside a batch; "
                      f"repair detectors with 'facebench fix-batch {info.path} OUT.onnx'")
        return EXIT_CONTAMINATED
    console.print(f"all {len(batches)} batch sizes clean")
    return 0


def _check_one(runtime, info, batch: int, precision: str) -> list[str]:
    """Cells for one batch size: a runtime that cannot even run the batch is not clean either."""
    from bench.checks.contamination import check_contamination
    from bench.session import LoadRequest

    request = LoadRequest(model_path=info.path, input_name=info.input_name, input_shape=info.input_shape(batch),
                          precision=precision)
    try:
        session = runtime.load(request)
        try:
            result = check_contamination(session.infer, (3, *info.input_hw), batch, precision)
        finally:
            session.close()
    except Exception as exc:  # the runtime refusing the batch is the finding, not a crash
        message = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:90]
        return ["-", "-", "-", "-", f"[red]cannot run batch {batch}[/]: {message}"]
    verdict = "[green]clean[/]" if result.passed else "[red]CONTAMINATED[/]"
    return [str(result.position), f"{result.max_abs_diff:.3g}", f"{result.max_rel_diff:.3g}",
            f"{result.tolerance:g}", verdict]
