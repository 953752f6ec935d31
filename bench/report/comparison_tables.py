"""A comparison as rich tables (the Markdown view is markdown.py's; both lay out report.compare's cells)."""
from __future__ import annotations

from rich.table import Table

from bench.report.compare import GROUP_COLUMN, PIPELINE_METRIC, CellMarkup, cell_text, unmeasured_lines
from bench.report.model import build_report_model
from bench.report.text import best_line, budget_line


def print_comparison(comparison, console) -> None:
    for model in comparison.models:
        for table in comparison_tables(comparison, model, console.width):
            console.print(table)
        for line in unmeasured_lines(model):
            console.print(f"[dim]{line}[/]", highlight=False, soft_wrap=True)
    for pipeline in comparison.pipelines:
        console.print(comparison_table(comparison, pipeline, PIPELINE_METRIC))
    if comparison.differences:
        console.print(differences_table(comparison))
    else:
        console.print(f"[dim]environments: no difference recorded between {', '.join(comparison.groups)}[/]")
    pipelines = f" (pipelines: {PIPELINE_METRIC.label}, faces/s below)" if comparison.pipelines else ""
    console.print(f"[dim]{comparison.comparable_points} comparable points; cells show {comparison.metric.label}"
                  f"{pipelines} and the ratio to {comparison.baseline}; bold green: best trustworthy cell of the row; "
                  f"marked cells (unstable, contaminated, parity failed) are not quoted as best[/]", highlight=False)
    console.print(f"[dim]{interval_note(comparison)}[/]", highlight=False)


def print_answers(results, comparison, budget, console) -> None:
    """Each group's (machine's, by default) best and knee, and best under the budget, side by side."""
    column = GROUP_COLUMN[comparison.by]
    for summary in build_report_model(results.records(), budget, [column]).models:
        where = f"[bold]{summary.model}[/] {summary.context[column]}"
        console.print(f"{where}: {best_line(summary)}", highlight=False)
        if summary.budget is not None:
            console.print(f"{where}: {budget_line(summary.budget)}", highlight=False)


def interval_note(comparison) -> str:
    """What the ratios' uncertainty is: an interval over repeats, or within-run noise only."""
    cells = [c for m in comparison.models + comparison.pipelines for p in m.points for c in p.cells.values()]
    if any(c.ratio_interval for c in cells):
        return ("ratio a-b: 95% bootstrap interval of the ratio of medians over both runs' repeats; "
                "ratios without one: a side measured once (noise within-run only)")
    return "measured once per point (no --repeats): ratios carry no interval, their noise is within-run only"


GROUP_COLUMN_WIDTH = 16  # characters a group's column takes (value, ratio, borders)
DIM_COLUMN_WIDTH = 10


def comparison_tables(comparison, model, width: int) -> list:
    """The points some group measured, one column per group; groups that do not fit `width` go on
    to further tables (pages), each with the baseline, rather than wrapping."""
    per_page = max(1, (width - DIM_COLUMN_WIDTH * len(model.row_dims)) // GROUP_COLUMN_WIDTH - 1)
    others = [g for g in comparison.groups if g != comparison.baseline]
    pages = [others[i:i + per_page] for i in range(0, len(others), per_page)] or [[]]
    points = [p for p in model.points if p.measured_anywhere]
    return [comparison_table(comparison, model, groups=[comparison.baseline, *page], points=points,
                             page=f" ({n}/{len(pages)})" if len(pages) > 1 else "")
            for n, page in enumerate(pages, 1)]


def comparison_table(comparison, model, metric=None, groups=None, points=None, page: str = ""):
    """One model's (or, with metric=PIPELINE_METRIC, one pipeline's) points, one column per group."""
    metric = metric or comparison.metric
    groups = groups or comparison.groups
    direction = "higher is better" if metric.higher_better else "lower is better"
    table = Table(title=f"{model.model}: {metric.label} by {comparison.by}{page}", title_justify="left",
                  caption=direction, caption_justify="left")
    for dim in model.row_dims:
        table.add_column({"precision": "prec"}.get(dim, dim), justify="right" if dim == "batch" else "left")
    for group in groups:
        table.add_column(f"{group}\n(baseline)" if group == comparison.baseline else group, justify="right")
    for point in model.points if points is None else points:
        cells = [rich_cell(metric, point.cells.get(g), g == comparison.baseline) for g in groups]
        table.add_row(*[str(point.labels[d]) for d in model.row_dims], *cells)
    return table


RICH_CELL = CellMarkup(empty="[dim]-[/]", failed="[red]{}[/]", best="[bold green]{}[/]", faces="\n[dim]{}[/]",
                       marks="\n[red]{}[/]", unstable_only="\n[yellow]{}[/]")


def rich_cell(metric, cell, is_baseline: bool) -> str:
    return cell_text(metric, cell, is_baseline, RICH_CELL)


def differences_table(comparison):
    table = Table(title=f"what differs between the {comparison.by}s", title_justify="left")
    table.add_column("")
    for group in comparison.groups:
        table.add_column(group)
    for diff in comparison.differences:
        table.add_row(diff.name, *[diff.values[g] for g in comparison.groups])
    return table
