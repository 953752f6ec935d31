"""The cross-machine comparison of a fleet: per model the fastest configuration over every
machine, each machine's best under a latency budget, and frames/s per machine side by side.

Readable with many machines: points no machine measured fold into one line per runtime and
reason, and when the machines do not fit the terminal's width the table turns (machines as
rows, each runtime and precision's best as columns)."""
from __future__ import annotations

from collections import defaultdict
from typing import Any

from rich.table import Table

from bench.report.model import LatencyBudget, ModelSummary, Point, build_report_model
from bench.report.text import budget_answer, describe_point, fmt_number

MACHINE_COLUMN_WIDTH = 12  # characters a machine's frames/s column takes, borders included
POINT_COLUMNS_WIDTH = 44  # the point's description columns


def print_fleet_comparison(rows: list[dict[str, Any]], budget: LatencyBudget | None, console) -> None:
    report = build_report_model(rows, budget, ["machine"])
    machines = list(dict.fromkeys(r["machine"] for r in rows))
    by_model: dict[str, list[ModelSummary]] = defaultdict(list)
    for summary in report.models:
        by_model[summary.model].append(summary)
    for model, summaries in by_model.items():
        console.print(f"\n{model}: {len(summaries)} machines", markup=False, highlight=False)
        for line in answer_lines(summaries):
            console.print(f"  {line}", markup=False, highlight=False, soft_wrap=True)
        points = [p for s in summaries for p in s.points]
        wide = POINT_COLUMNS_WIDTH + MACHINE_COLUMN_WIDTH * len(machines) > console.width
        console.print(turned_table(points, machines) if wide else side_by_side(points, machines))
        for line in folded_lines(points):
            console.print(f"  {line}", markup=False, highlight=False, soft_wrap=True)


def answer_lines(summaries: list[ModelSummary]) -> list[str]:
    """The fastest trustworthy configuration over every machine, then each machine's budget answer."""
    bests = [s.best for s in summaries if s.best]
    measured = [p for s in summaries for p in s.points if p.measured and p.fps is not None]
    if bests:
        best = max(bests, key=lambda p: p.fps)
        lines = [f"fastest: {_machine(best)} {describe_point(best)}: {fmt_number(best.fps)} frames/s"]
    elif measured:  # still the answer, said with its doubt
        best = max(measured, key=lambda p: p.fps)
        lines = [f"fastest: {_machine(best)} {describe_point(best)}: {fmt_number(best.fps)} frames/s, not trustworthy "
                 f"({', '.join(best.marks)}): no machine has a VALID, clean point with parity ok"]
    else:
        lines = ["fastest: none, no machine measured a point"]
    lines += [f"{s.context.get('machine')} under budget {s.budget.budget.label}: {budget_answer(s.budget)}"
              for s in summaries if s.budget]
    return lines


def side_by_side(points: list[Point], machines: list[str]) -> Table:
    """One row per point that some machine measured, one frames/s column per machine."""
    table = Table(show_edge=False)
    for column in ("runtime", "precision", "batch", "conc."):
        table.add_column(column)
    for machine in machines:
        table.add_column(machine, justify="right")
    cells: dict[tuple, dict[str, str]] = defaultdict(dict)
    for point in _measured_somewhere(points):
        cells[_point_key(point)][_machine(point)] = _cell(point)
    for key, by_machine in cells.items():
        runtime, precision, batch, concurrency = key[0], key[1], key[-1], key[-2]
        table.add_row(runtime, precision, str(batch), str(concurrency), *(by_machine.get(m, "-") for m in machines))
    return table


def turned_table(points: list[Point], machines: list[str]) -> Table:
    """Machines as rows; per runtime and precision the best frames/s a machine reached, with its batch."""
    series = list(dict.fromkeys((p.series.runtime, p.series.precision) for p in _measured_somewhere(points)))
    table = Table(show_edge=False)
    table.add_column("machine")
    for runtime, precision in series:
        table.add_column(f"{runtime} {precision}", justify="right")
    for machine in machines:
        mine = [p for p in points if _machine(p) == machine and p.measured and p.fps is not None]
        cells = []
        for runtime, precision in series:
            own = [p for p in mine if (p.series.runtime, p.series.precision) == (runtime, precision)]
            best = max(own, key=lambda p: p.fps, default=None)
            cells.append(f"{fmt_number(best.fps)} b{best.batch}" if best else "-")
        table.add_row(machine, *cells)
    return table


def folded_lines(points: list[Point]) -> list[str]:
    """Points no machine measured: one line per runtime, status and reason."""
    measured = {_point_key(p) for p in _measured_somewhere(points)}
    folded: dict[tuple[str, str, str], set] = defaultdict(set)
    for point in points:
        if _point_key(point) not in measured:
            folded[point.series.runtime, point.status, point.row.get("reason") or ""].add(_point_key(point))
    return [f"{runtime}: {len(keys)} points {status} on every machine" + (f" ({reason})" if reason else "")
            for (runtime, status, reason), keys in folded.items()]


def _measured_somewhere(points: list[Point]) -> list[Point]:
    return [p for p in points if p.measured]


def _point_key(point: Point) -> tuple:
    key = point.series
    return (key.runtime, key.precision, key.input_format, key.options_variant, key.concurrency, point.batch)


def _machine(point: Point) -> str:
    return point.row.get("machine") or "?"


def _cell(point: Point) -> str:
    if point.fps is None:
        return point.status
    return fmt_number(point.fps) + ("" if point.trustworthy else " *")
