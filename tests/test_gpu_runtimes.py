"""GPU runtimes (ort-cuda, ort-trt, trt), CUDA timing and NVML telemetry.

The logic that needs no GPU runs everywhere: cache keys, profile shapes, trtexec's
warnings from recorded timings, NVML aggregation from recorded samples, availability
reasons, and the promise that listing runtimes imports no GPU package. Tests marked
`gpu` need an NVIDIA GPU with the gpu extra and skip with the reason otherwise
(scripts/gpu_verify.sh runs them in layers).
"""
from __future__ import annotations

import contextlib
import ctypes
import enum
import json
import math
import os
import shutil
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from bench import store
from bench.fileio import write_atomically
from bench.measure import stages as gw
from bench.measure.cold_start import ColdStart, ColdStartTimer
from bench.measure.loops import STAGES, CudaEventLoop, Window, ms_to_ns, split_stages
from bench.measure.protocol import MeasureSettings, make_inputs, measure, steady_window
from bench.runtimes import cuda, gpu_cache
from bench.session import CUDA, LoadRequest, Session
from bench.runtimes.ort_gpu import OrtCudaRuntime, OrtTrtRuntime, graph_id_for, ort_gpu_reasons, ort_type_to_numpy
from bench.runtimes.registry import RUNTIMES, get_runtime
from bench.runtimes.tensorrt import (TensorRtRuntime, numpy_dtype, precision_flags, precision_from_inspector,
                                     trt_major)
from bench.suite import load_suite
from bench.telemetry import nvml
from tests.conftest import REPO

GPU_RUNTIMES = ("ort-cuda", "ort-trt", "trt")
GPU_PACKAGES = ("tensorrt", "cuda", "pynvml")


# ============================================================================ cache keys and profiles


def key(**changes) -> gpu_cache.CacheKey:
    fields = dict(runtime="trt", model_sha256="ab" * 32, precision="fp16",
                  profile=gpu_cache.profile_shapes((8, 3, 112, 112)), gpu="NVIDIA H100 sm90",
                  trt_version="11.4.0", ort_version=None, cuda_runtime="13.0",
                  build=gpu_cache.build_options({"opt_level": 3}))
    fields.update(changes)
    return gpu_cache.CacheKey(**fields)


def test_cache_key_is_stable_and_names_its_contents():
    assert key().digest() == key().digest()
    name = key().folder_name()
    assert name.startswith("abababababab-fp16-b1-8-64-") and len(name.rsplit("-", 1)[1]) == 16


@pytest.mark.parametrize("change", [
    {"model_sha256": "cd" * 32}, {"precision": "fp32"}, {"gpu": "NVIDIA L4 sm89"}, {"trt_version": "10.16.0"},
    {"ort_version": "1.31.1"}, {"cuda_runtime": "12.8"}, {"runtime": "ort-trt"},
    {"profile": gpu_cache.profile_shapes((16, 3, 112, 112))},
    {"profile": gpu_cache.profile_shapes((8, 3, 112, 112), "per-batch")},
    {"build": gpu_cache.build_options({"opt_level": 5})},
])
def test_every_key_field_changes_the_folder(change):
    assert key(**change).folder_name() != key().folder_name()


def test_cache_folder_records_its_key_and_takes_a_payload(tmp_path):
    folder = gpu_cache.cache_folder(gpu_cache.cache_root(tmp_path), key())
    assert folder.parent.name == "trt" and folder.parent.parent.name == "gpu-engines"
    recorded = json.loads((folder / gpu_cache.KEY_FILE).read_text())
    assert recorded["trt_version"] == "11.4.0" and recorded["profile"]["opt"] == [8, 3, 112, 112]
    assert gpu_cache.cached_files(folder) == []
    staging = tmp_path / "staging"
    staging.mkdir()
    (staging / "model.engine").write_bytes(b"plan")
    (staging / "model.timing").write_bytes(b"cache")
    assert sorted(gpu_cache.replace_payload(folder, staging)) == ["model.engine", "model.timing"]
    assert [p.name for p in gpu_cache.cached_files(folder)] == ["model.engine", "model.timing"]
    write_atomically(folder / "model.engine", b"newer")
    assert (folder / "model.engine").read_bytes() == b"newer"


def test_profile_range_is_min_1_opt_batch_max_64():
    p = gpu_cache.profile_shapes((8, 3, 640, 640))
    assert (p.min, p.opt, p.max) == ((1, 3, 640, 640), (8, 3, 640, 640), (64, 3, 640, 640))
    assert p.label == "1-8-64" and p.contains((64, 3, 640, 640)) and not p.contains((65, 3, 640, 640))


def test_profile_per_batch_and_larger_than_max():
    p = gpu_cache.profile_shapes((4, 3, 112, 112), "per-batch")
    assert p.min == p.opt == p.max == (4, 3, 112, 112)
    big = gpu_cache.profile_shapes((128, 3, 112, 112), max_batch=64)  # allow_large_batch suites
    assert big.max[0] == 128
    assert gpu_cache.profile_shapes((2, 3, 112, 112), max_batch=16).max[0] == 16
    with pytest.raises(ValueError, match="range, per-batch"):
        gpu_cache.profile_shapes((1, 3, 112, 112), "dynamic")


def test_ort_profile_options_list_the_input():
    opts = gpu_cache.ort_profile_options("input.1", gpu_cache.profile_shapes((8, 3, 112, 112)))
    assert opts == {"trt_profile_min_shapes": "input.1:1x3x112x112",
                    "trt_profile_opt_shapes": "input.1:8x3x112x112",
                    "trt_profile_max_shapes": "input.1:64x3x112x112"}


def image_model(path, batch_dim) -> str:
    """A one-Relu ONNX whose input batch is `batch_dim` (an int: fixed; a string: symbolic)."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [batch_dim, 3, 112, 112])
    y = helper.make_tensor_value_info("out", TensorProto.FLOAT, [batch_dim, 3, 112, 112])
    graph = helper.make_graph([helper.make_node("Relu", ["input.1"], ["out"])], "g", [x], [y])
    onnx.save(helper.make_model(graph), str(path))
    return str(path)


def test_profile_fits_what_the_model_fixes(tmp_path):
    wanted = gpu_cache.profile_shapes((8, 3, 112, 112))
    assert gpu_cache.fit_profile(wanted, (-1, 3, 112, 112)) == wanted
    assert gpu_cache.fit_profile(wanted, None) == wanted  # unreadable model: as requested
    assert gpu_cache.fit_profile(wanted, (1, 3, 112, 112)) is None  # static: TensorRT needs no profile
    partly = gpu_cache.fit_profile(gpu_cache.profile_shapes((8, 3, 112, 112)), (-1, 3, 112, -1))
    assert partly == wanted
    odd = gpu_cache.fit_profile(gpu_cache.ProfileShapes((1, 1, 1, 1), (8, 3, 112, 112), (64, 3, 200, 200)),
                                (-1, 3, 112, -1))
    assert odd.min == (1, 3, 112, 1) and odd.max == (64, 3, 112, 200)  # fixed dims pinned, dynamic kept
    dynamic = image_model(tmp_path / "dynamic.onnx", "N")
    fixed = image_model(tmp_path / "fixed.onnx", 1)
    assert gpu_cache.declared_input_dims(dynamic, "input.1") == (-1, 3, 112, 112)
    assert gpu_cache.declared_input_dims(fixed, "input.1") == (1, 3, 112, 112)
    assert gpu_cache.declared_input_dims(fixed, "other") is None
    assert gpu_cache.declared_input_dims(str(tmp_path / "missing.onnx"), "input.1") is None


def test_the_shipped_scrfd_export_is_static_for_tensorrt(real_scrfd_path):
    request = LoadRequest(model_path=str(real_scrfd_path), input_name="input.1", input_shape=(1, 3, 640, 640))
    assert gpu_cache.declared_input_dims(str(real_scrfd_path), "input.1") == (1, 3, 640, 640)
    assert gpu_cache.request_profile(request) is None


def test_batch_1_export_gets_no_trt_profile(tmp_path):
    fixed = LoadRequest(model_path=image_model(tmp_path / "fixed.onnx", 1), input_name="input.1",
                        input_shape=(1, 3, 112, 112))
    opts = OrtTrtOn("11.4.0").trt_options(fixed, STREAM, None)
    assert not any(key.startswith("trt_profile_") for key in opts)
    assert gpu_cache.key_profile(OrtTrtRuntime().profile(fixed), fixed).label == "1-1-1"
    dynamic = LoadRequest(model_path=image_model(tmp_path / "dynamic.onnx", "N"), input_name="input.1",
                          input_shape=(4, 3, 112, 112))
    assert OrtTrtOn("11.4.0").trt_options(dynamic, STREAM, None)["trt_profile_max_shapes"] == "input.1:64x3x112x112"
    assert TensorRtRuntime().profile(dynamic).label == "1-4-64" and TensorRtRuntime().profile(fixed) is None


PROBES = {
    "chatty_probe": """
def probe(request, phases, ms):
    print("{ a library's chatter, not JSON", flush=True)
    phases.record("compile", float(ms) * request.input_shape[0])
""",
    "crashing_probe": """
import os
from bench.measure.cold_start import PROBE_TAG

def probe(request, phases):
    print(PROBE_TAG + '{"total_ms": 7.0}', flush=True)
    os.abort()  # as a CUDA teardown might, after the figure is out
""",
    "silent_probe": """
import sys

def probe(request, phases):
    print("cannot load libnvinfer.so.11", file=sys.stderr)
    sys.exit(3)
""",
}


def test_warm_probe_runner_keeps_the_result_and_names_failures(tmp_path, monkeypatch):
    for name, text in PROBES.items():
        (tmp_path / f"{name}.py").write_text(text)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    request = LoadRequest(model_path="m.onnx", input_name="input.1", input_shape=(2, 3, 112, 112))
    timer = ColdStartTimer()
    assert timer.fresh_process("chatty_probe:probe", request, ms="21") == {"compile_ms": 42.0, "total_ms": 42.0}
    assert timer.fresh_process("crashing_probe:probe", request) == {"total_ms": 7.0}
    failed = timer.fresh_process("silent_probe:probe", request)
    assert failed == {"total_ms": None, "note": "warm-cache probe failed: cannot load libnvinfer.so.11"}
    from bench.session import UNTIMED

    assert UNTIMED.fresh_process("chatty_probe:probe", request)["total_ms"] is None  # no clock: no probe process


def test_cold_start_timer_adds_phases_and_keeps_the_fields():
    timer = ColdStartTimer()
    for phase in ("read", "compile", "compile", "first_infer"):
        with timer(phase):
            with timer("parse"):  # a finer name nested inside, reported apart
                pass
    timer.record("warm_cache_total", 12.5)
    cold = timer.result()
    assert cold.read_ms > 0 and cold.compile_ms > timer.ms("parse") / 4 and cold.first_infer_ms > 0
    assert cold.warm_cache_total_ms == 12.5 and cold.total_ms == pytest.approx(timer.total_ms())
    assert set(timer.figures_ms()) == {"read_ms", "compile_ms", "first_infer_ms", "parse_ms", "warm_cache_total_ms",
                                       "total_ms"}


# ============================================================================ trtexec warnings


def window(h2d, compute, d2h, enqueue=None, iterations=None, compute_only_wall_ns=None) -> Window:
    n = iterations or len(compute)
    extra = {"h2d": [ms_to_ns(v) for v in h2d], "compute": [ms_to_ns(v) for v in compute],
             "d2h": [ms_to_ns(v) for v in d2h]}
    if enqueue is not None:
        extra["enqueue"] = [ms_to_ns(v) for v in enqueue]
    latencies = [a + b + c for a, b, c in zip(extra["h2d"], extra["compute"], extra["d2h"])]
    return Window(wall_ns=sum(latencies), latencies_ns=latencies, iterations=n, extra_ns=extra,
                  compute_only_wall_ns=compute_only_wall_ns)


def test_quiet_timings_give_no_warning():
    s = gw.summarise_stages([window([0.1] * 10, [2.0] * 10, [0.05] * 10, enqueue=[0.3] * 10)])
    assert (s.h2d_ms, s.compute_ms, s.d2h_ms, s.enqueue_ms) == pytest.approx((0.1, 2.0, 0.05, 0.3))
    assert s.compute_cov_pct == pytest.approx(0.0)
    assert gw.trtexec_warnings(s) == []


def test_enqueue_bound_above_0_8_of_compute_only():
    at_limit = gw.StageSummary(compute_ms=1.0, enqueue_ms=0.8, compute_cov_pct=0.0)
    above = gw.StageSummary(compute_ms=1.0, enqueue_ms=0.81, compute_cov_pct=0.0)
    assert gw.trtexec_warnings(at_limit) == []
    [warning] = gw.trtexec_warnings(above)
    assert warning.startswith("enqueue-bound") and "cuda_graph" in warning


def test_transfer_bound_when_a_copy_takes_as_long_as_compute():
    h2d = gw.trtexec_warnings(gw.StageSummary(h2d_ms=1.0, compute_ms=1.0, d2h_ms=0.1, compute_cov_pct=0.0))
    d2h = gw.trtexec_warnings(gw.StageSummary(h2d_ms=0.1, compute_ms=1.0, d2h_ms=1.5, compute_cov_pct=0.0))
    assert len(h2d) == 1 and "host-to-device" in h2d[0]
    assert len(d2h) == 1 and "device-to-host" in d2h[0]
    assert gw.trtexec_warnings(gw.StageSummary(h2d_ms=0.99, compute_ms=1.0, d2h_ms=0.5)) == []


def test_compute_cov_above_2_5_percent_is_unstable():
    steady = [1.0, 1.02, 0.98, 1.01, 0.99] * 4  # CoV about 1.4 %
    jumpy = [1.0, 1.2, 0.8, 1.1, 0.9] * 4  # CoV about 14 %
    assert gw.trtexec_warnings(gw.summarise_stages([window([0.1] * 20, steady, [0.1] * 20)])) == []
    [warning] = gw.trtexec_warnings(gw.summarise_stages([window([0.1] * 20, jumpy, [0.1] * 20)]))
    assert warning.startswith("GPU compute time is unstable") and "14.1%" in warning
    assert gw.cov_pct(jumpy) == pytest.approx(np.std(jumpy) / np.mean(jumpy) * 100)
    # NVML saw the clock hold: the advice names the host, not the clock; a moving clock keeps trtexec's.
    [held] = gw.explain_unstable([warning], 1980.0, 1980.0)
    assert "held at 1980 MHz" in held and "locking the GPU clock" not in held and "14.1%" in held
    assert gw.explain_unstable([warning], 1800.0, 1400.0) == [warning]
    assert gw.explain_unstable([warning], None, None) == [warning]
    assert gw.explain_unstable(["enqueue-bound: x"], 1980.0, 1980.0) == ["enqueue-bound: x"]


def test_compute_only_fps_needs_every_window():
    a = window([0.1] * 4, [1.0] * 4, [0.1] * 4, compute_only_wall_ns=4_000_000)
    b = window([0.1] * 4, [1.0] * 4, [0.1] * 4, compute_only_wall_ns=4_000_000)
    assert gw.compute_only_fps([a, b], batch=8) == pytest.approx(8 * 8 / 0.008)
    assert gw.compute_only_fps([a, window([0.1], [1.0], [0.1])], batch=8) is None


def test_one_cov_rule_on_device_timed_points():
    # The compute time's CoV where the loop measured it (jumpy latencies alone say nothing then);
    # the latency's only without a compute series.
    quiet_compute = gw.summarise_stages([window([0.1] * 20, [1.0, 1.01, 0.99, 1.0] * 5, [0.1] * 20)])
    assert gw.device_timed_warnings(quiet_compute, latency_cov_pct=9.0) == []
    jumpy = gw.summarise_stages([window([0.1] * 20, [1.0, 1.2, 0.8, 1.1, 0.9] * 4, [0.1] * 20)])
    [unstable] = gw.device_timed_warnings(jumpy, latency_cov_pct=0.0)
    assert unstable.startswith(gw.UNSTABLE_PREFIX)
    [latency] = gw.device_timed_warnings(gw.StageSummary(), latency_cov_pct=9.0)
    assert latency.startswith("latency CoV 9.0% > 2.5%")
    assert gw.device_timed_warnings(gw.StageSummary(), latency_cov_pct=2.0) == []


class SimulatedEvent:
    """A CUDA event on a SimulatedCudaSteps stream: it fires when the stream reaches it."""

    def __init__(self):
        self.t_ns = 0

    def record(self, stream) -> None:
        self.t_ns = stream.tail_ns = max(stream.tail_ns, stream.host_ns)

    def elapsed_ms(self, end) -> float:
        return (end.t_ns - self.t_ns) / 1e6

    def close(self) -> None:
        pass


class SimulatedCudaSteps(Session):
    """The CUDA step contract on a simulated stream, a CPU-side step provider (no GPU): every copy and
    compute queues its milliseconds of GPU work behind the last, compute costs the host `enqueue_ms`,
    synchronize() moves the host clock to the end of the queue. `clock()` is that host clock."""

    loop = CUDA
    record_enqueue = True

    def __init__(self, h2d_ms=0.4, compute_ms=lambda i: 2.0 + 0.001 * (i % 3), d2h_ms=2.5, enqueue_ms=1.9):
        self.h2d_ms, self.compute_ms, self.d2h_ms, self.enqueue_ms = h2d_ms, compute_ms, d2h_ms, enqueue_ms
        self.host_ns = self.tail_ns = 0
        self.computes, self.staged, self.bound_threads = 0, [], []
        self.stream = self

    def bind_thread(self) -> None:
        import threading

        self.bound_threads.append(threading.get_ident())

    def clock(self) -> int:
        return self.host_ns

    def _queue(self, ms: float) -> None:
        self.tail_ns = max(self.tail_ns, self.host_ns) + ms_to_ns(ms)

    def stage(self, x):
        self.staged.append(x)
        return x

    def h2d(self, staged) -> None:
        self._queue(self.h2d_ms)

    def compute(self) -> None:
        self._queue(self.compute_ms(self.computes))
        self.computes += 1
        self.host_ns += ms_to_ns(self.enqueue_ms)

    def d2h(self) -> None:
        self._queue(self.d2h_ms)

    def synchronize(self) -> None:
        self.host_ns = max(self.host_ns, self.tail_ns)

    def new_event(self) -> SimulatedEvent:
        return SimulatedEvent()

    def infer(self, x):
        return {"sum": x.sum(axis=(1, 2, 3))}


@pytest.fixture
def simulated(monkeypatch) -> SimulatedCudaSteps:
    """Simulated CUDA steps whose host clock is the one the protocol and the loops read."""
    steps = SimulatedCudaSteps()
    monkeypatch.setattr("bench.measure.loops.time.perf_counter_ns", steps.clock)
    monkeypatch.setattr("bench.measure.protocol.time.perf_counter", lambda: steps.clock() / 1e9)
    return steps


def test_gpu_point_fields_and_row_through_the_store(tmp_path, simulated):
    settings = MeasureSettings(warmup_s=0.0, warmup_min_iterations=2, window_s=0.0, window_min_iterations=20,
                               stable_windows=3, max_windows=4)
    inputs = make_inputs((4, 3, 8, 8), 2, 0)
    telemetry = nvml.GpuPointTelemetry(4, None, "no NVIDIA GPU (nvidia-smi not found)")  # as without NVML
    m = measure(simulated, inputs, 4, settings, [telemetry])
    gpu = telemetry.figures(m)
    assert m.stages.fps_compute == pytest.approx(4 / 0.002, rel=1e-3)  # compute alone: about 2 ms a batch
    assert len(simulated.staged) == len(inputs)  # staged once for the whole point
    assert m.extra_ms["compute"] == pytest.approx(2.001) == m.stages.compute_ms
    joined = "; ".join(m.warnings + gpu.warnings)
    assert "enqueue-bound" in joined and "device-to-host" in joined and "no GPU telemetry" in joined
    from bench.models.info import ModelInfo
    from bench.results import ModelFacts, PointIdentity, PointResult, SessionSettings, SteadyState

    info = ModelInfo(name="x", path="x.onnx", source="file", sha256="0" * 64, file_bytes=1, family="embedder",
                     input_name="input", input_dims=[1, 3, 8, 8], input_hw=(8, 8), mean=0.0, std=1.0, params=1,
                     macs_per_frame=1, op_counts={}, outputs=[], batch_fixed=False, flattened_outputs=False)
    cold = ColdStart(read_ms=1.0, compile_ms=100.0, first_infer_ms=5.0, warm_cache_total_ms=20.0)
    gpu.gpu_util_mean = 97.0
    session = simulated
    result = PointResult(PointIdentity("trt", "fp32", 4, device="gpu"), ModelFacts.of(info), cold_start=cold,
                         session=SessionSettings.of(session.describe(), session.timer_kind, None),
                         steady=SteadyState.of(m, info.flops_per_frame), gpu=gpu)
    row = store.flatten(result)
    assert row["cold_warm_cache_total_ms"] == 20.0 and row["cold_total_ms"] == pytest.approx(106.0)
    assert row["h2d_ms"] == pytest.approx(0.4) and row["d2h_ms"] == pytest.approx(2.5)
    assert row["enqueue_ms"] == pytest.approx(1.9) and row["timer"] == "cuda-event"
    path = tmp_path / "gpu.parquet"
    store.write_rows(path, [row])
    [back] = store.read_rows(path)
    assert back["fps_compute"] == pytest.approx(2000.0, rel=1e-3) and back["gpu_util_mean"] == 97.0
    assert "enqueue-bound" in back["warnings"]
    # Read back by pandas, missing text cells (no clock events) are NaN: the GPU table still renders.
    from rich.console import Console

    from bench.report.model import build_report_model
    from bench.report.tables import print_tables

    frame = store.read_table(path)[0].to_pandas()
    assert frame.gpu_clock_events.isna().all()
    console = Console(record=True, width=250)
    rows = frame.assign(runtime="trt", precision="fp32", device="gpu", status="ok").to_dict("records")
    print_tables(build_report_model(rows, context=["machine_id"]), console)
    gpu_lines = [line for line in console.export_text().splitlines() if "compute f/s" in line or "0.400" in line]
    assert len(gpu_lines) >= 2, console.export_text()


def test_cuda_warm_up_skips_the_compute_only_pass_so_windows_get_their_length(simulated):
    simulated.h2d_ms = simulated.d2h_ms = simulated.enqueue_ms = 0.0
    simulated.compute_ms = lambda i: 1.0  # each compute takes 1 ms, copies take none
    settings = MeasureSettings(warmup_s=0.0, warmup_min_iterations=5, window_s=0.1, window_min_iterations=5,
                               stable_windows=3, max_windows=3)
    m = measure(simulated, [np.zeros((1, 3, 4, 4), np.float32)], 1, settings)
    # A compute-only pass inside warm-up would read 2 ms per iteration and size 50-iteration windows.
    assert m.warmup_iterations == 5 and m.warmup_s == pytest.approx(0.005)
    assert [w.iterations for w in m.windows] == [100, 100, 100]
    assert all(w.compute_only_wall_ns == ms_to_ns(100.0) for w in m.windows)
    assert simulated.computes == 5 + 3 * 100 * 2 and m.fps == pytest.approx(1000.0)


def test_threaded_loop_runs_each_cuda_member_on_its_own_stream(simulated):
    from bench.session import SessionGroup

    members = [simulated, SimulatedCudaSteps(compute_ms=lambda i: 1.0, enqueue_ms=0.5)]
    group = SessionGroup(members, {"streams": 2})
    inputs = make_inputs((1, 3, 4, 4), 2, 0)
    m = measure(group, inputs, 1, MeasureSettings(warmup_s=0.0, warmup_min_iterations=2, window_s=0.0,
                                                 window_min_iterations=9, stable_windows=1, max_windows=1))
    [window] = m.windows
    # 2 solo rounds each before any thread (ORT's graph capture), then 9 iterations shared 5 + 4
    # (warm-up: one each, twice); every latency from its own stream's events
    assert members[1].computes == 2 + 2 + 4 and simulated.computes == 2 + 2 + 5
    assert window.iterations == 9 and len(window.latencies_ns) == 9 and set(window.extra_ns) == {*STAGES, "enqueue"}
    assert sorted(window.latencies_ns) == [ms_to_ns(3.9)] * 4 + [ms_to_ns(4.9 + d) for d in (0, 0.001, 0.001, 0.002, 0.002)]
    assert window.compute_only_wall_ns is None and all(len(m.staged) == 2 for m in members)
    import threading

    for member in members:  # each thread made its member's device current before running it
        assert len(member.bound_threads) == 3 and threading.get_ident() not in member.bound_threads


# ============================================================================ NVML aggregation


def sample(t, util=90.0, mem_util=40.0, used_mb=1000, power_w=250.0, clock=1980.0, temp=60.0, events=0):
    return nvml.NvmlSample(t_s=t, gpu_util=util, mem_util=mem_util, mem_used_bytes=used_mb * 2**20,
                           power_mw=power_w * 1000, sm_clock_mhz=clock, temp_c=temp, clock_events=events)


def test_aggregate_samples_gives_the_schema_columns():
    samples = [sample(0.0, util=80, used_mb=900, power_w=200, clock=1900, temp=55),
               sample(0.1, util=100, used_mb=1500, power_w=300, clock=1980, temp=61, events=0x4),
               sample(0.2, util=90, used_mb=1200, power_w=250, clock=1950, temp=58, events=0x10)]
    telemetry = nvml.aggregate_samples(samples, energy_start_mj=10_000.0, energy_end_mj=10_500.0, frames=1000)
    fields = {k: v for k, v in store.flatten(gpu_point(telemetry)).items() if k.startswith("gpu_") and v is not None}
    assert set(fields) == {c for c in store.COLUMNS if c.startswith("gpu_")} - {"gpu_name", "gpu_driver"}
    assert fields["gpu_util_mean"] == pytest.approx(90.0)
    assert fields["gpu_mem_util_mean"] == pytest.approx(40.0)
    assert fields["gpu_mem_peak_mb"] == pytest.approx(1500.0)
    assert fields["gpu_power_mean_w"] == pytest.approx(250.0)
    assert fields["gpu_energy_mj_per_frame"] == pytest.approx(0.5)
    assert fields["gpu_sm_clock_mean_mhz"] == pytest.approx(1943.33, rel=1e-4)
    assert fields["gpu_sm_clock_min_mhz"] == 1900
    assert fields["gpu_temp_max_c"] == 61
    assert fields["gpu_clock_events"] == "sw_power_cap,sync_boost"


def gpu_point(telemetry):
    from bench.results import ModelFacts, PointIdentity, PointResult

    return PointResult(PointIdentity("trt", "fp32", 1, device="gpu"), ModelFacts("m", "0" * 64), gpu=telemetry)


def test_aggregate_without_readings_or_frames_is_empty_not_wrong():
    telemetry = nvml.aggregate_samples([nvml.NvmlSample(t_s=0.0)], None, None, 100)
    assert all(v is None for v in vars(telemetry).values() if not isinstance(v, list))
    assert nvml.aggregate_samples([sample(0)], 500.0, 100.0, 10).gpu_energy_mj_per_frame is None  # counter reset
    assert nvml.aggregate_samples([sample(0)], 0.0, 100.0, 0).gpu_energy_mj_per_frame is None


def test_reason_names_cover_every_bit():
    assert nvml.reason_names(0x1FF) == list(nvml.CLOCK_EVENT_REASONS.values())
    assert nvml.reason_names(0x1000 | 0x40) == ["hw_thermal", "0x1000"]


def test_warnings_for_throttling_and_dropped_clocks():
    steady = [sample(t / 10, clock=1980) for t in range(5)]
    assert nvml.nvml_warnings(steady) == []
    throttled = steady + [sample(0.6, events=0x20 | 0x10)]
    [warning] = nvml.nvml_warnings(throttled)
    assert "throttled" in warning and "sw_thermal" in warning and "sync_boost" not in warning
    dropped = steady + [sample(0.6, clock=1500)]
    [warning] = nvml.nvml_warnings(dropped)
    assert "1980 to 1500 MHz" in warning
    idle_dip = steady + [sample(0.6, clock=300, util=0, events=0x1)]  # idle between windows is no drop
    assert nvml.nvml_warnings(idle_dip) == []


class RecordedNvml:
    """NVML as a recorded trace: each reading returns the next recorded value (no GPU here)."""

    NVML_CLOCK_SM = 1
    NVML_TEMPERATURE_GPU = 0

    def __init__(self):
        self.energy = iter([1_000.0, 1_400.0, 2_000.0, 2_500.0])
        self.shut = False

    def nvmlInit(self):
        pass

    def nvmlShutdown(self):
        self.shut = True

    def nvmlDeviceGetHandleByIndex(self, index):
        return f"gpu{index}"

    def nvmlDeviceGetUtilizationRates(self, handle):
        return SimpleNamespace(gpu=95, memory=30)

    def nvmlDeviceGetMemoryInfo(self, handle):
        return SimpleNamespace(used=2 * 2**30, total=80 * 2**30, free=78 * 2**30)

    def nvmlDeviceGetPowerUsage(self, handle):
        return 300_000

    def nvmlDeviceGetClockInfo(self, handle, clock):
        return 1755

    def nvmlDeviceGetTemperature(self, handle, sensor):
        return 64

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle):
        return 0

    def nvmlDeviceGetTotalEnergyConsumption(self, handle):
        return next(self.energy)


def test_sampler_counts_only_steady_state_windows(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(cuda, "device_identity", lambda index: None)  # on a GPU machine too: match by index
    recorded = RecordedNvml()
    sampler = nvml.NvmlSampler(0, interval_s=0.01, nvml=recorded)
    assert sampler.matched_by.startswith("index 0")
    telemetry = nvml.GpuPointTelemetry(2, sampler)
    settings = MeasureSettings(warmup_s=0.0, warmup_min_iterations=3, window_s=0.0, window_min_iterations=50,
                               stable_windows=2, max_windows=2)
    m = measure(SimulatedCudaSteps(), make_inputs((2, 3, 4, 4), 1, 0), 2, settings, [telemetry])
    assert len(m.windows) == 2 and m.warmup_iterations == 3  # warm-up: not sampled (it read no energy)
    fields = telemetry.figures(m)
    # energy: (1400 - 1000) + (2500 - 2000) mJ over 2 windows x 50 iterations x batch 2 (the end-to-end
    # frames: the compute-only pass runs outside the sampler's span)
    assert fields.gpu_energy_mj_per_frame == pytest.approx(900.0 / 200)
    assert fields.gpu_util_mean == 95 and fields.gpu_mem_peak_mb == 2048 and fields.gpu_temp_max_c == 64
    assert fields.gpu_power_mean_w == 300 and fields.gpu_sm_clock_min_mhz == 1755
    assert fields.gpu_clock_events is None and sampler.warnings == []
    telemetry.close()
    assert recorded.shut


# ============================================================================ CUDA helpers without a GPU


class FakeCudaError(enum.IntEnum):
    cudaSuccess = 0
    cudaErrorMemoryAllocation = 2


def test_check_unpacks_results_and_names_failures():
    assert cuda.check((FakeCudaError.cudaSuccess,)) is None
    assert cuda.check((FakeCudaError.cudaSuccess, 42)) == 42
    assert cuda.check((FakeCudaError.cudaSuccess, 1, 2)) == (1, 2)
    with pytest.raises(cuda.CudaError, match="cudaMalloc failed: cudaErrorMemoryAllocation \\(2\\)"):
        cuda.check((FakeCudaError.cudaErrorMemoryAllocation, 0), "cudaMalloc")


def test_device_identity_spellings_match_nvml():
    raw = bytes(range(16))
    assert cuda.uuid_string(raw) == "GPU-00010203-0405-0607-0809-0a0b0c0d0e0f"
    assert cuda.pci_bus_id(0, 0x65, 0) == "00000000:65:00.0"
    assert cuda.runtime_version_text(12080) == "12.8" and cuda.runtime_version_text(13000) == "13.0"
    with pytest.raises(ValueError):
        cuda.uuid_string(b"short")
    identity = cuda.DeviceIdentity(0, "NVIDIA H100 80GB HBM3", "GPU-x", "00000000:65:00.0", "9.0", "13.0")
    assert identity.label == "NVIDIA H100 80GB HBM3 sm90"


def test_array_view_shares_the_memory():
    buffer = (ctypes.c_uint8 * 96)()
    view = cuda.array_view(ctypes.addressof(buffer), (2, 3, 4), np.float32)
    view[:] = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    again = cuda.array_view(ctypes.addressof(buffer), (24,), np.float32)
    assert again[23] == 23.0 and view.shape == (2, 3, 4)


def test_split_stages_sums_to_latency():
    latencies, series = split_stages([(0.1, 2.0, 0.05), (0.2, 2.5, 0.1)])
    assert list(series) == list(STAGES)
    assert series["compute"] == [2_000_000, 2_500_000]
    assert latencies == [2_150_000, 2_800_000]


# ============================================================================ runtime logic without a GPU


def test_trt_types_flags_and_versions():
    assert numpy_dtype(SimpleNamespace(name="HALF")) == np.float16
    assert numpy_dtype("DataType.FLOAT") == np.float32
    with pytest.raises(ValueError):
        numpy_dtype(SimpleNamespace(name="FP8"))
    assert trt_major("10.16.0.1") == 10 and trt_major(None) is None
    assert precision_flags("fp16", 10) == ["FP16"] and precision_flags("int8", 10) == ["FP16", "INT8"]
    assert precision_flags("fp16", 11) == [] and precision_flags("fp32", 10) == []


INSPECTOR_10 = json.dumps({"Layers": [
    {"Name": "conv1", "Outputs": [{"Name": "a", "Format/Datatype": "Channel major FP16 format where channel % 8 == 0"}]},
    {"Name": "reformat", "Outputs": [{"Name": "b", "Format/Datatype": "Row major linear FP32"}]},
]})
INSPECTOR_11 = json.dumps({"Layers": [
    {"Name": "conv1", "Outputs": [{"Name": "a", "Format": "Row major linear", "DataType": "Float"}]},
    {"Name": "conv2", "Outputs": [{"Name": "b", "Format": "Row major linear", "DataType": "Float"}]},
]})


def test_effective_precision_from_the_inspector():
    assert precision_from_inspector(INSPECTOR_10) == ("fp16", {"fp16": 1, "fp32": 1})
    assert precision_from_inspector(INSPECTOR_11) == ("fp32", {"fp32": 2})  # the silent-FP32 case
    int8 = json.dumps({"Layers": [{"Outputs": [{"DataType": "Int8"}]}]})
    assert precision_from_inspector(int8)[0] == "int8"
    assert precision_from_inspector(json.dumps({"Layers": ["conv1", "conv2"]})) == (None, {})
    named = json.dumps({"Layers": [{"Outputs": [{"Name": "int8_head_fp16", "DataType": "Float"}]}]})
    assert precision_from_inspector(named) == ("fp32", {"fp32": 1})  # tensor names never count
    assert precision_from_inspector("not json") == (None, {})


def test_ort_types_and_graph_ids():
    assert ort_type_to_numpy("tensor(float16)") == np.float16
    with pytest.raises(ValueError):
        ort_type_to_numpy("tensor(string)")
    assert graph_id_for(1) == 1 and graph_id_for(64) == 64  # 0 is ORT's default id, -1 skips capture


STREAM = SimpleNamespace(handle=0x7F00DEAD)


def request(precision="fp32", batch=8, **options) -> LoadRequest:
    return LoadRequest(model_path="m.onnx", input_name="input.1", input_shape=(batch, 3, 112, 112),
                       precision=precision, options=options)


def test_ort_cuda_declines_int8_and_says_where_it_runs():
    from bench.worker import unsupported_precision

    reason = unsupported_precision(OrtCudaRuntime(), "int8")
    assert reason.startswith("ort-cuda does not run int8 (it runs fp32, fp16)") and "use ort-trt or trt" in reason
    assert unsupported_precision(OrtTrtRuntime(), "int8") == "" and unsupported_precision(OrtCudaRuntime(), "fp16") == ""


def test_cuda_provider_options_are_strict_fp32_and_recorded():
    opts = OrtCudaRuntime().cuda_options(request(), STREAM)
    assert opts["use_tf32"] == "0" and opts["cudnn_conv_algo_search"] == "EXHAUSTIVE"
    assert opts["user_compute_stream"] == str(0x7F00DEAD) and opts["enable_cuda_graph"] == "0"
    assert OrtCudaRuntime().cuda_options(request("fp16"), STREAM)["use_tf32"] == "1"
    graph = OrtCudaRuntime().cuda_options(request(cuda_graph=True, cudnn_conv_algo_search="heuristic"), STREAM)
    assert graph["enable_cuda_graph"] == "1" and graph["cudnn_conv_algo_search"] == "HEURISTIC"
    with pytest.raises(ValueError, match="EXHAUSTIVE, HEURISTIC, DEFAULT"):
        OrtCudaRuntime().cuda_options(request(cudnn_conv_algo_search="fastest"), STREAM)


def test_cudnn_layout_and_workspace_options_reach_the_provider():
    defaults = OrtCudaRuntime().cuda_options(request(), STREAM)
    assert defaults["prefer_nhwc"] == "0" and defaults["cudnn_conv_use_max_workspace"] == "1"  # ORT's own defaults
    tuned = OrtCudaRuntime().cuda_options(request(prefer_nhwc=True, cudnn_conv_use_max_workspace=False), STREAM)
    assert tuned["prefer_nhwc"] == "1" and tuned["cudnn_conv_use_max_workspace"] == "0"
    with pytest.raises(ValueError, match="prefer_nhwc"):
        OrtCudaRuntime().cuda_options(request(prefer_nhwc="yes"), STREAM)


class OrtTrtOn(OrtTrtRuntime):
    def __init__(self, version):
        self.version = version

    def trt_version(self):
        return self.version


def test_trt_ep_options_profile_caches_and_precision_flags():
    opts = OrtTrtOn("10.16.0").trt_options(request("fp16"), STREAM, "/cache/x")
    assert opts["trt_profile_opt_shapes"] == "input.1:8x3x112x112"
    assert opts["trt_profile_max_shapes"] == "input.1:64x3x112x112"
    assert opts["trt_engine_cache_enable"] == "True" and opts["trt_timing_cache_path"] == "/cache/x"
    assert opts["trt_fp16_enable"] == "True" and opts["trt_int8_enable"] == "False"
    on_11 = OrtTrtOn("11.4.0").trt_options(request("fp16"), STREAM, None)
    assert "trt_fp16_enable" not in on_11 and "trt_engine_cache_enable" not in on_11
    providers = OrtTrtOn("11.4.0").gpu_providers(request(cuda_graph=True), STREAM, None)
    assert [p for p, _ in providers] == ["TensorrtExecutionProvider", "CUDAExecutionProvider"]
    assert providers[0][1]["trt_cuda_graph_enable"] == "True" and providers[1][1]["enable_cuda_graph"] == "0"


def test_gpu_concurrency_is_lifted_for_ort_cuda_and_trt_only():
    from bench.worker import unsupported_concurrency

    assert unsupported_concurrency(OrtCudaRuntime(), 4) == "" and unsupported_concurrency(TensorRtRuntime(), 4) == ""
    assert "not implemented" in unsupported_concurrency(OrtTrtRuntime(), 2)
    assert unsupported_concurrency(OrtTrtRuntime(), 1) == ""


def test_trt_gives_every_context_its_own_profile_and_keys_the_engine_by_their_count():
    from bench.models import zoo
    from bench.runtimes.tensorrt import context_profiles

    dynamic = gpu_cache.profile_shapes((4, 3, 112, 112))
    assert context_profiles(dynamic, 1) == [0] and context_profiles(dynamic, 3) == [0, 1, 2]
    assert context_profiles(None, 3) == [None, None, None]  # a static input: no profile to select
    info = zoo.build_cached("arcface_mbf")
    req = LoadRequest(model_path=info.path, input_name=info.input_name, input_shape=info.input_shape(4))
    trt, identity = SimpleNamespace(__version__="10.16.0"), cuda.DeviceIdentity(0, "GPU", "GPU-x", "0", "9.0", "13.0")
    one, two = (TensorRtRuntime().cache_key(trt, req, identity, contexts=n) for n in (1, 2))
    assert dict(two.build)["profiles"] == "2" and "profiles" not in dict(one.build)  # single-context keys as before
    assert one.digest() != two.digest() and two.digest() == TensorRtRuntime().cache_key(trt, req, identity, 2).digest()


# ============================================================================ availability


def test_cuda_python_newer_than_the_driver_is_named():
    assert cuda.driver_mismatch_reason("13.3.1", "580.159.04") is None  # the H100 this was verified on
    assert cuda.driver_mismatch_reason("12.9.0", "550.54.15") is None
    old = cuda.driver_mismatch_reason("13.3.1", "550.54.15")
    assert "driver 550.54.15 cannot run" in old and "needs >= 580" in old and "cuda-python<13" in old
    # What the driver itself reports decides: cuda-compat lets an older data-centre driver run CUDA 13.
    assert cuda.driver_mismatch_reason("13.3.1", "550.54.15", driver_cuda=13) is None
    assert "cannot run" in cuda.driver_mismatch_reason("13.3.1", "590.10", driver_cuda=12)
    assert cuda.driver_mismatch_reason("13.3.1", None) is None  # no driver: nvidia_gpu_reason says so
    assert cuda.driver_mismatch_reason(None, "550.54.15") is None


def test_availability_reasons_are_specific():
    base = dict(gpu_reason=None, ort_gpu_version="1.31.1", ort_cpu_version=None, cuda_python_reason=None,
                providers=["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"])
    assert ort_gpu_reasons("CUDAExecutionProvider", **base) == []
    missing = ort_gpu_reasons("CUDAExecutionProvider", **{**base, "providers": ["CPUExecutionProvider"]})
    assert missing == ["CUDAExecutionProvider missing from onnxruntime providers [CPUExecutionProvider]"]
    cpu_wheel = ort_gpu_reasons("CUDAExecutionProvider", **{**base, "ort_gpu_version": None, "ort_cpu_version": "1.32.0"})
    assert cpu_wheel[0].startswith("onnxruntime-gpu not installed (the CPU onnxruntime wheel is)")
    both = ort_gpu_reasons("CUDAExecutionProvider", **{**base, "ort_cpu_version": "1.32.0"})
    assert "both onnxruntime 1.32.0 and onnxruntime-gpu 1.31.1" in both[0]
    no_gpu = ort_gpu_reasons("TensorrtExecutionProvider", **{**base, "gpu_reason": "no NVIDIA GPU (nvidia-smi not found)",
                                                            "tensorrt_present": False})
    assert no_gpu == ["no NVIDIA GPU (nvidia-smi not found)",
                      "tensorrt not installed (the TensorRT EP loads its libraries); make bench EXTRA=gpu installs it"]


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="this machine has nvidia-smi")
def test_gpu_runtimes_unavailable_here_with_reasons():
    for name in GPU_RUNTIMES:
        ok, reason = get_runtime(name).available()
        assert not ok and reason.startswith("no NVIDIA GPU (nvidia-smi not found)")
    if cuda.dist_version("onnxruntime") and not cuda.dist_version("onnxruntime-gpu"):
        assert "onnxruntime-gpu not installed (the CPU onnxruntime wheel is)" in OrtCudaRuntime().available()[1]
    if not cuda.module_present("tensorrt"):
        assert "tensorrt not installed" in TensorRtRuntime().available()[1]
    if not cuda.dist_version(*cuda.CUDA_PYTHON_DISTS):
        assert "cuda-python not installed" in TensorRtRuntime().available()[1]


def test_reasons_say_the_install_hint_once():
    hint = "; make bench EXTRA=gpu installs it"
    assert cuda.join_reasons(["no NVIDIA GPU (nvidia-smi not found)", "tensorrt not installed" + hint]) == \
        "no NVIDIA GPU (nvidia-smi not found); tensorrt not installed; make bench EXTRA=gpu installs it"
    assert cuda.join_reasons(["tensorrt not installed" + hint, "cuda-python not installed" + hint]) == \
        "tensorrt not installed; cuda-python not installed; make bench EXTRA=gpu installs them"


def test_registered_and_on_the_gpu_device():
    for name in GPU_RUNTIMES:
        assert name in RUNTIMES and get_runtime(name).device == "gpu"


def python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


def test_start_up_and_listing_import_no_gpu_package():
    gpu_roots = repr(GPU_PACKAGES)
    code = f"""
import sys
import bench.cli
loaded = sorted(m for m in sys.modules if m.split('.')[0] in {gpu_roots} + ('onnxruntime',))
assert not loaded, loaded
bench.cli.build_parser()
from bench.runtimes.registry import all_statuses
statuses = {{s.name: s for s in all_statuses()}}
loaded = sorted(m for m in sys.modules if m.split('.')[0] in {gpu_roots})
assert not loaded, loaded
# onnxruntime-gpu: only its provider list may be read, never a CUDA provider library loaded
libs = open('/proc/self/maps').read()
assert 'onnxruntime_providers_cuda' not in libs and 'onnxruntime_providers_tensorrt' not in libs
assert 'libnvinfer' not in libs and 'libnvidia-ml' not in libs
print(statuses['trt'].available, statuses['ort-cuda'].available)
"""
    done = python(code)
    assert done.returncode == 0, done.stderr


def test_runtimes_command_lists_gpu_runtimes():
    done = subprocess.run([sys.executable, "-m", "bench", "runtimes"], cwd=REPO, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "COLUMNS": "250"})
    assert done.returncode == 0, done.stderr
    for name in GPU_RUNTIMES:
        assert name in done.stdout


def test_gpu_suite_loads():
    suite = load_suite(REPO / "suites" / "gpu.toml")
    assert suite.runtimes == ["ort-cuda", "ort-trt", "trt", "ort-cpu", "openvino-cpu"]
    assert suite.batches_for("gpu") == [1, 2, 4, 8, 16, 32, 64] and suite.batches_for("cpu") == [1, 8]
    assert suite.precisions_for("trt") == ["fp32", "fp16"] and suite.precisions_for("ort-cpu") == ["fp32"]
    assert [m.label for m in suite.models] == ["scrfd_10g@320", "scrfd_10g@640", "arcface_r50", "arcface_mbf",
                                               "scrfd_500m@640"]


# ============================================================================ on a GPU (skipped elsewhere)


def gpu_skip_reason(runtime: str | None = None) -> str | None:
    from bench.runtimes.cuda import cuda_python_reason, nvidia_gpu_reason

    reason = nvidia_gpu_reason() or cuda_python_reason()
    if reason is None and runtime:
        ok, why = get_runtime(runtime).available()
        reason = None if ok else why
    return reason


def need(runtime: str | None = None) -> None:
    reason = gpu_skip_reason(runtime)
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="module")
def mbf():
    from bench.models import zoo
    from bench.suite import ModelRef

    return zoo.resolve(ModelRef("arcface_mbf"))


def cpu_reference(info, x):
    import onnxruntime as ort

    session = ort.InferenceSession(info.path, providers=["CPUExecutionProvider"])
    return dict(zip((o.name for o in session.get_outputs()), session.run(None, {info.input_name: x})))


def assert_matches_cpu(session, info, x, rtol=1e-3, atol=1e-4):
    """The GPU session's outputs equal ONNX Runtime CPU's on the same frames, by output name, in model order."""
    got, want = session.infer(x), cpu_reference(info, x)
    assert list(got) == list(want)
    for name, array in want.items():
        np.testing.assert_allclose(got[name], array, rtol=rtol, atol=atol)


@contextlib.contextmanager
def loaded(runtime, info, batch, tmp_path, precision="fp32", **options):
    """(session, cold start) of `runtime` on `info` at `batch`, closed afterwards."""
    req = LoadRequest(model_path=info.path, input_name=info.input_name, input_shape=info.input_shape(batch),
                      precision=precision, options=options, cache_dir=str(tmp_path))
    phases = ColdStartTimer()
    session = runtime.load(req, phases)
    try:
        yield session, phases.result()
    finally:
        session.close()


def cuda_window(session, inputs, iterations: int) -> Window:
    """One steady-state window of the CUDA loop (with its compute-only pass) on a loaded session."""
    loop = CudaEventLoop(session, inputs)
    try:
        return steady_window(loop, iterations)
    finally:
        loop.close()


@pytest.mark.gpu
def test_gpu_cuda_pinned_copy_roundtrip_and_event_timer():
    need()
    stream = cuda.Stream()
    src = cuda.PinnedBuffer((1 << 20,), np.float32)
    dst = cuda.PinnedBuffer((1 << 20,), np.float32)
    device = cuda.DeviceBuffer(src.nbytes)
    src.array[:] = np.arange(src.array.size, dtype=np.float32)
    start, end = cuda.Event(), cuda.Event()
    start.record(stream)
    cuda.copy_h2d_async(device.ptr, src.ptr, src.nbytes, stream)
    cuda.copy_d2h_async(dst.ptr, device.ptr, src.nbytes, stream)
    end.record(stream)
    end.synchronize()
    elapsed = start.elapsed_ms(end)
    assert np.array_equal(src.array, dst.array) and elapsed > 0
    for item in (start, end, src, dst, device, stream):
        item.close()


@pytest.mark.gpu
def test_gpu_cuda_graph_capture_replays_a_copy():
    need()
    stream = cuda.Stream()
    host = cuda.PinnedBuffer((256,), np.float32)
    back = cuda.PinnedBuffer((256,), np.float32)
    device = cuda.DeviceBuffer(host.nbytes)
    graph, reason = cuda.CudaGraph.capture(stream, lambda: cuda.copy_h2d_async(device.ptr, host.ptr, host.nbytes, stream))
    assert graph is not None, reason
    host.array[:] = 7.0
    graph.launch(stream)
    cuda.copy_d2h_async(back.ptr, device.ptr, host.nbytes, stream)
    stream.synchronize()
    assert (back.array == 7.0).all()
    graph.close()


@pytest.mark.gpu
def test_gpu_nvml_matches_the_cuda_device_and_samples():
    need()
    if nvml.nvml_reason():
        pytest.skip(nvml.nvml_reason())
    identity = cuda.device_identity(0)
    sampler = nvml.NvmlSampler(0)
    assert sampler.matched_by == f"uuid {identity.uuid}"
    uuid = sampler._nvml.nvmlDeviceGetUUID(sampler._handle)
    assert (uuid.decode() if isinstance(uuid, bytes) else uuid) == identity.uuid
    sampler.window_started()
    import time

    time.sleep(0.5)
    sampler.window_stopped()
    sampler.add_frames(100)
    fields = sampler.figures()
    sampler.close()
    assert fields.gpu_sm_clock_mean_mhz and fields.gpu_mem_peak_mb > 0
    assert fields.gpu_temp_max_c is not None


@pytest.mark.gpu
def test_gpu_ort_cuda_matches_cpu_and_splits_stages(mbf, tmp_path):
    need("ort-cuda")
    with loaded(OrtCudaRuntime(), mbf, 4, tmp_path) as (session, cold):
        x = make_inputs(mbf.input_shape(4), 1, 0, mbf.mean, mbf.std)[0]
        assert_matches_cpu(session, mbf, x)
        settings = session.describe()
        assert settings["use_tf32"] == "0" and settings["cudnn_conv_algo_search"] == "EXHAUSTIVE"
        assert settings["prefer_nhwc"] == "0" and settings["cudnn_conv_use_max_workspace"] == "1"
        assert "CUDAExecutionProvider" in settings["providers"]
        w = cuda_window(session, [x], 20)
        assert set(w.extra_ns) >= set(STAGES) and len(w.extra_ns["compute"]) == 20
        assert w.compute_only_wall_ns > 0 and cold.first_infer_ms > 0


@pytest.mark.gpu
def test_gpu_ort_cuda_graph_gives_the_same_outputs(mbf, tmp_path):
    need("ort-cuda")
    x = make_inputs(mbf.input_shape(2), 1, 1, mbf.mean, mbf.std)[0]
    with loaded(OrtCudaRuntime(), mbf, 2, tmp_path, cuda_graph=True) as (session, _):
        cuda_window(session, [x], 5)  # capture, then replays
        assert_matches_cpu(session, mbf, x)
        assert session.describe()["graph_id"] == 2


@pytest.mark.gpu
def test_gpu_ort_trt_cold_start_twice_and_cache_folder(mbf, tmp_path):
    need("ort-trt")
    with loaded(OrtTrtRuntime(), mbf, 4, tmp_path) as (session, cold):
        settings = session.describe()
        assert "TensorrtExecutionProvider" in settings["providers"]
        assert gpu_cache.cached_files(settings["engine_cache"]), "no engine written"
        assert cold.total_ms > 0
        assert cold.warm_cache_total_ms is not None, settings.get("warm_probe")
        x = make_inputs(mbf.input_shape(4), 1, 0, mbf.mean, mbf.std)[0]
        assert_matches_cpu(session, mbf, x, rtol=1e-2, atol=1e-3)


@pytest.mark.gpu
@pytest.mark.parametrize("runtime", [TensorRtRuntime, OrtTrtRuntime], ids=["trt", "ort-trt"])
def test_gpu_tensorrt_builds_a_batch_1_export_without_a_profile(runtime, real_scrfd_path, tmp_path):
    need(runtime.name)
    from bench.models.info import inspect_model

    info = inspect_model(real_scrfd_path)  # the shipped SCRFD-500M: input fixed at 1x3x640x640
    assert info.batch_fixed
    with loaded(runtime(), info, 1, tmp_path) as (session, cold):
        assert runtime().profile(LoadRequest(model_path=info.path, input_name=info.input_name,
                                             input_shape=info.input_shape(1))) is None
        x = make_inputs(info.input_shape(1), 1, 0, info.mean, info.std)[0]
        assert_matches_cpu(session, info, x, rtol=1e-2, atol=1e-3)
        assert cold.warm_cache_total_ms is not None, session.describe().get("warm_probe")


@pytest.mark.gpu
def test_gpu_trt_builds_caches_and_matches_cpu(mbf, tmp_path):
    need("trt")
    with loaded(TensorRtRuntime(), mbf, 4, tmp_path) as (session, cold):
        settings = session.describe()
        assert settings["profile"] == {"min": [1, 3, 112, 112], "opt": [4, 3, 112, 112], "max": [64, 3, 112, 112]}
        assert session.effective_precision() == "fp32" and settings["cuda_graph"] == "off"
        assert cold.warm_cache_total_ms is not None and cold.compile_ms > 0
        x = make_inputs(mbf.input_shape(4), 1, 0, mbf.mean, mbf.std)[0]
        assert_matches_cpu(session, mbf, x)
        w = cuda_window(session, [x], 20)
        assert set(w.extra_ns) == {*STAGES, "enqueue"} and w.compute_only_wall_ns > 0
        assert all(lat > 0 for lat in w.latencies_ns)
    with loaded(TensorRtRuntime(), mbf, 4, tmp_path, cold_start="warm") as (warm, cold2):
        assert warm.describe()["cold_start"] == "warm (engine cache hit)"
        assert cold2.warm_cache_total_ms == pytest.approx(cold2.total_ms)


@pytest.mark.gpu
def test_gpu_trt_cuda_graph_or_clean_fallback(mbf, tmp_path):
    need("trt")
    with loaded(TensorRtRuntime(), mbf, 2, tmp_path, cuda_graph=True, profile="per-batch") as (session, _):
        state = session.describe()["cuda_graph"]
        assert state == "on" or state.startswith("off: capture failed")
        x = make_inputs(mbf.input_shape(2), 1, 2, mbf.mean, mbf.std)[0]
        assert_matches_cpu(session, mbf, x)


@pytest.mark.gpu
def test_gpu_trt_point_row_has_gpu_columns(mbf, tmp_path):
    need("trt")
    from bench.suite import Checks
    from bench.worker import Job, measure_point

    settings = MeasureSettings(warmup_s=0.2, window_s=0.2, window_min_iterations=5, max_windows=5)
    job = Job(model=mbf, runtime="trt", precision="fp32", batches=[2], settings=settings,
              checks=Checks(contamination=True, parity=False), cache_dir=str(tmp_path))
    row = store.flatten(measure_point(TensorRtRuntime(), mbf, job, 2, mbf.path))
    assert row["fps"] > 0 and row["fps_compute"] >= row["fps"] * 0.5
    assert row["h2d_ms"] > 0 and row["compute_ms"] > 0 and row["enqueue_ms"] > 0
    assert row["cold_warm_cache_total_ms"] > 0 and row["contamination_passed"]
    if not nvml.nvml_reason():
        assert row["gpu_sm_clock_mean_mhz"] > 0 and row["gpu_energy_mj_per_frame"] is not None
        assert not math.isnan(row["gpu_util_mean"])


@pytest.mark.gpu
def test_gpu_ort_cuda_two_sessions_on_two_streams(mbf, tmp_path):
    need("ort-cuda")
    req = LoadRequest(model_path=mbf.path, input_name=mbf.input_name, input_shape=mbf.input_shape(2),
                      options={}, cache_dir=str(tmp_path))
    group = OrtCudaRuntime().load_concurrent(req, 2, ColdStartTimer())
    try:
        assert group.describe()["streams"] == 2 and len({m.stream.handle for m in group.members}) == 2
        m = measure(group, make_inputs(mbf.input_shape(2), 2, 0, mbf.mean, mbf.std), 2,
                    MeasureSettings(warmup_s=0.1, window_s=0.1, max_windows=3))
        assert m.fps > 0 and all(len(w.latencies_ns) == w.iterations for w in m.windows)
        assert_matches_cpu(group, mbf, make_inputs(mbf.input_shape(2), 1, 1, mbf.mean, mbf.std)[0])
    finally:
        group.close()


@pytest.mark.gpu
def test_gpu_trt_two_contexts_on_two_streams(mbf, tmp_path):
    need("trt")
    req = LoadRequest(model_path=mbf.path, input_name=mbf.input_name, input_shape=mbf.input_shape(2),
                      options={}, cache_dir=str(tmp_path))
    phases = ColdStartTimer()
    group = TensorRtRuntime().load_concurrent(req, 2, phases)
    try:
        settings = group.describe()
        assert settings["contexts"] == 2 and settings["context_profiles"] == [0, 1]
        assert len({m.stream.handle for m in group.members}) == 2 and phases.result().compile_ms > 0
        x = make_inputs(mbf.input_shape(2), 1, 0, mbf.mean, mbf.std)[0]
        for member in group.members:  # each context on its own profile computes the same outputs
            assert_matches_cpu(member, mbf, x)
        m = measure(group, [x], 2, MeasureSettings(warmup_s=0.1, window_s=0.1, max_windows=3))
        assert m.fps > 0 and set(m.windows[-1].extra_ns) == {*STAGES, "enqueue"}
    finally:
        group.close()
