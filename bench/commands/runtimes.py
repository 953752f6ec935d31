"""`facebench runtimes` and `facebench probe`: what runs here, and this machine's peaks through each runtime."""
from __future__ import annotations

from rich.table import Table

from bench.console import console
from bench.errors import UserError


def register(sub) -> None:
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
    unknown = [p for p in precisions if p not in ("fp32", "fp16", "bf16", "int8")]
    if unknown:
        raise UserError(f"--precisions {','.join(unknown)}: probes exist for fp32, fp16, bf16 and int8")
    console.print(_peaks_table(names, precisions, refresh=True))
    return 0


def _comma_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _peaks_table(names: list[str], precisions: list[str], refresh: bool):
    from bench.peaks import peaks_for
    from bench.models.zoo import cache_dir
    from bench.report.tables import peaks_table
    from bench.runtimes.registry import get_runtime
    from bench.worker import native_precision_problem

    measured = []
    for name in names:
        runtime = get_runtime(name)
        for precision in (p for p in precisions if p in runtime.precisions and not native_precision_problem(runtime, p)):
            with console.status(f"probing {name} {precision}"):
                measured.append(peaks_for(runtime, precision, {}, cache_dir(), refresh=refresh))
    return peaks_table(measured)
