"""The regression gate: is a point of a run slower than the same point of the baseline?

Two rules, chosen per point by what the rows carry:

- **Repeats on both sides** (`facebench run --repeats N`, N >= 2): a statistical verdict. The
  ratio of the two medians gets a bootstrap interval that resamples each run's repeats
  (bench.measure.stats), so it is as wide as the variation between fresh sessions, which on a
  shared machine is far larger than the variation inside one. Mapped to a slowdown in %:
  `slower` when the whole interval lies beyond the threshold, `not slower` when the whole
  interval lies within it, `inconclusive` otherwise, with the repeats per run that would
  narrow the interval enough to decide a change of that size.
- **No repeats** (one measurement per point, or files from before repeats): a point's window
  spread is the noise within one session only, and says nothing of how far two runs of
  unchanged code drift apart. So `slower` needs a slowdown beyond the threshold, beyond the two
  points' window spreads together *and* beyond BETWEEN_RUN_FLOOR_PCT (20%); a slowdown beyond
  the threshold but not beyond those is `inconclusive`, with the advice to measure with
  --repeats; within the threshold it is `not slower`.

  The floor, from measurements on the project's 2-core Intel Xeon VM with nothing else running:
  the widest gap seen between two single runs of unchanged code is 14.9%, arcface_mbf ort-cpu
  fp32 batch 4 at 93.5 frames/s (docs/journal.md, "Why K = 2, more broadly": a full ladder) against 79.6
  (one of two quick-suite runs, the other 90.8: issue 25, which a 5% gate on within-run noise
  alone failed at 12.3% slower). 20% is that plus a third for margin (and on 2026-12-06 six
  quick-suite runs differed by at most 8.8% between a point's successive runs, 32 pairs); docs/journal.md's gate study
  (20 pairs of unchanged runs, "Measured false-alarm and detection rates") saw the old rule
  without repeats cry wolf once in 20. Half the throughput (50% slower) still fails.

Either rule: a point measured on a shared machine (other processes used more than
report.model.SHARED_MACHINE_PCT of a core during its windows, in either run) is `inconclusive`,
whatever the verdict would have been, saying which run shared it: a busy new run can make a
slowdown that is not the model's, and a busy baseline is depressed, so that a real regression
reads `not slower`.

Outcome (compare's exit status): `slower` anywhere fails (1); else any `inconclusive` leaves the
gate inconclusive (3, or passed with --inconclusive-passes); else it passes (0).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from bench.errors import UserError
from bench.measure.stats import DEFAULT_CONFIDENCE, Interval, ratio_of_medians_interval, repeats_to_resolve
from bench.report.compare import (PIPELINE_METRIC, Cell, Comparison, Metric, ModelComparison, format_value,
                                  point_name)
from bench.report.model import shared_machine_note

SLOWER, NOT_SLOWER, INCONCLUSIVE = "slower", "not slower", "inconclusive"
MIN_REPEATS = 2  # per side, for the statistical rule
# Without repeats, no slowdown up to this is called slower: two single runs of unchanged code on a
# quiet 2-core VM differed by up to 14.9%, plus a third for margin (the module's docstring).
BETWEEN_RUN_FLOOR_PCT = 20.0
SUGGESTED_REPEATS = 5
NO_SPREAD = "has no recorded window spread"


@dataclass
class GateFinding:
    model: str
    point: str  # runtime precision batch
    group: str
    baseline_value: float
    value: float
    slower_pct: float  # of the point figures (medians where there are repeats)
    verdict: str  # SLOWER, NOT_SLOWER or INCONCLUSIVE
    marks: tuple[str, ...]
    noise_pct: float | None = None  # without repeats: the combined within-run window spread
    ratio: Interval | None = None  # with repeats: value / baseline with its interval
    slower_range: tuple[float, float] | None = None  # with repeats: the interval as a slowdown in %
    repeats: tuple[int, int] | None = None  # (baseline, new)
    repeats_needed: int | None = None  # inconclusive: repeats per run that would decide it
    metric: Metric | None = None  # set where it is not the comparison's (pipelines: frames/s)
    shared_machine: str | None = None  # inconclusive because a run shared its machine: which, and how much

    @property
    def statistical(self) -> bool:
        return self.ratio is not None

    def describe(self, metric: Metric) -> str:
        metric = self.metric or metric
        flag = f" [{', '.join(self.marks)}]" if self.marks else ""
        change = (f"{metric.label} {format_value(metric, self.baseline_value)} -> {format_value(metric, self.value)}, "
                  f"{abs(self.slower_pct):.1f}% {'slower' if self.slower_pct >= 0 else 'faster'}")
        if not self.statistical:
            advice = f" ({once_hint()})" if self.verdict == INCONCLUSIVE and not self.shared_machine else ""
            return (f"{self.model} {self.point} on {self.group}: {change} (no repeats: within-run noise "
                    f"{self.noise_pct:.1f}%, between runs up to {BETWEEN_RUN_FLOOR_PCT:g}%): {self.verdict}"
                    f"{advice}{self._shared_note()}{flag}")
        r, (low, high) = self.ratio, self.slower_range
        text = (f"{self.model} {self.point} on {self.group}: {change}; ratio {r.estimate:.3f} "
                f"({r.confidence * 100:g}% CI {r.low:.3f}-{r.high:.3f}, slowdown {low:.1f}% to {high:.1f}%; "
                f"repeats {self.repeats[0]}/{self.repeats[1]}): {self.verdict}")
        if self.verdict == INCONCLUSIVE and not self.shared_machine:
            text += f" ({resolve_hint(self.repeats_needed)})"
        return text + self._shared_note() + flag

    def _shared_note(self) -> str:
        return f" ({self.shared_machine}; rerun where nothing else runs)" if self.shared_machine else ""


def once_hint() -> str:
    return (f"slower than the threshold but not beyond the {BETWEEN_RUN_FLOOR_PCT:g}% two single runs can differ "
            f"by: measure both runs with --repeats {SUGGESTED_REPEATS} to decide")


def resolve_hint(needed: int | None) -> str:
    if needed is None:
        return "the change sits on the threshold: no number of repeats decides it"
    return f"about {needed} repeats per run would decide a change of this size"


@dataclass
class GateResult:
    threshold_pct: float
    confidence: float
    checked: int = 0
    findings: list[GateFinding] = field(default_factory=list)  # every checked point
    not_checked: list[str] = field(default_factory=list)  # point: reason

    def with_verdict(self, verdict: str) -> list[GateFinding]:
        return [f for f in self.findings if f.verdict == verdict]

    @property
    def regressions(self) -> list[GateFinding]:
        return self.with_verdict(SLOWER)

    @property
    def inconclusive(self) -> list[GateFinding]:
        return self.with_verdict(INCONCLUSIVE)

    @property
    def failed(self) -> bool:
        return bool(self.regressions)

    @property
    def passed(self) -> bool:
        """Every checked point judged, none slower."""
        return not self.regressions and not self.inconclusive

    @property
    def repeats_needed(self) -> int | None:
        """Repeats per run that would decide every inconclusive point that repeats can decide."""
        needed = [f.repeats_needed for f in self.inconclusive if f.repeats_needed is not None]
        return max(needed) if needed else None


def combined_noise_pct(spread_a_pct: float, spread_b_pct: float) -> float:
    """Within-run noise of a comparison between two points measured once each: the sum of their
    window spreads.

    Each point's `window_spread_pct` is the range of its steady windows' frames/s (max/min - 1),
    so its true frames/s may sit anywhere within about that range of the reported figure. A
    ratio of two such figures can then be off by up to the two ranges together (relative errors
    add to first order). It covers the variation inside each session only: between runs, the
    rule without repeats also needs BETWEEN_RUN_FLOOR_PCT.
    """
    return spread_a_pct + spread_b_pct


def slower_pct(metric: Metric, baseline_value: float, value: float) -> float:
    """How much worse `value` is than the baseline, in % (negative when better).

    Higher-is-better metrics (frames/s, frames/s per W): the share of the baseline lost.
    Lower-is-better metrics (ms/frame, p99): the share added to the baseline.
    """
    return slower_pct_of_ratio(metric, value / baseline_value)


def slower_pct_of_ratio(metric: Metric, ratio: float) -> float:
    return (1.0 - ratio) * 100.0 if metric.higher_better else (ratio - 1.0) * 100.0


def parse_percent(text: str, option: str, low: float = 0.0, high: float = 100.0, example: str = "5%") -> float:
    """'5%' or '5' -> 5.0, within [low, high). Raises UserError naming the option."""
    try:
        value = float(text.strip().rstrip("%"))
    except ValueError:
        value = -1.0
    if not low <= value < high:
        raise UserError(f"{option} {text}: expected a percentage from {low:g} to below {high:g}, e.g. {example}")
    return value


def parse_threshold(text: str) -> float:
    return parse_percent(text, "--fail-if-slower")


def parse_confidence(text: str) -> float:
    """'95%' -> 0.95."""
    return parse_percent(text, "--confidence", 50.0, 100.0, "95%") / 100.0


def regression_gate(comparison: Comparison, threshold_pct: float,
                    confidence: float = DEFAULT_CONFIDENCE) -> GateResult:
    """Each point of each group against the baseline (see the module's rules). Pipeline points are
    gated on frames/s where they carry a spread, else listed as not checked."""
    gate = GateResult(threshold_pct, confidence)
    for model in comparison.models:
        _gate_model(gate, model, comparison.metric, comparison.baseline, pipeline=False)
    for pipeline in comparison.pipelines:
        _gate_model(gate, pipeline, PIPELINE_METRIC, comparison.baseline, pipeline=True)
    return gate


def self_comparison_gate(comparison: Comparison, threshold_pct: float,
                         confidence: float = DEFAULT_CONFIDENCE) -> GateResult:
    """Every input is the baseline run itself: each measured point is checked, and none is slower."""
    gate = GateResult(threshold_pct, confidence)
    for model in comparison.models + comparison.pipelines:
        for point in model.points:
            cell = point.cells.get(comparison.baseline)
            if cell is not None and cell.value is not None:
                gate.checked += 1
    return gate


def _gate_model(gate: GateResult, model: ModelComparison, metric: Metric, baseline: str, pipeline: bool) -> None:
    for point in model.points:
        base = point.cells.get(baseline)
        for group, cell in point.cells.items():
            if group == baseline or base is None:
                continue
            where = f"{model.model} {point_name(point.labels)} on {group}"
            statistical = _has_repeats(base) and _has_repeats(cell)
            reason = _not_gatable(base, cell, needs_spread=not statistical)
            if reason and pipeline and reason.endswith(NO_SPREAD):
                reason = "pipeline points record no window spread, so their noise is unknown: not gated"
            if reason:
                gate.not_checked.append(f"{where}: {reason}")
                continue
            gate.checked += 1
            finding = GateFinding(model=model.model, point=point_name(point.labels), group=group,
                                  baseline_value=base.value, value=cell.value,
                                  slower_pct=slower_pct(metric, base.value, cell.value), verdict=NOT_SLOWER,
                                  marks=tuple(sorted(set(base.marks) | set(cell.marks))),
                                  metric=metric if pipeline else None)
            if statistical:
                _judge_repeats(finding, metric, base, cell, gate)
            else:
                _judge_once(finding, base, cell, gate.threshold_pct)
            _doubt_shared_machine(finding, base, cell)
            gate.findings.append(finding)


def _has_repeats(cell: Cell) -> bool:
    return len(cell.samples) >= MIN_REPEATS


def _judge_once(finding: GateFinding, base: Cell, cell: Cell, threshold_pct: float) -> None:
    """No repeats: slower beyond the threshold, the within-run noise and the between-run floor."""
    finding.noise_pct = combined_noise_pct(base.spread_pct, cell.spread_pct)
    if finding.slower_pct > threshold_pct:
        beyond_noise = finding.slower_pct > max(finding.noise_pct, BETWEEN_RUN_FLOOR_PCT)
        finding.verdict = SLOWER if beyond_noise else INCONCLUSIVE


def _judge_repeats(finding: GateFinding, metric: Metric, base: Cell, cell: Cell, gate: GateResult) -> None:
    """Repeats on both sides: where the slowdown's interval lies against the threshold."""
    ratio = ratio_of_medians_interval(base.samples, cell.samples, gate.confidence)
    ends = sorted((slower_pct_of_ratio(metric, ratio.low), slower_pct_of_ratio(metric, ratio.high)))
    estimate, threshold = slower_pct_of_ratio(metric, ratio.estimate), gate.threshold_pct
    finding.ratio, finding.slower_range = ratio, (ends[0], ends[1])
    finding.slower_pct = estimate  # of the medians of these samples (the row's own figure may be another median)
    finding.repeats = (len(base.samples), len(cell.samples))
    if ends[0] > threshold:
        finding.verdict = SLOWER
    elif ends[1] <= threshold:
        finding.verdict = NOT_SLOWER
    else:
        finding.verdict = INCONCLUSIVE
        above = estimate > threshold  # the side of the interval that crosses the threshold
        half_width = estimate - ends[0] if above else ends[1] - estimate
        finding.repeats_needed = repeats_to_resolve(*finding.repeats, half_width, abs(estimate - threshold))


def _doubt_shared_machine(finding: GateFinding, base: Cell, cell: Cell) -> None:
    """A point measured while other processes ran is not judged: a busy new run can make a slowdown
    that is not the model's, and a busy baseline can hide one."""
    shared = [f"{side} run: {shared_machine_note(c.shared_machine_pct)}" for side, c in (("baseline", base), ("new", cell))
              if c.shared_machine_pct is not None]
    if shared:
        finding.verdict, finding.repeats_needed = INCONCLUSIVE, None
        finding.shared_machine = "; ".join(shared)


def _not_gatable(base: Cell, cell: Cell, needs_spread: bool) -> str | None:
    for side, c in (("baseline", base), ("new", cell)):
        invalid = [m for m in c.marks if m != "unstable"]
        if invalid:
            return f"{side} point {', '.join(invalid)}"
        if c.value is None:
            return f"{side} point has no value"
        if needs_spread and c.spread_pct is None:
            return f"{side} point {NO_SPREAD}"
    return None
