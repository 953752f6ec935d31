"""Latency statistics over nanosecond samples."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass
class LatencyStats:
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    min_ms: float
    max_ms: float
    cov_pct: float  # population std / mean x 100, as trtexec reports it


def nearest_rank(sorted_values: np.ndarray, percent: float) -> float:
    """trtexec's nearest-rank percentile: sorted[max(n-1-int((1-p/100)*n), 0)]."""
    n = len(sorted_values)
    # Integer arithmetic: (1 - 0.9) * 100 is 9.999... in floating point and would pick p91.
    above = int(round((100.0 - percent) * n, 6)) // 100
    return float(sorted_values[max(n - 1 - above, 0)])


def latency_stats(latencies_ns: np.ndarray) -> LatencyStats:
    values = np.sort(np.asarray(latencies_ns, dtype=np.float64)) / 1e6
    if values.size == 0:
        nan = math.nan
        return LatencyStats(nan, nan, nan, nan, nan, nan, nan, nan)
    mean = float(values.mean())
    return LatencyStats(
        mean_ms=mean,
        p50_ms=float(np.median(values)),
        p90_ms=nearest_rank(values, 90),
        p95_ms=nearest_rank(values, 95),
        p99_ms=nearest_rank(values, 99),
        min_ms=float(values[0]),
        max_ms=float(values[-1]),
        cov_pct=float(values.std() / mean * 100.0) if mean > 0 else math.nan,
    )


# --- repeats: medians and bootstrap intervals --------------------------------------------------

DEFAULT_CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0  # fixed: the same series always get the same interval, so a gate verdict is reproducible


@dataclass(frozen=True)
class Interval:
    """A point figure with its confidence interval."""
    estimate: float
    low: float
    high: float
    confidence: float


def _bootstrap_medians(values: np.ndarray, rng: np.random.Generator, resamples: int) -> np.ndarray:
    picks = rng.integers(0, len(values), size=(resamples, len(values)))
    return np.median(values[picks], axis=1)


def _percentile_interval(estimate: float, draws: np.ndarray, confidence: float) -> Interval:
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(draws, [tail, 100.0 - tail])
    return Interval(estimate, float(low), float(high), confidence)


def median_item(items, key):
    """The item whose `key` is the median; of an even count the lower middle one. A real item, never
    the mean of two, so every figure it carries belongs with the others (frames, wall time, frames/s)."""
    ordered = sorted(items, key=key)
    return ordered[(len(ordered) - 1) // 2]


def median_interval(values, confidence: float = DEFAULT_CONFIDENCE,
                    resamples: int = BOOTSTRAP_RESAMPLES) -> Interval:
    """The median of repeated measurements with its percentile-bootstrap confidence interval."""
    values = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    return _percentile_interval(float(np.median(values)), _bootstrap_medians(values, rng, resamples), confidence)


def ratio_of_medians_interval(baseline, new, confidence: float = DEFAULT_CONFIDENCE,
                              resamples: int = BOOTSTRAP_RESAMPLES) -> Interval:
    """median(new) / median(baseline), with a percentile-bootstrap interval that resamples each
    run's repeats independently: the between-repeat variation of both runs widens it."""
    baseline, new = np.asarray(baseline, dtype=np.float64), np.asarray(new, dtype=np.float64)
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    draws = _bootstrap_medians(new, rng, resamples) / _bootstrap_medians(baseline, rng, resamples)
    return _percentile_interval(float(np.median(new) / np.median(baseline)), draws, confidence)


def repeats_to_resolve(n_baseline: int, n_new: int, half_width: float, distance: float) -> int | None:
    """Repeats per run that would shrink an interval's half-width below `distance` (the gap between
    the estimate and the threshold), taking the width to fall as 1/sqrt(n) as it does for a median.
    None when the estimate sits on the threshold: no number of repeats decides it."""
    if distance <= 0:
        return None
    n_now = 2.0 / (1.0 / n_baseline + 1.0 / n_new)  # both runs at n_now give the same width
    return max(int(math.ceil(n_now * (half_width / distance) ** 2)), max(n_baseline, n_new) + 1)
