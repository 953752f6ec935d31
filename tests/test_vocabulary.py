"""The shared vocabulary (bench.domain) and the one output comparator (bench.comparator),
on real ONNX Runtime sessions of small hand-built models."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from bench.comparator import Tolerance, compare_outputs
from bench.checks.contamination import check_contamination
from bench.checks.parity import ParityGates, check_parity
from bench.domain import (DETECTOR, EMBEDDER, INPUT_FORMATS, MAX_BATCH, PRECISIONS, arithmetic, batch_problem,
                          canonical_precision, family, random_frames)
from bench.errors import UserError
from bench.measure.protocol import make_inputs
from bench.runtimes.registry import RUNTIMES, get_runtime
from bench.session import LoadRequest, SessionGroup
from bench.suite import parse_suite
from tests.conftest import ort_infer

ort = pytest.importorskip("onnxruntime")


def two_output_model(order: tuple[str, str]):
    """x [N,4] -> "doubled" = 2x and "negated" = -x, declared in `order`."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    two = helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])
    nodes = [helper.make_node("Mul", ["x", "two"], ["doubled"]), helper.make_node("Neg", ["x"], ["negated"])]
    outputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", 4]) for name in order]
    graph = helper.make_graph(nodes, "two_outputs", [x], outputs, initializer=[two])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


X = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)


def test_outputs_match_by_name_and_a_swapped_order_is_caught():
    reference = ort_infer(two_output_model(("doubled", "negated")))(X)
    swapped = ort_infer(two_output_model(("negated", "doubled")))(X)
    assert list(swapped) == ["negated", "doubled"]  # the model's order
    assert compare_outputs(reference, swapped).passed  # same outputs, other order

    # A consumer that pairs the swapped model's outputs with the reference's names by position is wrong:
    by_position = dict(zip(reference, swapped.values()))
    result = compare_outputs(reference, by_position)
    assert not result.passed
    assert {o.name for o in result.failed} == {"doubled", "negated"}
    assert "output 'doubled': max |diff|" in result.summary()


def test_tolerances_per_output():
    reference = ort_infer(two_output_model(("doubled", "negated")))(X)
    noisy = dict(reference, negated=reference["negated"] + np.float32(1e-3))
    strict = compare_outputs(reference, noisy, Tolerance(atol=1e-5, rtol=1e-5))
    assert [o.name for o in strict.failed] == ["negated"]
    assert strict.failed[0].max_abs == pytest.approx(1e-3, rel=1e-3)
    loose = compare_outputs(reference, noisy, Tolerance(atol=1e-5, rtol=1e-5), {"negated": Tolerance(atol=2e-3)})
    assert loose.passed
    # the override is only for the output it names
    both = dict(noisy, doubled=reference["doubled"] + np.float32(1e-3))
    assert [o.name for o in compare_outputs(reference, both, Tolerance(1e-5, 1e-5),
                                            {"negated": Tolerance(atol=2e-3)}).failed] == ["doubled"]


def test_missing_shape_and_nan_outputs_fail_with_the_reason():
    reference = ort_infer(two_output_model(("doubled", "negated")))(X)
    result = compare_outputs(reference, {"doubled": reference["doubled"][:2]})
    assert {o.name: o.problem for o in result.failed} == {
        "doubled": "shape (2, 4), reference (3, 4)", "negated": "missing from the candidate"}
    nan = dict(reference, negated=np.full((3, 4), np.nan, np.float32))
    assert "NaN" in compare_outputs(reference, nan).summary()


def test_relative_tolerance_is_of_the_output_peak():
    reference = {"scores": np.array([1e-7, 100.0])}
    candidate = {"scores": np.array([2e-7, 100.0])}  # elementwise relative error 100%, of the peak 1e-9
    diff = compare_outputs(reference, candidate, Tolerance(atol=0.0, rtol=1e-6)).outputs[0]
    assert diff.passed and diff.max_rel == pytest.approx(1.0) and diff.peak_rel == pytest.approx(1e-9)


def batch_mixing_model():
    """x [N,3,2,2] -> "clean" = 2x and "mixed" = x - mean over the batch (BN in training mode)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 2, 2])
    two = helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])
    nodes = [helper.make_node("Mul", ["x", "two"], ["clean"]),
             helper.make_node("ReduceMean", ["x"], ["mean"], axes=[0], keepdims=1),
             helper.make_node("Sub", ["x", "mean"], ["mixed"])]
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("clean", "mixed")]
    graph = helper.make_graph(nodes, "mixing", [x], outputs, initializer=[two])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_contamination_names_the_output_that_mixes_frames():
    result = check_contamination(ort_infer(batch_mixing_model()), (3, 2, 2), 4)
    assert not result.passed
    assert "output 'mixed'" in result.note and "'clean'" not in result.note


def test_parity_per_output_errors_carry_names():
    reference = {"fc1": np.ones((2, 8), np.float32)}
    candidate = {"fc1": np.ones((2, 8), np.float32) * np.float32(1.001)}
    result = check_parity(reference, candidate, "arcface", "openvino_ir", (112, 112))
    assert result.outputs[0].name == "fc1" and result.outputs[0].min_atol == pytest.approx(1e-3, rel=1e-3)
    assert result.passed  # cosine is 1: the norm changed, not the direction
    bad = check_parity(reference, {"fc1": np.full((2, 8), np.nan, np.float32)}, "embedder", "fp32", (112, 112))
    assert not bad.passed and "output 'fc1'" in bad.reason
    renamed = check_parity(reference, {"683": candidate["fc1"]}, "embedder", "fp32", (112, 112))
    assert not renamed.passed and "output 'fc1': missing from the candidate" in renamed.reason


def fused_output_model():
    """x [N,4] -> "negated" = Reshape(Neg(x)): OpenVINO fuses the Reshape away, and the compiled output
    then carries both names, the internal "a_neg" first (its any_name)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [-1, 4])
    nodes = [helper.make_node("Neg", ["x"], ["a_neg"]), helper.make_node("Reshape", ["a_neg", "shape"], ["negated"])]
    output = helper.make_tensor_value_info("negated", TensorProto.FLOAT, ["N", 4])
    graph = helper.make_graph(nodes, "fused", [x], [output], initializer=[shape])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


@pytest.mark.parametrize("runtime", ["ort-cpu", "openvino-cpu"])
def test_every_cpu_session_returns_its_outputs_by_name_in_model_order(runtime, tmp_path):
    """Session.infer, as Polygraphy's runners: {output name: array}, in the model's declared order
    (here not alphabetical), at concurrency 1 and 2 (ort-cpu's SessionGroup, OpenVINO's streams)."""
    if not get_runtime(runtime).available()[0]:
        pytest.skip(get_runtime(runtime).available()[1])
    path = tmp_path / "swapped.onnx"
    onnx.save(two_output_model(("negated", "doubled")), path)
    request = LoadRequest(str(path), "x", (3, 4))
    for concurrency in (1, 2):
        session = get_runtime(runtime).load_concurrent(request, concurrency)
        try:
            assert isinstance(session, SessionGroup) == (concurrency > 1 and runtime == "ort-cpu")  # OpenVINO: streams
            outputs = session.infer(X)
            assert list(outputs) == ["negated", "doubled"]
            np.testing.assert_allclose(outputs["doubled"], 2 * X, rtol=1e-6)
            np.testing.assert_allclose(outputs["negated"], -X, rtol=1e-6)
        finally:
            session.close()
    onnx.save(fused_output_model(), tmp_path / "fused.onnx")
    session = get_runtime(runtime).load(LoadRequest(str(tmp_path / "fused.onnx"), "x", (3, 4)))
    try:
        assert list(session.infer(X)) == ["negated"]  # the model's name, not a fused tensor's
    finally:
        session.close()


def test_precision_vocabulary_and_the_ir_alias():
    assert canonical_precision("openvino_ir") == "ir" and canonical_precision("fp16") == "fp16"
    assert [arithmetic(p) for p in PRECISIONS] == ["fp32", "fp16", "bf16", "int8", "fp32", "fp32"]
    assert arithmetic("OPENVINO_IR") == "fp32"
    gates = ParityGates.with_overrides({"cosine_min": {"openvino_ir": 0.5}})
    assert gates.limit("cosine_min", "ir") == 0.5 == gates.limit("cosine_min", "openvino_ir")
    assert gates.limit("cosine_min", "simplified") == gates.limit("cosine_min", "fp32")
    # a suite may name the IR's gate either way; both land on "ir"
    for name in ("ir", "openvino_ir"):
        suite = parse_suite({"models": ["scrfd_500m"], "runtimes": ["ort-cpu"], "parity_gates": {"cosine_min": {name: 0.9}}}, "s", "s")
        assert suite.parity_gates == {"cosine_min": {"ir": 0.9}}


def test_families_and_their_preprocessing():
    assert family("scrfd") is DETECTOR and family("ArcFace") is EMBEDDER
    assert (DETECTOR.mean, DETECTOR.std, DETECTOR.default_size) == (127.5, 128.0, 640)
    assert (EMBEDDER.mean, EMBEDDER.std, EMBEDDER.default_size) == (127.5, 127.5, 112)
    with pytest.raises(UserError, match="unknown model family"):
        family("segmenter")


def test_batch_rule():
    assert batch_problem(1) is None and batch_problem(MAX_BATCH) is None
    assert "not a positive size" in batch_problem(0)
    assert "allow_large_batch" in batch_problem(MAX_BATCH + 1) and batch_problem(MAX_BATCH + 1, True) is None


def test_one_input_generator_for_timed_buffers_and_every_format():
    shape = (2, 3, 4, 4)
    buffers = make_inputs(shape, 2, seed=7, mean=EMBEDDER.mean, std=EMBEDDER.std)
    rng = np.random.default_rng(7)
    assert all(np.array_equal(b, random_frames(rng, 2, shape[1:], EMBEDDER.mean, EMBEDDER.std)) for b in buffers)
    pixels = random_frames(np.random.default_rng(3), 2, (3, 4, 4), dtype="uint8")
    frames = random_frames(np.random.default_rng(3), 2, (3, 4, 4))
    assert frames.dtype == np.float32 and np.abs(frames).max() <= 1.0
    # the float frames are exactly those pixels, normalised: every uint8 format recovers them
    assert np.array_equal(INPUT_FORMATS["uint8-nchw"].from_normalised(frames, DETECTOR.mean, DETECTOR.std), pixels)


def test_every_cuda_runtime_types_its_device_id():
    """The worker and the peak probes read device_id through the runtime's typed options."""
    for runtime in map(get_runtime, RUNTIMES):
        if runtime.uses_cuda:
            assert runtime.Options.parse({"device_id": 1}, runtime.name).device_id == 1
