"""Peak probes: the probe models, their cache, and every point's share of them, on real runtimes."""
from __future__ import annotations

import json
import math
from dataclasses import replace

import onnx
import pytest

from bench import cli, store
from bench import peaks as peak_module
from bench.peaks import Peaks, peaks_for, share_of_peak
from bench.models.counting import count_macs
from bench.models.probes import PROBES, build_probe
from bench.runtimes.registry import get_runtime
from bench.results import SteadyState
from bench.worker import peak_shares
from tests.conftest import REPO
from tests.test_gpu_runtimes import simulated  # noqa: F401 (fixture: the scripted CUDA steps on the loops' clock)


@pytest.mark.parametrize("kind", PROBES)
def test_probe_models_have_the_macs_they_claim(kind):
    # The project's own counter (MACs per item of the leading axis) agrees with the closed form.
    probe = PROBES[kind]
    assert count_macs(build_probe(kind)) * probe.input_shape[0] == probe.macs > 10**8


@pytest.fixture(scope="module")
def ort_peaks(tmp_path_factory):
    cache = tmp_path_factory.mktemp("peaks")
    return cache, peaks_for(get_runtime("ort-cpu"), "fp32", {}, cache)


def test_probes_measure_through_the_runtime_and_are_cached(ort_peaks, monkeypatch):
    cache, first = ort_peaks
    assert first.errors == [] and first.gemm_gflops > 0 and first.conv_gflops > 0 and first.memory_copy_gbps > 0
    assert first.h2d_gbps is None and first.datasheet_tflops is None  # CPU: no copies to a device, no datasheet

    # The cache as a settled probe leaves it (on a busy machine a real probe may not settle, and an unsettled
    # entry is probed again: test_a_cached_entry_with_an_unsettled_probe_is_measured_again).
    [entry] = (cache / "peaks").glob("ort-cpu-fp32-*.json")
    settled = Peaks.from_json(entry.read_text())
    settled.unstable = []
    entry.write_text(settled.to_json())

    def no_measuring(*args, **kwargs):
        raise AssertionError("a cached probe was measured again")

    monkeypatch.setattr(peak_module, "measure_peaks", no_measuring)
    assert peaks_for(get_runtime("ort-cpu"), "fp32", {}, cache) == settled
    assert peaks_for(get_runtime("ort-cpu"), "simplified", {}, cache) == settled  # same numbers as FP32


def test_cache_key_holds_options_and_refresh_measures_again(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(peak_module, "measure_peaks",
                        lambda *a: calls.append(a) or Peaks("ort-cpu", "fp32", "cpu", "m", "v", conv_gflops=len(calls)))
    ort = get_runtime("ort-cpu")
    assert peaks_for(ort, "fp32", {}, tmp_path).conv_gflops == 1
    assert peaks_for(ort, "fp32", {}, tmp_path).conv_gflops == 1  # cached
    assert peaks_for(ort, "fp32", {"intra_op_threads": 1}, tmp_path).conv_gflops == 2  # other options, other peaks
    assert peaks_for(ort, "int8", {}, tmp_path).conv_gflops == 3
    assert peaks_for(ort, "fp32", {}, tmp_path, refresh=True).conv_gflops == 4
    assert peaks_for(ort, "fp32", {}, tmp_path).conv_gflops == 4
    entry = next(p for p in (tmp_path / "peaks").glob("ort-cpu-fp32-*.json") if Peaks.from_json(p.read_text()).conv_gflops == 4)
    entry.write_text("{not json")  # damaged: measured again, not an error
    assert peaks_for(ort, "fp32", {}, tmp_path).conv_gflops == 5
    assert Peaks.from_json(entry.read_text()).conv_gflops == 5


def test_a_cached_entry_with_an_unsettled_probe_is_measured_again(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(peak_module, "measure_peaks", lambda *a: calls.append(a) or Peaks(
        "ort-cpu", "fp32", "cpu", "m", "v", conv_gflops=len(calls), unstable=["conv"] if len(calls) == 1 else []))
    ort = get_runtime("ort-cpu")
    assert peaks_for(ort, "fp32", {}, tmp_path).unstable == ["conv"]  # measured on a busy machine, say
    settled = peaks_for(ort, "fp32", {}, tmp_path)  # not taken from the cache: probed again
    assert (settled.conv_gflops, settled.unstable) == (2, [])
    assert peaks_for(ort, "fp32", {}, tmp_path).conv_gflops == 2 and len(calls) == 2  # a settled entry is kept


def test_share_of_peak_and_the_nominal_warning():
    peaks = Peaks("openvino-cpu", "fp32", "cpu", "m", "v", gemm_gflops=200.0, conv_gflops=100.0)
    steady = SteadyState(fps=1.0, frames=1, wall_s=1.0)
    below = peak_shares(peaks, replace(steady, gflops_achieved=80.0), input_bytes=4)
    assert below.pct_gemm_peak == 40.0 and below.pct_conv_peak == 80.0 and below.note is None
    above = peak_shares(peaks, replace(steady, gflops_achieved=150.0), input_bytes=4)
    assert above.pct_conv_peak == 150.0
    assert above.note.startswith("nominal 150 GFLOP/s is above the conv probe") and "Winograd" in above.note
    gpu = Peaks("ort-cuda", "fp16", "gpu", "m", "v", h2d_gbps=50.0)
    assert peak_shares(gpu, replace(steady, h2d_ms=0.5), input_bytes=10**7).pct_h2d_peak == 40.0
    assert share_of_peak(None, 10.0) is None and share_of_peak(5.0, None) is None and peak_shares(None, steady, 1) is None


def test_an_unstable_probe_is_kept_out_of_the_shares():
    peaks = Peaks("ort-cuda", "fp16", "gpu", "m", "v", gemm_gflops=200.0, conv_gflops=100.0, unstable=["gemm"])
    shares = peak_shares(peaks, SteadyState(fps=1.0, frames=1, wall_s=1.0, gflops_achieved=80.0), input_bytes=4)
    assert shares.pct_conv_peak == 80.0 and shares.peak_conv_gflops == 100.0
    assert shares.pct_gemm_peak is None and shares.peak_gemm_gflops is None
    assert shares.note.startswith("gemm probe UNSTABLE twice (200 GFLOP/s): left out of the shares of peak")


# ---- GPU probes on the scripted CUDA steps (tests/test_gpu_runtimes.py): 1.5 ms copies each way around
# 1 ms of compute, so the full loop runs 250 probes/s and the compute alone 1000/s.
COMPUTE_ONLY_RATE = 1000.0


def alternating(steps, settles_at_s: float = math.inf):
    """Compute of 1 ms, 2 ms every other 0.3 s of the scripted clock (windows never agree) until `settles_at_s`."""
    def compute_ms(_):
        t = steps.host_ns / 1e9
        return 2.0 if t < settles_at_s and int(t / 0.3) % 2 else 1.0
    return compute_ms


@pytest.fixture
def gpu_probes(simulated, monkeypatch, tmp_path):  # noqa: F811 (the fixture imported above)
    """measure_peaks for ort-cuda whose sessions are the scripted CUDA steps; (measure, steps)."""
    simulated.h2d_ms = simulated.d2h_ms = 1.5
    simulated.enqueue_ms = 0.0
    simulated.compute_ms = lambda i: 1.0
    runtime = get_runtime("ort-cuda")
    monkeypatch.setattr(runtime, "load", lambda request, phases=None: simulated)
    return (lambda: peak_module.measure_peaks(runtime, "fp32", {}, tmp_path, "m", "v")), simulated


def _gflops(kind: str, per_s: float) -> float:
    return per_s * PROBES[kind].flops / 1e9


def test_gpu_probes_count_compute_without_the_copies(gpu_probes):
    measure_peaks, _ = gpu_probes
    peaks = measure_peaks()
    # The whole loop (copies included) would give a quarter of this: 250 probes/s.
    assert peaks.gemm_gflops == pytest.approx(_gflops("gemm", COMPUTE_ONLY_RATE))
    assert peaks.conv_gflops == pytest.approx(_gflops("conv", COMPUTE_ONLY_RATE))
    assert peaks.unstable == [] and all(e.startswith("copy probe:") for e in peaks.errors)  # no CUDA here


def test_gpu_probe_that_settles_on_its_second_measurement_counts(gpu_probes):
    measure_peaks, steps = gpu_probes
    steps.compute_ms = alternating(steps, settles_at_s=3.0)  # the first measurement's six windows end at 2.9 s
    peaks = measure_peaks()
    assert peaks.unstable == [] and peaks.gemm_gflops == pytest.approx(_gflops("gemm", COMPUTE_ONLY_RATE))


def test_gpu_probe_unstable_twice_is_recorded_and_left_out_of_the_shares(gpu_probes):
    measure_peaks, steps = gpu_probes
    steps.compute_ms = alternating(steps)
    peaks = measure_peaks()
    assert peaks.unstable == ["gemm", "conv"] and peaks.gemm_gflops > 0 and peaks.conv_gflops > 0
    assert peaks.share_denominator("gemm") is None
    shares = peak_shares(peaks, SteadyState(fps=1.0, frames=1, wall_s=1.0, gflops_achieved=80.0), input_bytes=4)
    assert shares.pct_gemm_peak is None and shares.pct_conv_peak is None
    assert "gemm probe UNSTABLE twice" in shares.note and "conv probe UNSTABLE twice" in shares.note


def test_datasheet_peak_of_a_known_gpu(monkeypatch):
    monkeypatch.setattr("bench.env.nvidia_gpu", lambda: {"gpu_name": "NVIDIA H100 80GB HBM3"})
    assert peak_module.datasheet_tflops("fp16") == 989.4 and peak_module.datasheet_tflops("int8") == 1978.9
    monkeypatch.setattr("bench.env.nvidia_gpu", lambda: {"gpu_name": "NVIDIA GeForce GTX 480"})
    assert peak_module.datasheet_tflops("fp16") is None


def _quick_suite(tmp_path, probes: bool):
    text = (REPO / "suites" / "quick.toml").read_text()
    path = tmp_path / "peaks.toml"
    path.write_text(text + ("" if probes else "\n[checks]\npeak_probes = false\n") if "[checks]" not in text
                    else text.replace("[checks]", "[checks]\npeak_probes = " + ("true" if probes else "false")))
    return path


# Planted in the cache, so the points' shares can be worked out by hand from their frames/s.
PLANTED = {"gemm_gflops": 40.0, "conv_gflops": 25.0}


def test_every_point_carries_its_share_of_the_runtimes_peak(tmp_path, monkeypatch, capsys):
    cache = tmp_path / "cache"
    planted = Peaks("ort-cpu", "fp32", "cpu", "m", "v", memory_copy_gbps=9.0, **PLANTED)
    with monkeypatch.context() as patch:  # the real cache entry a sweep's probes would leave
        patch.setattr(peak_module, "measure_peaks", lambda *args: planted)
        peaks_for(get_runtime("ort-cpu"), "fp32", {}, cache)
    monkeypatch.setenv("FACEBENCH_CACHE", str(cache))
    out = tmp_path / "peaks.parquet"
    code = cli.main(["run", str(_quick_suite(tmp_path, True)), "--runtimes", "ort-cpu", "--models", "arcface_mbf",
                     "--batches", "1", "--out", str(out)])
    assert code == 0
    assert "% conv peak" in capsys.readouterr().out
    (row,) = store.read_rows(out)
    assert (row["peak_gemm_gflops"], row["peak_conv_gflops"], row["peak_memory_copy_gbps"]) == (40.0, 25.0, 9.0)
    # MobileFaceNet: 2 x its MACs per frame at the loop's frames/s, over the planted 40 and 25 GFLOP/s.
    gflops = row["fps"] * 2 * count_macs(onnx.load(row["model_path"])) / 1e9
    assert row["pct_gemm_peak"] == pytest.approx(100 * gflops / 40.0, rel=1e-6)
    assert row["pct_conv_peak"] == pytest.approx(100 * gflops / 25.0, rel=1e-6)


def test_compare_reads_the_share_of_peak(tmp_path, capsys):
    base = {"model": "arcface_mbf", "runtime": "ort-cpu", "precision": "fp32", "batch": 1, "status": "ok",
            "verdict": "VALID", "fps": 100.0}
    files = [tmp_path / "a.parquet", tmp_path / "b.parquet"]
    for path, run_id, share in zip(files, ("a", "b"), (40.0, 10.0)):
        store.write_rows(path, [{**base, "run_id": run_id, "pct_conv_peak": share}])
    assert cli.main(["compare", *map(str, files), "--metric", "pct_conv_peak"]) == 0
    assert "0.25x" in capsys.readouterr().out


def test_probes_can_be_switched_off(tmp_path):
    out = tmp_path / "nopeaks.parquet"
    assert cli.main(["run", str(_quick_suite(tmp_path, False)), "--runtimes", "ort-cpu", "--models", "arcface_mbf",
                     "--batches", "1", "--out", str(out)]) == 0
    (row,) = store.read_rows(out)
    assert row["status"] == "ok" and row["peak_conv_gflops"] is None and row["pct_conv_peak"] is None


def test_probe_command_measures_again_and_runtimes_shows_them(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FACEBENCH_CACHE", str(tmp_path))
    assert cli.main(["probe", "--runtimes", "ort-cpu", "--precisions", "fp32"]) == 0
    first = capsys.readouterr().out
    assert "ort-cpu" in first and "GEMM GFLOP/s" in first
    (entry,) = (tmp_path / "peaks").glob("ort-cpu-fp32-*.json")
    settled = json.loads(entry.read_text())
    settled["unstable"] = []  # as a quiet machine leaves it (an unsettled entry is rightly probed again)
    entry.write_text(json.dumps(settled))
    measured = settled["measured_utc"]
    assert cli.main(["runtimes", "--probe"]) == 0
    assert measured in capsys.readouterr().out  # the cached figures, not a new measurement of ort-cpu fp32


@pytest.mark.parametrize("args, message", [
    (["--precisions", "fp64"], "probes exist for fp32, fp16, bf16 and int8"),
    (["--runtimes", "trt-nope"], "unknown runtime"),
])
def test_probe_bad_input_is_one_line_exit_2(args, message, capsys):
    assert cli.main(["probe", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
