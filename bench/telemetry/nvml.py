"""NVML telemetry beside the steady-state windows of a GPU point (nvidia-ml-py, module pynvml).

A polling thread reads utilisation, memory, power, SM clock, temperature and the
clock-event (throttle) reasons every `interval_s`; energy comes from the
total-energy counter (mJ since driver load, Volta+) read at the edges of each
window, so energy per frame does not depend on the 1-s averaged power reading
(runtimes.md 5). The NVML device is the CUDA device matched by UUID (or PCI bus
id): NVML indices ignore CUDA_VISIBLE_DEVICES.

`aggregate_samples` and `nvml_warnings` are pure and work on recorded samples.
"""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

from bench.runtimes import cuda
from bench.telemetry.base import PollingThread, used_readings


@dataclass
class GpuTelemetry:
    """NVML over the windows (bench.telemetry.nvml) and its warnings."""

    gpu_util_mean: float | None = None
    gpu_mem_util_mean: float | None = None
    gpu_mem_peak_mb: float | None = None
    gpu_power_mean_w: float | None = None
    gpu_energy_mj_per_frame: float | None = None
    gpu_sm_clock_mean_mhz: float | None = None
    gpu_sm_clock_min_mhz: float | None = None
    gpu_temp_max_c: float | None = None
    gpu_clock_events: str | None = None
    warnings: list[str] = field(default_factory=list)  # NVML's; they join the point's warnings

# nvmlClocksEventReason* bits.
CLOCK_EVENT_REASONS = {
    0x1: "idle", 0x2: "app_clocks", 0x4: "sw_power_cap", 0x8: "hw_slowdown", 0x10: "sync_boost",
    0x20: "sw_thermal", 0x40: "hw_thermal", 0x80: "hw_power_brake", 0x100: "display_clock",
}
THROTTLE_REASONS = ("sw_power_cap", "hw_slowdown", "sw_thermal", "hw_thermal", "hw_power_brake")
CLOCK_DROP_PCT = 10.0  # warn when a busy sample's SM clock is this far below the busiest one
DEFAULT_INTERVAL_S = 0.1  # faster polling only re-reads NVML's cached values


@dataclass
class NvmlSample:
    t_s: float
    gpu_util: float | None = None  # % of time a kernel ran
    mem_util: float | None = None  # % of time memory was read or written
    mem_used_bytes: int | None = None
    power_mw: float | None = None
    sm_clock_mhz: float | None = None
    temp_c: float | None = None
    clock_events: int | None = None  # bit mask of CLOCK_EVENT_REASONS


def reason_names(mask: int) -> list[str]:
    names = [name for bit, name in CLOCK_EVENT_REASONS.items() if mask & bit]
    unknown = mask & ~sum(CLOCK_EVENT_REASONS)
    if unknown:
        names.append(f"0x{unknown:x}")
    return names


def _values(samples: Sequence[NvmlSample], attr: str) -> list[float]:
    return [getattr(s, attr) for s in samples if getattr(s, attr) is not None]


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def aggregate_samples(samples: Sequence[NvmlSample], energy_start_mj: float | None,
                      energy_end_mj: float | None, frames: int | None) -> GpuTelemetry:
    """The gpu_* figures from samples and the energy counter at both edges."""
    clocks = _values(samples, "sm_clock_mhz")
    memory = _values(samples, "mem_used_bytes")
    temps = _values(samples, "temp_c")
    power = _values(samples, "power_mw")
    mask = 0
    for s in samples:
        mask |= s.clock_events or 0
    energy = None
    if energy_start_mj is not None and energy_end_mj is not None and frames:
        delta = energy_end_mj - energy_start_mj
        energy = delta / frames if delta >= 0 else None  # a counter reset (driver reload) is no reading
    return GpuTelemetry(
        gpu_util_mean=_mean(_values(samples, "gpu_util")),
        gpu_mem_util_mean=_mean(_values(samples, "mem_util")),
        gpu_mem_peak_mb=max(memory) / 2**20 if memory else None,
        gpu_power_mean_w=_mean(power) / 1000.0 if power else None,
        gpu_energy_mj_per_frame=energy,
        gpu_sm_clock_mean_mhz=_mean(clocks),
        gpu_sm_clock_min_mhz=min(clocks) if clocks else None,
        gpu_temp_max_c=max(temps) if temps else None,
        gpu_clock_events=",".join(reason_names(mask)) if mask else None,
    )


def nvml_warnings(samples: Sequence[NvmlSample]) -> list[str]:
    """Throttling seen, or SM clocks that dropped while the GPU was busy."""
    out = []
    mask = 0
    for s in samples:
        mask |= s.clock_events or 0
    throttled = [name for name in reason_names(mask) if name in THROTTLE_REASONS]
    if throttled:
        out.append(f"GPU throttled during the windows ({', '.join(throttled)}); frames/s may be below what "
                   "the GPU sustains when cool and unconstrained")
    busy = [s.sm_clock_mhz for s in samples
            if s.sm_clock_mhz is not None and not ((s.clock_events or 0) & 0x1) and (s.gpu_util or 0) > 0]
    if len(busy) >= 2:
        top, low = max(busy), min(busy)
        if top > 0 and (top - low) / top * 100.0 > CLOCK_DROP_PCT:
            out.append(f"SM clock dropped from {top:.0f} to {low:.0f} MHz while busy "
                       f"(> {CLOCK_DROP_PCT:g}%); lock clocks (nvidia-smi -lgc) for steadier figures")
    return out


# --------------------------------------------------------------------------- the live sampler


def import_pynvml():
    import pynvml

    return pynvml


def nvml_reason() -> str | None:
    """Why NVML telemetry cannot run here (no import of pynvml)."""
    gpu = cuda.nvidia_gpu_reason()
    if gpu:
        return gpu
    if cuda.dist_version("nvidia-ml-py") is None:
        if cuda.dist_version("pynvml"):
            return "nvidia-ml-py not installed (the deprecated pynvml wheel is; it no longer ships the NVML bindings)"
        return "nvidia-ml-py not installed; make bench EXTRA=gpu installs it"
    return None


def _bytes(text: str) -> bytes:
    return text.encode()


def nvml_handle(nvml, cuda_index: int) -> tuple[Any, str]:
    """The NVML handle of CUDA device `cuda_index`, and how it was matched."""
    try:
        identity = cuda.device_identity(cuda_index)
    except Exception:  # no cuda-python: fall back to what CUDA_VISIBLE_DEVICES says
        identity = None
    if identity is not None:
        try:
            return nvml.nvmlDeviceGetHandleByUUID(_bytes(identity.uuid)), f"uuid {identity.uuid}"
        except Exception:
            return nvml.nvmlDeviceGetHandleByPciBusId(_bytes(identity.pci_bus_id)), f"pci {identity.pci_bus_id}"
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    if cuda_index < len(visible):
        entry = visible[cuda_index]
        if entry.startswith(("GPU-", "MIG-")):
            return nvml.nvmlDeviceGetHandleByUUID(_bytes(entry)), f"uuid {entry} (CUDA_VISIBLE_DEVICES)"
        if entry.isdigit():
            return nvml.nvmlDeviceGetHandleByIndex(int(entry)), f"index {entry} (CUDA_VISIBLE_DEVICES, PCI order assumed)"
    return nvml.nvmlDeviceGetHandleByIndex(cuda_index), f"index {cuda_index} (unverified: no cuda-python)"


@dataclass
class _NvmlWindow:
    """One window's share of the samples (indices into NvmlSampler._samples), energy and frames."""

    first: int
    end: int
    energy_mj: float | None
    frames: int = 0


class NvmlSampler:
    """NVML readings over the windows it hears (bench.telemetry.base.Sampler), window by window.

    window_started() / window_stopped() bracket each window; add_frames() counts what the
    window just stopped processed (for energy per frame); figures(measurement) aggregates the
    measurement's used windows (every window since reset() without one).
    """

    def __init__(self, cuda_index: int = 0, interval_s: float = DEFAULT_INTERVAL_S, nvml=None):
        self._nvml = nvml or import_pynvml()
        self._nvml.nvmlInit()
        self._handle, self.matched_by = nvml_handle(self._nvml, cuda_index)
        self._poller = PollingThread(self._sample, interval_s)
        self._lock = threading.Lock()
        self._window_energy0: float | None = None
        self._running = False
        self.reset()

    # -- readings
    def _read(self, name: str, *args):
        try:
            return getattr(self._nvml, name)(self._handle, *args)
        except Exception:  # NotSupported on this product: leave the figure empty
            return None

    def _clock_events(self) -> int | None:
        for name in ("nvmlDeviceGetCurrentClocksEventReasons", "nvmlDeviceGetCurrentClocksThrottleReasons"):
            if hasattr(self._nvml, name):
                value = self._read(name)
                return int(value) if value is not None else None
        return None

    def _temperature(self) -> float | None:
        sensor = getattr(self._nvml, "NVML_TEMPERATURE_GPU", 0)
        if hasattr(self._nvml, "nvmlDeviceGetTemperatureV"):
            value = self._read("nvmlDeviceGetTemperatureV", sensor)
            if value is not None:
                return float(getattr(value, "temperature", value))
        value = self._read("nvmlDeviceGetTemperature", sensor)
        return float(value) if value is not None else None

    def _energy(self) -> float | None:
        value = self._read("nvmlDeviceGetTotalEnergyConsumption")
        return float(value) if value is not None else None

    def _sample(self) -> None:
        util = self._read("nvmlDeviceGetUtilizationRates")
        memory = self._read("nvmlDeviceGetMemoryInfo")
        power = self._read("nvmlDeviceGetPowerUsage")
        clock = self._read("nvmlDeviceGetClockInfo", getattr(self._nvml, "NVML_CLOCK_SM", 1))
        sample = NvmlSample(
            t_s=time.monotonic(),
            gpu_util=float(util.gpu) if util is not None else None,
            mem_util=float(util.memory) if util is not None else None,
            mem_used_bytes=int(memory.used) if memory is not None else None,
            power_mw=float(power) if power is not None else None,
            sm_clock_mhz=float(clock) if clock is not None else None,
            temp_c=self._temperature(),
            clock_events=self._clock_events(),
        )
        with self._lock:
            self._samples.append(sample)

    # -- protocol
    def reset(self) -> None:
        """Forget every window heard so far."""
        self._samples: list[NvmlSample] = []
        self._readings: list[_NvmlWindow] = []
        self.warnings: list[str] = []

    def window_started(self) -> None:
        self._window_first = len(self._samples)
        self._window_energy0 = self._energy()
        self._poller.start()
        self._running = True

    def window_stopped(self, window=None) -> None:
        if not self._running:
            return
        self._poller.stop()
        end = self._energy()
        energy = None if self._window_energy0 is None or end is None else end - self._window_energy0
        with self._lock:
            self._readings.append(_NvmlWindow(self._window_first, len(self._samples), energy))
        self._running = False

    def add_frames(self, frames: int) -> None:
        """Frames the window just stopped processed (energy per frame divides by them)."""
        if self._readings:
            self._readings[-1].frames += int(frames)

    def figures(self, measurement=None) -> GpuTelemetry:
        with self._lock:
            readings = used_readings(self._readings, measurement)
            samples = [s for r in readings for s in self._samples[r.first:r.end]]
        energy_ok = all(r.energy_mj is not None for r in readings)
        energy = sum(r.energy_mj for r in readings) if energy_ok and readings else None
        telemetry = aggregate_samples(samples, 0.0, energy, sum(r.frames for r in readings))
        self.warnings = nvml_warnings(samples)
        if readings and not energy_ok:
            self.warnings.append("GPU energy counter not supported here (needs Volta or newer); no mJ/frame")
        return telemetry

    def close(self) -> None:
        self.window_stopped()
        try:
            self._nvml.nvmlShutdown()
        except Exception:
            pass


def open_gpu_sampler(cuda_index: int = 0) -> tuple[NvmlSampler | None, str]:
    """(sampler, "") or (None, why telemetry is off); never raises."""
    reason = nvml_reason()
    if reason:
        return None, reason
    try:
        return NvmlSampler(cuda_index), ""
    except Exception as exc:
        return None, f"NVML failed to start ({type(exc).__name__}: {exc})"


class GpuPointTelemetry:
    """The GPU point's sampler: NVML columns over its steady-state windows (the stage figures and
    trtexec's warnings are the measurement's, bench.measure.stages)."""

    def __init__(self, batch: int, sampler: NvmlSampler | None, note: str = ""):
        self.batch, self.sampler, self.note = batch, sampler, note

    @classmethod
    def open(cls, batch: int, cuda_index: int = 0) -> "GpuPointTelemetry":
        return cls(batch, *open_gpu_sampler(cuda_index))

    def window_started(self) -> None:
        if self.sampler is not None:
            self.sampler.window_started()

    def window_stopped(self, window) -> None:
        if self.sampler is not None:
            self.sampler.window_stopped(window)
            self.sampler.add_frames(self.batch * window.iterations)  # end to end: the compute-only pass is outside

    def figures(self, measurement) -> GpuTelemetry:
        """NVML's figures and warnings (or why there are none)."""
        if self.sampler is None:
            return GpuTelemetry(warnings=[f"no GPU telemetry: {self.note}"])
        telemetry = self.sampler.figures(measurement)
        telemetry.warnings = list(self.sampler.warnings)
        return telemetry

    def close(self) -> None:
        if self.sampler is not None:
            self.sampler.close()
