"""The stage summary of a point's used windows, computed once (bench.measure.protocol): median
per-iteration stages (h2d, compute, d2h, enqueue), the compute CoV and the compute-only frames/s;
and trtexec's performance warnings from it (anchor-tools.md 1.2):

- enqueue-bound: median enqueue > 0.8 x median GPU compute;
- transfer-bound: median H2D >= median compute, or median D2H >= median compute;
- unstable: coefficient of variation (population std / mean) > 2.5 %, one rule: of the GPU
  compute time where the loop measured it, else of the latency (CUDA-event timed points only).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

ENQUEUE_BOUND_RATIO = 0.8
COV_UNSTABLE_PCT = 2.5


@dataclass
class StageSummary:
    """Medians (ms) of the per-iteration stages over the used windows, compute CoV (%) and the
    compute-only frames/s (device-resident input and output; None without that pass)."""

    h2d_ms: float | None = None
    compute_ms: float | None = None
    d2h_ms: float | None = None
    enqueue_ms: float | None = None
    compute_cov_pct: float | None = None
    medians_ms: dict[str, float] = field(default_factory=dict)  # every stage series the loop recorded
    fps_compute: float | None = None


def cov_pct(values: Sequence[float]) -> float:
    array = np.asarray(values, dtype=np.float64)
    if array.size == 0 or array.mean() <= 0:
        return math.nan
    return float(array.std() / array.mean() * 100.0)


def summarise_stages(windows: Sequence[Any], batch: int = 1) -> StageSummary:
    """Stage medians, compute CoV and compute-only frames/s from the given windows (Window.extra_ns, ns)."""
    def series(key: str) -> np.ndarray | None:
        parts = [np.asarray(w.extra_ns[key], dtype=np.float64) for w in windows if key in w.extra_ns]
        return np.concatenate(parts) / 1e6 if parts else None

    summary = StageSummary(fps_compute=compute_only_fps(windows, batch))
    for key in dict.fromkeys(k for w in windows for k in w.extra_ns):
        values = series(key)
        if values is not None and values.size:
            summary.medians_ms[key] = float(np.median(values))
    for key in ("h2d", "compute", "d2h", "enqueue"):
        setattr(summary, f"{key}_ms", summary.medians_ms.get(key))
    compute = series("compute")
    if compute is not None and compute.size:
        summary.compute_cov_pct = cov_pct(compute)
    return summary


def device_timed_warnings(summary: StageSummary, latency_cov_pct: float) -> list[str]:
    """trtexec's warnings for a CUDA-event timed point; without a compute series the CoV rule
    judges the latency (host-timed latencies always jitter more, so they are never judged)."""
    if summary.compute_cov_pct is not None:
        return trtexec_warnings(summary)
    if latency_cov_pct > COV_UNSTABLE_PCT:
        return [f"latency CoV {latency_cov_pct:.1f}% > {COV_UNSTABLE_PCT}%: compute time is unstable; "
                "locking clocks may help"]
    return []


def trtexec_warnings(summary: StageSummary) -> list[str]:
    """The warnings trtexec would print for these timings."""
    out = []
    compute = summary.compute_ms
    if compute is None or compute <= 0:
        return out
    if summary.enqueue_ms is not None and summary.enqueue_ms > ENQUEUE_BOUND_RATIO * compute:
        out.append(f"enqueue-bound: median enqueue {summary.enqueue_ms:.3f} ms > {ENQUEUE_BOUND_RATIO:g} x median "
                   f"GPU compute {compute:.3f} ms; the host cannot keep the GPU busy (try cuda_graph = true)")
    for name, value, what in (("h2d", summary.h2d_ms, "host-to-device"), ("d2h", summary.d2h_ms, "device-to-host")):
        if value is not None and value >= compute:
            out.append(f"transfer-bound: median {name.upper()} {value:.3f} ms >= median GPU compute {compute:.3f} ms; "
                       f"throughput is bound by {what} transfers")
    cov = summary.compute_cov_pct
    if cov is not None and not math.isnan(cov) and cov > COV_UNSTABLE_PCT:
        out.append(f"GPU compute time is unstable: coefficient of variance {cov:.1f}% > {COV_UNSTABLE_PCT:g}%; "
                   f"{CLOCK_ADVICE}")
    return out


def compute_only_fps(windows: Sequence[Any], batch: int) -> float | None:
    """Frames/s of the compute-only runs (device-resident input and output) of the windows."""
    walls = [w.compute_only_wall_ns for w in windows if getattr(w, "compute_only_wall_ns", None)]
    if len(walls) != len(windows) or not walls:
        return None
    return batch * sum(w.iterations for w in windows) / (sum(walls) / 1e9)


UNSTABLE_PREFIX = "GPU compute time is unstable"
CLOCK_ADVICE = "locking the GPU clock frequency may improve stability"
STEADY_CLOCK_PCT = 1.0  # SM clock min within this % of its mean: the clock did not move


def explain_unstable(warnings: list[str], clock_mean_mhz: float | None, clock_min_mhz: float | None) -> list[str]:
    """trtexec blames the clock for unstable compute times; when NVML saw the clock hold, say where
    the variation comes from instead (on H100 ORT-CUDA small batches: host-side launch gaps)."""
    if not clock_mean_mhz or clock_min_mhz is None or clock_min_mhz < clock_mean_mhz * (1 - STEADY_CLOCK_PCT / 100):
        return warnings
    held = (f"the SM clock held at {clock_mean_mhz:.0f} MHz, so the variation comes from the host "
            "(gaps between kernel launches); CUDA graphs or larger batches steady it")
    return [w.replace(CLOCK_ADVICE, held) if w.startswith(UNSTABLE_PREFIX) else w for w in warnings]
