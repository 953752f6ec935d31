"""A Markdown report of result files: environment, comparison, per-model tables, best
configuration, plots and pipeline points, ready to paste into a pull request or a wiki."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from bench.report.compare import (
    PIPELINE_METRIC,
    CellMarkup,
    Comparison,
    Results,
    cell_text,
    environment_facts,
    pipeline_name,
    pipeline_stages,
    pipeline_workload,
)
from bench.report.model import ModelSummary, Point, ReportModel, build_report_model, context_columns
from bench.report.tables import PIPELINE_STAGES, peak_share_text
from bench.report.text import best_and_knee, budget_answer, describe_point


def build_report(results: Results, comparison: Comparison | None, plots, plots_folder: str, budget=None) -> str:
    """The whole report as Markdown; plot images are linked relative to the report (plots_folder/NAME).
    `budget` (bench.report.model.LatencyBudget): each model's best configuration under it."""
    rows, pipelines, every = results.records(), results.records("pipeline"), results.records(kind=None)
    columns = context_columns(rows)
    answers = build_report_model(every, budget, columns)
    of_which = f" ({len(pipelines)} pipeline)" if pipelines else ""
    lines = ["# facebench report", "",
             f"Generated {datetime.now(timezone.utc).isoformat(timespec='seconds')} from {len(results.files)} "
             f"results file(s), {len(every)} points{of_which}.", ""]
    lines += [f"- `{location}`{_file_summary(every, location)}" for location in results.files]
    lines += ["", *environment_section(every)]
    if comparison is not None:
        lines += comparison_section(comparison)
    for summaries in _by_model_file(answers).values():
        lines += model_section(summaries, columns, plots, plots_folder)
    lines += pipeline_section(pipelines)
    lines += warnings_section(answers, results.notes + (comparison.notes if comparison else []))
    return "\n".join(lines).rstrip() + "\n"


def _file_summary(rows, location: str) -> str:
    mine = [r for r in rows if r["source"] == location]
    if not mine:
        return ": no measured points"
    suites = ", ".join(sorted({str(r.get("suite") or "-") for r in mine}))
    return f": suite {suites}, {mine[0]['machine_label']}, {len(mine)} points"


def md_table(headers: list[str], body: list[list[str]], right: set[int] = frozenset()) -> list[str]:
    align = ["---:" if i in right else "---" for i in range(len(headers))]
    lines = ["| " + " | ".join(_md(h) for h in headers) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(cell for cell in row) + " |" for row in body]
    return lines + [""]


def _md(text: Any) -> str:
    """Table-safe text: pipes escaped, one line."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _fmt(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if abs(value) >= 10000 else f"{value:.{digits}f}"


def _by_model_file(answers: ReportModel) -> dict[tuple[str, str], list[ModelSummary]]:
    """One section per model file; a summary per machine (or run) inside it."""
    grouped: dict[tuple[str, str], list[ModelSummary]] = {}
    for summary in answers.models:
        grouped.setdefault((summary.model, summary.sha256), []).append(summary)
    return grouped


# --- sections --------------------------------------------------------------------------------

def environment_section(rows) -> list[str]:
    machines = list(dict.fromkeys(r["machine_label"] for r in rows))
    facts = {m: environment_facts([r for r in rows if r["machine_label"] == m], by="machine") for m in machines}
    names = [n for n in dict.fromkeys(n for f in facts.values() for n in f)
             if any(facts[m].get(n, "-") != "-" for m in machines)]
    body = [[_md(name), *[_md(facts[m].get(name, "-")) for m in machines]] for name in names]
    return ["## Environment", "", *md_table(["", *machines], body)]


def comparison_section(comparison: Comparison) -> list[str]:
    metric = comparison.metric
    direction = "higher is better" if metric.higher_better else "lower is better"
    lines = ["## Comparison", "",
             f"{metric.label} by {comparison.by} ({direction}); ratios are to **{_md(comparison.baseline)}**; "
             f"bold: best trustworthy cell of the row; {comparison.comparable_points} comparable points "
             "(same model file, precision and batch).", ""]
    for model in comparison.models:
        lines += _comparison_table(comparison, model, metric)
    if comparison.pipelines:
        lines += [f"Pipelines are compared on {PIPELINE_METRIC.label}; faces/s follows in brackets.", ""]
    for pipeline in comparison.pipelines:
        lines += _comparison_table(comparison, pipeline, PIPELINE_METRIC)
    if comparison.differences:
        body = [[_md(d.name), *[_md(d.values[g]) for g in comparison.groups]] for d in comparison.differences]
        lines += [f"What differs between the {comparison.by}s:", "", *md_table(["", *comparison.groups], body)]
    return lines


def _comparison_table(comparison: Comparison, model, metric) -> list[str]:
    headers = [{"precision": "prec"}.get(d, d) for d in model.row_dims]
    headers += [f"{g} (baseline)" if g == comparison.baseline else g for g in comparison.groups]
    body = [[_md(point.labels[d]) for d in model.row_dims]
            + [_comparison_cell(metric, point.cells.get(g), g == comparison.baseline) for g in comparison.groups]
            for point in model.points]
    right = {model.row_dims.index("batch")} | set(range(len(model.row_dims), len(headers)))
    return [f"### {_md(model.model)}: {metric.label} by {comparison.by}", "", *md_table(headers, body, right)]


MARKDOWN_CELL = CellMarkup(empty="-", failed="_{}_", best="**{}**", faces=" [{}]", marks=" _{}_")


def _comparison_cell(metric, cell, is_baseline: bool) -> str:
    return cell_text(metric, cell, is_baseline, MARKDOWN_CELL)


def model_section(summaries: list[ModelSummary], columns: list[str], plots, plots_folder: str) -> list[str]:
    first = summaries[0].points[0].row
    flops = first.get("flops_per_frame")
    facts = [first.get("family") or "model", f"input {first.get('input_shape')}",
             f"{flops / 1e9:.3f} GFLOP/frame" if flops else None, f"sha256 {str(first['model_sha256'])[:12]}"]
    lines = [f"## {_md(first['model'])}", "", ", ".join(f for f in facts if f), ""]
    for summary in summaries:
        where = f" on {' '.join(str(v) for v in summary.context.values())}" if summary.context else ""
        best = best_and_knee(summary) or "no trustworthy point (see warnings)"
        lines += [f"**Best configuration{_md(where)}:** {best}", ""]
        if summary.budget is not None:
            label = summary.budget.budget.label
            lines += [f"**Best under {_md(label)}{_md(where)}:** {_md(budget_answer(summary.budget))}", ""]
    points = [p for summary in summaries for p in summary.points]
    lines += steady_state_table(points, columns)
    lines += cold_start_table(points, columns)
    if plots:
        images = [p for p in plots.plots if (p.model, p.sha256) == (first["model"], first["model_sha256"])]
        lines += [f"![{_md(p.title)}]({plots_folder}/{p.name})" for p in images] + ([""] if images else [])
    return lines


def _sorted(points: list[Point], columns: list[str]) -> list[Point]:
    order = {key: i for i, key in reversed(list(enumerate((p.series.runtime, p.series.precision) for p in points)))}
    return sorted(points, key=lambda p: (*[str(p.row[c]) for c in columns], order[p.series.runtime, p.series.precision],
                                         p.series.concurrency, p.series.concurrency_text, p.batch))


def steady_state_table(points: list[Point], columns: list[str]) -> list[str]:
    context = {"run_label": "run", "machine_label": "machine"}
    concurrent = any(p.series.concurrency != 1 for p in points)  # the column only where the suite swept it
    headers = [context[c] for c in columns] + ["runtime", "prec", *(["conc"] if concurrent else []), "batch",
                                               "frames/s", "ms/frame", "p50 ms", "p99 ms", "GFLOP/s", "% conv peak",
                                               "verdict", "checks"]
    body = []
    for point in _sorted(points, columns):
        r, ok = point.row, point.measured
        fps = _fmt(r["fps"]) if ok else _md((r.get("reason") or "")[:80])
        if ok and point.marks:
            fps = f"~~{fps}~~" if set(point.marks) - {"unstable"} else f"_{fps}_"
        body.append([*[_md(r[c]) for c in columns], _md(r["runtime"]), _md(r["precision"]),
                     *([point.series.concurrency_text] if concurrent else []), str(r["batch"]), fps,
                     _fmt(r["ms_per_frame"], 3) if ok else "", _fmt(r["lat_p50_ms"], 2) if ok else "",
                     _fmt(r["lat_p99_ms"], 2) if ok else "", _fmt(r["gflops_achieved"]) if ok else "",
                     peak_share_text(r.get("pct_conv_peak")) if ok else "", _verdict(r), _checks(r) if ok else ""])
    first_number = len(columns) + 2
    return ["Steady state:", "", *md_table(headers, body, set(range(first_number, first_number + 7 + concurrent)))]


def cold_start_table(points: list[Point], columns: list[str]) -> list[str]:
    ok = [p.row for p in _sorted(points, columns) if p.measured]
    if not ok:
        return []
    context = {"run_label": "run", "machine_label": "machine"}
    headers = [context[c] for c in columns] + ["runtime", "prec", "batch", "import", "read", "compile/build",
                                               "first infer", "total"]
    body = [[*[_md(r[c]) for c in columns], _md(r["runtime"]), _md(r["precision"]), str(r["batch"]),
             *[_fmt(r.get(k)) for k in ("process_start_ms", "cold_read_ms", "cold_compile_ms",
                                        "cold_first_infer_ms", "cold_total_ms")]] for r in ok]
    first_number = len(columns) + 2
    return ["Cold start (ms):", "", *md_table(headers, body, set(range(first_number, first_number + 6)))]


def _verdict(row) -> str:
    if row["status"] != "ok":
        return row["status"]
    return "VALID" if row.get("verdict") == "VALID" else "**UNSTABLE**"


def _checks(row) -> str:
    marks = []
    if row.get("contamination_checked"):
        marks.append("clean" if row.get("contamination_passed") else "**CONTAMINATED**")
    if row.get("parity_checked"):
        marks.append("parity ok" if row.get("parity_passed") else "**PARITY FAIL**")
    return " ".join(marks) or "-"


def pipeline_section(rows) -> list[str]:
    """Per pipeline (detector -> embedder, workload): one line per point with throughput, the
    overlap gain and where the time goes."""
    if not rows:
        return []
    lines = ["## Pipeline", "",
             "frames/s and faces/s: stages overlapped (the recorded figure); seq frames/s: stages one after "
             "another; gain: overlapped over sequential; stage columns: ms/frame and share of the sequential time.",
             ""]
    columns = context_columns(rows)
    grouped: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        grouped.setdefault((pipeline_name(r), pipeline_workload(r)), []).append(r)
    for (name, workload), group in grouped.items():
        lines += [f"### {_md(name)}", "", f"{_md(workload)}, detector sha256 {str(group[0]['model_sha256'])[:12]}", ""]
        lines += pipeline_table(group, columns)
    return lines


def pipeline_table(rows, columns: list[str]) -> list[str]:
    context = {"run_label": "run", "machine_label": "machine"}
    headers = [context[c] for c in columns] + ["runtime", "batch", "frames", "faces", "frames/s", "faces/s",
                                               "seq frames/s", "gain", *PIPELINE_STAGES.values()]
    body = [[*[_md(r[c]) for c in columns], _md(r["runtime"]), str(r["batch"]), *_pipeline_cells(r)]
            for r in sorted(rows, key=lambda r: (*[str(r[c]) for c in columns], r["runtime"], r["batch"]))]
    return md_table(headers, body, set(range(len(columns) + 1, len(headers))))


def _pipeline_cells(row) -> list[str]:
    if row["status"] != "ok":
        return ["", "", f"_{_md(row['status'])}_: {_md((row.get('reason') or '')[:80])}", *[""] * 8]
    stages = pipeline_stages(row)
    gain = stages.get("overlap_gain")
    return [_count(row.get("frames_total")), _count(row.get("faces_total")), _fmt(row["fps"]),
            _fmt(row.get("faces_per_s")),
            _fmt(stages.get("sequential_fps")), f"x{gain:.2f}" if gain else "-",
            *[_stage_cell(stages, name) for name in PIPELINE_STAGES]]


def _stage_cell(stages: dict[str, Any], name: str) -> str:
    stage = (stages.get("stages") or {}).get(name)
    if not stage:
        return "-"
    return f"{stage['ms_per_frame']:.2f} ({100 * stage['share']:.0f}%)"


def warnings_section(answers: ReportModel, notes: list[str]) -> list[str]:
    lines = []
    for point, line in answers.warnings:
        model = pipeline_name(point.row) if point.kind == "pipeline" else point.model
        lines.append(f"{model} {describe_point(point)} ({point.row['run_label']}): {line}")
    skipped: dict[str, set[str]] = {}
    for point in answers.points:
        if point.status == "skipped":
            skipped.setdefault(str(point.row.get("reason")), set()).add(f"{point.model} {point.series.runtime} b{point.batch}")
    lines += [f"skipped {', '.join(sorted(points))}: {reason}" for reason, points in skipped.items()]
    lines += notes
    if not lines:
        return []
    return ["## Warnings", "", *[f"- {_md(line)}" for line in lines], ""]


def _count(value) -> str:
    return "-" if value is None else str(int(value))
