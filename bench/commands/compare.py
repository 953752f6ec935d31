"""`facebench compare`, `plot` and `report` (registered by bench.cli): they read results files.

Handlers import pandas, matplotlib and the comparison code lazily, so `facebench --help` stays fast.
"""
from __future__ import annotations

from pathlib import Path

# Kept literal here (not imported from compare.py) so registering the parser imports no pandas.
METRIC_CHOICES = ("fps", "ms_per_frame", "p99", "fps_per_watt", "pct_conv_peak")
BY_CHOICES = ("machine", "runtime", "precision", "input", "options", "concurrency", "run")  # input: the input format; options: [sweep_options]
EXIT_REGRESSION = 1
EXIT_INCONCLUSIVE = 3  # none slower, but some points the gate could not judge
INPUTS_HELP = "results files, folders, globs or URIs (file://, s3://, gs://)"


def register(subparsers) -> None:
    compare = subparsers.add_parser("compare", help="compare results across machines, runtimes, precisions or runs")
    _add_inputs(compare)
    _add_comparison_options(compare)
    compare.add_argument("--fail-if-slower", metavar="PCT",
                         help="regression gate on each point against the baseline. Exit status: 0 every point "
                              "not slower by more than PCT (e.g. 5%%); 1 any slower; 3 none slower but some "
                              "inconclusive. With repeats in both runs (run --repeats N), slower only when the "
                              "confidence interval of the ratio of medians lies wholly beyond PCT (too wide: "
                              "inconclusive, with the repeats that would decide it); without, only beyond PCT, "
                              "the two points' within-run noise and the 20%% two single runs of unchanged code "
                              "can differ by (less: inconclusive; measure with --repeats). A point whose windows, "
                              "in either run, saw other processes use over 25%% of a core is inconclusive "
                              "whatever its figures. Pipeline points: on frames/s, where they record a spread")
    compare.add_argument("--inconclusive-passes", action="store_true",
                         help="with --fail-if-slower: exit 0 when no point is slower, even if some are inconclusive "
                              "(the gate's old behaviour)")
    compare.add_argument("--confidence", metavar="PCT", default="95%",
                         help="confidence of the gate's intervals with repeats (default 95%%)")
    compare.set_defaults(handler=cmd_compare)

    plot = subparsers.add_parser("plot", help="write PNG plots (frames/s vs batch, latency, cold start, GPU)")
    _add_inputs(plot)
    plot.add_argument("--out", required=True, help="folder (or URI) for the PNG files")
    plot.set_defaults(handler=cmd_plot)

    report = subparsers.add_parser("report", help="write a Markdown report with environment, tables and plots")
    _add_inputs(report)
    report.add_argument("--out", required=True, help="Markdown file (or URI); plots go beside it in <name>-plots/")
    _add_comparison_options(report)
    report.add_argument("--no-plots", action="store_true", help="tables only")
    report.set_defaults(handler=cmd_report)


def _add_inputs(parser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help=INPUTS_HELP)


def _add_comparison_options(parser) -> None:
    parser.add_argument("--baseline", metavar="FILE_OR_NAME",
                        help="results file, or a machine, runtime, precision or run name (default: the first group)")
    parser.add_argument("--metric", choices=METRIC_CHOICES, default="fps", help="what to compare (default fps)")
    parser.add_argument("--latency-budget", metavar="[pXX:]MS",
                        help="each group's best configuration whose latency percentile meets it (30ms: p99; p95:30ms)")
    parser.add_argument("--by", choices=BY_CHOICES,
                        help="one column per ... (default: run when --baseline is a file, else machine, run or "
                             "runtime, whichever varies)")


def load_inputs(inputs: list[str], baseline: str | None):
    """Inputs plus the baseline when it names a file (so `compare --baseline OLD NEW` needs OLD once)."""
    from bench import store
    from bench.report.compare import load_results

    is_file = bool(baseline) and (store.is_uri(baseline) or Path(baseline).is_file() or baseline.endswith(".parquet"))
    return load_results(([baseline] if is_file else []) + list(inputs))


def cmd_compare(args) -> int:
    from bench.console import console, err_console
    from bench.report import compare, gate
    from bench.report.comparison_tables import print_answers, print_comparison
    from bench.report.model import parse_budget

    threshold = gate.parse_threshold(args.fail_if_slower) if args.fail_if_slower is not None else None
    confidence = gate.parse_confidence(args.confidence)
    budget = parse_budget(args.latency_budget)
    results = load_inputs(args.inputs, args.baseline)
    comparison = compare.build_comparison(results, args.metric, args.by, args.baseline)
    itself = threshold is not None and _only_the_baseline(comparison, results, args.baseline)
    if not itself:
        compare.require_comparable(comparison)
    print_comparison(comparison, console)
    print_answers(results, comparison, budget, console)
    for note in comparison.notes:
        err_console.print(f"facebench: note: {note}", markup=False, highlight=False)
    if threshold is None:
        return 0
    if itself:
        return print_self_gate(gate.self_comparison_gate(comparison, threshold, confidence), comparison, console)
    result = gate.regression_gate(comparison, threshold, confidence)
    return print_gate(result, comparison, console, args.inconclusive_passes)


def _only_the_baseline(comparison, results, baseline: str | None) -> bool:
    """`compare --baseline a.parquet a.parquet`: every input is the baseline run itself."""
    from bench import store

    return (bool(baseline) and len(comparison.groups) == 1 and len(results.files) == 1
            and store.location_identity(results.files[0]) == store.location_identity(baseline))


def print_self_gate(result, comparison, console) -> int:
    console.print(f"[green]gate passed[/]: every input is the baseline run {comparison.baseline} itself; "
                  f"{result.checked} points checked, 0 slower by more than {result.threshold_pct:g}%",
                  highlight=False, soft_wrap=True)
    return 0


def print_gate(result, comparison, console, inconclusive_passes: bool = False) -> int:
    """Each judged point, what the inconclusive ones need, the outcome; returns the exit status."""
    from bench.errors import UserError
    from bench.report import compare, gate

    for line in result.not_checked:
        console.print(f"[dim]gate: not checked: {line}[/]", highlight=False, soft_wrap=True)
    if result.checked == 0:
        raise UserError(f"the gate could check no point against {comparison.baseline} (every matched point failed, "
                        "was contaminated, failed parity or recorded no spread, as pipeline points do); "
                        "gate on points from facebench run, or fix those points and measure again")
    colours = {gate.SLOWER: "red", gate.INCONCLUSIVE: "yellow", gate.NOT_SLOWER: "green"}
    for finding in result.findings:
        if finding.statistical or finding.verdict == gate.INCONCLUSIVE:  # without repeats: only what needs saying
            console.print(f"gate: [{colours[finding.verdict]}]{finding.verdict}[/] {finding.describe(comparison.metric)}",
                          highlight=False, soft_wrap=True)
    for line in _gate_notes(result):
        console.print(f"[yellow]gate: {line}[/]", highlight=False, soft_wrap=True)
    pipelines = f"; pipelines on {compare.PIPELINE_METRIC.label}" if comparison.pipelines else ""
    what = f"{result.checked} points checked against {comparison.baseline} ({comparison.metric.label}{pipelines})"
    none_slower = f"none slower by more than {result.threshold_pct:g}% {_beyond(result)}"
    if result.failed:
        console.print(f"[red]gate failed[/]: {what}; {len(result.regressions)} slower by more than "
                      f"{result.threshold_pct:g}% {_beyond(result)}:", highlight=False, soft_wrap=True)
        for finding in result.regressions:
            console.print(f"  [red]slower[/] {finding.describe(comparison.metric)}", highlight=False, soft_wrap=True)
        return EXIT_REGRESSION
    undecided = len(result.inconclusive)
    if undecided and not inconclusive_passes:
        console.print(f"[yellow]gate inconclusive[/]: {what}; {none_slower}, but {undecided} inconclusive "
                      "(exit 3; --inconclusive-passes passes them)", highlight=False, soft_wrap=True)
        return EXIT_INCONCLUSIVE
    passed_anyway = f"; {undecided} inconclusive, passed by --inconclusive-passes" if undecided else ""
    console.print(f"[green]gate passed[/]: {what}; {none_slower}{passed_anyway}", highlight=False, soft_wrap=True)
    return 0


def _gate_notes(result) -> list[str]:
    """What the verdicts rest on, and why points were inconclusive (each inconclusive point without
    repeats says so on its own line)."""
    from bench.report import gate
    from bench.report.model import SHARED_MACHINE_PCT

    notes = []
    once = sum(not f.statistical for f in result.findings)
    if once:
        notes.append(f"{once} of {result.checked} points have no repeats in both runs: their window spread is the "
                     f"noise within one run only, so 'slower' needs a slowdown beyond {gate.BETWEEN_RUN_FLOOR_PCT:g}%, "
                     "the most two single runs of unchanged code differ by; measure both runs with "
                     f"--repeats {gate.SUGGESTED_REPEATS} for a statistical verdict")
    shared = sum(bool(f.shared_machine) for f in result.inconclusive)
    if shared:
        notes.append(f"{shared} points were measured on a shared machine (other processes above "
                     f"{SHARED_MACHINE_PCT:g}% CPU in either run): not judged; rerun where nothing else runs")
    statistical = sum(f.statistical and not f.shared_machine for f in result.inconclusive)
    if statistical:
        notes.append(f"{statistical} points inconclusive at {result.confidence * 100:g}% confidence; "
                     f"{gate.resolve_hint(result.repeats_needed)}")
    return notes


def _beyond(result) -> str:
    """What 'slower' meant for these points."""
    from bench.report.gate import BETWEEN_RUN_FLOOR_PCT

    kinds = {f.statistical for f in result.findings}
    confident = f"at {result.confidence * 100:g}% confidence"
    once = f"beyond their within-run noise and {BETWEEN_RUN_FLOOR_PCT:g}%"
    if kinds == {True}:
        return confident
    if kinds == {False}:
        return once
    return f"({confident} with repeats, {once} without)"


def cmd_plot(args) -> int:
    from bench.console import console
    from bench.report.compare import load_results
    from bench.report.plots import write_plots

    results = load_results(args.inputs)
    _require_points(results)
    written = write_plots(results, args.out)
    for plot in written.plots:
        console.print(f"{plot.model}: {plot.title} -> {plot.location}", highlight=False)
    for note in written.notes:
        console.print(f"[yellow]note[/] {note}", highlight=False)
    console.print(f"{len(written.plots)} plots written to {args.out}", highlight=False)
    return 0


def cmd_report(args) -> int:
    from bench import store
    from bench.console import console
    from bench.report import compare, markdown
    from bench.report.model import parse_budget
    from bench.report.plots import write_plots

    budget = parse_budget(args.latency_budget)
    results = load_inputs(args.inputs, args.baseline)
    _require_points(results, kind=None)
    comparison = compare.build_comparison(results, args.metric, args.by, args.baseline)
    if args.baseline or args.by:
        compare.require_comparable(comparison)  # asked for a comparison: say why there is none
    elif not comparison.comparable_points:
        comparison = None  # one machine, one run: the report is the per-model tables
    store.ensure_parent(args.out)
    plots_name = f"{Path(store.location_name(args.out)).stem}-plots"
    plotted = not args.no_plots and results.records()  # pipeline points have no plots
    written = write_plots(results, store.sibling_location(args.out, plots_name)) if plotted else None
    text = markdown.build_report(results, comparison, written, plots_name, budget)
    store.write_bytes(args.out, text.encode())
    plots_text = f"{len(written.plots)} plots in {plots_name}/" if written else "no plots"
    console.print(f"report written to {args.out} ({plots_text})", highlight=False)
    return 0


def _require_points(results, kind: str | None = "model") -> None:
    from bench.errors import UserError

    if results.records(kind):
        return
    if kind == "model" and results.records("pipeline"):
        raise UserError("these files hold only pipeline points, which have no plots; "
                        "use facebench report or show, or pass files written by facebench run")
    raise UserError("no measured points in these files; pass files written by facebench run")
