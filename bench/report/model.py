"""The report model: what every renderer shows, computed once from result rows.

Per model file and context (a machine, a run, or the group `compare` puts in a column): its
points with their derived flags, the series the tables group them by, the best point, the knee
of the best's series, the answer under a latency budget and the warnings to show. tables.py,
markdown.py, plots.py and compare's printing only lay these out (wording: text.py).

- trustworthy: measured (status ok), settled (verdict VALID), and no check failed (a check not
  run does not count against it). A pipeline run has no windows to judge: only a failure marks it.
- best: the trustworthy point with the most frames/s (the first in row order on a tie).
- knee: among the trustworthy points of the best's series (runtime, precision, input format,
  options variant, concurrency), the smallest batch within KNEE_PCT of the best's frames/s.
- shared machine: other processes used more than SHARED_MACHINE_PCT of one core during the
  point's windows (`other_cpu_percent`, the busiest repeat): a warning here, and the gate does
  not call such a point slower.
- budget (`--latency-budget p99:30ms`, suite key `latency_budget`): the trustworthy point with
  the most frames/s whose latency percentile (of one batch, one request) meets it; when none
  does, the lowest that percentile any measured point reached.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bench.domain import DEFAULT_INPUT_FORMAT, DEFAULT_OPTIONS_VARIANT
from bench.errors import UserError

KNEE_PCT = 5.0
# Other processes' CPU (% of one core) above which a point measured the sharing as much as the model.
# The harness's own launcher polls its worker well under 5%; a second sweep or test run takes 50-150%.
SHARED_MACHINE_PCT = 25.0
PERCENTILES = {"p50": "lat_p50_ms", "p90": "lat_p90_ms", "p95": "lat_p95_ms", "p99": "lat_p99_ms"}
_BUDGET = re.compile(r"^(?:(p\d+)\s*:\s*)?(\d+(?:\.\d+)?)\s*(ms|s)?$", re.IGNORECASE)


# --------------------------------------------------------------------------- the latency budget

@dataclass(frozen=True)
class LatencyBudget:
    percentile: str  # p50 | p90 | p95 | p99
    ms: float

    @property
    def column(self) -> str:
        return PERCENTILES[self.percentile]

    @property
    def label(self) -> str:
        return f"{self.percentile} <= {self.ms:g} ms"

    def meets(self, row: Mapping[str, Any]) -> bool:
        """A measured point whose latency percentile is within the budget."""
        value = _clean(row.get(self.column))
        return row.get("status") == "ok" and value is not None and value <= self.ms


def parse_budget(text: str | None, where: str = "--latency-budget") -> LatencyBudget | None:
    """'30ms', '30', 'p95:30ms', 'p50:0.5s' (p99 by default); None for no budget; UserError otherwise."""
    if text is None or not str(text).strip():
        return None
    match = _BUDGET.match(str(text).strip())
    percentile = (match.group(1) or "p99").lower() if match else ""
    if not match or percentile not in PERCENTILES or float(match.group(2)) <= 0:
        raise UserError(f"{where} '{text}': expected a positive latency with an optional percentile, "
                        f"e.g. 30ms, p95:30ms, p50:0.5s (percentiles: {', '.join(PERCENTILES)})")
    value = float(match.group(2)) * (1000.0 if (match.group(3) or "ms").lower() == "s" else 1.0)
    return LatencyBudget(percentile, value)


# --------------------------------------------------------------------------- points

@dataclass(frozen=True)
class SeriesKey:
    """What one curve over batch sizes holds fixed: the tables' groups, the knee's series."""
    runtime: str
    precision: str
    input_format: str = DEFAULT_INPUT_FORMAT
    options_variant: str = DEFAULT_OPTIONS_VARIANT
    concurrency: int = 1  # requests in flight, as measured
    # Set where the runtime chose a different number than the suite asked (OpenVINO's THROUGHPUT hint
    # runs several requests at "concurrency 1"): such a point is not the same series as an explicit one.
    concurrency_asked: int | None = None

    @property
    def concurrency_text(self) -> str:
        return f"{self.concurrency} (by runtime)" if self.concurrency_asked is not None else str(self.concurrency)


@dataclass(frozen=True, eq=False)
class Point:
    row: dict[str, Any]  # the stored row, missing values as None
    series: SeriesKey
    marks: tuple[str, ...]  # why its number may not be quoted as is; empty: trustworthy
    warnings: tuple[str, ...]  # plain sentences for the warnings, without naming the point
    meets_budget: bool | None = None  # None: no budget asked

    @property
    def model(self) -> str:
        return self.row["model"]

    @property
    def kind(self) -> str:
        return self.row.get("kind") or "model"

    @property
    def batch(self) -> int:
        return int(self.row["batch"])

    @property
    def status(self) -> str:
        return self.row["status"]

    @property
    def measured(self) -> bool:
        return self.status == "ok"

    @property
    def fps(self) -> float | None:
        return self.row.get("fps")

    @property
    def trustworthy(self) -> bool:
        return not self.marks


def point_of(row: Mapping[str, Any], budget: LatencyBudget | None = None) -> Point:
    """A row (from bench.store, or a DataFrame's records) with its derived flags."""
    row = {key: _clean(value) for key, value in row.items()}
    return Point(row, series_key(row), point_marks(row), _warnings(row),
                 budget.meets(row) if budget is not None else None)


def series_key(row: Mapping[str, Any]) -> SeriesKey:
    """Rows written before an axis existed hold its default (float input, no sweep, one request)."""
    concurrency = _clean(row.get("concurrency"))
    concurrency = 1 if concurrency is None else int(concurrency)
    asked = _clean(row.get("concurrency_requested"))
    return SeriesKey(row["runtime"], row["precision"], _clean(row.get("input_format")) or DEFAULT_INPUT_FORMAT,
                     _clean(row.get("options_variant")) or DEFAULT_OPTIONS_VARIANT, concurrency,
                     int(asked) if asked is not None and int(asked) != concurrency else None)


def point_marks(row: Mapping[str, Any]) -> tuple[str, ...]:
    """Why a point's number should not be quoted as is (empty when it may)."""
    if row["status"] != "ok":
        return (row["status"],)
    if row.get("kind") == "pipeline" and _clean(row.get("verdict")) is None:
        return ()  # a pipeline run has no steady windows to judge; only a failure marks it
    marks = []
    if row.get("verdict") != "VALID":
        marks.append("unstable")
    if _failed(row.get("contamination_passed")):
        marks.append("contaminated")
    if _failed(row.get("parity_passed")):
        marks.append("parity failed")
    return tuple(marks)


def shared_machine_pct(row: Mapping[str, Any]) -> float | None:
    """The other processes' CPU of a measured point that shared its machine; None when it did not (or unknown)."""
    other = _clean(row.get("other_cpu_percent")) if row["status"] == "ok" else None
    return other if other is not None and other > SHARED_MACHINE_PCT else None


def shared_machine_note(other_pct: float) -> str:
    return (f"shared machine: other processes used {other_pct:.0f}% CPU (of one core) during the windows, "
            f"above {SHARED_MACHINE_PCT:g}%")


def _warnings(row: Mapping[str, Any]) -> tuple[str, ...]:
    lines = []
    shared = shared_machine_pct(row)
    if shared is not None:
        lines.append(f"{shared_machine_note(shared)}; figures may be low")
    if row["status"] == "failed":
        lines.append(f"failed: {row.get('reason')}")
    elif row["status"] == "ok" and row.get("warnings"):
        lines.append(str(row["warnings"]))
    if _failed(row.get("contamination_passed")):
        max_rel = row.get("contamination_max_rel")
        diff = f" (max rel diff {max_rel:.2e})" if max_rel is not None else ""
        lines.append(f"cross-frame contamination{diff}; its frames/s is not a valid figure")
    if _failed(row.get("parity_passed")):
        lines.append(f"parity gate failed ({row.get('parity_summary')})")
    return tuple(lines)


def _failed(check: Any) -> bool:
    """A check that ran and failed; None: not run."""
    check = _clean(check)
    return check is not None and not check


def _clean(value: Any) -> Any:
    """Missing as None, whether the row came from pyarrow (None) or pandas (NaN, NA)."""
    try:
        return None if value is None or value != value else value  # NaN is the one value unequal to itself
    except TypeError:  # pd.NA refuses a truth value
        return None


# --------------------------------------------------------------------------- per model

@dataclass
class Series:
    key: SeriesKey
    points: list[Point]  # by batch


@dataclass(frozen=True)
class BudgetAnswer:
    budget: LatencyBudget
    best: Point | None  # None: no trustworthy point meets the budget
    lowest_ms: float | None = None  # then: the lowest percentile a measured point reached


@dataclass
class ModelSummary:
    model: str
    sha256: str
    context: dict[str, Any]  # context column -> value ({} when the rows hold one machine and run)
    points: list[Point]  # in row order
    series: list[Series]
    best: Point | None
    knee: Point | None
    budget: BudgetAnswer | None = None

    @property
    def warnings(self) -> list[tuple[Point, str]]:
        return [(point, line) for point in self.points for line in point.warnings]


@dataclass
class ReportModel:
    models: list[ModelSummary]  # model points per model file and context, in row order
    points: list[Point]  # every row, models and pipelines, in row order
    budget: LatencyBudget | None = None

    @property
    def pipelines(self) -> list[Point]:
        return [p for p in self.points if p.kind == "pipeline"]

    @property
    def warnings(self) -> list[tuple[Point, str]]:
        return [(point, line) for point in self.points for line in point.warnings]


def build_report_model(rows: Iterable[Mapping[str, Any]], budget: LatencyBudget | None = None,
                       context: Sequence[str] = ()) -> ReportModel:
    """Every answer, once. `context`: the columns that keep answers apart besides the model file
    (machine_id in the terminal tables; context_columns() in the report; compare's group column)."""
    points = [point_of(row, budget) for row in rows]
    grouped: dict[tuple, list[Point]] = {}
    for point in points:
        if point.kind == "model":
            key = (point.model, point.row.get("model_sha256"), *(point.row.get(c) for c in context))
            grouped.setdefault(key, []).append(point)
    models = [_summarise(key, members, budget, context) for key, members in grouped.items()]
    return ReportModel(models, points, budget)


def context_columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Runs, or machines, when rows (with compare.load_results' labels) hold several: what the
    report and the plots keep apart so that each answer and each line is about one of them."""
    if len({r["run_label"] for r in rows}) > len({r["machine_label"] for r in rows}):
        return ["run_label"]
    return ["machine_label"] if len({r["machine_label"] for r in rows}) > 1 else []


def _summarise(key: tuple, points: list[Point], budget: LatencyBudget | None, context: Sequence[str]) -> ModelSummary:
    by_series: dict[SeriesKey, list[Point]] = {}
    for point in points:
        by_series.setdefault(point.series, []).append(point)
    series = [Series(k, sorted(members, key=lambda p: p.batch)) for k, members in by_series.items()]
    good = [p for p in points if p.trustworthy]
    best = max(good, key=lambda p: p.fps) if good else None
    return ModelSummary(model=key[0], sha256=key[1], context=dict(zip(context, key[2:])), points=points,
                        series=series, best=best, knee=_knee(best, good),
                        budget=_budget_answer(points, budget) if budget is not None else None)


def _knee(best: Point | None, good: list[Point]) -> Point | None:
    if best is None:
        return None
    same = sorted((p for p in good if p.series == best.series), key=lambda p: p.batch)
    return next(p for p in same if p.fps >= best.fps * (1 - KNEE_PCT / 100))


def _budget_answer(points: list[Point], budget: LatencyBudget) -> BudgetAnswer:
    within = [p for p in points if p.trustworthy and p.meets_budget]
    if within:
        return BudgetAnswer(budget, max(within, key=lambda p: p.fps))
    reached = [p.row.get(budget.column) for p in points if p.measured and p.row.get(budget.column) is not None]
    return BudgetAnswer(budget, None, min(reached) if reached else None)
