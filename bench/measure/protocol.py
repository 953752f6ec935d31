"""The measurement protocol every runtime shares.

Per point: warm-up bounded by time and count; then steady-state windows, each sized
from the warm-up latency so the timing loop itself never looks at the clock; stop
when the last `stable_windows` windows agree within `stability_pct` on both
frames/s and mean latency (perf_analyzer's rule), else give up after `max_windows`
and call the point UNSTABLE. Frames/s is batch x iterations / wall time of the
windows, never derived from mean latency.

Warm-up runs the same loop as the windows (bench.measure.loops), one round at a time,
without the compute-only pass a steady-state window adds. Samplers (the Sampler protocol below)
hear window_started() / window_stopped(window) around every steady-state window's timed
loop (never warm-up, never the compute-only pass) and report over the trailing windows the
figures come from (Measurement.used_windows).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Protocol, Sequence

import numpy as np

from bench.domain import DETECTOR, random_frames
from bench.measure.loops import Loop, Window, loop_for
from bench.measure.stages import StageSummary, device_timed_warnings, summarise_stages
from bench.measure.stats import LatencyStats, latency_stats

VALID, UNSTABLE = "VALID", "UNSTABLE"


class Sampler(Protocol):
    """Telemetry beside the steady-state windows: measure() calls window_started() /
    window_stopped(window) around every steady-state window (never warm-up); after the point the
    caller asks each sampler for its figures. A sampler accumulates over all the windows it heard."""

    def window_started(self) -> None: ...

    def window_stopped(self, window) -> None:
        """`window`: the bench.measure.loops.Window just measured (None outside the protocol)."""
        ...

    def figures(self, measurement):
        """A typed part of the PointResult over the measurement's used windows."""
        ...


@dataclass
class MeasureSettings:
    warmup_s: float = 0.5
    warmup_min_iterations: int = 3
    warmup_max_iterations: int = 200
    window_s: float = 1.0
    window_min_iterations: int = 5
    stable_windows: int = 3
    max_windows: int = 10
    stability_pct: float = 10.0
    input_buffers: int = 4
    # Total size of the rotated inputs in MiB (LoadGen's performance sample count): more buffers than
    # input_buffers where needed, so that inputs can be kept out of the last-level cache. 0: input_buffers.
    input_pool_mb: float = 0.0
    seed: int = 0


@dataclass
class Measurement:
    batch: int
    warmup_iterations: int
    warmup_s: float
    windows: list[Window]  # all measured
    used_windows: int  # the trailing windows the figures come from
    iterations: int
    frames: int
    wall_s: float
    fps: float
    window_spread_pct: float
    latency: LatencyStats
    verdict: str
    warnings: list[str] = field(default_factory=list)
    extra_ms: dict[str, float] = field(default_factory=dict)  # median per-iteration extras (h2d, compute...)
    stages: StageSummary = field(default_factory=StageSummary)  # the same medians, compute CoV, compute-only fps
    # What the loop did over the used windows: requests in flight (most at once, time-weighted mean)
    # and the distinct input buffers fed.
    in_flight_max: int = 1
    in_flight_mean: float = 1.0
    buffers_fed: int = 0

    @property
    def ms_per_frame(self) -> float:
        return 1000.0 / self.fps if self.fps > 0 else math.nan


def warm_up(loop: Loop, settings: MeasureSettings) -> tuple[int, float]:
    """Run until both the time and count minimums are met (count capped); return (iterations, mean s)."""
    count = 0
    t0 = time.perf_counter()
    while count < settings.warmup_max_iterations:
        loop.window(loop.min_iterations)
        count += 1
        elapsed = time.perf_counter() - t0
        if count >= settings.warmup_min_iterations and elapsed >= settings.warmup_s:
            break
    return count, (time.perf_counter() - t0) / count


def window_iterations(mean_latency_s: float, settings: MeasureSettings) -> int:
    target = settings.window_s / max(mean_latency_s, 1e-9)
    return max(settings.window_min_iterations, int(math.ceil(target)))


def resize_window(iterations: int, window, settings: MeasureSettings) -> int:
    """Iterations for the next window: unchanged unless this one was far shorter than window_s."""
    wall_s = window.wall_ns / 1e9
    if wall_s >= 0.5 * settings.window_s or iterations <= 0:
        return iterations
    return max(iterations + 1, int(math.ceil(iterations * settings.window_s / max(wall_s, 1e-9))))


def spread_pct(values: list[float]) -> float:
    low, high = min(values), max(values)
    return (high / low - 1.0) * 100.0 if low > 0 else math.inf


def measure(session, inputs: list[np.ndarray], batch: int, settings: MeasureSettings,
            samplers: Sequence[Sampler] = ()) -> Measurement:
    """Warm up, then steady-state windows until they agree (or max_windows); `samplers` hear every window."""
    loop = loop_for(session, inputs)
    try:
        warm_count, warm_mean_s = warm_up(loop, settings)
        windows, used, verdict = _windows(loop, window_iterations(warm_mean_s, settings), batch, settings, samplers)
    finally:
        loop.close()
    result = _summarise(used, windows, batch, warm_count, warm_count * warm_mean_s, verdict)
    if session.timer_kind != "host":  # trtexec's rules are about device timings
        result.warnings += device_timed_warnings(result.stages, result.latency.cov_pct)
    return result


def _windows(loop: Loop, iterations: int, batch: int, settings: MeasureSettings,
             samplers: Sequence[Sampler]) -> tuple[list[Window], list[Window], str]:
    """(every window, the trailing windows the figures come from, verdict)."""
    windows, same_size = [], []
    verdict = UNSTABLE
    while len(windows) < settings.max_windows:
        window = steady_window(loop, iterations, samplers)
        windows.append(window)
        resized = resize_window(iterations, window, settings)
        if resized != iterations:
            # Async runtimes overlap requests, so serial warm-up latency overestimates a window:
            # resize, and let only equal-sized windows count towards stability.
            iterations, same_size = resized, []
            continue
        same_size.append(window)
        if len(same_size) >= settings.stable_windows and _stable(same_size[-settings.stable_windows:], batch, settings):
            verdict = VALID
            break
    return windows, (same_size or windows)[-settings.stable_windows:], verdict


def steady_window(loop: Loop, iterations: int, samplers: Sequence[Sampler] = ()) -> Window:
    """One steady-state window inside the sampler hooks, then its compute-only pass (if the loop has
    one) outside them: telemetry such as GPU power belongs to the end-to-end figures."""
    for sampler in samplers:
        sampler.window_started()
    window = loop.window(iterations)
    for sampler in samplers:
        sampler.window_stopped(window)
    window.compute_only_wall_ns = loop.compute_only_wall_ns(iterations)
    return window


def _window_fps(window, batch: int) -> float:
    return batch * window.iterations / (window.wall_ns / 1e9)


def _window_mean_latency(window) -> float:
    return float(np.mean(window.latencies_ns))


def _stable(windows, batch: int, settings: MeasureSettings) -> bool:
    fps = [_window_fps(w, batch) for w in windows]
    latency = [_window_mean_latency(w) for w in windows]
    limit = settings.stability_pct
    return spread_pct(fps) <= limit and spread_pct(latency) <= limit and min(fps) > 0


def _summarise(used, all_windows, batch, warm_count, warm_s, verdict) -> Measurement:
    iterations = sum(w.iterations for w in used)
    wall_s = sum(w.wall_ns for w in used) / 1e9
    latencies = np.concatenate([np.asarray(w.latencies_ns, dtype=np.float64) for w in used])
    stats = latency_stats(latencies)
    warnings = []
    if verdict == UNSTABLE:
        warnings.append(f"did not settle: last {len(used)} windows differ by {spread_pct([_window_fps(w, batch) for w in used]):.1f}% "
                        f"after {len(all_windows)} windows; lengthen measure.window_s or quiet the machine")
    stages = summarise_stages(used, batch)
    return Measurement(
        batch=batch, warmup_iterations=warm_count, warmup_s=warm_s, windows=all_windows,
        used_windows=len(used), iterations=iterations, frames=batch * iterations, wall_s=wall_s,
        fps=batch * iterations / wall_s, window_spread_pct=spread_pct([_window_fps(w, batch) for w in used]),
        latency=stats, verdict=verdict, warnings=warnings, extra_ms=stages.medians_ms, stages=stages,
        in_flight_max=max(w.in_flight_max for w in used),
        in_flight_mean=sum(w.in_flight_busy_ns for w in used) / max(sum(w.wall_ns for w in used), 1),
        buffers_fed=len(frozenset().union(*(w.fed for w in used))),
    )


def input_buffer_count(settings: MeasureSettings, bytes_per_batch: int) -> int:
    """input_buffers, or as many batches as fill input_pool_mb when that is more."""
    pool = math.ceil(settings.input_pool_mb * 2**20 / max(bytes_per_batch, 1)) if settings.input_pool_mb > 0 else 0
    return max(settings.input_buffers, pool)


def make_inputs(shape: tuple[int, ...], count: int, seed: int, mean: float = DETECTOR.mean,
                std: float = DETECTOR.std, dtype: str = "float32") -> list[np.ndarray]:
    """`count` seeded batches of `shape` (bench.domain.random_frames), the buffers a window rotates through."""
    rng = np.random.default_rng(seed)
    return [random_frames(rng, shape[0], shape[1:], mean, std, dtype) for _ in range(count)]
