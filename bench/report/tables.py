"""Terminal tables (rich) of the report model: throughput, cold start, GPU, best and knee, warnings."""
from __future__ import annotations

import json
import re

from rich.console import Console
from rich.table import Table

from bench.domain import DEFAULT_INPUT_FORMAT, DEFAULT_OPTIONS_VARIANT
from bench.report.model import ModelSummary, Point, ReportModel, point_of
from bench.report.text import best_line, budget_line, describe_point
from bench.report.text import fmt_number as _fmt


def _text(value) -> str:
    """A text column's cell: missing values as '-'."""
    return value if isinstance(value, str) and value else "-"


def _check_cell(row) -> str:
    marks = []
    if row.get("contamination_checked") is True:
        marks.append("[green]clean[/]" if row.get("contamination_passed") else "[red]CONTAMINATED[/]")
    if row.get("parity_checked") is True:
        marks.append("[green]parity ok[/]" if row.get("parity_passed") else "[red]PARITY FAIL[/]")
    return " ".join(marks) or "-"


def _precision_cell(row) -> str:
    """fp16 that actually ran as fp32 (no native FP16 on this CPU) must not pass as fp16."""
    effective = row.get("precision_effective")
    if isinstance(effective, str) and effective not in (row["precision"], "") and row["precision"] in ("fp32", "fp16", "bf16"):
        return f"{row['precision']}[yellow]->{effective}[/]"
    return row["precision"]


def _verdict_cell(point: Point) -> str:
    if not point.measured:
        return f"[yellow]{point.status}[/]" if point.status == "skipped" else "[red]failed[/]"
    return "[green]VALID[/]" if point.row.get("verdict") == "VALID" else "[yellow]UNSTABLE[/]"


def point_line(row, position: str = "", checked_earlier: bool = False) -> str:
    """One plain line for a finished point, for logs that cannot show the live bar (CI, `| tee`).
    `checked_earlier`: a later repeat, whose checks ran on the first one."""
    point = point_of(row)
    where = f"{position} " if position else ""
    what = f"{where}{point.model} {describe_point(point)}"
    if not point.measured:
        return f"{what}: {point.status}: {point.row.get('reason') or '-'}"
    checks = "checks on repeat 1" if checked_earlier else re.sub(r"\[/?[a-z ]*\]", "", _check_cell(point.row))
    verdict = "VALID" if point.row.get("verdict") == "VALID" else "UNSTABLE"
    return f"{what}: {_fmt(point.fps)} frames/s {verdict} {checks}"


def skip_group(row) -> tuple:
    """Skipped points that read as one line: the same model, runtime and reason."""
    return row.get("model"), row.get("runtime"), row.get("reason")


def skipped_line(rows, position: str = "") -> str:
    """Consecutive skipped points of one skip_group in one line (a CPU machine skips every GPU point)."""
    precisions = "/".join(dict.fromkeys(str(r.get("precision")) for r in rows))
    batches = sorted({r["batch"] for r in rows})
    span = f"batch {batches[0]}" if len(batches) == 1 else f"batches {batches[0]}..{batches[-1]}"
    model, runtime, reason = skip_group(rows[0])
    where = f"{position} " if position else ""
    return f"{where}skipped {model} {runtime} {precisions} {span}: {reason or '-'}"


def throughput_table(summary: ModelSummary, title: str, budget=None) -> Table:
    """`budget` (bench.report.model.LatencyBudget): a column marking the points that miss it."""
    table = Table(title=f"{title}: steady state", title_justify="left")
    keys = [p.series for p in summary.points]
    # The input, options and concurrency columns only where they tell something.
    inputs = any(k.input_format != DEFAULT_INPUT_FORMAT for k in keys)
    swept = any(k.options_variant != DEFAULT_OPTIONS_VARIANT for k in keys)
    concurrent = any(k.concurrency != 1 for k in keys)
    for column, justify in (("runtime", "left"), ("prec", "left"), *([("input", "left")] if inputs else []),
                            *([("options", "left")] if swept else []), *([("conc", "right")] if concurrent else []),
                            ("batch", "right"), ("frames/s", "right"),
                            ("ms/frame", "right"), ("p50 ms", "right"), ("p99 ms", "right"),
                            ("x batch 1", "right"), ("GFLOP/s", "right"), ("verdict", "left"), ("checks", "left")):
        table.add_column(column, justify=justify)
    peaks = any(p.row.get("pct_conv_peak") is not None for p in summary.points)
    if peaks:
        table.add_column("% conv peak", justify="right")
    repeated = any((p.row.get("repeats") or 1) > 1 for p in summary.points)
    if repeated:
        table.add_column("repeats: 95% CI", justify="right")
    if budget is not None:
        table.add_column(budget.label, justify="left")
    for series in summary.series:
        # Skipped points are summarised under the tables (one line per reason), not row by row.
        shown = [p for p in series.points if p.status != "skipped"]
        base = [p.fps for p in shown if p.batch == 1 and p.measured]
        base_fps = base[0] if base else None
        key = series.key
        for point in shown:
            row, ok = point.row, point.measured
            fps_text = _fmt(point.fps) if ok else "see warnings"
            if ok and not point.trustworthy:
                fps_text = f"[strike]{fps_text}[/]"
            speedup = point.fps / base_fps if ok and base_fps else None
            table.add_row(key.runtime, _precision_cell(row), *([key.input_format] if inputs else []),
                          *([key.options_variant] if swept else []), *([key.concurrency_text] if concurrent else []),
                          str(point.batch), fps_text,
                          _fmt(row["ms_per_frame"], 3) if ok else "", _fmt(row["lat_p50_ms"], 2) if ok else "",
                          _fmt(row["lat_p99_ms"], 2) if ok else "", _fmt(speedup, 2) if speedup else "",
                          _fmt(row["gflops_achieved"]) if ok else "", _verdict_cell(point), _check_cell(row) if ok else "",
                          *([peak_share_text(row.get("pct_conv_peak")) if ok else ""] if peaks else []),
                          *([_interval_cell(point)] if repeated else []),
                          *([_budget_cell(point) if ok else ""] if budget is not None else []))
    return table


def _budget_cell(point: Point) -> str:
    return "[green]meets[/]" if point.meets_budget else "[red]misses[/]"


def peak_share_text(pct) -> str:
    """"52%"; above the probe "105% nominal" (the runtime did fewer multiplies than counted)."""
    if pct is None or (isinstance(pct, float) and pct != pct):
        return ""
    return f"{pct:.0f}%" + (" nominal" if pct > 100 else "")


def _interval_cell(point: Point) -> str:
    """n: low-high frames/s, the interval of the median over the repeats."""
    repeats, low, high = point.row.get("repeats"), point.row.get("fps_ci_low"), point.row.get("fps_ci_high")
    if not point.measured or not repeats or repeats < 2 or low is None:
        return "-"
    return f"{int(repeats)}: {_fmt(low)}-{_fmt(high)}"


def cold_start_table(summary: ModelSummary, title: str) -> Table:
    ok = [p for p in summary.points if p.measured]
    warm = any(p.row.get("cold_warm_cache_total_ms") is not None for p in summary.points)
    concurrent = any(p.series.concurrency != 1 for p in ok)  # concurrency N: the first of its N sessions
    table = Table(title=f"{title}: cold start (ms)", title_justify="left")
    for column in ("runtime", "prec", *(["conc"] if concurrent else []), "batch", "import", "read", "compile/build",
                   "first infer", "total", *(["warm caches"] if warm else [])):
        table.add_column(column, justify="left" if column in ("runtime", "prec") else "right")
    for point in sorted(ok, key=lambda p: (p.series.runtime, p.series.precision, p.series.concurrency,
                                               p.series.concurrency_text, p.batch)):
        row = point.row
        table.add_row(row["runtime"], row["precision"], *([point.series.concurrency_text] if concurrent else []),
                      str(point.batch), _fmt(row["process_start_ms"]),
                      _fmt(row["cold_read_ms"]), _fmt(row["cold_compile_ms"]), _fmt(row["cold_first_infer_ms"]),
                      _fmt(row["cold_total_ms"]), *([_fmt(row.get("cold_warm_cache_total_ms"))] if warm else []))
    return table


def gpu_table(summary: ModelSummary, title: str) -> Table | None:
    """GPU points: end-to-end vs compute-only frames/s, trtexec's stage medians and NVML telemetry."""
    ok = [p for p in summary.points if p.measured and p.row.get("device") == "gpu"]
    if not ok:
        return None
    table = Table(title=f"{title}: GPU", title_justify="left",
                  caption="frames/s: copies included; compute: device-resident input and output; stage columns: "
                          "median ms per batch", caption_justify="left")
    for column in ("runtime", "prec", "batch", "frames/s", "compute f/s", "H2D", "GPU", "D2H", "enqueue",
                   "util %", "W", "mJ/frame", "SM MHz", "max C", "clock events"):
        table.add_column(column, justify="left" if column in ("runtime", "prec", "clock events") else "right")
    for point in sorted(ok, key=lambda p: (p.series.runtime, p.series.precision, p.batch)):
        row = point.row
        clocks = f"{_fmt(row.get('gpu_sm_clock_mean_mhz'), 0)}/{_fmt(row.get('gpu_sm_clock_min_mhz'), 0)}"
        table.add_row(row["runtime"], row["precision"], str(point.batch), _fmt(point.fps),
                      _fmt(row.get("fps_compute")), _fmt(row.get("h2d_ms"), 3), _fmt(row.get("compute_ms"), 3),
                      _fmt(row.get("d2h_ms"), 3), _fmt(row.get("enqueue_ms"), 3), _fmt(row.get("gpu_util_mean"), 0),
                      _fmt(row.get("gpu_power_mean_w")), _fmt(row.get("gpu_energy_mj_per_frame"), 2), clocks,
                      _fmt(row.get("gpu_temp_max_c"), 0), _text(row.get("gpu_clock_events")))
    return table


def print_tables(report: ReportModel, console: Console | None = None) -> None:
    """Per model file and machine (report built with context=("machine_id",)): tables, answers, warnings."""
    console = console or Console()
    # Files from several machines: one set of tables per machine, never mixed rows.
    several_machines = len({m.context.get("machine_id") for m in report.models} - {None}) > 1
    for summary in report.models:
        title = f"{summary.model} on {summary.points[0].row.get('host')}" if several_machines else summary.model
        console.print(throughput_table(summary, title, report.budget))
        if any(p.measured for p in summary.points):
            console.print(cold_start_table(summary, title))
        gpu = gpu_table(summary, title)
        if gpu is not None:
            console.print(gpu)
        console.print(f"[bold]{title}[/] {best_line(summary)}")
        if summary.budget is not None:
            console.print(f"[bold]{title}[/] {budget_line(summary.budget)}")
        for point, line in summary.warnings:
            console.print(f"[yellow]warning[/] {title} {describe_point(point)}: {line}")
        skipped: dict[str, list[Point]] = {}
        for point in summary.points:
            if point.status == "skipped":
                skipped.setdefault(str(point.row.get("reason")), []).append(point)
        for reason, points in sorted(skipped.items()):
            console.print(f"[dim]skipped {title} {', '.join(sorted({p.series.runtime for p in points}))} "
                          f"batches {', '.join(str(b) for b in sorted({p.batch for p in points}))}: {reason}[/]")
        console.print()
    print_pipeline_tables(report.pipelines, console)


# ---------------------------------------------------------------- pipeline points (facebench pipeline)

# Stage name in stages_json -> column header.
PIPELINE_STAGES = {"decode/resize": "decode", "detector": "detector", "decode+NMS": "NMS",
                   "alignment": "align", "embedder": "embed"}


def _stages(row) -> dict:
    text = row.get("stages_json")
    return json.loads(text) if isinstance(text, str) and text else {}


def _stage_cell(stages: dict, name: str) -> str:
    stage = stages.get("stages", {}).get(name)
    if not stage:
        return "-"
    return f"{_fmt(stage['ms_per_frame'], 2)} {100 * stage['share']:.0f}%"


def pipeline_table(points: list[Point], title: str) -> Table:
    """Per runtime and batch: throughput overlapped, against sequential, and where the time goes."""
    table = Table(title=title, title_justify="left",
                  caption="gain: overlapped over sequential frames/s; stage columns: ms/frame and share "
                          "of the time with the stages run one after another",
                  caption_justify="left")
    show_gpu = any(p.row.get("gpu_util_mean") is not None for p in points)
    show_input = any(p.series.input_format != DEFAULT_INPUT_FORMAT for p in points)  # uint8: normalisation inside the models
    columns = ["runtime", "batch", *(["input"] if show_input else []), "frames", "faces", "frames/s", "faces/s",
               "seq frames/s", "gain", *PIPELINE_STAGES.values(), *(["GPU util %"] if show_gpu else [])]
    if show_input:
        table.caption += "; input uint8-*: normalisation runs inside the detector and embedder, not decode/align"
    for column in columns:
        table.add_column(column, justify="left" if column == "runtime" else "right")
    for point in sorted(points, key=lambda p: (p.series.runtime, p.batch)):
        row = point.row
        lead = [row["runtime"], str(point.batch), *([point.series.input_format] if show_input else [])]
        if not point.measured:
            table.add_row(*lead, "", "", f"[red]failed[/] {(row.get('reason') or '')[:60]}",
                          *[""] * (len(columns) - len(lead) - 3))
            continue
        stages = _stages(row)
        cells = [*lead, str(int(row["frames_total"])), str(int(row["faces_total"])),
                 _fmt(point.fps), _fmt(row["faces_per_s"]), _fmt(stages.get("sequential_fps")),
                 f"x{_fmt(stages.get('overlap_gain'), 2)}", *(_stage_cell(stages, n) for n in PIPELINE_STAGES)]
        if show_gpu:
            cells.append(_fmt(row.get("gpu_util_mean")))
        table.add_row(*cells)
    return table


def print_pipeline_tables(points: list[Point], console: Console) -> None:
    grouped: dict[tuple[str, str], list[Point]] = {}
    for point in points:
        embedder = _stages(point.row).get("embedder", {}).get("model", "?")
        grouped.setdefault((point.model, embedder), []).append(point)
    for (detector, embedder), group in grouped.items():
        console.print(pipeline_table(group, f"pipeline: {detector} -> {embedder}"))
        for point in group:
            if point.row.get("warnings"):
                console.print(f"[dim]note {point.row['runtime']} batch {point.batch}: {point.row['warnings']}[/]",
                              highlight=False)
        console.print()


def peaks_table(peaks: list) -> Table:
    """Probe figures (bench.peaks.Peaks), one row per runtime and precision."""
    table = Table(title="peaks through each runtime (probe models, default options)", title_justify="left",
                  caption="GFLOP/s nominal (INT8: GOP/s); memory: one-thread copy; datasheet: NVIDIA dense peak",
                  caption_justify="left")
    for column in ("runtime", "prec", "GEMM GFLOP/s", "conv GFLOP/s", "memory GB/s", "H2D GB/s", "D2H GB/s",
                   "datasheet TFLOP/s", "measured", "errors"):
        table.add_column(column, justify="left" if column in ("runtime", "prec", "measured", "errors") else "right")
    for p in peaks:
        gemm, conv = (_fmt(getattr(p, f"{kind}_gflops")) + (" UNSTABLE" if kind in p.unstable else "") for kind in ("gemm", "conv"))
        table.add_row(p.runtime, p.precision, gemm, conv, _fmt(p.memory_copy_gbps),
                      _fmt(p.h2d_gbps), _fmt(p.d2h_gbps), _fmt(p.datasheet_tflops), p.measured_utc,
                      "; ".join(p.errors))
    return table
