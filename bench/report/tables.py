"""Terminal tables (rich) from result rows: throughput, cold start, best runtime and knee."""
from __future__ import annotations

import json
import math
import re

import pandas as pd
from rich.console import Console
from rich.table import Table

from bench.domain import DEFAULT_INPUT_FORMAT, DEFAULT_OPTIONS_VARIANT

KNEE_PCT = 5.0  # the knee: smallest batch within this % of the runtime's best frames/s


def _fmt(value, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float) and abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def _text(value) -> str:
    """A text column's cell: missing values (None, or NaN once pandas has read the file) as '-'."""
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


def input_label(row) -> str:
    """The point's input format where it is not the default float NCHW tensor ("" otherwise)."""
    fmt = row.get("input_format")
    return fmt if isinstance(fmt, str) and fmt != DEFAULT_INPUT_FORMAT else ""


def options_label(row) -> str:
    """The point's [sweep_options] combination ("" where the suite swept none)."""
    variant = row.get("options_variant")
    return variant if isinstance(variant, str) and variant != DEFAULT_OPTIONS_VARIANT else ""


def concurrency_of(row) -> int:
    """Requests in flight (1 for rows written before the concurrency axis)."""
    value = row.get("concurrency")
    return 1 if value is None or (isinstance(value, float) and math.isnan(value)) else int(value)


def _what(row) -> str:
    """runtime, precision, (non-default) input format and swept options of a point, for lines of text."""
    return " ".join(filter(None, [row["runtime"], row["precision"], input_label(row), options_label(row)]))


def describe_point(row) -> str:
    """A configuration in words: runtime, precision, input, options, batch and (above 1) concurrency."""
    conc = concurrency_of(row)
    return f"{_what(row)} batch {row['batch']}" + (f" concurrency {conc}" if conc > 1 else "")


def fmt_number(value, digits: int = 1) -> str:
    return _fmt(value, digits)


def _filled(frame: pd.DataFrame, column: str, default: str) -> pd.Series:
    if column not in frame:
        return pd.Series(default, index=frame.index)
    return frame[column].fillna(default)


def _input_formats(frame: pd.DataFrame) -> pd.Series:
    return _filled(frame, "input_format", DEFAULT_INPUT_FORMAT)


def _verdict_cell(row) -> str:
    if row["status"] != "ok":
        return f"[yellow]{row['status']}[/]" if row["status"] == "skipped" else "[red]failed[/]"
    return "[green]VALID[/]" if row.get("verdict") == "VALID" else "[yellow]UNSTABLE[/]"


def point_line(row, position: str = "", checked_earlier: bool = False) -> str:
    """One plain line for a finished point, for logs that cannot show the live bar (CI, `| tee`).
    `checked_earlier`: a later repeat, whose checks ran on the first one."""
    where = f"{position} " if position else ""
    what = f"{where}{row['model']} {describe_point(row)}"
    if row["status"] != "ok":
        return f"{what}: {row['status']}: {row.get('reason') or '-'}"
    checks = "checks on repeat 1" if checked_earlier else re.sub(r"\[/?[a-z ]*\]", "", _check_cell(row))
    verdict = "VALID" if row.get("verdict") == "VALID" else "UNSTABLE"
    return f"{what}: {_fmt(row['fps'])} frames/s {verdict} {checks}"


def trustworthy(row) -> bool:
    """A number that may be quoted: measured, settled, uncontaminated, parity not failed."""
    return (row["status"] == "ok" and row.get("verdict") == "VALID"
            and row.get("contamination_passed") is not False and row.get("parity_passed") is not False)


def throughput_table(frame: pd.DataFrame, model: str, budget=None) -> Table:
    """`budget` (bench.report.model.LatencyBudget): a column marking the points that miss it."""
    table = Table(title=f"{model}: steady state", title_justify="left")
    frame = frame.assign(input_format=_input_formats(frame),
                         options_variant=_filled(frame, "options_variant", DEFAULT_OPTIONS_VARIANT),
                         concurrency=frame.apply(concurrency_of, axis=1) if len(frame) else 1)
    # The input, options and concurrency columns only where they tell something.
    inputs = bool((frame.input_format != DEFAULT_INPUT_FORMAT).any())
    swept = bool((frame.options_variant != DEFAULT_OPTIONS_VARIANT).any())
    concurrent = bool((frame.concurrency != 1).any())
    for column, justify in (("runtime", "left"), ("prec", "left"), *([("input", "left")] if inputs else []),
                            *([("options", "left")] if swept else []), *([("conc", "right")] if concurrent else []),
                            ("batch", "right"), ("frames/s", "right"),
                            ("ms/frame", "right"), ("p50 ms", "right"), ("p99 ms", "right"),
                            ("x batch 1", "right"), ("GFLOP/s", "right"), ("verdict", "left"), ("checks", "left")):
        table.add_column(column, justify=justify)
    peaks = "pct_conv_peak" in frame and bool(frame["pct_conv_peak"].notna().any())
    if peaks:
        table.add_column("% conv peak", justify="right")
    repeated = _has_repeats(frame)
    if repeated:
        table.add_column("repeats: 95% CI", justify="right")
    if budget is not None:
        table.add_column(f"{budget.percentile} <= {budget.ms:g} ms", justify="left")
    # Skipped points are summarised under the tables (one line per reason), not row by row.
    measured = frame[frame.status != "skipped"]
    for (runtime, _, input_format, variant, conc), group in measured.groupby(
            ["runtime", "precision", "input_format", "options_variant", "concurrency"], sort=False):
        group = group.sort_values("batch")
        base = group[(group.batch == 1) & (group.status == "ok")].fps
        base_fps = float(base.iloc[0]) if len(base) else None
        for _, row in group.iterrows():
            ok = row["status"] == "ok"
            fps_text = _fmt(row["fps"]) if ok else "see warnings"
            if ok and not trustworthy(row):
                fps_text = f"[strike]{fps_text}[/]"
            speedup = row["fps"] / base_fps if ok and base_fps else None
            table.add_row(runtime, _precision_cell(row), *([input_format] if inputs else []),
                          *([variant] if swept else []), *([str(conc)] if concurrent else []), str(row["batch"]), fps_text,
                          _fmt(row["ms_per_frame"], 3) if ok else "", _fmt(row["lat_p50_ms"], 2) if ok else "",
                          _fmt(row["lat_p99_ms"], 2) if ok else "", _fmt(speedup, 2) if speedup else "",
                          _fmt(row["gflops_achieved"]) if ok else "", _verdict_cell(row), _check_cell(row) if ok else "",
                          *([peak_share_text(row.get("pct_conv_peak")) if ok else ""] if peaks else []),
                          *([_interval_cell(row)] if repeated else []),
                          *([_budget_cell(row, budget) if ok else ""] if budget is not None else []))
    return table


def _budget_cell(row, budget) -> str:
    return "[green]meets[/]" if budget.meets(row) else "[red]misses[/]"


def peak_share_text(pct) -> str:
    """"52%"; above the probe "105% nominal" (the runtime did fewer multiplies than counted)."""
    if pct is None or (isinstance(pct, float) and math.isnan(pct)):
        return ""
    return f"{pct:.0f}%" + (" nominal" if pct > 100 else "")


def _has_repeats(frame: pd.DataFrame) -> bool:
    return "repeats" in frame and bool((frame["repeats"].fillna(1) > 1).any())


def _interval_cell(row) -> str:
    """n: low-high frames/s, the interval of the median over the repeats."""
    repeats, low, high = row.get("repeats"), row.get("fps_ci_low"), row.get("fps_ci_high")
    if row["status"] != "ok" or not repeats or repeats < 2 or low is None or math.isnan(low):
        return "-"
    return f"{int(repeats)}: {_fmt(low)}-{_fmt(high)}"


def cold_start_table(frame: pd.DataFrame, model: str) -> Table:
    warm = frame.get("cold_warm_cache_total_ms", pd.Series(dtype=float)).notna().any()
    table = Table(title=f"{model}: cold start (ms)", title_justify="left")
    ok = frame[frame.status == "ok"]
    ok = ok.assign(concurrency=ok.apply(concurrency_of, axis=1) if len(ok) else 1)
    concurrent = bool((ok.concurrency != 1).any())  # concurrency N: the first of its N sessions
    for column in ("runtime", "prec", *(["conc"] if concurrent else []), "batch", "import", "read", "compile/build",
                   "first infer", "total", *(["warm caches"] if warm else [])):
        table.add_column(column, justify="left" if column in ("runtime", "prec") else "right")
    for _, row in ok.sort_values(["runtime", "precision", "concurrency", "batch"]).iterrows():
        table.add_row(row["runtime"], row["precision"], *([str(row["concurrency"])] if concurrent else []),
                      str(row["batch"]), _fmt(row["process_start_ms"]),
                      _fmt(row["cold_read_ms"]), _fmt(row["cold_compile_ms"]), _fmt(row["cold_first_infer_ms"]),
                      _fmt(row["cold_total_ms"]), *([_fmt(row.get("cold_warm_cache_total_ms"))] if warm else []))
    return table


def gpu_table(frame: pd.DataFrame, model: str) -> Table | None:
    """GPU points: end-to-end vs compute-only frames/s, trtexec's stage medians and NVML telemetry."""
    ok = frame[(frame.status == "ok") & (frame.device == "gpu")]
    if ok.empty:
        return None
    table = Table(title=f"{model}: GPU", title_justify="left",
                  caption="frames/s: copies included; compute: device-resident input and output; stage columns: "
                          "median ms per batch", caption_justify="left")
    for column in ("runtime", "prec", "batch", "frames/s", "compute f/s", "H2D", "GPU", "D2H", "enqueue",
                   "util %", "W", "mJ/frame", "SM MHz", "max C", "clock events"):
        table.add_column(column, justify="left" if column in ("runtime", "prec", "clock events") else "right")
    for _, row in ok.sort_values(["runtime", "precision", "batch"]).iterrows():
        clocks = f"{_fmt(row.get('gpu_sm_clock_mean_mhz'), 0)}/{_fmt(row.get('gpu_sm_clock_min_mhz'), 0)}"
        table.add_row(row["runtime"], row["precision"], str(row["batch"]), _fmt(row["fps"]),
                      _fmt(row.get("fps_compute")), _fmt(row.get("h2d_ms"), 3), _fmt(row.get("compute_ms"), 3),
                      _fmt(row.get("d2h_ms"), 3), _fmt(row.get("enqueue_ms"), 3), _fmt(row.get("gpu_util_mean"), 0),
                      _fmt(row.get("gpu_power_mean_w")), _fmt(row.get("gpu_energy_mj_per_frame"), 2), clocks,
                      _fmt(row.get("gpu_temp_max_c"), 0), _text(row.get("gpu_clock_events")))
    return table


NO_BEST = "best: none, no point is VALID, clean and parity ok (see the warnings)"


def best_and_knee(frame: pd.DataFrame) -> str | None:
    """The best runtime and batch for a model, and the knee of that runtime's curve."""
    good = frame[frame.apply(trustworthy, axis=1)] if len(frame) else frame
    if good.empty:
        return None
    best = good.loc[good.fps.idxmax()]
    formats = _input_formats(good)
    variants = _filled(good, "options_variant", DEFAULT_OPTIONS_VARIANT)
    conc = good.apply(concurrency_of, axis=1)
    same = good[(good.runtime == best.runtime) & (good.precision == best.precision)
                & (formats == formats[best.name]) & (variants == variants[best.name])
                & (conc == conc[best.name])].sort_values("batch")
    knee = same[same.fps >= best.fps * (1 - KNEE_PCT / 100)].iloc[0]
    return (f"best: {describe_point(best)} at {_fmt(best.fps)} frames/s "
            f"(p99 {_fmt(best.lat_p99_ms, 2)} ms); knee: batch {knee.batch} reaches {_fmt(knee.fps)} frames/s "
            f"(within {KNEE_PCT:g}% of best) with p99 {_fmt(knee.lat_p99_ms, 2)} ms")


def warnings_for(frame: pd.DataFrame) -> list[str]:
    lines = []
    for _, row in frame.iterrows():
        where = describe_point(row)
        if row["status"] == "failed":
            lines.append(f"{where}: failed: {row['reason']}")
        elif row["status"] == "ok" and isinstance(row.get("warnings"), str):
            lines.append(f"{where}: {row['warnings']}")
        if row.get("contamination_passed") is False:
            lines.append(f"{where}: cross-frame contamination (max rel diff {row['contamination_max_rel']:.2e}); "
                         "its frames/s is not a valid figure")
        if row.get("parity_passed") is False:
            lines.append(f"{where}: parity gate failed ({row.get('parity_summary')})")
    return lines


def print_tables(frame: pd.DataFrame, console: Console | None = None, budget=None) -> None:
    """`budget`: a bench.report.model.LatencyBudget, its answer line and column (None: neither)."""
    from bench.report.model import budget_line

    console = console or Console()
    pipelines = frame[frame.kind.fillna("model") == "pipeline"]
    frame = frame[frame.kind.fillna("model") == "model"]
    # Files from several machines: one set of tables per machine, never mixed rows.
    several_machines = frame.machine_id.nunique() > 1
    for (model, _), group in frame.groupby(["model", frame.machine_id.fillna("")], sort=False):
        if several_machines:
            model = f"{model} on {group.host.iloc[0]}"
        console.print(throughput_table(group, model, budget))
        if (group.status == "ok").any():
            console.print(cold_start_table(group, model))
        gpu = gpu_table(group, model)
        if gpu is not None:
            console.print(gpu)
        summary = best_and_knee(group) or NO_BEST
        console.print(f"[bold]{model}[/] {summary}")
        if budget is not None:
            console.print(f"[bold]{model}[/] {budget_line(group, budget)}")
        for line in warnings_for(group):
            console.print(f"[yellow]warning[/] {model} {line}")
        skipped = group[group.status == "skipped"]
        for reason, items in skipped.groupby("reason"):
            console.print(f"[dim]skipped {model} {', '.join(sorted(set(items.runtime)))} "
                          f"batches {', '.join(str(b) for b in sorted(set(items.batch)))}: {reason}[/]")
        console.print()
    print_pipeline_tables(pipelines, console)


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


def pipeline_table(frame: pd.DataFrame, title: str) -> Table:
    """Per runtime and batch: throughput overlapped, against sequential, and where the time goes."""
    table = Table(title=title, title_justify="left",
                  caption="gain: overlapped over sequential frames/s; stage columns: ms/frame and share "
                          "of the time with the stages run one after another",
                  caption_justify="left")
    show_gpu = frame.get("gpu_util_mean", pd.Series(dtype=float)).notna().any()
    formats = _input_formats(frame)
    show_input = bool((formats != DEFAULT_INPUT_FORMAT).any())  # uint8: normalisation inside the models
    columns = ["runtime", "batch", *(["input"] if show_input else []), "frames", "faces", "frames/s", "faces/s",
               "seq frames/s", "gain", *PIPELINE_STAGES.values(), *(["GPU util %"] if show_gpu else [])]
    if show_input:
        table.caption += "; input uint8-*: normalisation runs inside the detector and embedder, not decode/align"
    for column in columns:
        table.add_column(column, justify="left" if column == "runtime" else "right")
    for index, row in frame.sort_values(["runtime", "batch"]).iterrows():
        lead = [row["runtime"], str(row["batch"]), *([formats[index]] if show_input else [])]
        if row["status"] != "ok":
            table.add_row(*lead, "", "", f"[red]failed[/] {(row.get('reason') or '')[:60]}",
                          *[""] * (len(columns) - len(lead) - 3))
            continue
        stages = _stages(row)
        cells = [*lead, str(int(row["frames_total"])), str(int(row["faces_total"])),
                 _fmt(row["fps"]), _fmt(row["faces_per_s"]), _fmt(stages.get("sequential_fps")),
                 f"x{_fmt(stages.get('overlap_gain'), 2)}", *(_stage_cell(stages, n) for n in PIPELINE_STAGES)]
        if show_gpu:
            cells.append(_fmt(row.get("gpu_util_mean")))
        table.add_row(*cells)
    return table


def print_pipeline_tables(frame: pd.DataFrame, console: Console) -> None:
    if frame.empty:
        return
    embedders = frame.apply(lambda row: _stages(row).get("embedder", {}).get("model", "?"), axis=1)
    for (detector, embedder), group in frame.groupby([frame.model, embedders], sort=False):
        console.print(pipeline_table(group, f"pipeline: {detector} -> {embedder}"))
        for _, row in group.iterrows():
            if isinstance(row.get("warnings"), str) and row["warnings"]:
                console.print(f"[dim]note {row['runtime']} batch {row['batch']}: {row['warnings']}[/]", highlight=False)
        console.print()


def peaks_table(peaks: list) -> Table:
    """Probe figures (bench.measure.peaks.Peaks), one row per runtime and precision."""
    table = Table(title="peaks through each runtime (probe models, default options)", title_justify="left",
                  caption="GFLOP/s nominal (INT8: GOP/s); memory: one-thread copy; datasheet: NVIDIA dense peak",
                  caption_justify="left")
    for column in ("runtime", "prec", "GEMM GFLOP/s", "conv GFLOP/s", "memory GB/s", "H2D GB/s", "D2H GB/s",
                   "datasheet TFLOP/s", "measured", "errors"):
        table.add_column(column, justify="left" if column in ("runtime", "prec", "measured", "errors") else "right")
    for p in peaks:
        table.add_row(p.runtime, p.precision, _fmt(p.gemm_gflops), _fmt(p.conv_gflops), _fmt(p.memory_copy_gbps),
                      _fmt(p.h2d_gbps), _fmt(p.d2h_gbps), _fmt(p.datasheet_tflops), p.measured_utc,
                      "; ".join(p.errors))
    return table
