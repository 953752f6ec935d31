"""The cross-machine answers of a fleet, per model: the fastest configuration over every machine
(machine, runtime, precision, batch, concurrency) and each machine's best under a latency budget.
frames/s per machine side by side is compare's table by machine (report/comparison_tables.py), which
folds the points no machine measured and pages the machines that do not fit the width."""
from __future__ import annotations

from collections import defaultdict
from typing import Any

from bench.report.model import LatencyBudget, ModelSummary, build_report_model
from bench.report.text import budget_answer, describe_point, fmt_number


def print_fleet_answers(rows: list[dict[str, Any]], budget: LatencyBudget | None, console) -> None:
    by_model: dict[str, list[ModelSummary]] = defaultdict(list)
    for summary in build_report_model(rows, budget, ["machine"]).models:
        by_model[summary.model].append(summary)
    for model, summaries in by_model.items():
        console.print(f"{model}: {len(summaries)} machines", markup=False, highlight=False)
        for line in answer_lines(summaries):
            console.print(f"  {line}", markup=False, highlight=False, soft_wrap=True)


def answer_lines(summaries: list[ModelSummary]) -> list[str]:
    """The fastest trustworthy configuration over every machine, then each machine's budget answer."""
    bests = [s.best for s in summaries if s.best]
    measured = [p for s in summaries for p in s.points if p.measured and p.fps is not None]
    if bests:
        best = max(bests, key=lambda p: p.fps)
        lines = [f"fastest: {best.row.get('machine')} {describe_point(best)}: {fmt_number(best.fps)} frames/s"]
    elif measured:  # still the answer, said with its doubt
        best = max(measured, key=lambda p: p.fps)
        lines = [f"fastest: {best.row.get('machine')} {describe_point(best)}: {fmt_number(best.fps)} frames/s, "
                 f"not trustworthy ({', '.join(best.marks)}): no machine has a VALID, clean point with parity ok"]
    else:
        lines = ["fastest: none, no machine measured a point"]
    lines += [f"{s.context.get('machine')} under budget {s.budget.budget.label}: {budget_answer(s.budget)}"
              for s in summaries if s.budget]
    return lines
