"""What this machine can do, measured through the runtime a sweep uses.

Per (machine, runtime, runtime version, options, precision): the GEMM and 3x3-conv probe
models (bench.models.probes) under the same measurement protocol as every point, plus
a memory-copy probe on CPUs and pinned host<->device copies on NVIDIA GPUs. On a GPU a
probe's rate is its compute-only pass (input and output left on the device): the probe's
2-3 MB copies would otherwise bound it, and the pinned-copy probe is the transfer ceiling.
A probe that is not VALID is measured once more; UNSTABLE twice, its figure is kept but
left out of every share of peak. Cached as JSON under $FACEBENCH_CACHE/peaks/, so a
machine pays for them once; `facebench probe` measures them again. Datasheet peaks of
known NVIDIA GPUs are recorded beside them.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from bench import env
from bench.fileio import first_line, writable_folder
from bench.measure.protocol import VALID, MeasureSettings, make_inputs, measure
from bench.models.artifacts import build_artifact
from bench.models.probes import PROBES, build_probe
from bench.runtimes import cuda
from bench.session import LoadRequest

PROBE_VERSION = 2  # bump when the probe models or their measurement change (2: GPU compute only, retry)
PROBE_ATTEMPTS = 2  # a probe that does not settle is measured once more
# Short windows: the probes are single large operators whose time hardly varies.
PROBE_SETTINGS = MeasureSettings(warmup_s=0.2, warmup_min_iterations=2, window_s=0.3, window_min_iterations=3,
                                 max_windows=6, input_buffers=2)
COPY_BYTES = 64 * 2**20

# Dense (no sparsity) tensor peaks from NVIDIA's datasheets, TFLOP/s (INT8: TOPS).
DATASHEET_TFLOPS: dict[str, dict[str, float]] = {
    "H200": {"fp32": 67.0, "tf32": 494.7, "fp16": 989.4, "int8": 1978.9},
    "H100 80GB HBM3": {"fp32": 67.0, "tf32": 494.7, "fp16": 989.4, "int8": 1978.9},  # SXM
    "H100 PCIe": {"fp32": 51.2, "tf32": 378.0, "fp16": 756.0, "int8": 1513.0},
    "A100-SXM4-80GB": {"fp32": 19.5, "tf32": 156.0, "fp16": 312.0, "int8": 624.0},
    "A100-SXM4-40GB": {"fp32": 19.5, "tf32": 156.0, "fp16": 312.0, "int8": 624.0},
    "L40S": {"fp32": 91.6, "tf32": 183.0, "fp16": 362.1, "int8": 733.0},
    "L4": {"fp32": 30.3, "tf32": 60.0, "fp16": 121.0, "int8": 242.5},
    "A10": {"fp32": 31.2, "tf32": 62.5, "fp16": 125.0, "int8": 250.0},
    "Tesla T4": {"fp32": 8.1, "fp16": 65.0, "int8": 130.0},
}


@dataclass
class Peaks:
    """Probe figures for one runtime and precision on one machine (None where not measured)."""

    runtime: str
    precision: str
    device: str
    machine_id: str
    runtime_version: str
    gemm_gflops: float | None = None
    conv_gflops: float | None = None
    memory_copy_gbps: float | None = None  # CPU: one-thread copy, read + write bytes
    h2d_gbps: float | None = None  # GPU: pinned host -> device
    d2h_gbps: float | None = None
    datasheet_tflops: float | None = None
    measured_utc: str = ""
    errors: list[str] = field(default_factory=list)
    unstable: list[str] = field(default_factory=list)  # probes (gemm, conv) UNSTABLE twice: not a share's denominator

    def share_denominator(self, kind: str) -> float | None:
        """The `kind` probe's GFLOP/s where shares may divide by it (None: not measured, or UNSTABLE)."""
        return None if kind in self.unstable else getattr(self, f"{kind}_gflops")

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Peaks":
        return cls(**json.loads(text))


def probe_precision(precision: str) -> str:
    """The probe that applies: simplified graphs and IR run FP32 numbers."""
    return precision if precision in ("fp16", "bf16", "int8") else "fp32"


def peaks_for(runtime, precision: str, options: dict[str, Any], cache_dir: str | os.PathLike,
              refresh: bool = False) -> Peaks:
    """The cached probe figures for this runtime, measured now if absent (or `refresh`)."""
    precision = probe_precision(precision)
    machine = env.fingerprint()
    version = json.dumps(runtime.versions(), sort_keys=True)
    key = json.dumps([PROBE_VERSION, machine["machine_id"], runtime.name, version, precision,
                      sorted((k, str(v)) for k, v in options.items())])
    path = Path(cache_dir) / "peaks" / f"{runtime.name}-{precision}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"
    if path.is_file() and not refresh:
        try:
            cached = Peaks.from_json(path.read_text())
            if not cached.unstable:  # a probe that never settled (a busy machine) is worth another try
                return cached
        except (ValueError, TypeError):
            pass  # a damaged cache entry is measured again
    writable_folder(path.parent, "peaks cache", "set FACEBENCH_CACHE to a writable folder")  # before measuring
    peaks = measure_peaks(runtime, precision, options, Path(cache_dir), machine["machine_id"], version)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".peaks-")
    with os.fdopen(fd, "w") as handle:
        handle.write(peaks.to_json())
    os.replace(tmp, path)
    return peaks


def measure_peaks(runtime, precision: str, options: dict[str, Any], cache_dir: Path, machine_id: str,
                  version: str) -> Peaks:
    peaks = Peaks(runtime.name, precision, runtime.device, machine_id, version,
                  measured_utc=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
    for kind in PROBES:
        try:
            gflops, verdict = _probe_gflops(runtime, kind, precision, options, cache_dir)
        except Exception as exc:  # a probe that cannot run leaves its figure empty, never the sweep
            peaks.errors.append(f"{kind} probe: {first_line(exc)}")
            continue
        setattr(peaks, f"{kind}_gflops", gflops)
        if verdict != VALID:
            peaks.unstable.append(kind)
    if runtime.uses_cuda:
        try:
            peaks.h2d_gbps, peaks.d2h_gbps = pinned_copy_gbps(runtime.Options.parse(options, runtime.name).device_id)
        except Exception as exc:
            peaks.errors.append(f"copy probe: {first_line(exc)}")
        peaks.datasheet_tflops = datasheet_tflops(precision)
    elif runtime.device == "cpu":
        peaks.memory_copy_gbps = memory_copy_gbps()
    return peaks


def _probe_gflops(runtime, kind: str, precision: str, options: dict[str, Any], cache_dir: Path) -> tuple[float, str]:
    """(GFLOP/s, verdict) of one probe model through `runtime`."""
    probe = PROBES[kind]
    source = cache_dir / "probes" / f"{kind}_probe_v{PROBE_VERSION}.onnx"
    if not source.is_file():
        source.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=source.parent, prefix=f".{kind}-", suffix=".onnx")
        os.close(fd)
        onnx.save(build_probe(kind), tmp)
        os.replace(tmp, source)
    rng = np.random.default_rng(0)
    calibration = rng.standard_normal((2 * probe.input_shape[0], *probe.input_shape[1:])).astype(np.float32)
    path = build_artifact(runtime, str(source), precision, cache_dir / "artifacts", calibration)
    request = LoadRequest(model_path=path, input_name="input", input_shape=probe.input_shape, precision=precision,
                          options=options, cache_dir=str(cache_dir))
    session = runtime.load(request)
    try:
        rate, verdict = probe_rate(session, make_inputs(probe.input_shape, PROBE_SETTINGS.input_buffers, 0),
                                   compute_only=runtime.uses_cuda)
    finally:
        session.close()
    return rate * probe.flops / 1e9, verdict


def probe_rate(session, inputs: list[np.ndarray], compute_only: bool) -> tuple[float, str]:
    """(probe inferences/s, verdict), measured a second time when the first does not settle.
    `compute_only` (GPUs): the rate of the compute-only passes, without the host<->device copies."""
    for _ in range(PROBE_ATTEMPTS):
        result = measure(session, inputs, 1, PROBE_SETTINGS)  # batch 1: one probe inference per iteration
        if result.verdict == VALID:
            break
    if not compute_only:
        return result.fps, result.verdict
    rate = result.stages.fps_compute
    if rate is None:
        raise RuntimeError(f"{session.loop} loop gave no compute-only figure; GPU probes need the CUDA-event loop")
    return rate, result.verdict


def memory_copy_gbps(nbytes: int = 256 * 2**20, repeats: int = 5) -> float:
    """Best of `repeats` copies of `nbytes` in one thread (bytes read + written per second)."""
    source = np.ones(nbytes // 8, dtype=np.float64)
    target = np.empty_like(source)
    np.copyto(target, source)  # fault the pages in outside the clock
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter_ns()
        np.copyto(target, source)
        best = min(best, time.perf_counter_ns() - start)
    return 2 * nbytes / best


def pinned_copy_gbps(device_id: int = 0, nbytes: int = COPY_BYTES, repeats: int = 10) -> tuple[float, float]:
    """(H2D, D2H) GB/s of pinned copies, timed with CUDA events, best of `repeats` each."""
    cuda.set_device(device_id)
    host, device, stream = cuda.PinnedBuffer((nbytes,), np.uint8), cuda.DeviceBuffer(nbytes), cuda.Stream()
    start, end = cuda.Event(), cuda.Event()
    try:
        rates = []
        for copy in (lambda: cuda.copy_h2d_async(device.ptr, host.ptr, nbytes, stream),
                     lambda: cuda.copy_d2h_async(host.ptr, device.ptr, nbytes, stream)):
            copy()  # first copy outside the clock
            best_ms = float("inf")
            for _ in range(repeats):
                start.record(stream)
                copy()
                end.record(stream)
                end.synchronize()
                best_ms = min(best_ms, start.elapsed_ms(end))
            rates.append(nbytes / (best_ms * 1e6))
        return rates[0], rates[1]
    finally:
        for item in (start, end, stream, device, host):
            item.close()


def datasheet_tflops(precision: str) -> float | None:
    """The datasheet dense peak of this machine's NVIDIA GPU at `precision` (FP32: its TF32 tensor figure is not used)."""
    gpu = (env.nvidia_gpu() or {}).get("gpu_name") or ""
    name = gpu.removeprefix("NVIDIA ").strip()
    figures = DATASHEET_TFLOPS.get(name) or next((v for k, v in DATASHEET_TFLOPS.items() if name.startswith(k)), None)
    return (figures or {}).get(precision)


def share_of_peak(achieved_gflops: float | None, peak_gflops: float | None) -> float | None:
    """Achieved nominal GFLOP/s as a percentage of a probe's (None when either is unknown)."""
    if achieved_gflops is None or not peak_gflops:
        return None
    return 100.0 * achieved_gflops / peak_gflops
