"""Compare result files across machines, runtimes, precisions or runs (the regression gate is gate.py).

Pure functions returning dataclasses; the rich tables live in commands.py, Markdown in markdown.py.

Matching: points are matched only when they measured the same model file (sha256) at the same
batch size, and, unless precision (or input format) is what is being compared, the same precision
(and input format). Each compared group (a machine, runtime, precision, input format or run) becomes
one column; every other dimension (runtime, precision, input format, machine) stays in the row key.

Pipeline points (facebench pipeline, kind "pipeline") are matched the same way, on the detector
file, the embedder file (from stages_json) and the pipeline's workload (frame source, faces per
frame, embedder batch, queue depth), and always compared on frames/s (faces/s shown beside it).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from bench import store
from bench.domain import DEFAULT_INPUT_FORMAT, DEFAULT_OPTIONS_VARIANT
from bench.errors import UserError
from bench.measure.stats import Interval, ratio_of_medians_interval
from bench.report.model import point_marks, series_key, shared_machine_pct

BY_CHOICES = ("machine", "runtime", "precision", "input", "options", "concurrency", "run")
GROUP_COLUMN = {"machine": "machine_label", "runtime": "runtime", "precision": "precision", "input": "input_format",
                "options": "options_variant", "concurrency": "concurrency_label", "run": "run_label"}
CLOCK_STEP_MHZ = 50  # clocks closer than this are the same setting, not a difference


@dataclass(frozen=True)
class Metric:
    name: str
    label: str
    higher_better: bool

    def value(self, row: dict[str, Any]) -> float | None:
        if self.name == "fps_per_watt":
            power = row.get("gpu_power_mean_w")
            return row["fps"] / power if row.get("fps") and power else None
        column = {"p99": "lat_p99_ms"}.get(self.name, self.name)
        return row.get(column)


def format_value(metric: Metric, value: float) -> str:
    digits = {"ms_per_frame": 3, "p99": 2, "fps_per_watt": 2}.get(metric.name, 1)
    return f"{value:,.0f}" if abs(value) >= 10000 else f"{value:.{digits}f}"


def value_and_ratio(metric: Metric, cell, is_baseline: bool) -> str:
    """A compared cell's value with its ratio to the baseline (the baseline shows no ratio), and
    the ratio's interval where both points have repeats."""
    text = format_value(metric, cell.value)
    if cell.ratio is not None and not is_baseline:
        interval = cell.ratio_interval
        ci = f", {interval.low:.2f}-{interval.high:.2f}" if interval else ""
        text += f" ({cell.ratio:.2f}x{ci})"
    return text


@dataclass(frozen=True)
class CellMarkup:
    """How a view marks a compared cell's parts up (rich markup, Markdown); each takes the text."""

    empty: str
    failed: str  # a point without a figure: its marks
    best: str
    faces: str
    marks: str
    unstable_only: str = ""  # marks that are only "unstable", where a view tells them apart


def cell_text(metric: Metric, cell, is_baseline: bool, markup: CellMarkup) -> str:
    """One compared cell as text: value and ratio, faces/s for pipelines, its marks; the rich and
    Markdown views differ in markup only."""
    if cell is None or (cell.value is None and not cell.marks):
        return markup.empty
    marks = ", ".join(cell.marks)
    if cell.value is None:
        return markup.failed.format(marks)
    text = value_and_ratio(metric, cell, is_baseline)
    if cell.best:
        text = markup.best.format(text)
    if cell.faces_per_s is not None:
        text += markup.faces.format(f"{cell.faces_per_s:.1f} faces/s")
    if cell.marks:
        only_unstable = cell.marks == ("unstable",) and markup.unstable_only
        text += (markup.unstable_only if only_unstable else markup.marks).format(marks)
    return text


METRICS = {
    "fps": Metric("fps", "frames/s", True),
    "ms_per_frame": Metric("ms_per_frame", "ms/frame", False),
    "p99": Metric("p99", "p99 ms", False),
    "fps_per_watt": Metric("fps_per_watt", "frames/s per W", True),
    "pct_conv_peak": Metric("pct_conv_peak", "% of conv peak", True),
}


# --- loading ---------------------------------------------------------------------------------

@dataclass
class Results:
    """Every row of every input file, with `source`, `run_label` and `machine_label` added."""
    frame: pd.DataFrame
    files: list[str]
    notes: list[str] = field(default_factory=list)

    def records(self, kind: str | None = "model") -> list[dict[str, Any]]:
        """Rows of one kind ("model" or "pipeline"); kind=None: every row."""
        if self.frame.empty:
            return []
        frame = self.frame if kind is None else self.frame[self.frame["kind"].fillna("model") == kind]
        return [{k: _clean(v) for k, v in row.items()} for row in frame.to_dict("records")]


def load_results(inputs: list[str]) -> Results:
    """Read any mix of files, folders, globs and URIs into one DataFrame. Raises UserError."""
    files = store.find_result_files(inputs)
    frames, notes = [], []
    for location in files:
        table, check = store.read_table(location)
        if check.note:
            notes.append(check.note)
        if check.schema_version is not None and check.schema_version < store.SCHEMA_VERSION:
            notes.append(f"{location}: schema v{check.schema_version} upgraded to v{store.SCHEMA_VERSION}")
        frame = table.to_pandas()
        frame["source"] = location
        frames.append(frame)
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if not frame.empty:
        frame["run_label"] = frame["source"].map(_run_labels(files))
        # Text, so that --baseline 2 names a group; rows before the axis had one request in flight.
        frame["concurrency_label"] = [series_key(row).concurrency_text for row in frame.to_dict("records")]
        frame["machine_label"] = _machine_labels(frame)
    return Results(frame, files, notes)


def _run_labels(files: list[str]) -> dict[str, str]:
    """File stems, with the parent folder's name where two files share a stem."""
    stems = {f: Path(store.location_name(f)).stem for f in files}
    labels = {}
    for location, stem in stems.items():
        if list(stems.values()).count(stem) > 1:
            parent = Path(store.location_identity(location)).parent.name
            stem = f"{parent}/{stem}"
        while stem in labels.values():
            stem += "'"
        labels[location] = stem
    return labels


def _machine_labels(frame: pd.DataFrame) -> pd.Series:
    """Fleet machine names where set; else host names; where one host name covers several machines (every cloud VM is 'vm'), the
    hardware that tells them apart (GPU, else CPU), with the machine id where that does not."""
    hosts = frame["host"].fillna("unknown").astype(str)
    ids = frame["machine_id"].fillna("").astype(str)
    first_rows = frame.assign(_host=hosts, _id=ids).drop_duplicates(["_host", "_id"])
    labels: dict[tuple[str, str], str] = {}
    for host, machines in first_rows.groupby("_host", sort=False):
        tags = {row["_id"]: _hardware_tag(row) for _, row in machines.iterrows()}
        for machine, tag in tags.items():
            if len(tags) == 1:
                labels[host, machine] = host
            elif tag and list(tags.values()).count(tag) == 1:
                labels[host, machine] = f"{host} {tag}"
            else:
                labels[host, machine] = " ".join(filter(None, [host, tag, machine[:6]]))
    found = pd.Series([labels[h, i] for h, i in zip(hosts, ids)], index=frame.index)
    named = frame["machine"]  # a fleet's name for the machine (run --machine) says it best
    return named.where(named.notna() & (named != ""), found)


def _hardware_tag(row) -> str:
    gpu = _clean(row.get("gpu_name"))
    if gpu:
        return str(gpu).removeprefix("NVIDIA ")
    cpu = _clean(row.get("cpu_model"))
    if not cpu:
        return ""
    for noise in ("(R)", "(TM)", " Processor", " CPU", " with Radeon Graphics"):
        cpu = str(cpu).replace(noise, "")
    cores = _clean(row.get("cpu_cores"))
    isa = _widest_isa(_clean(row.get("cpu_isa")) or "")
    return f"{' '.join(cpu.split()[:3])}" + (f" {int(cores)}c" if cores else "") + (f" {isa}" if isa else "")


# Most capable first: the one that names a CPU's class (two "AMD EPYC 2c" VMs can differ here).
_ISA_TAGS = (("amx_int8", "amx"), ("avx512_vnni", "avx512-vnni"), ("avx512f", "avx512"), ("avx_vnni", "avx-vnni"),
             ("avx2", "avx2"), ("i8mm", "i8mm"), ("sve", "sve"), ("asimddp", "neon-dot"), ("asimd", "neon"))


def _widest_isa(features: str) -> str:
    present = set(features.split())
    return next((tag for feature, tag in _ISA_TAGS if feature in present), "")


def _clean(value: Any) -> Any:
    if value is None or value is pd.NA:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


# --- comparison ------------------------------------------------------------------------------

@dataclass
class Cell:
    value: float | None
    ratio: float | None  # value / baseline value
    marks: tuple[str, ...]  # unstable, contaminated, parity failed, failed, skipped, no power (CPU)
    spread_pct: float | None  # window_spread_pct of the point: its recorded noise
    trustworthy: bool
    best: bool = False
    faces_per_s: float | None = None  # pipeline points only
    samples: tuple[float, ...] = ()  # the metric of each finished repeat (empty: measured once)
    shared_machine_pct: float | None = None  # other processes' CPU, where the point shared its machine (report.model)
    ratio_interval: Interval | None = None  # of the ratio to the baseline, where both have repeats
    reason: str | None = None  # why a skipped or failed point has no value

    @property
    def repeated(self) -> bool:
        return len(self.samples) >= 2


@dataclass
class PointComparison:
    labels: dict[str, Any]  # machine, runtime, precision, batch
    cells: dict[str, Cell]  # group -> cell; a group with no row for this point is absent

    @property
    def comparable(self) -> bool:
        return sum(c.value is not None for c in self.cells.values()) >= 2

    @property
    def measured_anywhere(self) -> bool:
        return any(c.value is not None for c in self.cells.values())


@dataclass
class ModelComparison:
    model: str  # for a pipeline: "detector -> embedder (workload)"
    sha256: str  # the model (pipeline: detector) file
    row_dims: list[str]  # label columns that vary, then batch
    points: list[PointComparison]


def unmeasured_lines(model: ModelComparison) -> list[str]:
    """The points no group measured (GPU runtimes on CPU machines, ladder skips everywhere), one line
    per runtime, status and reason instead of a row of 'skipped' cells each."""
    folded: dict[tuple[str, str, str], int] = {}
    for point in model.points:
        if point.measured_anywhere:
            continue
        cell = next(iter(point.cells.values()))
        status = "failed" if "failed" in cell.marks else "skipped"
        key = (str(point.labels.get("runtime", "")), status, cell.reason or "")
        folded[key] = folded.get(key, 0) + 1
    return [f"{runtime}: {count} points {status} everywhere" + (f" ({reason})" if reason else "")
            for (runtime, status, reason), count in folded.items()]


@dataclass
class EnvDifference:
    name: str
    values: dict[str, str]  # group -> value


@dataclass
class Comparison:
    by: str
    metric: Metric
    groups: list[str]  # baseline first
    baseline: str
    models: list[ModelComparison]
    differences: list[EnvDifference]
    notes: list[str]
    pipelines: list[ModelComparison] = field(default_factory=list)  # compared on PIPELINE_METRIC

    @property
    def comparable_points(self) -> int:
        return sum(p.comparable for m in self.models + self.pipelines for p in m.points)


PIPELINE_METRIC = METRICS["fps"]  # pipelines record no latency percentiles; frames/s is their figure


BASELINE_ALIASES = {"machine": ("machine_label", "machine", "host", "machine_id"), "run": ("run_label", "run_id"),
                    "runtime": ("runtime",), "precision": ("precision",), "input": ("input_format",),
                    "options": ("options_variant",), "concurrency": ("concurrency_label",)}


def choose_by(records: list[dict[str, Any]], by: str | None, baseline: str | None, baseline_is_file: bool) -> str:
    """Default grouping: runs when the baseline is a file; the dimension a baseline name belongs to;
    else machines, runs or runtimes, whichever varies first."""
    if by:
        return by
    if baseline_is_file:
        return "run"
    if baseline:
        for candidate in ("machine", "run", "runtime", "precision", "input", "options", "concurrency"):
            if any(r.get(alias) == baseline for r in records for alias in BASELINE_ALIASES[candidate]):
                return candidate
    for candidate in ("machine", "run"):
        if len({r[GROUP_COLUMN[candidate]] for r in records}) > 1:
            return candidate
    return "runtime"


def build_comparison(results: Results, metric: str = "fps", by: str | None = None,
                     baseline: str | None = None) -> Comparison:
    """Match points across groups and compute ratios to the baseline group. Raises UserError."""
    records = results.records(kind=None)  # groups, baseline and environment cover pipeline rows too
    if not records:
        raise UserError("no measured points in these files; pass files written by facebench run or pipeline")
    baseline_file = _baseline_file(results, baseline)
    by = choose_by(records, by, baseline, baseline_file is not None)
    groups = list(dict.fromkeys(r[GROUP_COLUMN[by]] for r in records))
    base = _resolve_baseline(records, by, groups, baseline, baseline_file)
    groups = [base] + [g for g in groups if g != base]
    chosen = METRICS[metric]
    notes = list(results.notes)
    dims = row_dims(by, several_runs=len({r["run_label"] for r in records}) > len({r["machine_label"] for r in records}))
    models = [_compare_model(rows, rows[0]["model"], by, dims, chosen, base, notes)
              for rows in _by_model(results.records(), notes)]
    pipeline_dims = [d for d in dims if d not in ("precision", "input", "options", "concurrency")]  # fp32, float input, no sweep
    pipelines = [_compare_model(rows, name, by, pipeline_dims, PIPELINE_METRIC, base, notes)
                 for name, rows in _by_pipeline(results.records("pipeline"), notes).items()]
    differences = environment_differences(records, by, groups)
    return Comparison(by, chosen, groups, base, models, differences, notes, pipelines)


def require_comparable(comparison: Comparison) -> None:
    """UserError unless at least one point has values in two groups."""
    if comparison.comparable_points:
        return
    if comparison.metric.name == "fps_per_watt" and not _any_value(comparison):
        raise UserError("fps_per_watt needs GPU power (gpu_power_mean_w) and these are CPU-only rows; "
                        "use --metric fps")
    if len(comparison.groups) < 2:
        others = [b for b in BY_CHOICES if b != comparison.by]
        others = f"{', '.join(others[:-1])} or {others[-1]}"
        raise UserError(f"no comparable points: every input is the same {comparison.by} ({comparison.groups[0]}); "
                        f"add results from another {comparison.by} or use --by {others}")
    raise UserError(f"no comparable points between {', '.join(comparison.groups)}: no model file (sha256), "
                    "precision and batch (nor pipeline) measured in more than one of them")


def _any_value(comparison: Comparison) -> bool:
    return any(c.value is not None for m in comparison.models + comparison.pipelines
               for p in m.points for c in p.cells.values())


def _baseline_file(results: Results, baseline: str | None) -> str | None:
    if not baseline:
        return None
    wanted = store.location_identity(baseline)
    return next((f for f in results.files if store.location_identity(f) == wanted), None)


def _resolve_baseline(records, by: str, groups: list[str], baseline: str | None, baseline_file: str | None) -> str:
    if not baseline:
        return groups[0]
    column = GROUP_COLUMN[by]
    if baseline_file:
        found = {r[column] for r in records if r["source"] == baseline_file}
        if len(found) != 1:
            raise UserError(f"--baseline {baseline}: the file holds {len(found)} {by}s ({', '.join(map(str, sorted(found)))}); "
                            f"name one of them with --baseline")
        return found.pop()
    for r in records:
        if any(r.get(alias) == baseline for alias in BASELINE_ALIASES[by]):
            return r[column]
    raise UserError(f"--baseline {baseline} matches no results file and no {by} in the inputs "
                    f"({', '.join(map(str, groups))}); pass one of them or a results file")


def _by_model(records: list[dict[str, Any]], notes: list[str]) -> list[list[dict[str, Any]]]:
    """Rows per model file; the same model name with different files is noted, never matched."""
    by_file: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in records:
        by_file.setdefault((r["model"], r["model_sha256"]), []).append(r)
    names = [name for name, _ in by_file]
    for name in dict.fromkeys(n for n in names if names.count(n) > 1):
        shas = ", ".join(str(sha)[:12] for n, sha in by_file if n == name)
        notes.append(f"{name}: the inputs hold different model files (sha256 {shas}); their points are not matched")
    return list(by_file.values())


def pipeline_stages(row: dict[str, Any]) -> dict[str, Any]:
    """A pipeline row's stages_json (embedder, workload, per-stage times); {} when absent or unreadable."""
    return _json_dict(row.get("stages_json"))


def pipeline_name(row: dict[str, Any]) -> str:
    """'detector -> embedder' of a pipeline row."""
    embedder = pipeline_stages(row).get("embedder") or {}
    return f"{row['model']} -> {embedder.get('model', '?')}"


def pipeline_workload(row: dict[str, Any]) -> str:
    """What each frame costs besides the models: matched points must have run the same work."""
    stages = pipeline_stages(row)
    faces = stages.get("synthetic_faces_per_frame")
    source = f"synthetic, {faces} faces/frame" if stages.get("source") == "synthetic" else stages.get("source", "?")
    return f"{source}, embedder batch {stages.get('rec_batch', '?')}, queue {stages.get('queue_depth', '?')}"


def _by_pipeline(records: list[dict[str, Any]], notes: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Pipeline rows per detector file, embedder file and workload; names that cover several are noted."""
    grouped: dict[tuple, list[dict[str, Any]]] = {}
    for r in records:
        embedder = pipeline_stages(r).get("embedder") or {}
        key = (pipeline_name(r), r["model_sha256"], embedder.get("sha256"), pipeline_workload(r))
        grouped.setdefault(key, []).append(r)
    names = [key[0] for key in grouped]
    for name in dict.fromkeys(n for n in names if names.count(n) > 1):
        notes.append(f"pipeline {name}: the inputs hold different model files or workloads; their points are not matched")
    return {_pipeline_title(key, names.count(key[0]) > 1): rows for key, rows in grouped.items()}


def _pipeline_title(key: tuple, ambiguous: bool) -> str:
    name, det_sha, rec_sha, workload = key
    files = f", sha256 {str(det_sha)[:8]}/{str(rec_sha)[:8]}" if ambiguous else ""
    return f"pipeline {name} ({workload}{files})"


def row_dims(by: str, several_runs: bool) -> list[str]:
    """What stays in the row key besides batch. A run implies its machine; when runtimes or
    precisions are compared and one machine has several runs, rows are per run, not merged."""
    if by in ("run", "machine"):
        context = []  # by machine, several runs of one machine share its column: the newest is shown
    else:
        context = ["run" if several_runs else "machine"]
    return context + [d for d in ("runtime", "precision", "input", "options", "concurrency") if d != by]


def _compare_model(rows, name: str, by: str, dims: list[str], metric: Metric, base: str,
                   notes: list[str]) -> ModelComparison:
    label_columns = {"machine": "machine_label", "run": "run_label", "runtime": "runtime", "precision": "precision",
                     "input": "input_format", "options": "options_variant", "concurrency": "concurrency_label"}
    cells: dict[tuple, dict[str, list[dict]]] = {}
    for r in rows:
        key = tuple(r[label_columns[d]] for d in dims) + (int(r["batch"]),)
        cells.setdefault(key, {}).setdefault(r[GROUP_COLUMN[by]], []).append(r)
    order = {k[:-1]: i for i, k in reversed(list(enumerate(cells)))}
    points = []
    for key in sorted(cells, key=lambda k: (order[k[:-1]], k[-1])):
        labels = {d: v for d, v in zip(dims, key)} | {"batch": key[-1]}
        chosen = {g: _newest(rs, f"{name} {point_name(labels)} {g}", notes)
                  for g, rs in cells[key].items()}
        points.append(_compare_point(labels, chosen, metric, base))
    shown = [d for d in dims if len({p.labels[d] for p in points}) > 1 or d in ("runtime", "precision")]
    return ModelComparison(name, rows[0]["model_sha256"], shown + ["batch"], points)


def _newest(rows: list[dict[str, Any]], where: str, notes: list[str]) -> dict[str, Any]:
    if len(rows) > 1:
        notes.append(f"{where}: {len(rows)} measurements in one cell; the newest is shown (use --by run to see each)")
    return max(rows, key=lambda r: r.get("timestamp_utc") or "")


def point_name(labels: dict[str, Any]) -> str:
    """'machine runtime precision [input format] batch N'; the default float input goes unsaid."""
    unsaid = {"input": DEFAULT_INPUT_FORMAT, "options": DEFAULT_OPTIONS_VARIANT, "concurrency": "1"}
    said = [str(v) for k, v in labels.items() if k != "batch" and unsaid.get(k) != v]
    return " ".join(said) + f" batch {labels['batch']}"


def _compare_point(labels, rows: dict[str, dict[str, Any]], metric: Metric, base: str) -> PointComparison:
    cells = {g: _cell(r, metric) for g, r in rows.items()}
    base_value = cells[base].value if base in cells else None
    for group, cell in cells.items():
        if base_value and cell.value is not None and group != base:
            cell.ratio = cell.value / base_value
    if base in cells and cells[base].value is not None:
        cells[base].ratio = 1.0
        for group, cell in cells.items():
            if group != base and cell.value is not None and cell.repeated and cells[base].repeated:
                cell.ratio_interval = ratio_of_medians_interval(cells[base].samples, cell.samples)
    ranked = [c for c in cells.values() if c.value is not None and c.trustworthy]
    if len([c for c in cells.values() if c.value is not None]) >= 2 and ranked:
        pick = max if metric.higher_better else min
        pick(ranked, key=lambda c: c.value).best = True
    return PointComparison(labels, cells)


def _cell(row: dict[str, Any], metric: Metric) -> Cell:
    marks = point_marks(row)
    value = metric.value(row) if row["status"] == "ok" else None
    if row["status"] == "ok" and value is None and metric.name == "fps_per_watt":
        marks += ("no power (CPU)",) if row.get("device") == "cpu" else ("no power recorded",)
    spread = row.get("window_spread_pct")
    faces = row.get("faces_per_s") if row.get("kind") == "pipeline" and row["status"] == "ok" else None
    return Cell(value=value, ratio=None, marks=marks,
                spread_pct=spread if spread is not None and math.isfinite(spread) else None,
                trustworthy=not marks, faces_per_s=faces,
                samples=repeat_samples(row, metric) if value is not None else (),
                shared_machine_pct=shared_machine_pct(row), reason=row.get("reason"))


def repeat_samples(row: dict[str, Any], metric: Metric) -> tuple[float, ...]:
    """The metric of each repeat of a point that finished (repeats_json), in the order measured."""
    try:
        repeats = json.loads(row.get("repeats_json") or "[]")
    except ValueError:
        return ()
    values = [metric.value(r) for r in repeats if isinstance(r, dict) and r.get("status") == "ok"]
    return tuple(float(v) for v in values if v is not None and math.isfinite(v))


# --- environment differences -----------------------------------------------------------------

MACHINE_FACTS = {
    "host": "host", "cpu_model": "CPU", "cpu_threads": "CPU threads", "memory_gb": "memory GB", "os": "OS",
    "python_version": "Python", "gpu_name": "GPU", "gpu_driver": "GPU driver", "cuda_version": "CUDA",
    "harness_version": "facebench", "git_commit": "git commit",
    "cpu_vendor": "CPU vendor", "cpu_family": "CPU family", "cpu_model_number": "CPU model number",
    "cpu_stepping": "CPU stepping", "cpu_isa": "CPU ISA", "cpu_base_mhz": "CPU base MHz",
    "cpu_max_mhz": "CPU max MHz", "cpu_sockets": "CPU sockets", "cpu_virtualized": "VM",
    "lock_sha256": "lock sha256",
}


def environment_facts(rows: list[dict[str, Any]], by: str) -> dict[str, str]:
    """What describes the environment of a group of rows: machine, packages, runtime settings, clocks."""
    facts = {label: _distinct(r.get(column) for r in rows) for column, label in MACHINE_FACTS.items()}
    for r in rows:
        for name, version in _json_dict(r.get("packages_json")).items():
            facts.setdefault(f"package {name}", set()).add(version)
    if by != "runtime":  # per-runtime settings differ by definition when runtimes are the groups
        for runtime in dict.fromkeys(r["runtime"] for r in rows):
            facts.update(_runtime_facts(runtime, [r for r in rows if r["runtime"] == runtime]))
    facts.update(_clock_facts(rows))
    return {k: v if isinstance(v, str) else _distinct(v) for k, v in facts.items()}


def _runtime_facts(runtime: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    facts: dict[str, Any] = {f"{runtime} version": _distinct(_version_text(r.get("runtime_version")) for r in rows),
                             f"{runtime} threads": _distinct(r.get("threads") for r in rows),
                             f"{runtime} mode": _distinct(r.get("mode") for r in rows)}
    for r in rows:
        for key, value in _flat_options(_json_dict(r.get("runtime_options_json"))):
            if not key.endswith("precision_effective"):  # follows the precision, not the environment
                facts.setdefault(f"{runtime} option {key}", set()).add(str(value))
    return facts


def _flat_options(options: dict[str, Any], prefix: str = ""):
    """(key, value) pairs; a pipeline's per-model options ({"detector": {...}}) become "detector.key"."""
    for key, value in options.items():
        if isinstance(value, dict):
            yield from _flat_options(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _clock_facts(rows: list[dict[str, Any]]) -> dict[str, str]:
    facts = {}
    for column, label in (("gpu_sm_clock_mean_mhz", "GPU SM clock mean MHz"),
                          ("gpu_sm_clock_min_mhz", "GPU SM clock min MHz")):
        values = [r[column] for r in rows if r.get(column) is not None]
        if values:
            facts[label] = f"~{round(sum(values) / len(values) / CLOCK_STEP_MHZ) * CLOCK_STEP_MHZ}"
    facts["GPU clock events"] = _distinct(r.get("gpu_clock_events") for r in rows)
    return facts


def _json_dict(text: str | None) -> dict[str, Any]:
    try:
        parsed = json.loads(text) if text else {}
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _version_text(value: Any) -> str | None:
    if not value:
        return None
    try:
        parsed = json.loads(value)
    except (TypeError, ValueError):
        return str(value)
    return ", ".join(f"{k} {v}" for k, v in parsed.items()) if isinstance(parsed, dict) else str(parsed)


def _distinct(values) -> str:
    seen = sorted({_fact_text(v) for v in values if v is not None})
    return ", ".join(seen) if seen else "-"


def _fact_text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def environment_differences(records: list[dict[str, Any]], by: str, groups: list[str]) -> list[EnvDifference]:
    """Only the facts whose value is not the same in every group."""
    column = GROUP_COLUMN[by]
    per_group = {g: environment_facts([r for r in records if r[column] == g], by) for g in groups}
    names = list(dict.fromkeys(name for facts in per_group.values() for name in facts))
    differences = []
    for name in names:
        values = {g: per_group[g].get(name, "-") for g in groups}
        if len(set(values.values())) > 1:
            differences.append(EnvDifference(name, values))
    return differences
