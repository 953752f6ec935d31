"""PNG plots of result files (matplotlib, headless): per model, frames/s against batch, latency
against frames/s, cold-start phases, and GPU utilisation and power where recorded.

Every figure is FIG_SIZE_IN at DPI, so every PNG is the same pixel size. Contaminated and
parity-failed points are left out (their numbers are not valid); unstable ones are drawn hollow.
"""
from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from typing import Any

from bench import store
from bench.report.compare import Results, point_marks

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
    rows = [r for r in results.records() if r["status"] == "ok"]
    valid = [r for r in rows if not {"contaminated", "parity failed"} & set(point_marks(r))]
    if len(valid) < len(rows):
        written.notes.append(f"{len(rows) - len(valid)} contaminated or parity-failed points left out of the plots")
    rows = valid
    labeller = _series_labeller(rows)
    for (model, sha), model_rows in _by_model(rows).items():
        slug = _model_slug(model, sha, rows)
        for kind, title, draw in _PLOTS:
            figure = draw(model_rows, labeller, f"{model}: {title}")
            if figure is None:
                continue
            name = f"{slug}-{kind}.png"
            location = store.join_location(out_dir, name)
            store.write_bytes(location, _png_bytes(figure))
            written.plots.append(PlotFile(model, sha, kind, title, location, name))
    return written


def _png_bytes(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)  # no bbox_inches="tight": it would change the size
    return buffer.getvalue()


def _by_model(rows: list[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    grouped: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        grouped.setdefault((r["model"], r["model_sha256"]), []).append(r)
    return grouped


def _model_slug(model: str, sha: str, rows) -> str:
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", model).strip("-")
    several_files = len({r["model_sha256"] for r in rows if r["model"] == model}) > 1
    return f"{slug}-{str(sha)[:8]}" if several_files else slug


def _series_labeller(rows: list[dict[str, Any]]):
    """One line per runtime and precision, and per machine (or run) when the inputs hold several."""
    machines = len({r["machine_label"] for r in rows}) > 1
    runs_per_machine = len({r["run_label"] for r in rows}) > len({r["machine_label"] for r in rows})

    def label(row: dict[str, Any]) -> str:
        parts = [row["runtime"], row["precision"]]
        if runs_per_machine:
            parts.append(row["run_label"])
        elif machines:
            parts.append(row["machine_label"])
        return " ".join(parts)
    return label


def _series(rows, labeller) -> dict[str, list[dict[str, Any]]]:
    series: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        series.setdefault(labeller(r), []).append(r)
    return {k: sorted(v, key=lambda r: r["batch"]) for k, v in series.items()}


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


def _line(axis, xs, ys, rows, label, style="o-", colour=None):
    """A line with filled markers for trustworthy points and hollow ones for unstable points."""
    (line,) = axis.plot(xs, ys, style, label=label, color=colour)
    unstable = [(x, y) for x, y, r in zip(xs, ys, rows) if point_marks(r)]
    if unstable:
        axis.plot(*zip(*unstable), style[0], markerfacecolor="white", color=line.get_color())
    return line


def plot_fps_vs_batch(rows, labeller, title):
    figure, axis = _figure()
    for label, series in _series(rows, labeller).items():
        _line(axis, [r["batch"] for r in series], [r["fps"] for r in series], series, label)
    _log2_batch_axis(axis, [r["batch"] for r in rows])
    axis.set_ylabel("frames/s")
    axis.set_ylim(bottom=0)
    _finish(axis, title, unstable_note=any(point_marks(r) for r in rows))
    return figure


def plot_latency_vs_fps(rows, labeller, title):
    figure, axis = _figure()
    for label, series in _series(rows, labeller).items():
        fps = [r["fps"] for r in series]
        line = _line(axis, fps, [r["lat_p50_ms"] for r in series], series, f"{label} p50")
        _line(axis, fps, [r["lat_p99_ms"] for r in series], series, f"{label} p99", "s--", line.get_color())
        for r in series:
            axis.annotate(f"b{r['batch']}", (r["fps"], r["lat_p99_ms"]), textcoords="offset points",
                          xytext=(4, 4), fontsize=7)
    axis.set_xlabel("frames/s")
    axis.set_ylabel("latency per batch (ms)")
    axis.set_ylim(bottom=0)
    _finish(axis, title, unstable_note=any(point_marks(r) for r in rows))
    return figure


def plot_cold_start(rows, labeller, title):
    """Stacked bars of the cold-start phases, one bar per series at its smallest batch."""
    firsts = [series[0] for series in _series(rows, labeller).values()]
    firsts = [r for r in firsts if any(r.get(column) is not None for column, _ in COLD_PHASES)]
    if not firsts:
        return None
    figure, axis = _figure()
    labels = [f"{labeller(r)} b{r['batch']}" for r in firsts]
    left = [0.0] * len(firsts)
    for column, phase in COLD_PHASES:
        widths = [r.get(column) or 0.0 for r in firsts]
        axis.barh(labels, widths, left=left, label=phase)
        left = [a + b for a, b in zip(left, widths)]
    axis.invert_yaxis()
    axis.set_xlabel("ms")
    _finish(axis, title)
    return figure


def plot_gpu(rows, labeller, title):
    """GPU utilisation and power against batch; None when no row recorded them (CPU runs)."""
    if not any(r.get("gpu_util_mean") is not None or r.get("gpu_power_mean_w") is not None for r in rows):
        return None
    figure, (util_axis, power_axis) = _figure(ncols=2)
    for label, series in _series(rows, labeller).items():
        for axis, column in ((util_axis, "gpu_util_mean"), (power_axis, "gpu_power_mean_w")):
            points = [(r["batch"], r[column], r) for r in series if r.get(column) is not None]
            if points:
                xs, ys, rs = zip(*points)
                _line(axis, list(xs), list(ys), list(rs), label)
    for axis, ylabel in ((util_axis, "GPU utilisation %"), (power_axis, "GPU power W")):
        _log2_batch_axis(axis, [r["batch"] for r in rows])
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
