"""Batch correctness (issue 4): layout analysis, fix-batch rewrite and the contamination check."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from bench.checks.contamination import TOLERANCES, check_contamination, tolerance_for
from bench.errors import ModelFileError, UserError
from bench.models.batchfix import fix_batch, naive_batch_patch
from bench.models.layout import analyze_batch_layout, dims_of
from bench.models.scrfd import build_scrfd
from tests.conftest import FIXTURES, openvino_infer, ort_infer

SIZE = 320  # scrfd_500m at 320 keeps every verification well under a second
BATCH = 4
ort = pytest.importorskip("onnxruntime")


# ---- runtimes, compiled for one fixed batch as the harness does --------------------------


# ---- models ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """The two broken patterns, from the model-zoo builder, as files."""
    folder = tmp_path_factory.mktemp("batchfix")
    flattened = build_scrfd("500m", SIZE, export="pack")
    paths = {
        "flattened": flattened,
        "naive": naive_batch_patch(flattened),
        "flattened_symbolic_hw": build_scrfd("500m", None, export="pack"),
        "six_outputs": drop_keypoint_outputs(flattened),
        "batched": build_scrfd("500m", SIZE, export="batched"),
    }
    for name, model in paths.items():
        onnx.save(model, folder / f"{name}.onnx")
        paths[name] = folder / f"{name}.onnx"
    return paths


def drop_keypoint_outputs(model: onnx.ModelProto) -> onnx.ModelProto:
    """The 6-output (no keypoints) variant: keep scores and boxes, prune what fed kps only."""
    pruned = onnx.ModelProto()
    pruned.CopyFrom(model)
    keep_outputs = list(pruned.graph.output)[:6]
    needed = {out.name for out in keep_outputs}
    kept_nodes = []
    for node in reversed(pruned.graph.node):
        if any(name in needed for name in node.output):
            kept_nodes.append(node)
            needed.update(node.input)
    kept_nodes.reverse()
    kept_inits = [init for init in pruned.graph.initializer if init.name in needed]
    graph = helper.make_graph(kept_nodes, pruned.graph.name, list(pruned.graph.input), keep_outputs, kept_inits)
    return helper.make_model(graph, opset_imports=pruned.opset_import, ir_version=pruned.ir_version)


def tiny_embedder(tail: str) -> onnx.ModelProto:
    """Conv -> {tail} -> Gemm at batch 1, like an ArcFace export with a fixed batch."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.normal(0, 0.2, (4, 3, 3, 3)).astype(np.float32), "conv_w"),
        numpy_helper.from_array(rng.normal(0, 0.05, (4 * 16 * 16, 8)).astype(np.float32), "fc_w"),
    ]
    nodes = [helper.make_node("Conv", ["data", "conv_w"], ["feat"], strides=[2, 2], pads=[1, 1, 1, 1])]
    if tail == "flatten":
        nodes.append(helper.make_node("Flatten", ["feat"], ["flat"], axis=1))
    elif tail == "flatten_axis0":
        nodes.append(helper.make_node("Flatten", ["feat"], ["flat"], axis=0))
    elif tail == "transposed_reshape_batch1":  # dim 0 of what the Reshape reads is the channel, not the batch
        inits.append(numpy_helper.from_array(np.array([1, -1], np.int64), "flat_shape"))
        nodes.append(helper.make_node("Transpose", ["feat"], ["channels_first"], perm=[1, 0, 2, 3]))
        nodes.append(helper.make_node("Reshape", ["channels_first", "flat_shape"], ["flat"]))
    elif tail == "reshape_vector":  # x.view(-1): every frame in one vector
        inits.append(numpy_helper.from_array(np.array([-1], np.int64), "flat_shape"))
        nodes.append(helper.make_node("Reshape", ["feat", "flat_shape"], ["flat"]))
    else:  # "reshape_batch1": x.view(1, -1) baked in by the trace
        inits.append(numpy_helper.from_array(np.array([1, -1], np.int64), "flat_shape"))
        nodes.append(helper.make_node("Reshape", ["feat", "flat_shape"], ["flat"]))
    vector = tail == "reshape_vector"
    nodes.append(helper.make_node("MatMul" if vector else "Gemm", ["flat", "fc_w"], ["embedding"]))
    graph = helper.make_graph(
        nodes, "tiny_embedder",
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, None if vector else [1, 8])],
        inits,
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def output_dims(path: Path) -> dict[str, list]:
    return {out.name: dims_of(out) for out in onnx.load(str(path)).graph.output}


def real_photos() -> list[np.ndarray]:
    """scikit-image's public-domain astronaut (reference/models.md §6) when installed."""
    try:
        from skimage import data
    except ImportError:
        return []
    return [data.astronaut()]


def photo_like_frames(count: int) -> list[np.ndarray]:
    """Smooth gradients with a bright blob: structured pixels, unlike uniform noise."""
    frames = []
    for i in range(count):
        y, x = np.mgrid[0:360, 0:480].astype(np.float32)
        blob = 200 * np.exp(-((x - 120 - 60 * i) ** 2 + (y - 150) ** 2) / 3000)
        rgb = np.stack([x / 480 * 255, y / 360 * 255, blob], axis=-1)
        frames.append(np.clip(rgb, 0, 255).astype(np.uint8))
    return frames


# ---- layout analysis ---------------------------------------------------------------------


def test_layout_names_every_way_the_flattened_export_breaks_batching(models):
    layout = analyze_batch_layout(onnx.load(str(models["flattened"])))
    assert (layout.family, layout.batch_fixed, layout.flattened_outputs) == ("detector", True, True)
    assert layout.skip_reason(1) is None
    assert "facebench fix-batch" in layout.skip_reason(BATCH)

    naive = analyze_batch_layout(onnx.load(str(models["naive"])))
    assert not naive.batch_fixed and naive.flattened_outputs and not naive.batch_safe

    assert analyze_batch_layout(onnx.load(str(models["batched"]))).batch_safe


def test_layout_finds_batch_one_baked_into_the_real_export(real_scrfd_path):
    layout = analyze_batch_layout(onnx.load(str(real_scrfd_path)))
    assert layout.family == "detector" and layout.batch_fixed and not layout.flattened_outputs
    assert sorted(layout.baked_op_types).count("Reshape") == 9
    assert sorted(layout.baked_op_types).count("Resize") == 2
    assert "2 Resize + 9 Reshape" in layout.summary()


def test_layout_of_embedders():
    ok = analyze_batch_layout(tiny_embedder("flatten"))
    assert ok.family == "embedder" and ok.batch_fixed and not ok.baked_batch_ops and not ok.problems
    for tail in ("reshape_batch1", "flatten_axis0"):  # dim 0 is the batch: fix-batch keeps it
        baked = analyze_batch_layout(tiny_embedder(tail))
        assert baked.baked_batch_ops and not baked.batch_safe and not baked.problems
        assert [n.op_type for n in baked.batch_one_flattens] == [baked.baked_op_types[0]]
    for tail in ("transposed_reshape_batch1", "reshape_vector"):
        unfixable = analyze_batch_layout(tiny_embedder(tail))
        assert unfixable.baked_batch_ops and unfixable.problems and not unfixable.batch_one_flattens


# ---- contamination check -----------------------------------------------------------------


def test_check_batch_flags_the_naive_patch_on_both_runtimes(models):
    for infer in (ort_infer(models["naive"]), openvino_infer(models["naive"], (BATCH, 3, SIZE, SIZE))):
        result = check_contamination(infer, (3, SIZE, SIZE), BATCH)
        assert not result.passed, result
        assert result.max_rel_diff > 0.1 and "mixes frames" in result.note


def test_naive_patch_of_the_real_export_concatenates_frames(real_scrfd_path, tmp_path):
    naive = tmp_path / "naive.onnx"
    onnx.save(naive_batch_patch(onnx.load(str(real_scrfd_path))), naive)
    result = check_contamination(ort_infer(naive), (3, 640, 640), 2)
    assert not result.passed


def test_contamination_check_basics():
    identity = lambda x: {"doubled": x.reshape(len(x), -1) * 2.0}  # noqa: E731
    batch_mean = lambda x: {"centred": x - x.mean(axis=0, keepdims=True)}  # noqa: E731 - BN in training mode
    assert check_contamination(identity, (3, 8, 8), 5).passed
    assert not check_contamination(batch_mean, (3, 8, 8), 5).passed
    single = check_contamination(batch_mean, (3, 8, 8), 1)
    assert single.passed and "batch 1" in single.note
    assert TOLERANCES["fp32"] == 1e-4 and tolerance_for("FP16") == 1e-2
    with pytest.raises(ValueError):
        tolerance_for("fp64")
    zeros = check_contamination(lambda x: {"zeros": np.zeros((len(x), 2), np.float32)}, (3, 4, 4), 3)
    assert zeros.passed and zeros.max_rel_diff == 0.0


# ---- fix-batch ---------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["flattened", "naive"])
def test_fix_batch_repairs_both_broken_patterns(models, source, tmp_path):
    out = tmp_path / "fixed.onnx"
    report = fix_batch(models[source], out, images=photo_like_frames(2))
    assert report.output_names["443"] == "score_8" and report.output_names["499"] == "kps_32"  # det_500m's names
    assert report.frames_checked == 2 * BATCH and report.max_abs_diff < 1e-5
    dims = output_dims(out)["kps_16"]  # H and W stay dynamic, as in the pack file
    assert dims[0] == "N" and isinstance(dims[1], str) and dims[2] == 10 and report.input_shape == ["N", 3, "?", "?"]
    assert analyze_batch_layout(onnx.load(str(out))).batch_safe
    print(f"{source}: max |diff| {report.max_abs_diff:.3g}")
    for infer in (ort_infer(out), openvino_infer(out, (BATCH, 3, SIZE, SIZE))):
        result = check_contamination(infer, (3, SIZE, SIZE), BATCH)
        assert result.passed, result


def test_fix_batch_freezes_symbolic_hw(models, tmp_path):
    out = tmp_path / "fixed.onnx"
    report = fix_batch(models["flattened_symbolic_hw"], out, input_size=SIZE)
    assert report.input_shape == ["N", 3, SIZE, SIZE]
    assert output_dims(out)["score_8"] == ["N", (SIZE // 8) ** 2 * 2, 1]


def test_fix_batch_handles_the_six_output_variant(models, tmp_path):
    out = tmp_path / "fixed.onnx"
    report = fix_batch(models["six_outputs"], out)
    assert list(report.output_names.values()) == ["score_8", "score_16", "score_32", "bbox_8", "bbox_16", "bbox_32"]
    assert check_contamination(ort_infer(out), (3, SIZE, SIZE), BATCH).passed


def test_real_export_per_frame_outputs_at_batch_4_match_single_frame(real_scrfd_path, tmp_path):
    out = tmp_path / "fixed.onnx"
    report = fix_batch(real_scrfd_path, out, verify_batch=4, images=real_photos() + photo_like_frames(3))
    print(f"real scrfd_500m_bnkps: fix-batch max |diff| {report.max_abs_diff:.3g} over {report.frames_checked} frames")
    assert report.max_abs_diff < 1e-5
    assert list(output_dims(out).values())[0] == ["N", 12800, 1]

    # Independently of the report: each frame of a batch of 4 against the original alone.
    original, fixed = ort_infer(real_scrfd_path), ort_infer(out)
    frames = np.random.default_rng(7).uniform(-1, 1, (4, 3, 640, 640)).astype(np.float32)
    batched = fixed(frames)
    worst = max(  # by name: report.output_names maps the original's names to the fixed model's
        float(np.max(np.abs(batched[report.output_names[name]][i] - alone[0])))
        for i in range(4)
        for name, alone in original(frames[i : i + 1]).items()
    )
    print(f"real scrfd_500m_bnkps: independent batch-4 max |diff| {worst:.3g}")
    assert worst < 1e-5


def test_real_export_frozen_at_320_stays_batch_correct(real_scrfd_path, tmp_path):
    out = tmp_path / "fixed320.onnx"
    report = fix_batch(real_scrfd_path, out, input_size=SIZE)
    assert report.input_shape == ["N", 3, SIZE, SIZE] and report.max_abs_diff < 1e-5
    assert output_dims(out)["bbox_32"] == ["N", 200, 4]
    assert check_contamination(openvino_infer(out, (BATCH, 3, SIZE, SIZE)), (3, SIZE, SIZE), BATCH).passed


def test_fix_batch_makes_an_embedder_batch_dynamic(tmp_path):
    source, out = tmp_path / "emb.onnx", tmp_path / "emb_fixed.onnx"
    onnx.save(tiny_embedder("flatten"), source)
    report = fix_batch(source, out)
    assert report.family == "embedder" and report.input_shape == ["N", 3, 32, 32]
    assert check_contamination(ort_infer(out), (3, 32, 32), BATCH).passed


# ---- refusals: one line, nothing written -------------------------------------------------


def refused(source: Path, out: Path, match: str, error=UserError, **kwargs) -> None:
    with pytest.raises(error, match=match) as caught:
        fix_batch(source, out, **kwargs)
    assert "\n" not in str(caught.value)
    assert not out.exists() and not list(out.parent.glob(f".{out.name}*")), "refusal left a file behind"


@pytest.mark.parametrize(("tail", "rewrite"), [("reshape_batch1", "target [1, -1] -> [0, -1]"),
                                             ("flatten_axis0", "axis 0 -> 1")])
def test_fix_batch_keeps_the_batch_in_a_baked_flatten(tmp_path, tail, rewrite):
    source, out = tmp_path / "emb.onnx", tmp_path / "emb_fixed.onnx"
    onnx.save(tiny_embedder(tail), source)
    report = fix_batch(source, out)
    assert any(rewrite in line for line in report.rewrites), report.rewrites
    assert report.max_abs_diff <= 1e-4 and report.frames_checked >= BATCH
    assert analyze_batch_layout(onnx.load(str(out))).batch_safe
    assert check_contamination(ort_infer(out), (3, 32, 32), BATCH).passed


def test_trained_batch_one_embedder_is_fixed_and_clean_on_both_runtimes(tmp_path):
    source = FIXTURES / "embedders" / "fr_feature.onnx"
    if not source.is_file():
        pytest.skip(f"trained embedder fixture absent at {source} (set FACEBENCH_FIXTURES)")
    out = tmp_path / "fr_fixed.onnx"
    report = fix_batch(source, out, verify_batch=BATCH)
    assert "Reshape 'Reshape_95': target [1, -1] -> [0, -1]" in report.rewrites
    assert report.input_shape == ["N", 3, 112, 112] and report.max_abs_diff <= 1e-4
    for infer in (ort_infer(out), openvino_infer(out, (8, 3, 112, 112))):
        assert check_contamination(infer, (3, 112, 112), 8).passed


@pytest.mark.parametrize(
    ("tail", "match"), [("transposed_reshape_batch1", "Reshape .* dim 0 is not the batch"),
                        ("reshape_vector", "Reshape .* merges the batch into one vector")]
)
def test_embedder_with_batch_baked_in_is_refused(tmp_path, tail, match):
    source = tmp_path / "emb.onnx"
    onnx.save(tiny_embedder(tail), source)
    refused(source, tmp_path / "out.onnx", match)


def test_bad_input_is_refused(models, tmp_path):
    out = tmp_path / "out.onnx"
    before = models["flattened"].read_bytes()
    with pytest.raises(UserError, match="OUT equals IN"):
        fix_batch(models["flattened"], models["flattened"].parent / "." / models["flattened"].name)
    assert models["flattened"].read_bytes() == before
    not_onnx = tmp_path / "notes.onnx"
    not_onnx.write_text("not a model")
    refused(not_onnx, out, "not a readable ONNX model", ModelFileError)
    refused(tmp_path / "missing.onnx", out, "no such model file", ModelFileError)
    refused(models["flattened"], out, "multiple of 32", input_size=300)

    two_outputs = tmp_path / "two.onnx"
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Sigmoid", ["x"], ["b"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 3, 8, 8]) for n in "ab"],
    )  # fmt: skip
    onnx.save(helper.make_model(graph), two_outputs)
    refused(two_outputs, out, "not a SCRFD detector or embedder fix-batch knows")


def test_unknown_output_path_is_refused(models, tmp_path):
    model = onnx.load(str(models["flattened"]))
    transpose = next(n for n in model.graph.node if n.op_type == "Transpose")
    transpose.attribute[0].CopyFrom(helper.make_attribute("perm", [3, 2, 0, 1]))
    source = tmp_path / "odd.onnx"
    onnx.save(model, source)
    refused(source, tmp_path / "out.onnx", r"unknown perm \[3, 2, 0, 1\]")
