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
