"""The report model: answers computed from result rows, the same for tables, Markdown and compare.

Here: the latency budget (`--latency-budget p99:30ms`, suite key `latency_budget`) and its
answer, the configuration with the most frames/s whose latency percentile meets the budget.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import pandas as pd

from bench.errors import UserError

PERCENTILES = {"p50": "lat_p50_ms", "p90": "lat_p90_ms", "p95": "lat_p95_ms", "p99": "lat_p99_ms"}
_BUDGET = re.compile(r"^(?:(p\d+)\s*:\s*)?(\d+(?:\.\d+)?)\s*(ms|s)?$", re.IGNORECASE)


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

    def meets(self, row) -> bool:
        """A measured point whose latency percentile (one batch, one request) is within the budget."""
        value = row.get(self.column) if hasattr(row, "get") else None
        return row.get("status") == "ok" and value is not None and not math.isnan(value) and value <= self.ms


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


def best_under_budget(frame: pd.DataFrame, budget: LatencyBudget) -> pd.Series | None:
    """The trustworthy point with the most frames/s whose percentile meets the budget (None: none does)."""
    from bench.report.tables import trustworthy

    if frame.empty:
        return None
    good = frame[frame.apply(lambda row: trustworthy(row) and budget.meets(row), axis=1)]
    if good.empty:
        return None
    return good.loc[good.fps.idxmax()]


def budget_line(frame: pd.DataFrame, budget: LatencyBudget) -> str:
    """The answer line beside best and knee, saying plainly when nothing meets the budget."""
    from bench.report.tables import describe_point, fmt_number

    best = best_under_budget(frame, budget)
    if best is None:
        measured = frame[frame.status == "ok"] if len(frame) else frame
        fastest = measured[budget.column].min() if len(measured) and budget.column in measured else None
        closest = "" if fastest is None or pd.isna(fastest) else f" (the lowest {budget.percentile} is {fmt_number(fastest, 2)} ms)"
        return f"under budget {budget.label}: no configuration meets the budget{closest}"
    return (f"under budget {budget.label}: {describe_point(best)} at {fmt_number(best.fps)} frames/s "
            f"({budget.percentile} {fmt_number(best[budget.column], 2)} ms)")


def budget_answers(frame: pd.DataFrame, budget: LatencyBudget, group_column: str) -> list[tuple[str, str, str]]:
    """(model, group, answer line) per model and group (e.g. machine_label): compare's side by side."""
    answers = []
    for (model, group), rows in frame.groupby(["model", group_column], sort=False):
        answers.append((str(model), str(group), budget_line(rows, budget)))
    return answers
