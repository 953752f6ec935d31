"""Replica builders and the param/MAC counter against reference/models.md and the real SCRFD-500M."""

from __future__ import annotations

import functools
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from bench.models.arcface import ARCFACE_VARIANTS, build_arcface
from bench.models.counting import count_macs, count_params, op_counts
from bench.models.scrfd import SCRFD_CONFIGS, SCRFD_VARIANTS, build_scrfd

SCRFD_OUTPUTS = [f"{kind}_{s}" for kind in ("score", "bbox", "kps") for s in (8, 16, 32)]
WIDTHS = {"score": 1, "bbox": 4, "kps": 10}

# Published / analytic references (models.md sections 1.3, 3.2, 5): params and MACs at (H, W).
REFERENCE_COUNTS = {
    ("scrfd", "10g", (640, 640)): (4.23e6, 13.34e9),
    ("scrfd", "10g", (320, 320)): (4.23e6, 3.335e9),
    ("scrfd", "2.5g", (640, 640)): (0.82e6, 3.43e9),
    ("scrfd", "500m", (640, 640)): (626_354, 0.73e9),
    ("scrfd", "34g", (480, 640)): (9.80e6, 33.7e9),  # "VGA"
    ("scrfd", "34g", (640, 640)): (9.80e6, 33.7e9 / 0.75),
    ("arcface", "r50", (112, 112)): (43.59e6, 6.31e9),
    ("arcface", "mbf", (112, 112)): (2.06e6, 0.44e9),
}
# Section 7's replica table: exact conv+gemm MACs, and params of an export with separate neck
# biases (the real files share 2 x neck_channels of them, as these replicas do).
SECTION7_MACS = {"10g": 13_340_684_800, "2.5g": 3_428_121_600, "500m": 733_545_600}
SECTION7_SEPARATE_BIAS_PARAMS = {"10g": 4_225_937, "2.5g": 817_969, "500m": 626_354}


@functools.cache
def scrfd(variant: str, size: int | None = 640, export: str = "batched") -> onnx.ModelProto:
    return build_scrfd(variant, size, export=export)


@functools.cache
def arcface(variant: str) -> onnx.ModelProto:
    return build_arcface(variant)


def session(model: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # two cores shared with other test runs
    options.log_severity_level = 3  # the 2021 export's static output shapes make ORT warn
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def run(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    return session(model).run(None, {"input.1": x})


def to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    float16 = pytest.importorskip("onnxconverter_common.float16")
    with warnings.catch_warnings():  # it warns for each weight below FP16's smallest normal
        warnings.simplefilter("ignore")
        return float16.convert_float_to_float16(model, keep_io_types=True)


def image_batch(n: int, size: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (n, 3, size, size)).astype(np.float32)


def dims(value: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in value.type.tensor_type.shape.dim]


def inferred_output_dims(model: onnx.ModelProto) -> dict[str, list[int | str]]:
    """Output shapes as onnx shape inference derives them, ignoring the declared ones."""
    bare = onnx.ModelProto()
    bare.CopyFrom(model)
    for output in bare.graph.output:
        output.type.tensor_type.ClearField("shape")
    inferred = onnx.shape_inference.infer_shapes(bare, strict_mode=True, data_prop=True)
    return {output.name: dims(output) for output in inferred.graph.output}


def expected_rows(size: int, stride: int) -> int:
    return (size // stride) ** 2 * 2


# ---- counts ------------------------------------------------------------------------------


@pytest.mark.parametrize("family, variant, height_width", list(REFERENCE_COUNTS))
def test_counts_within_one_percent_of_reference(family, variant, height_width):
    params, macs = REFERENCE_COUNTS[(family, variant, height_width)]
    model = scrfd(variant) if family == "scrfd" else arcface(variant)
    assert count_params(model) == pytest.approx(params, rel=0.01)
    assert count_macs(model, (1, 3, *height_width)) == pytest.approx(macs, rel=0.01)


@pytest.mark.parametrize("variant", sorted(SECTION7_MACS))
def test_scrfd_counts_match_section7_exactly(variant):
    model = scrfd(variant)
    shared_biases = 2 * SCRFD_CONFIGS[variant].neck_channels
    assert count_macs(model) == SECTION7_MACS[variant]
    assert count_params(model) + shared_biases == SECTION7_SEPARATE_BIAS_PARAMS[variant]


def test_mobilefacenet_counts_match_section7_exactly():
    assert count_params(arcface("mbf")) == 2_047_616
    assert count_macs(arcface("mbf")) == 437_520_896


def test_macs_are_per_frame_and_follow_input_shape():
    flattened = scrfd("10g", None, "pack")  # H and W symbolic
    with pytest.raises(ValueError, match="input_shape"):
        count_macs(flattened)
    assert count_macs(flattened, (1, 3, 640, 640)) == SECTION7_MACS["10g"]
    assert count_macs(scrfd("10g"), (8, 3, 640, 640)) == SECTION7_MACS["10g"]


def test_counter_on_real_file_matches_replica(real_scrfd_path):
    real = onnx.load(str(real_scrfd_path))
    replica = scrfd("500m")
    assert op_counts(real) == op_counts(replica)
    assert op_counts(replica) == {
        "Conv": 60, "Relu": 41, "Transpose": 9, "Reshape": 9, "Add": 4, "Sigmoid": 3, "Resize": 2,
    }  # fmt: skip
    assert count_params(real) == count_params(replica) == 626_322
    assert count_macs(real) == count_macs(replica) == SECTION7_MACS["500m"]


def test_real_and_replica_scrfd_500m_interfaces_agree(real_scrfd_path):
    real, replica = onnx.load(str(real_scrfd_path)), scrfd("500m")
    assert [o.name for o in real.graph.output] == [o.name for o in replica.graph.output] == SCRFD_OUTPUTS
    for real_out, replica_out in zip(real.graph.output, replica.graph.output):
        assert dims(real_out)[1:] == dims(replica_out)[1:]
        assert (dims(real_out)[0], dims(replica_out)[0]) == (1, "N")
    assert dims(real.graph.input[0])[1:] == dims(replica.graph.input[0])[1:] == [3, 640, 640]


# ---- interfaces --------------------------------------------------------------------------


@pytest.mark.parametrize("size", [320, 640])
@pytest.mark.parametrize("variant", SCRFD_VARIANTS)
def test_scrfd_batched_interface(variant, size):
    model = scrfd(variant, size)
    kinds = ("score", "bbox", "kps") if SCRFD_CONFIGS[variant].use_kps else ("score", "bbox")
    names = [f"{kind}_{s}" for kind in kinds for s in (8, 16, 32)]
    assert [i.name for i in model.graph.input] == ["input.1"]
    assert dims(model.graph.input[0]) == ["N", 3, size, size]
    assert [o.name for o in model.graph.output] == names
    inferred = inferred_output_dims(model)
    for name in names:
        kind, stride = name.split("_")
        expected = [expected_rows(size, int(stride)), WIDTHS[kind]]
        assert inferred[name][1:] == expected and isinstance(inferred[name][0], str)
        assert dims(next(o for o in model.graph.output if o.name == name)) == ["N", *expected]


def test_scrfd_dynamic_size_interface():
    model = scrfd("10g", None)
    assert dims(model.graph.input[0]) == ["N", 3, "H", "W"]
    assert dims(model.graph.output[0]) == ["N", "anchors_8", 1]


def test_scrfd_pack_interface():
    """The model-pack form (det_10g.onnx): symbolic H/W but the 640 trace's static 2-D output shapes,
    numeric names, frames interleaved per cell, Resize sizes computed at run time, opset 11."""
    model = scrfd("10g", 640, "pack")
    names = [o.name for o in model.graph.output]
    assert dims(model.graph.input[0]) == [1, 3, "?", "?"]
    assert names == ["448", "471", "494", "451", "474", "497", "454", "477", "500"]
    widths = [1] * 3 + [4] * 3 + [10] * 3
    expected = [[expected_rows(640, s), k] for k, s in zip(widths, (8, 16, 32) * 3)]
    assert [dims(o) for o in model.graph.output] == expected
    perms = [list(n.attribute[0].ints) for n in model.graph.node if n.op_type == "Transpose"]
    assert perms == [[2, 3, 0, 1]] * 9
    assert model.opset_import[0].version == 11
    resize_sizes = [n.input[3] for n in model.graph.node if n.op_type == "Resize"]
    concats = {n.output[0] for n in model.graph.node if n.op_type == "Concat"}
    assert len(resize_sizes) == 2 and set(resize_sizes) <= concats
    assert [o.shape for o in run(model, np.zeros((1, 3, 320, 320), np.float32))][:3] == [(3200, 1), (800, 1), (200, 1)]


@pytest.mark.parametrize("variant, output", [("r50", "683"), ("mbf", "516")])
def test_arcface_interface(variant, output):
    model = arcface(variant)
    assert [(i.name, dims(i)) for i in model.graph.input] == [("input.1", ["N", 3, 112, 112])]
    assert [(o.name, dims(o)) for o in model.graph.output] == [(output, ["N", 512])]


def test_iresnet_keeps_preactivation_batchnorms():
    model = arcface("r50")
    assert [n.op_type for n in model.graph.node[:5]] == ["Conv", "PRelu", "BatchNormalization", "Conv", "PRelu"]
    assert op_counts(model)["BatchNormalization"] == 24 + 1  # one per block, plus bn2


def test_all_models_pass_checker():
    for variant in SCRFD_VARIANTS:
        onnx.checker.check_model(scrfd(variant))
        onnx.checker.check_model(scrfd(variant, None, "pack"))
    for variant in ARCFACE_VARIANTS:
        onnx.checker.check_model(arcface(variant))


# ---- running -----------------------------------------------------------------------------


def assert_scores_informative(outputs: list[np.ndarray]) -> None:
    scores = np.concatenate([o.ravel() for o in outputs[:3]])
    assert np.all((scores > 0) & (scores < 1)) and np.ptp(scores) > 0


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_scrfd_500m_runs_batched_at_batch_2(precision):
    model = scrfd("500m") if precision == "fp32" else to_fp16(scrfd("500m"))
    frames = image_batch(2, 640)
    outputs = run(model, frames)
    assert [o.shape for o in outputs] == [
        (2, expected_rows(640, s), WIDTHS[k]) for k in ("score", "bbox", "kps") for s in (8, 16, 32)
    ]
    assert all(np.isfinite(o).all() for o in outputs)
    assert_scores_informative(outputs)
    if precision == "fp32":  # each frame's rows are its own
        single = run(model, frames[1:])
        for batched, alone in zip(outputs, single):
            np.testing.assert_allclose(batched[1:], alone, rtol=1e-4, atol=1e-5)


def test_scrfd_500m_fp16_agrees_with_fp32():
    frames = image_batch(1, 320)
    for full, half in zip(run(scrfd("500m", 320), frames), run(to_fp16(scrfd("500m", 320)), frames)):
        assert np.abs(full - half).max() <= 2e-2 * np.abs(full).max()


@pytest.mark.parametrize("variant", ["2.5g", "10g", "34g"])
def test_larger_scrfd_run_at_small_input(variant):
    outputs = run(scrfd(variant, 64), image_batch(2, 64))
    assert [o.shape[:2] for o in outputs[:3]] == [(2, expected_rows(64, s)) for s in (8, 16, 32)]
    assert all(np.isfinite(o).all() for o in outputs)
    assert_scores_informative(outputs)


def test_flattened_export_interleaves_frames_when_batch_is_patched():
    """Resize uses scales, so a naive batch patch still runs; rows come out (h, w, n, a)."""
    flattened, batched = scrfd("500m", 128, "pack"), scrfd("500m", 128)
    frames = image_batch(2, 128)
    single = run(flattened, frames[:1])
    np.testing.assert_allclose(single[3], run(batched, frames[:1])[3][0], rtol=1e-4, atol=1e-6)  # same weights
    patched = onnx.ModelProto()
    patched.CopyFrom(flattened)
    patched.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    bbox_8 = run(patched, frames)[3]
    side = 128 // 8
    assert bbox_8.shape == (2 * side * side * 2, 4)
    per_frame = bbox_8.reshape(side, side, 2, 2, 4).transpose(2, 0, 1, 3, 4).reshape(2, -1, 4)
    np.testing.assert_allclose(per_frame[0], single[3], rtol=1e-4, atol=1e-5)
    assert not np.allclose(bbox_8[: len(single[3])], single[3])


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_arcface_mbf_embeddings(precision):
    model = arcface("mbf") if precision == "fp32" else to_fp16(arcface("mbf"))
    embeddings = run(model, image_batch(3, 112))[0]
    assert embeddings.shape == (3, 512) and np.isfinite(embeddings).all()
    assert not np.allclose(embeddings[0], embeddings[1]) and not np.allclose(embeddings[1], embeddings[2])
    if precision == "fp16":
        full = run(arcface("mbf"), image_batch(3, 112))[0]
        assert np.abs(full - embeddings).max() <= 1e-2 * np.abs(full).max()


# ---- determinism -------------------------------------------------------------------------


def weights(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}


def test_weights_are_deterministic_per_seed():
    first, again, other = (weights(build_scrfd("500m", 320, seed=s)) for s in (0, 0, 1))
    assert first.keys() == again.keys() == other.keys()
    assert all(np.array_equal(first[k], again[k]) for k in first)
    assert any(not np.array_equal(first[k], other[k]) for k in first)
    mbf_first, mbf_again = weights(build_arcface("mbf", seed=3)), weights(build_arcface("mbf", seed=3))
    assert all(np.array_equal(mbf_first[k], mbf_again[k]) for k in mbf_first)
    assert all(a.dtype == np.float32 for a in first.values() if a.dtype.kind == "f")


def test_unknown_variant_and_export_are_rejected():
    with pytest.raises(ValueError, match="variant"):
        build_scrfd("1g")
    with pytest.raises(ValueError, match="export"):
        build_scrfd("500m", export="nchw")
    with pytest.raises(ValueError, match="multiple of 32"):
        build_scrfd("500m", 100)
    with pytest.raises(ValueError, match="variant"):
        build_arcface("r100")
