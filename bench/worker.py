"""Worker: one (model, runtime, precision) and all its batch sizes, usually in a child process.

The worker measures; it never writes results. Each finished point goes back to the
sweep as a bench.results.PointResult through `emit` (through the pipe as it is), so
whatever happens to the worker later, the sweep already holds the points it finished.
"""
from __future__ import annotations

import os
import signal
import time
import traceback
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, Callable


from bench.checks import point_checks
from bench.domain import DEFAULT_INPUT_FORMAT, DEFAULT_OPTIONS_VARIANT, InputFormat, input_format
from bench.fileio import first_line
from bench.ladder import LadderPoint, LadderRule, stop_reason
from bench.measure.cold_start import ColdStartTimer
from bench.measure.protocol import MeasureSettings, input_buffer_count, make_inputs, measure
from bench.measure.stages import explain_unstable
from bench.models.artifacts import build_artifact, int8_recipe, with_input_format
from bench.models.info import ModelInfo
from bench.models.precision import DEFAULT_CALIBRATION_FRAMES, calibration_frames, int8_failure_hint
from bench.peaks import peaks_for, share_of_peak
from bench.results import InputPool, ModelFacts, PeakShares, PointIdentity, PointResult, SessionSettings, SteadyState
from bench.runtimes.registry import get_runtime
from bench.session import LoadRequest, Session
from bench.suite import Checks
from bench.telemetry.cpu import CpuSampler
from bench.telemetry.nvml import GpuPointTelemetry

Emit = Callable[[str, Any], None]


@dataclass
class Job:
    model: ModelInfo
    runtime: str
    precision: str
    batches: list[int]
    settings: MeasureSettings
    checks: Checks
    options: dict[str, Any] = field(default_factory=dict)
    cache_dir: str | None = None
    images: tuple[str, ...] = ()  # real pictures for calibration and parity (--images)
    parity_gates: dict[str, dict[str, float]] = field(default_factory=dict)  # suite overrides
    input_format: str = DEFAULT_INPUT_FORMAT  # how frames reach the model (bench.domain)
    options_variant: str = DEFAULT_OPTIONS_VARIANT  # which combination of [sweep_options] `options` is
    concurrency: int = 1  # requests in flight (Runtime.load_concurrent)
    ladder: LadderRule | None = None  # None: every batch is measured (later repeats, direct callers)
    ladder_measured: list[LadderPoint] = field(default_factory=list)  # this series' points measured before

    @property
    def format(self) -> InputFormat:
        return input_format(self.input_format)


def run_job(job: Job, emit: Emit) -> None:
    """Measure every batch of the job, in order; emit ("start", batch) before and ("result", PointResult)
    after each. Where the adaptive ladder stops (bench.ladder), the batches left become skipped points."""
    t0 = time.perf_counter()
    runtime = get_runtime(job.runtime)
    try:
        ok, reason = runtime.available()
    except Exception as exc:  # a broken install is a skipped runtime, not a dead worker
        ok, reason = False, f"availability check failed: {first_line(exc)}"
    process_start_ms = (time.perf_counter() - t0) * 1e3
    info = job.model
    artifact, artifact_error = None, None
    if ok:
        reason = (unsupported_precision(runtime, job.precision) or unsupported_concurrency(runtime, job.concurrency)
                  or native_precision_problem(runtime, job.precision))
        ok = not reason
    if ok and any(not static_skip_reason(runtime, info, job.precision, b) for b in job.batches):
        try:
            artifact = artifact_path(runtime, info, job)
        except Exception as exc:
            artifact_error = f"building the {job.precision} artifact failed: {first_line(exc)}"
    peaks = job_peaks(runtime, job, emit) if artifact and job.checks.peak_probes else None
    measured = list(job.ladder_measured)
    for batch in job.batches:
        emit("start", batch)
        point, model = point_identity(job, runtime, batch, available=ok), ModelFacts.of(info)
        limit = reason if not ok else (static_skip_reason(runtime, info, job.precision, batch)
                                       or stop_reason(job.ladder, measured, batch))
        if limit:
            emit("result", PointResult.skipped(point, model, limit))
            continue
        if artifact_error:
            emit("result", PointResult.failed(point, model, artifact_error))
            continue
        try:
            result = measure_point(runtime, info, job, batch, artifact, peaks)
            result.process_start_ms = process_start_ms
            measured.extend(filter(None, [result.ladder_point()]))
            emit("result", result)
        except Exception as exc:  # one failed point never stops the others
            emit("result", PointResult.failed(point, model, first_line(exc)))
            emit("log", traceback.format_exc())


def point_identity(job: Job, runtime, batch: int, available: bool = True) -> PointIdentity:
    return PointIdentity(runtime=job.runtime, precision=job.precision, batch=batch, device=runtime.device,
                         input_format=job.input_format, options_variant=job.options_variant,
                         concurrency=job.concurrency, runtime_versions=runtime.versions() if available else None,
                         int8_recipe=int8_recipe(runtime).name if job.precision == "int8" else None,
                         input_bytes_per_frame=job.format.bytes_per_frame(job.model.input_hw))


def static_skip_reason(runtime, info: ModelInfo, precision: str, batch: int, concurrency: int = 1) -> str:
    """Why an available runtime skips this point whatever the machine ("" when it measures it)."""
    return (unsupported_precision(runtime, precision) or unsupported_concurrency(runtime, concurrency)
            or info.batch_limit_reason(batch) or "")


def unsupported_concurrency(runtime, concurrency: int) -> str:
    if concurrency == 1 or runtime.concurrent:
        return ""
    return f"{runtime.name} runs one request in flight only (concurrency {concurrency} is not implemented for it)"


def native_precision_problem(runtime, precision: str) -> str:
    """Why this machine cannot compute `precision` on the runtime's device ("" when it can)."""
    try:
        return runtime.native_precision_problem(precision)
    except Exception as exc:  # a failed capability query skips the precision, not the worker
        return f"could not ask {runtime.name} whether it computes {precision} natively: {first_line(exc)}"


def unsupported_precision(runtime, precision: str) -> str:
    if precision in runtime.precisions:
        return ""
    note = getattr(runtime, "precision_notes", {}).get(precision)
    return f"{runtime.name} does not run {precision} (it runs {', '.join(runtime.precisions)})" + (f": {note}" if note else "")


def artifact_path(runtime, info: ModelInfo, job: Job) -> str:
    """The model file this runtime consumes for the job's precision (built and cached on demand)."""
    frames = None
    if runtime.artifact_for(job.precision) == "int8":
        frames = calibration_frames(info.input_shape(1), info.family, DEFAULT_CALIBRATION_FRAMES,
                                    images=list(job.images) or None, seed=job.settings.seed)
    return build_artifact(runtime, info.path, job.precision, Path(job.cache_dir or ".") / "artifacts", frames,
                          with_input=lambda path: with_input_format(path, job.format, info, Path(job.cache_dir or ".")))


def job_peaks(runtime, job: Job, emit: Emit):
    """This runtime's probe peaks at the job's precision (cached per machine); None if they cannot be had."""
    try:
        return peaks_for(runtime, job.precision, job.options, job.cache_dir or ".")
    except Exception:  # the points are worth more than their share of peak
        emit("log", traceback.format_exc())
        return None


def measure_point(runtime, info: ModelInfo, job: Job, batch: int, model_path: str, peaks=None) -> PointResult:
    fmt = job.format
    shape = fmt.shape(batch, info.input_hw)
    request = LoadRequest(model_path=model_path, input_name=info.input_name, input_shape=shape,
                          precision=job.precision, options=job.options, cache_dir=job.cache_dir,
                          input_dtype=fmt.dtype)
    phases = ColdStartTimer()
    session = runtime.load_concurrent(request, job.concurrency, phases)
    cold = phases.result()
    gpu = None
    try:
        batch_bytes = batch * fmt.bytes_per_frame(info.input_hw)
        inputs = make_inputs(shape, input_buffer_count(job.settings, batch_bytes), job.settings.seed, info.mean,
                             info.std, fmt.dtype)
        cpu = CpuSampler()
        if runtime.uses_cuda:  # NVML beside the CPU sampler, both on the steady-state windows only
            gpu = GpuPointTelemetry.open(batch, runtime.options(request).device_id)
        result = measure(session, inputs, batch, job.settings, [cpu, gpu] if gpu else [cpu])
        telemetry = cpu.figures(result)
        gpu_telemetry = gpu.figures(result) if gpu else None  # NVML's figures and warnings
        contamination, parity = run_checks(runtime, session, info, job, batch)
        steady = SteadyState.of(result, info.flops_per_frame)
        if gpu_telemetry:  # NVML saw whether the clock moved: say where unstable compute times come from
            steady.warnings = explain_unstable(steady.warnings, gpu_telemetry.gpu_sm_clock_mean_mhz,
                                               gpu_telemetry.gpu_sm_clock_min_mhz)
        settings = SessionSettings.of(session.describe(), session.timer_kind, session.effective_precision())
        return PointResult(point_identity(job, runtime, batch), ModelFacts.of(info), session=settings,
                           cold_start=cold, inputs=InputPool(result.buffers_fed, result.buffers_fed * batch_bytes),
                           steady=steady,
                           cpu=telemetry, gpu=gpu_telemetry, contamination=contamination, parity=parity,
                           peaks=peak_shares(peaks, steady, input_bytes=batch_bytes))
    finally:
        if gpu:
            gpu.close()
        session.close()


def run_checks(runtime, session: Session, info: ModelInfo, job: Job, batch: int):
    """(contamination, parity) results of the loaded session, None where not asked; after (never
    inside) the timing loop."""
    contamination = parity = None
    # The checks speak normalised float frames; a uint8 session gets the same frames' pixels.
    infer = point_checks.infer_in_format(session.infer, job.format, info)
    if job.checks.contamination:
        contamination = point_checks.contamination_check(infer, info, batch, job.precision, job.settings.seed)
    if job.checks.parity:
        frames, faces = point_checks.parity_frames(info, tuple(job.images))
        hint = ""
        if job.precision == "int8" and runtime.device == "cpu":
            hint = int8_failure_hint(int8_recipe(runtime).name)
        gates = point_checks.gates_for_input(job.format, job.parity_gates)
        parity = point_checks.parity_check(infer, info, batch, job.precision, frames, gates, failure_hint=hint,
                                           identity_faces=faces)
    return contamination, parity


def peak_shares(peaks, steady: SteadyState, input_bytes: int) -> PeakShares | None:
    """The probe figures and this point's share of them; a share above 100% is flagged as nominal."""
    if peaks is None:
        return None
    achieved = steady.gflops_achieved
    h2d_gbps = input_bytes / (steady.h2d_ms * 1e6) if steady.h2d_ms else None
    gemm, conv = peaks.share_denominator("gemm"), peaks.share_denominator("conv")
    shares = PeakShares(
        peak_gemm_gflops=gemm, peak_conv_gflops=conv,
        pct_gemm_peak=share_of_peak(achieved, gemm), pct_conv_peak=share_of_peak(achieved, conv),
        peak_memory_copy_gbps=peaks.memory_copy_gbps, peak_h2d_gbps=peaks.h2d_gbps,
        h2d_gbps=h2d_gbps, pct_h2d_peak=share_of_peak(h2d_gbps, peaks.h2d_gbps),
        datasheet_peak_tflops=peaks.datasheet_tflops)
    notes = [f"{kind} probe UNSTABLE twice ({getattr(peaks, f'{kind}_gflops'):.0f} GFLOP/s): left out of the shares "
             "of peak; `facebench probe` on a quieter machine measures it again" for kind in peaks.unstable]
    above = [name for name, share in (("gemm", shares.pct_gemm_peak), ("conv", shares.pct_conv_peak)) if (share or 0) > 100]
    if above:
        notes.append(f"nominal {achieved:.0f} GFLOP/s is above the {' and '.join(above)} probe: the runtime does "
                     "fewer multiplies than the nominal count (e.g. Winograd convolution)")
    shares.note = "; ".join(notes) or None
    return shares


def child_main(job: Job, conn, parent_pid: int | None = None) -> None:
    """Entry point of a spawned worker process; messages go back through `conn`, a Pipe's writing end."""
    _follow_parent(parent_pid)
    run_job(job, lambda kind, payload: conn.send((kind, payload)))
    conn.send(("done", None))


PR_SET_PDEATHSIG = 1


def _follow_parent(parent_pid: int | None) -> None:
    """Leave interrupts to the harness, and die with it."""
    # Ctrl-C reaches the whole process group; the harness stops this worker itself and
    # reports what was saved, so the worker ignores SIGINT instead of printing a traceback.
    # (It started with SIGINT blocked, which covers the imports before this line.)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    try:  # Linux: the kernel kills this worker when the harness dies, even by SIGKILL
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # elsewhere an orphan finishes its job, then exits
        return
    if parent_pid and os.getppid() != parent_pid:
        os._exit(1)  # the harness died before the line above took effect
