"""PNG plots of result files (matplotlib, headless): per model, frames/s against batch, latency
against frames/s, cold-start phases, and GPU utilisation and power where recorded.

Drawn from the report model: one line per series (runtime, precision and, where they vary, input
format, options variant, concurrency) and machine (or run) when the inputs hold several. Every
figure is FIG_SIZE_IN at DPI, so every PNG is the same pixel size. Contaminated and
parity-failed points are left out (their numbers are not valid); unstable ones are drawn hollow.
"""
from __future__ import annotations

import io
import re
from dataclasses import dataclass, field

from bench import store
from bench.report.compare import Results
from bench.report.model import ModelSummary, Point, Series, build_report_model, context_columns
from bench.report.text import input_label, options_label

FIG_SIZE_IN = (8.0, 5.0)
DPI = 100
PIXELS = (int(FIG_SIZE_IN[0] * DPI), int(FIG_SIZE_IN[1] * DPI))  # width, height of every PNG
COLD_PHASES = (("process_start_ms", "import"), ("cold_read_ms", "read"),
               ("cold_compile_ms", "compile/build"), ("cold_first_infer_ms", "first infer"))


@dataclass
class PlotFile:
    model: str
    sha256: str
    kind: str  # fps-vs-batch, latency-vs-fps, cold-start, gpu
    title: str
    location: str  # where the PNG was written
    name: str  # file name inside the output folder


@dataclass
class PlotSet:
    plots: list[PlotFile] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def write_plots(results: Results, out_dir: str) -> PlotSet:
    """Write every plot that the results allow into `out_dir` (local folder or URI)."""
    import matplotlib

    matplotlib.use("Agg")  # headless; set here, not at import, so the CLI never pays for matplotlib
    store.ensure_folder(out_dir)
    written = PlotSet()
    rows = results.records()
    answers = build_report_model(rows, context=context_columns(rows))
    measured = [p for p in answers.points if p.kind == "model" and p.measured]
    left_out = sum(not _plotted(p) for p in measured)
    if left_out:
        written.notes.append(f"{left_out} contaminated or parity-failed points left out of the plots")
    figures = _by_model_file(answers.models)
    for (model, sha), lines in figures.items():
        slug = _model_slug(model, sha, figures)
        for kind, title, draw in _PLOTS:
            figure = draw(lines, f"{model}: {title}")
            if figure is None:
                continue
            name = f"{slug}-{kind}.png"
            location = store.join_location(out_dir, name)
            store.write_bytes(location, _png_bytes(figure))
            written.plots.append(PlotFile(model, sha, kind, title, location, name))
    return written


def _plotted(point: Point) -> bool:
    return point.measured and not {"contaminated", "parity failed"} & set(point.marks)


def _png_bytes(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)  # no bbox_inches="tight": it would change the size
    return buffer.getvalue()


Line = tuple[str, list[Point]]  # legend label, plotted points by batch


def _by_model_file(summaries: list[ModelSummary]) -> dict[tuple[str, str], list[Line]]:
    """Per model file, its lines: each series of each machine (or run), plotted points only."""
    figures: dict[tuple[str, str], list[Line]] = {}
    for summary in summaries:
        for series in summary.series:
            points = [p for p in series.points if _plotted(p)]
            if points:
                figures.setdefault((summary.model, summary.sha256), []).append((_label(summary, series), points))
    return figures


def _label(summary: ModelSummary, series: Series) -> str:
    key, first = series.key, series.points[0]
    conc = f"conc {key.concurrency_text}" if key.concurrency > 1 else ""
    parts = [key.runtime, key.precision, input_label(first), options_label(first), conc, *summary.context.values()]
    return " ".join(str(part) for part in parts if part)


def _model_slug(model: str, sha: str, figures) -> str:
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", model).strip("-")
    several_files = len([name for name, _ in figures if name == model]) > 1
    return f"{slug}-{str(sha)[:8]}" if several_files else slug


def _figure(ncols: int = 1):
    from matplotlib.figure import Figure

    figure = Figure(figsize=FIG_SIZE_IN, dpi=DPI, layout="constrained")
    axes = figure.subplots(1, ncols)
    return figure, axes


def _log2_batch_axis(axis, batches) -> None:
    from matplotlib.ticker import FixedLocator, NullLocator, ScalarFormatter

    axis.set_xscale("log", base=2)
    axis.xaxis.set_major_locator(FixedLocator(sorted(set(batches))))
    axis.xaxis.set_major_formatter(ScalarFormatter())
    axis.xaxis.set_minor_locator(NullLocator())
    axis.set_xlabel("batch size (log2)")


def _line(axis, xs, ys, points: list[Point], label, style="o-", colour=None):
    """A line with filled markers for trustworthy points and hollow ones for unstable points."""
    (line,) = axis.plot(xs, ys, style, label=label, color=colour)
    unstable = [(x, y) for x, y, p in zip(xs, ys, points) if not p.trustworthy]
    if unstable:
        axis.plot(*zip(*unstable), style[0], markerfacecolor="white", color=line.get_color())
    return line


def _batches(lines: list[Line]) -> list[int]:
    return [p.batch for _, points in lines for p in points]


def _any_unstable(lines: list[Line]) -> bool:
    return any(not p.trustworthy for _, points in lines for p in points)


def plot_fps_vs_batch(lines: list[Line], title):
    figure, axis = _figure()
    for label, points in lines:
        _line(axis, [p.batch for p in points], [p.fps for p in points], points, label)
    _log2_batch_axis(axis, _batches(lines))
    axis.set_ylabel("frames/s")
    axis.set_ylim(bottom=0)
    _finish(axis, title, unstable_note=_any_unstable(lines))
    return figure


def plot_latency_vs_fps(lines: list[Line], title):
    figure, axis = _figure()
    for label, points in lines:
        fps = [p.fps for p in points]
        line = _line(axis, fps, [p.row["lat_p50_ms"] for p in points], points, f"{label} p50")
        _line(axis, fps, [p.row["lat_p99_ms"] for p in points], points, f"{label} p99", "s--", line.get_color())
        for p in points:
            axis.annotate(f"b{p.batch}", (p.fps, p.row["lat_p99_ms"]), textcoords="offset points",
                          xytext=(4, 4), fontsize=7)
    axis.set_xlabel("frames/s")
    axis.set_ylabel("latency per batch (ms)")
    axis.set_ylim(bottom=0)
    _finish(axis, title, unstable_note=_any_unstable(lines))
    return figure


def plot_cold_start(lines: list[Line], title):
    """Stacked bars of the cold-start phases, one bar per series at its smallest batch."""
    firsts = [(label, points[0]) for label, points in lines
              if any(points[0].row.get(column) is not None for column, _ in COLD_PHASES)]
    if not firsts:
        return None
    figure, axis = _figure()
    labels = [f"{label} b{first.batch}" for label, first in firsts]
    left = [0.0] * len(firsts)
    for column, phase in COLD_PHASES:
        widths = [first.row.get(column) or 0.0 for _, first in firsts]
        axis.barh(labels, widths, left=left, label=phase)
        left = [a + b for a, b in zip(left, widths)]
    axis.invert_yaxis()
    axis.set_xlabel("ms")
    _finish(axis, title)
    return figure


def plot_gpu(lines: list[Line], title):
    """GPU utilisation and power against batch; None when no point recorded them (CPU runs)."""
    if not any(p.row.get("gpu_util_mean") is not None or p.row.get("gpu_power_mean_w") is not None
               for _, points in lines for p in points):
        return None
    figure, (util_axis, power_axis) = _figure(ncols=2)
    for label, points in lines:
        for axis, column in ((util_axis, "gpu_util_mean"), (power_axis, "gpu_power_mean_w")):
            recorded = [p for p in points if p.row.get(column) is not None]
            if recorded:
                _line(axis, [p.batch for p in recorded], [p.row[column] for p in recorded], recorded, label)
    for axis, ylabel in ((util_axis, "GPU utilisation %"), (power_axis, "GPU power W")):
        _log2_batch_axis(axis, _batches(lines))
        axis.set_ylabel(ylabel)
        axis.set_ylim(bottom=0)
        axis.grid(True, alpha=0.3)
    util_axis.legend(fontsize=7)
    figure.suptitle(title)
    return figure


def _finish(axis, title: str, unstable_note: bool = False) -> None:
    axis.set_title(title + ("  (hollow: unstable)" if unstable_note else ""))
    axis.grid(True, alpha=0.3)
    axis.legend(fontsize=7)


_PLOTS = (
    ("fps-vs-batch", "frames/s against batch size", plot_fps_vs_batch),
    ("latency-vs-fps", "p50 and p99 latency against frames/s", plot_latency_vs_fps),
    ("cold-start", "cold-start phases", plot_cold_start),
    ("gpu", "GPU utilisation and power per batch", plot_gpu),
)
