"""The words for the report model's answers, the same in the terminal tables, the Markdown
report and compare: a point in words, best and knee, the budget answer."""
from __future__ import annotations

import math

from bench.domain import DEFAULT_INPUT_FORMAT, DEFAULT_OPTIONS_VARIANT
from bench.report.model import KNEE_PCT, BudgetAnswer, ModelSummary, Point

NO_BEST = "best: none, no point is VALID, clean and parity ok (see the warnings)"


def fmt_number(value, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float) and abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def input_label(point: Point) -> str:
    """The point's input format where it is not the default float NCHW tensor ("" otherwise)."""
    fmt = point.series.input_format
    return fmt if fmt != DEFAULT_INPUT_FORMAT else ""


def options_label(point: Point) -> str:
    """The point's [sweep_options] combination ("" where the suite swept none)."""
    variant = point.series.options_variant
    return variant if variant != DEFAULT_OPTIONS_VARIANT else ""


def describe_point(point: Point) -> str:
    """A configuration in words: runtime, precision, input, options, batch and (above 1) concurrency."""
    key = point.series
    what = " ".join(filter(None, [key.runtime, key.precision, input_label(point), options_label(point)]))
    return f"{what} batch {point.batch}" + (f" concurrency {key.concurrency_text}" if key.concurrency > 1 else "")


def best_and_knee(summary: ModelSummary) -> str | None:
    """'CONFIGURATION at N frames/s (p99 ..); knee: batch ..'; None when no point is trustworthy."""
    best, knee = summary.best, summary.knee
    if best is None:
        return None
    return (f"{describe_point(best)} at {fmt_number(best.fps)} frames/s (p99 {fmt_number(best.row['lat_p99_ms'], 2)} ms); "
            f"knee: batch {knee.batch} reaches {fmt_number(knee.fps)} frames/s (within {KNEE_PCT:g}% of best) "
            f"with p99 {fmt_number(knee.row['lat_p99_ms'], 2)} ms")


def best_line(summary: ModelSummary) -> str:
    """The answer line of the terminal tables and compare."""
    answer = best_and_knee(summary)
    return f"best: {answer}" if answer else NO_BEST


def budget_answer(answer: BudgetAnswer) -> str:
    """The configuration under the budget, saying plainly when nothing meets it."""
    budget, best = answer.budget, answer.best
    if best is None:
        closest = "" if answer.lowest_ms is None else f" (the lowest {budget.percentile} is {fmt_number(answer.lowest_ms, 2)} ms)"
        return f"no configuration meets the budget{closest}"
    return (f"{describe_point(best)} at {fmt_number(best.fps)} frames/s "
            f"({budget.percentile} {fmt_number(best.row[budget.column], 2)} ms)")


def budget_line(answer: BudgetAnswer) -> str:
    """The answer line beside best and knee."""
    return f"under budget {answer.budget.label}: {budget_answer(answer)}"
