"""A point's result, typed: built once per point by the worker, sent through the worker pipe as it
is (every part pickles), and flattened to one Parquet row by the store alone (bench.store.flatten).

Where a column holds a field as it is, the part's field has the column's name; the store maps the
rest (cold start, latency, the checks, JSON and list fields).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from bench.domain import DEFAULT_INPUT_FORMAT, DEFAULT_OPTIONS_VARIANT
from bench.ladder import LadderPoint
from bench.telemetry.cpu import CpuTelemetry
from bench.telemetry.nvml import GpuTelemetry

if TYPE_CHECKING:
    from bench.checks.contamination import ContaminationResult
    from bench.checks.parity import ParityResult
    from bench.measure.protocol import Measurement
    from bench.measure.stats import LatencyStats
    from bench.models.info import ModelInfo
    from bench.measure.cold_start import ColdStart

OK, SKIPPED, FAILED = "ok", "skipped", "failed"


@dataclass
class Environment:
    """The run and machine that recorded the point (set by the sweep or the pipeline command)."""

    run_id: str
    suite: str
    timestamp_utc: str
    machine: dict[str, Any]  # bench.env.fingerprint()


@dataclass
class ModelFacts:
    """The model file measured, as inspected (bench.models.info.ModelInfo)."""

    model: str
    model_sha256: str
    model_source: str | None = None
    model_path: str | None = None
    family: str | None = None
    input_name: str | None = None
    input_shape: str | None = None  # comma-separated dims
    input_size: int | None = None
    params: int | None = None
    macs_per_frame: int | None = None
    flops_per_frame: int | None = None
    macs_note: str | None = None

    @classmethod
    def of(cls, info: ModelInfo, input_dims=None) -> ModelFacts:
        """`input_dims`: the shape fed, where it is not the file's own (the pipeline's batch)."""
        dims = info.input_dims if input_dims is None else input_dims
        return cls(model=info.name, model_sha256=info.sha256, model_source=info.source, model_path=info.path,
                   family=info.family, input_name=info.input_name, input_shape=",".join(str(d) for d in dims),
                   input_size=info.input_hw[0], params=info.params, macs_per_frame=info.macs_per_frame,
                   flops_per_frame=info.flops_per_frame, macs_note=info.macs_note)


@dataclass
class PointIdentity:
    """Which point this is (with the model, the store's POINT_KEY) and what ran it."""

    runtime: str
    precision: str
    batch: int
    device: str | None = None
    kind: str = "model"  # or "pipeline"
    input_format: str = DEFAULT_INPUT_FORMAT
    options_variant: str = DEFAULT_OPTIONS_VARIANT
    concurrency: int = 1  # requested (the suite's axis; the row's concurrency column is what ran)
    runtime_versions: dict[str, str] | None = None  # None where the runtime is unavailable
    int8_recipe: str | None = None
    input_bytes_per_frame: int | None = None


@dataclass
class SessionSettings:
    """What the loaded session runs with (Session.describe())."""

    options: dict[str, Any]
    threads: int | None = None
    mode: str | None = None
    timer: str | None = None
    precision_effective: str | None = None

    @classmethod
    def of(cls, settings: dict[str, Any], timer: str | None, precision_effective: str | None,
           recorded: dict[str, Any] | None = None) -> SessionSettings:
        """`recorded`: the settings to keep when they are more than one session's (the pipeline's two)."""
        threads = settings.get("intra_op_threads", settings.get("inference_num_threads"))
        return cls(options=settings if recorded is None else recorded,
                   threads=threads if isinstance(threads, int) else None, mode=settings.get("mode"), timer=timer,
                   precision_effective=precision_effective)


@dataclass
class InputPool:
    """The distinct batches the loop fed during the windows the figures come from."""

    input_buffers: int
    input_pool_bytes: int


@dataclass
class SteadyState:
    """The steady-state figures (bench.measure.protocol.Measurement without its windows' series)."""

    fps: float
    frames: int
    wall_s: float
    ms_per_frame: float | None = None
    window_spread_pct: float | None = None
    warmup_iterations: int | None = None
    warmup_s: float | None = None
    iterations: int | None = None
    windows: int | None = None
    latency: LatencyStats | None = None
    h2d_ms: float | None = None
    compute_ms: float | None = None
    d2h_ms: float | None = None
    enqueue_ms: float | None = None
    fps_compute: float | None = None  # device-resident input and output (GPU points)
    gflops_achieved: float | None = None
    verdict: str | None = None
    warnings: list[str] = field(default_factory=list)
    in_flight_max: int | None = None  # requests in flight, measured by the loop (the row's concurrency)
    in_flight_mean: float | None = None

    @classmethod
    def of(cls, m: Measurement, flops_per_frame: int | None) -> SteadyState:
        return cls(fps=m.fps, frames=m.frames, wall_s=m.wall_s, ms_per_frame=m.ms_per_frame,
                   window_spread_pct=m.window_spread_pct, warmup_iterations=m.warmup_iterations,
                   warmup_s=m.warmup_s, iterations=m.iterations, windows=len(m.windows), latency=m.latency,
                   h2d_ms=m.extra_ms.get("h2d"), compute_ms=m.extra_ms.get("compute"),
                   d2h_ms=m.extra_ms.get("d2h"), enqueue_ms=m.extra_ms.get("enqueue"), fps_compute=m.stages.fps_compute,
                   gflops_achieved=m.fps * flops_per_frame / 1e9 if flops_per_frame is not None else None,
                   verdict=m.verdict, warnings=list(m.warnings), in_flight_max=m.in_flight_max,
                   in_flight_mean=m.in_flight_mean)


@dataclass
class PeakShares:
    """The machine's probe peaks (bench.peaks) and this point's share of them."""

    peak_gemm_gflops: float | None = None
    peak_conv_gflops: float | None = None
    pct_gemm_peak: float | None = None
    pct_conv_peak: float | None = None
    peak_memory_copy_gbps: float | None = None
    peak_h2d_gbps: float | None = None
    h2d_gbps: float | None = None
    pct_h2d_peak: float | None = None
    datasheet_peak_tflops: float | None = None
    note: str | None = None  # why a share above 100% is nominal, which probe was left out as UNSTABLE


@dataclass
class PipelineFigures:
    """What a pipeline run adds (kind = "pipeline")."""

    stages: dict[str, Any]  # per-stage times and the run's configuration (stages_json)
    frames_total: int | None = None
    faces_total: int | None = None
    faces_per_s: float | None = None


@dataclass
class PointResult:
    """One point: identity and status, then whichever parts were measured."""

    point: PointIdentity
    model: ModelFacts
    status: str = OK
    reason: str | None = None
    session: SessionSettings | None = None
    process_start_ms: float | None = None  # the worker's start up to its runtime's availability check
    cold_start: ColdStart | None = None
    inputs: InputPool | None = None
    steady: SteadyState | None = None
    cpu: CpuTelemetry | None = None
    gpu: GpuTelemetry | None = None
    contamination: ContaminationResult | None = None
    parity: ParityResult | None = None
    peaks: PeakShares | None = None
    pipeline: PipelineFigures | None = None
    notes: list[str] = field(default_factory=list)  # warnings from outside the measurement (pipeline setup)
    environment: Environment | None = None

    @classmethod
    def skipped(cls, point: PointIdentity, model: ModelFacts, reason: str) -> PointResult:
        return cls(point, model, status=SKIPPED, reason=reason)

    @classmethod
    def failed(cls, point: PointIdentity, model: ModelFacts, reason: str, **parts) -> PointResult:
        """`parts`: what is known of a point that failed (a pipeline's configuration, its notes)."""
        return cls(point, model, status=FAILED, reason=reason, **parts)

    def recorded(self, environment: Environment) -> PointResult:
        return replace(self, environment=environment)

    @property
    def warnings(self) -> list[str]:
        """The point's warnings: the measurement's, the GPU telemetry's, then the rest."""
        warnings = list(self.steady.warnings) if self.steady else []
        if self.gpu:
            warnings += [w for w in self.gpu.warnings if w not in warnings]
        if self.peaks and self.peaks.note:
            warnings.append(self.peaks.note)
        return warnings + self.notes

    def ladder_point(self) -> LadderPoint | None:
        """The adaptive ladder's view of the point (None unless measured)."""
        if self.status != OK or self.steady is None:
            return None
        latency = self.steady.latency
        return LadderPoint(self.point.batch, float(self.steady.fps), latency.p99_ms if latency else None)
