"""BF16: a precision OpenVINO computes natively on CPUs with AVX512_BF16 / AMX, and TensorRT from a
BF16 ONNX artifact (11.x, strongly typed) or the BF16 builder flag (10.x)."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import ml_dtypes
import numpy as np
import onnx
import pytest

from bench import store
from bench.checks import point_checks
from bench.checks.parity import ParityGates
from bench.cli import main
from bench.errors import UserError
from bench.models import zoo
from bench.models.info import inspect_model
from bench.session import LoadRequest
from bench.runtimes.onnxruntime import OrtRuntime
from bench.runtimes.openvino import OpenVinoRuntime
from bench.runtimes.tensorrt import TensorRtRuntime, build_engine, precision_flags, precision_from_inspector
from bench.suite import load_suite, parse_suite
from bench.models.artifacts import build_artifact
from bench.worker import native_precision_problem, unsupported_precision
from tests.conftest import FIXTURES, REPO, tiny_suite

FR_FEATURE = FIXTURES / "embedders" / "fr_feature.onnx"


def openvino_cpu_has_bf16() -> bool:
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


needs_native_bf16 = pytest.mark.skipif(
    not openvino_cpu_has_bf16(),
    reason="this CPU has no native BF16 (OpenVINO's OPTIMIZATION_CAPABILITIES lacks BF16: no avx512_bf16 / amx_bf16)")


# ============================================================================ OpenVINO CPU


def test_openvino_asks_bf16_only_where_the_cpu_computes_it():
    reason = OpenVinoRuntime().native_precision_problem("bf16")
    assert (reason == "") == openvino_cpu_has_bf16()
    if reason:  # the skip names the missing CPU feature
        assert "avx512_bf16" in reason and "amx_bf16" in reason
    assert OpenVinoRuntime().native_precision_problem("fp16") == ""  # FP16 falls back to FP32, and the row says so
    assert OpenVinoRuntime().artifact_for("bf16") == "fp32"  # the precision hint over the FP32 graph


@needs_native_bf16
def test_bf16_point_on_openvino_cpu_runs_bf16_and_passes_its_gate(tmp_path):
    out = tmp_path / "bf16.parquet"
    assert main(["run", str(REPO / "suites" / "quick.toml"), "--models", "arcface_mbf", "--runtimes", "openvino-cpu",
                 "--precisions", "bf16", "--batches", "1", "--out", str(out), "--inline"]) == 0
    [row] = store.read_rows(out)
    assert row["status"] == "ok" and row["precision"] == "bf16"
    assert row["precision_effective"] == "bf16"  # what OpenVINO compiled, read back
    assert json.loads(row["runtime_options_json"])["requested_precision_hint"] == "bf16"
    assert row["parity_checked"] and row["parity_passed"]
    assert row["parity_metric"] == "cosine_min" and row["parity_gate"] == ParityGates().limit("cosine_min", "bf16")


@needs_native_bf16
def test_real_detector_in_bf16_keeps_its_faces(real_scrfd_path):
    """The real SCRFD-500M finds faces on the astronaut frames: BF16 must find the same ones."""
    info = inspect_model(real_scrfd_path)
    session = OpenVinoRuntime().load(LoadRequest(info.path, info.input_name, info.input_shape(1), "bf16"))
    try:
        assert session.effective_precision() == "bf16"
        result = point_checks.parity_check(session.infer, info, 1, "bf16", point_checks.parity_frames(info)[0])
    finally:
        session.close()
    assert result.ref_detections and result.det_recall is not None  # judged on faces, not the raw fallback
    assert result.passed, result.reason
    assert result.landmark_err_px > 0  # BF16 really moved the numbers: not an FP32 run in disguise


def test_ort_cpu_skips_bf16_and_says_where_it_runs(tmp_path):
    reason = unsupported_precision(OrtRuntime(), "bf16")
    assert reason.startswith("ort-cpu does not run bf16") and "openvino-cpu" in reason
    suite = tmp_path / "ort.toml"
    suite.write_text(tiny_suite("ort-bf16", [1]).replace('batches = [1]', 'batches = [1]\nprecisions = ["bf16"]'))
    out = tmp_path / "ort.parquet"
    assert main(["run", str(suite), "--out", str(out), "--inline"]) == 0
    [row] = store.read_rows(out)
    assert row["status"] == "skipped" and row["reason"] == reason


# ============================================================================ suites


def test_suites_validate_bf16():
    suite = parse_suite({"runtimes": ["openvino-cpu"], "precisions": ["fp32", "bf16"], "models": [{"name": "arcface_mbf"}],
                         "parity_gates": {"cosine_min": {"bf16": 0.995}}}, "s", "s")
    assert suite.precisions == ["fp32", "bf16"] and suite.parity_gates["cosine_min"] == {"bf16": 0.995}
    assert "bf16" in load_suite(REPO / "suites" / "cpu.toml").precisions
    assert load_suite(REPO / "suites" / "default.toml").precisions_for("openvino-cpu") == ["fp32", "bf16"]


def test_fp16_io_input_refuses_bf16():
    with pytest.raises(UserError, match="bf16"):
        parse_suite({"runtimes": ["openvino-cpu"], "precisions": ["bf16"], "input": "fp16-nchw",
                     "models": [{"name": "arcface_mbf"}]}, "s", "s")


# ============================================================================ TensorRT, CPU side


def test_trt_bf16_artifact_is_bf16_inside_fp32_at_the_edges(tmp_path):
    info = zoo.build_cached("arcface_mbf")
    path = Path(build_artifact(TensorRtRuntime(), info.path, "bf16", tmp_path))
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)  # types legal at its opset (Conv takes BF16 from 22)
    assert next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 22
    elem = onnx.TensorProto
    assert [v.type.tensor_type.elem_type for v in (*model.graph.input, *model.graph.output)] == [elem.FLOAT] * 2
    source = {t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(info.path).graph.initializer}
    weights = [t for t in model.graph.initializer if t.data_type == elem.BFLOAT16]
    assert len(weights) >= len([t for t in source.values() if t.dtype == np.float32 and t.ndim == 4])  # every conv
    for tensor in weights:  # rounded from FP32, never through FP16's range
        np.testing.assert_array_equal(onnx.numpy_helper.to_array(tensor).astype(np.float32),
                                      source[tensor.name].astype(ml_dtypes.bfloat16).astype(np.float32))


def test_trt_bf16_artifact_of_the_trained_embedder_passes_the_bf16_gate(tmp_path):
    """The file TensorRT consumes, run on OpenVINO CPU: its BF16 numbers stay inside the bf16 gate."""
    if not FR_FEATURE.is_file():
        pytest.skip(f"trained embedder fixture absent at {FR_FEATURE} (set FACEBENCH_FIXTURES)")
    info = inspect_model(FR_FEATURE)
    path = build_artifact(TensorRtRuntime(), info.path, "bf16", tmp_path)
    session = OpenVinoRuntime().load(LoadRequest(path, info.input_name, info.input_shape(1), "fp32"))
    try:
        result = point_checks.parity_check(session.infer, info, 1, "bf16", point_checks.parity_frames(info)[0])
    finally:
        session.close()
    assert result.passed, result.reason
    assert result.cosine_min < 0.99999  # the weights really are BF16: FP32 would agree to 1e-6


def test_trt_bf16_flags_by_version():
    assert precision_flags("bf16", 10) == ["BF16"]  # 10.x: weakly typed, the flag allows BF16 kernels
    assert precision_flags("bf16", 11) == [] and precision_flags("bf16", None) == []  # 11.x: the ONNX carries it
    assert "bf16" in TensorRtRuntime.precisions


def test_trt_inspector_reads_bf16_layers():
    eleven = json.dumps({"Layers": [{"Outputs": [{"Format": "Row major linear", "DataType": "BFloat16"}]},
                                    {"Outputs": [{"Format": "Row major linear", "DataType": "Float"}]}]})
    assert precision_from_inspector(eleven) == ("bf16", {"bf16": 1, "fp32": 1})  # "BFloat16" is no FP32 layer
    ten = json.dumps({"Layers": [{"Outputs": [{"Format/Datatype": "Channel major BF16 format where channel % 8 == 0"}]}]})
    assert precision_from_inspector(ten) == ("bf16", {"bf16": 1})


class ScriptedBuilder:
    """TensorRT's builder steps as build_engine calls them, recording the flags it sets."""

    def __init__(self, version: str):
        flags = ("FP16", "BF16", "INT8", "TF32") if version.startswith("10.") else ("TF32",)  # 11 removed the rest
        self.set_flags: list[str] = []
        builder = self

        class Config:
            builder_optimization_level = None
            profiling_verbosity = None

            def set_flag(self, flag):
                builder.set_flags.append(flag)

            def clear_flag(self, flag):
                pass

            def create_timing_cache(self, data):
                return SimpleNamespace(serialize=lambda: b"cache")

            def set_timing_cache(self, cache, ignore_mismatch):
                pass

        self.trt = SimpleNamespace(
            __version__=version, BuilderFlag=SimpleNamespace(**{f: f for f in flags}),
            ProfilingVerbosity=SimpleNamespace(DETAILED="detailed"),
            Builder=lambda logger: SimpleNamespace(create_network=lambda flags: "network",
                                                   create_builder_config=Config,
                                                   build_serialized_network=lambda network, config: b"plan"),
            OnnxParser=lambda network, logger: SimpleNamespace(parse=lambda data, path: True))


@pytest.mark.parametrize("version, flags", [("10.13.0", ["BF16"]), ("11.1.0", [])])
def test_trt_build_sets_bf16_flag_on_10_only(version, flags):
    scripted = ScriptedBuilder(version)
    options = TensorRtRuntime.Options.parse({}, "trt")
    built = build_engine(scripted.trt, None, b"onnx", "m.onnx", "input", None, "bf16", options)
    assert built.flags == flags and scripted.set_flags == flags


def test_trt_skips_bf16_before_ampere_only(monkeypatch):
    import bench.runtimes.cuda as cuda

    monkeypatch.setattr(cuda, "gpu_compute_capabilities", lambda: [7.5])
    reason = native_precision_problem(TensorRtRuntime(), "bf16")
    assert "compute capability 8.0" in reason and "7.5" in reason
    assert native_precision_problem(TensorRtRuntime(), "fp16") == ""
    monkeypatch.setattr(cuda, "gpu_compute_capabilities", lambda: [9.0])
    assert native_precision_problem(TensorRtRuntime(), "bf16") == ""
