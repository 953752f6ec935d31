"""Precision artifacts (fp16, int8 QDQ, simplified, OpenVINO IR) and accuracy parity.

Every artifact runs on ONNX Runtime CPU and OpenVINO CPU and is compared with the
ORT CPU FP32 run of the same FP32 model on the same frames.
"""
from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

ort = pytest.importorskip("onnxruntime")
ov = pytest.importorskip("openvino")
skdata = pytest.importorskip("skimage.data")

from bench.checks.parity import ParityGates, check_parity  # noqa: E402
from bench.models.arcface import build_arcface  # noqa: E402
from bench.models.precision import (  # noqa: E402
    INT8_RECIPES,
    PRECISIONS,
    RECIPE_ENV,
    calibration_frames,
    int8_recipe_for,
    images_in_folder,
    make_artifact,
    make_openvino_ir,
)
from bench.errors import UserError  # noqa: E402
from bench.models.scrfd import build_scrfd  # noqa: E402
from bench.face.decode import decode_scrfd  # noqa: E402
from tests.conftest import openvino_infer, ort_infer  # noqa: E402

REPLICA_DET_HW = (320, 320)
EMB_HW = (112, 112)
REAL_DET_HW = (640, 640)
# models.md 6.3: the top detection on the astronaut, in original-image pixels.
ASTRONAUT_BOX = np.array([180.1, 60.2, 271.6, 179.7])
ASTRONAUT_SCALE = 1.25


# --------------------------------------------------------------------------- helpers

def run_ort(path, x: np.ndarray) -> dict[str, np.ndarray]:
    return ort_infer(path)(x)


def run_openvino(path, x: np.ndarray) -> dict[str, np.ndarray]:
    return openvino_infer(path)(x)


RUNTIMES = {"ort-cpu": run_ort, "openvino-cpu": run_openvino}


def run_per_frame(run, path, frames: np.ndarray) -> dict[str, np.ndarray]:
    """For batch-1 files: run frame by frame and stack the outputs along the batch axis."""
    per_frame = [run(path, frames[i:i + 1]) for i in range(len(frames))]
    return {name: np.concatenate([outputs[name] for outputs in per_frame]) for name in per_frame[0]}


def perturbed(model: onnx.ModelProto, relative_noise: float, seed: int = 0) -> onnx.ModelProto:
    """A copy whose conv weights carry Gaussian noise of `relative_noise` x their std."""
    rng = np.random.default_rng(seed)
    damaged = onnx.ModelProto()
    damaged.CopyFrom(model)
    for init in damaged.graph.initializer:
        weights = numpy_helper.to_array(init)
        if weights.dtype == np.float32 and weights.ndim == 4:
            noise = rng.normal(0.0, relative_noise * weights.std(), weights.shape)
            init.CopyFrom(numpy_helper.from_array((weights + noise).astype(np.float32), init.name))
    return damaged


def astronaut_face() -> np.ndarray:
    return skdata.astronaut()[30:230, 130:330]  # roughly the face, as an embedder crop


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    return tmp_path_factory.mktemp("artifacts")


@pytest.fixture(scope="module")
def mbf(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "w600k_mbf.onnx"
    onnx.save(build_arcface("mbf"), str(path))
    frames = calibration_frames((1, 3, *EMB_HW), "embedder", 4, images=[astronaut_face(), skdata.astronaut()])
    return {"path": path, "family": "embedder", "hw": EMB_HW, "frames": frames,
            "calibration": calibration_frames((1, 3, *EMB_HW), "embedder", 16, seed=0),
            "reference": run_ort(path, frames)}


@pytest.fixture(scope="module")
def scrfd_replica(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "scrfd_500m_320.onnx"
    onnx.save(build_scrfd("500m", REPLICA_DET_HW[0]), str(path))
    frames = calibration_frames((1, 3, *REPLICA_DET_HW), "detector", 2, images=[skdata.astronaut()], seed=1)
    return {"path": path, "family": "detector", "hw": REPLICA_DET_HW, "frames": frames,
            "calibration": calibration_frames((1, 3, *REPLICA_DET_HW), "detector", 8, seed=0),
            "reference": run_ort(path, frames)}


@pytest.fixture
def real_scrfd(real_scrfd_path):
    frames = calibration_frames((1, 3, *REAL_DET_HW), "detector", 1, images=[skdata.astronaut()])
    return {"path": real_scrfd_path, "family": "detector", "hw": REAL_DET_HW, "frames": frames,
            "calibration": calibration_frames((1, 3, *REAL_DET_HW), "detector", 8, seed=0),
            "reference": run_ort(real_scrfd_path, frames)}


def artifact_for(model: dict, precision: str, cache) -> os.PathLike:
    calibration = model["calibration"] if precision == "int8" else None
    return make_artifact(model["path"], precision, cache, calibration_frames=calibration)


# --------------------------------------------------------------------------- calibration frames

def test_synthetic_frames_are_smooth_skin_toned_and_seeded():
    frames = calibration_frames((1, 3, 112, 112), "embedder", 4, seed=3)
    assert frames.shape == (4, 3, 112, 112) and frames.dtype == np.float32
    assert np.abs(frames).max() <= 1.0 + 1e-6  # (x - 127.5) / 127.5 of uint8 pixels
    # Structure, not white noise: neighbouring pixels are far closer than the spread.
    step = np.abs(np.diff(frames, axis=3)).mean()
    assert step < 0.2 * frames.std()
    # An aligned synthetic face: the cheek region (template-relative) is skin-toned, red-led.
    cheek = frames[:, :, 60:75, 30:40].mean(axis=(2, 3)) * 127.5 + 127.5
    assert np.all(cheek[:, 0] > cheek[:, 1]) and np.all(cheek[:, 1] > cheek[:, 2])
    np.testing.assert_array_equal(frames, calibration_frames((1, 3, 112, 112), "embedder", 4, seed=3))
    assert not np.array_equal(frames, calibration_frames((1, 3, 112, 112), "embedder", 4, seed=4))


def test_real_images_are_letterboxed_and_normalised_per_family(tmp_path):
    cat = skdata.chelsea()  # 300x451: wider than tall, so the detector canvas pads below
    det = calibration_frames((1, 3, 320, 320), "detector", 1, images=[cat])[0]
    new_h = int(320 * cat.shape[0] / cat.shape[1])
    np.testing.assert_allclose(det[:, new_h:, :], -127.5 / 128.0)  # zero canvas, normalised
    assert det[:, :new_h].std() > 0.1
    emb = calibration_frames((1, 3, 112, 112), "embedder", 1, images=[cat])[0]
    assert emb.min() >= -1.0 and emb.max() <= 1.0 and emb.std() > 0.1

    from skimage.io import imsave
    imsave(tmp_path / "astronaut.png", skdata.astronaut())
    from_folder = calibration_frames((1, 3, 320, 320), "detector", 3, images=images_in_folder(tmp_path))
    from_array = calibration_frames((1, 3, 320, 320), "detector", 3, images=[skdata.astronaut()])
    np.testing.assert_array_equal(from_folder, from_array)
    assert not np.array_equal(from_folder[0], from_folder[1])  # reuse beyond the set is augmented


def test_synthetic_detector_frames_hold_faces_the_real_detector_finds(real_scrfd_path):
    frames = calibration_frames((1, 3, *REAL_DET_HW), "detector", 4, seed=0)
    outputs = run_per_frame(run_ort, real_scrfd_path, frames)
    found = sum(len(decode_scrfd(outputs, REAL_DET_HW, frame=i)) for i in range(len(frames)))
    assert found >= 1


# --------------------------------------------------------------------------- artifacts

def test_artifacts_are_cached_by_source_settings_and_frames(mbf, artifacts):
    assert make_artifact(mbf["path"], "fp32", artifacts) == mbf["path"]
    fp16 = make_artifact(mbf["path"], "fp16", artifacts)
    stamp = fp16.stat().st_mtime_ns
    assert make_artifact(mbf["path"], "fp16", artifacts) == fp16 and fp16.stat().st_mtime_ns == stamp
    int8_a = artifact_for(mbf, "int8", artifacts)
    int8_b = make_artifact(mbf["path"], "int8", artifacts, calibration_frames=mbf["calibration"][:8])
    assert int8_a != int8_b  # other calibration frames, another artifact
    fp16.unlink()
    assert make_artifact(mbf["path"], "fp16", artifacts).is_file()  # rebuilt when missing


def int8_damaged_by_calibration(model: dict, cache) -> os.PathLike:
    """INT8 calibrated on frames 100x too large: the activation grid is too coarse to hold the signal."""
    return make_artifact(model["path"], "int8", cache, calibration_frames=model["calibration"] * 100.0)


def cosine_error(model: dict, outputs) -> float:
    return 1.0 - check_parity(model["reference"], outputs, "embedder", "int8", EMB_HW).cosine_min


def assert_verdict_follows_the_figure(result, gates=ParityGates()):
    """PARITY FAIL exactly when the deciding figure misses its gate (INT8 accuracy differs by CPU)."""
    if result.cosine_min is not None:
        assert result.passed == (result.cosine_min >= gates.limit("cosine_min", "int8"))
    if not result.passed:
        assert result.reason


def test_int8_without_frames_calibrates_on_synthetic_faces(mbf, artifacts):
    # Whatever this CPU's INT8 accuracy, a working recipe stays far closer to FP32 than a broken one.
    good = cosine_error(mbf, run_ort(make_artifact(mbf["path"], "int8", artifacts), mbf["frames"]))
    broken = cosine_error(mbf, run_ort(int8_damaged_by_calibration(mbf, artifacts), mbf["frames"]))
    assert good < broken / 5, (good, broken)


@pytest.mark.parametrize("recipe", INT8_RECIPES)
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_every_int8_recipe_stays_far_closer_to_fp32_than_a_broken_one(mbf, runtime, recipe, artifacts):
    good_path = make_artifact(mbf["path"], "int8", artifacts, calibration_frames=mbf["calibration"],
                              int8_recipe=INT8_RECIPES[recipe])
    result = check_parity(mbf["reference"], RUNTIMES[runtime](good_path, mbf["frames"]), "embedder", "int8", EMB_HW)
    assert_verdict_follows_the_figure(result)
    broken = cosine_error(mbf, RUNTIMES[runtime](int8_damaged_by_calibration(mbf, artifacts), mbf["frames"]))
    assert 1.0 - result.cosine_min < broken / 5, (result.cosine_min, broken)
    assert not check_parity(mbf["reference"], RUNTIMES[runtime](int8_damaged_by_calibration(mbf, artifacts),
                                                                  mbf["frames"]), "embedder", "int8", EMB_HW).passed


def test_fp16_keeps_fp32_io(mbf, artifacts):
    fp16 = onnx.load(str(make_artifact(mbf["path"], "fp16", artifacts)))
    io = list(fp16.graph.input) + list(fp16.graph.output)
    assert {v.type.tensor_type.elem_type for v in io} == {onnx.TensorProto.FLOAT}
    assert {i.data_type for i in fp16.graph.initializer} == {onnx.TensorProto.FLOAT16}


def _qdq_parts(path) -> tuple[list[np.ndarray], list[np.ndarray], onnx.ModelProto]:
    """(quantised conv weights, activation zero points, model) of an INT8 artifact."""
    model = onnx.load(str(path))
    values = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    dequantize = [n for n in model.graph.node if n.op_type == "DequantizeLinear"]
    weights = [values[n.input[0]] for n in dequantize if values.get(n.input[0], np.zeros(0)).ndim == 4]
    zero_points = [values[n.input[2]] for n in dequantize if len(n.input) > 2 and n.input[0] not in values]
    return weights, zero_points, model


def test_int8_recipes_make_what_they_promise(mbf, artifacts):
    paths = {name: make_artifact(mbf["path"], "int8", artifacts, calibration_frames=mbf["calibration"],
                                 int8_recipe=recipe) for name, recipe in INT8_RECIPES.items()}
    assert len(set(paths.values())) == len(paths)  # the recipe is part of the cache key
    weights, zero_points, model = _qdq_parts(paths["s8s8"])
    assert weights and zero_points
    assert all(z.dtype == np.int8 and not np.any(z) for z in zero_points)  # symmetric: TensorRT needs zero-point 0
    assert max(int(np.abs(w).max()) for w in weights) == 127  # full 8-bit weights
    assert any(w.shape[0] > 1 for w in weights)  # per-channel
    assert {o.domain for o in model.opset_import} <= {"", "ai.onnx"}
    weights, zero_points, _ = _qdq_parts(paths["u8s8-reduce-range"])
    assert all(z.dtype == np.uint8 for z in zero_points) and any(np.any(z) for z in zero_points)  # asymmetric u8
    assert max(int(np.abs(w).max()) for w in weights) <= 64  # 7-bit weights: VPMADDUBSW pair sums fit int16


def test_int8_recipe_follows_the_target():
    no_vnni = ("avx2", "fma", "f16c")
    assert int8_recipe_for("cpu", no_vnni, "x86_64").name == "u8s8-reduce-range"
    assert int8_recipe_for("cpu", no_vnni + ("avx512f",), "x86_64").name == "u8s8-reduce-range"
    for dot in ("avx512_vnni", "avx_vnni", "amx_int8"):
        assert int8_recipe_for("cpu", no_vnni + (dot,), "x86_64").name == "s8s8"
    assert int8_recipe_for("gpu", no_vnni, "x86_64").name == "s8s8"  # TensorRT: symmetric whatever the host
    assert int8_recipe_for("cpu", ("asimd",), "aarch64").name == "s8s8"


def test_int8_recipe_can_be_forced_and_a_wrong_name_is_refused(monkeypatch):
    monkeypatch.setenv(RECIPE_ENV, "s8s8")
    assert int8_recipe_for("cpu", ("avx2",), "x86_64").name == "s8s8"
    monkeypatch.setenv(RECIPE_ENV, "u9")
    with pytest.raises(UserError, match="u8s8-reduce-range"):
        int8_recipe_for("cpu", ("avx2",), "x86_64")


# INT8 accuracy depends on the CPU (tested above against broken artifacts); these gate the rest.
PRECISIONS_WITH_HOST_INDEPENDENT_GATES = [p for p in PRECISIONS if p != "int8"]


@pytest.mark.parametrize("precision", PRECISIONS_WITH_HOST_INDEPENDENT_GATES)
@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("model_name", ["mbf", "scrfd_replica"])
def test_artifacts_run_and_pass_parity(model_name, runtime, precision, artifacts, request):
    if precision == "bf16" and runtime == "ort-cpu":
        pytest.skip("ONNX Runtime's CPU provider has no BF16 convolutions (the bf16 artifact is TensorRT's)")
    model = request.getfixturevalue(model_name)
    path = artifact_for(model, precision, artifacts)
    outputs = RUNTIMES[runtime](path, model["frames"])
    result = check_parity(model["reference"], outputs, model["family"], precision, model["hw"])
    assert result.passed, result.reason
    if precision in ("fp32", "simplified"):  # same numbers, only another kernel order
        assert all(o.rel_l2 < 1e-5 for o in result.outputs)
        if runtime == "ort-cpu":
            assert all(o.max_abs == 0.0 for o in result.outputs)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_replica_detector_int8_runs_and_is_far_closer_than_a_broken_one(scrfd_replica, runtime, artifacts):
    def worst_rel_l2(path):
        outputs = RUNTIMES[runtime](path, scrfd_replica["frames"])
        result = check_parity(scrfd_replica["reference"], outputs, "detector", "int8", REPLICA_DET_HW)
        return max(o.rel_l2 for o in result.outputs)

    good = worst_rel_l2(artifact_for(scrfd_replica, "int8", artifacts))
    broken = worst_rel_l2(int8_damaged_by_calibration(scrfd_replica, artifacts))
    assert good < broken / 3, (good, broken)


@pytest.mark.parametrize("model_name", ["mbf", "scrfd_replica"])
def test_openvino_ir_passes_parity(model_name, artifacts, request):
    model = request.getfixturevalue(model_name)
    xml = make_openvino_ir(model["path"], artifacts)
    assert xml.suffix == ".xml" and xml.with_suffix(".bin").is_file()
    assert make_openvino_ir(model["path"], artifacts) == xml  # cached
    result = check_parity(model["reference"], run_openvino(xml, model["frames"]), model["family"],
                          "openvino_ir", model["hw"])
    assert result.passed, result.reason
    assert all(o.rel_l2 < 1e-5 for o in result.outputs)


def test_fp32_parity_is_exact_within_float_tolerance(mbf):
    same = check_parity(mbf["reference"], run_ort(mbf["path"], mbf["frames"]), "embedder", "fp32", EMB_HW)
    assert same.passed and same.cosine_min == pytest.approx(1.0, abs=1e-12)
    assert same.norm_ratio == pytest.approx(1.0, abs=1e-12)
    openvino_outputs = run_openvino(mbf["path"], mbf["frames"])
    openvino = check_parity(mbf["reference"], openvino_outputs, "embedder", "fp32", EMB_HW)
    assert openvino.cosine_min > 1 - 1e-6 and openvino.norm_ratio == pytest.approx(1.0, abs=1e-5)
    assert openvino.outputs[0].min_atol == openvino.outputs[0].max_abs < 1e-4


# --------------------------------------------------------------------------- damaged artifacts fail

@pytest.mark.parametrize("runtime", RUNTIMES)
def test_gates_fail_a_damaged_embedder(mbf, runtime, tmp_path):
    damaged = tmp_path / "damaged.onnx"
    onnx.save(perturbed(onnx.load(str(mbf["path"])), 0.1), str(damaged))
    outputs = RUNTIMES[runtime](damaged, mbf["frames"])
    for precision in ("fp32", "fp16", "int8"):
        result = check_parity(mbf["reference"], outputs, "embedder", precision, EMB_HW)
        assert not result.passed and "cosine" in result.reason


def test_gates_fail_a_damaged_replica_detector_on_raw_outputs(scrfd_replica, tmp_path):
    damaged = tmp_path / "damaged.onnx"
    onnx.save(perturbed(onnx.load(str(scrfd_replica["path"])), 0.1), str(damaged))
    result = check_parity(scrfd_replica["reference"], run_ort(damaged, scrfd_replica["frames"]),
                          "detector", "int8", REPLICA_DET_HW)
    assert result.det_recall is None  # random weights find no face: recall is undefined
    assert not result.passed and "relative L2" in result.reason


def test_gates_fail_a_damaged_real_detector(real_scrfd, tmp_path):
    damaged = tmp_path / "damaged.onnx"
    onnx.save(perturbed(onnx.load(str(real_scrfd["path"])), 0.1), str(damaged))
    result = check_parity(real_scrfd["reference"], run_ort(damaged, real_scrfd["frames"]),
                          "detector", "int8", REAL_DET_HW)
    assert not result.passed and "recall" in result.reason


# --------------------------------------------------------------------------- real detector parity

def test_reference_finds_the_astronaut(real_scrfd):
    detections = decode_scrfd(real_scrfd["reference"], REAL_DET_HW)
    assert len(detections) == 1
    np.testing.assert_allclose(detections.boxes[0] / ASTRONAUT_SCALE, ASTRONAUT_BOX, atol=0.5)


@pytest.mark.parametrize("precision", ["fp16", "simplified"])
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_real_detector_parity_on_the_astronaut(real_scrfd, runtime, precision, artifacts):
    path = artifact_for(real_scrfd, precision, artifacts)
    outputs = RUNTIMES[runtime](path, real_scrfd["frames"])
    result = check_parity(real_scrfd["reference"], outputs, "detector", precision, REAL_DET_HW)
    assert result.passed, result.reason
    assert result.det_recall == 1.0 and result.det_precision == 1.0
    assert result.landmark_err_px is not None


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_real_detector_int8_keeps_the_astronaut_where_damage_loses_it(real_scrfd, runtime, artifacts, tmp_path):
    # The landmark gate (2.5 px) is CPU-dependent for INT8; finding the one face is not.
    result = check_parity(real_scrfd["reference"], RUNTIMES[runtime](artifact_for(real_scrfd, "int8", artifacts),
                                                                     real_scrfd["frames"]),
                          "detector", "int8", REAL_DET_HW)
    assert result.det_recall == 1.0 and result.det_precision == 1.0
    assert result.passed == (result.landmark_err_px <= ParityGates().limit("landmark_err_max_px", "int8"))
    damaged = tmp_path / "damaged.onnx"
    onnx.save(perturbed(onnx.load(str(real_scrfd["path"])), 0.1), str(damaged))
    lost = check_parity(real_scrfd["reference"], RUNTIMES[runtime](damaged, real_scrfd["frames"]),
                        "detector", "int8", REAL_DET_HW)
    assert lost.det_recall == 0.0 and not lost.passed


def test_real_detector_openvino_ir_parity(real_scrfd, artifacts):
    xml = make_openvino_ir(real_scrfd["path"], artifacts)
    result = check_parity(real_scrfd["reference"], run_openvino(xml, real_scrfd["frames"]), "detector",
                          "openvino_ir", REAL_DET_HW)
    assert result.passed and result.det_recall == 1.0 and result.landmark_err_px < 0.01


# --------------------------------------------------------------------------- check_parity itself

def test_gates_are_configurable(mbf, artifacts):
    outputs = run_ort(make_artifact(mbf["path"], "fp16", artifacts), mbf["frames"])
    assert check_parity(mbf["reference"], outputs, "embedder", "fp16", EMB_HW).passed
    strict = ParityGates(cosine_min={"fp16": 1.0})
    assert not check_parity(mbf["reference"], outputs, "embedder", "fp16", EMB_HW, gates=strict).passed
    ungated = ParityGates(cosine_min={})
    damaged = {name: o + 1.0 for name, o in outputs.items()}
    assert check_parity(mbf["reference"], damaged, "embedder", "fp16", EMB_HW, gates=ungated).passed


def test_broken_outputs_fail_with_a_reason(mbf):
    reference = mbf["reference"]
    (name, embeddings), = reference.items()
    nan = {name: np.full_like(embeddings, np.nan)}
    assert "NaN" in check_parity(reference, nan, "embedder", "fp16", EMB_HW).reason
    short = {name: embeddings[:1]}
    assert "shape" in check_parity(reference, short, "embedder", "fp16", EMB_HW).reason
    extra = {name: embeddings, "extra": embeddings}
    assert "outputs" in check_parity(reference, extra, "embedder", "fp16", EMB_HW).reason
    renamed = {"other": embeddings}
    assert f"output {name!r}: missing from the candidate" in check_parity(reference, renamed, "embedder", "fp16",
                                                                          EMB_HW).reason


def test_polygraphy_tolerances_per_output():
    reference = {"fc1": np.array([[1.0, -2.0, 0.5, 0.0]], np.float32)}
    candidate = {"fc1": np.array([[1.1, -2.0, 0.5, 0.01]], np.float32)}
    error = check_parity(reference, candidate, "embedder", "int8", (1, 4)).outputs[0]
    assert error.max_abs == pytest.approx(0.1, rel=1e-5) and error.min_atol == error.max_abs
    assert error.min_rtol == error.max_rel > 1e10  # 0.01 against an exact 0 reference


# --------------------------------------------------------------------------- INT8 on a CPU without VNNI

def test_int8_on_a_cpu_without_vnni_takes_its_recipe_and_names_the_cause_of_a_failure(tmp_path, monkeypatch):
    # As an AVX2-only host would see it (inline, so the patched fingerprint reaches the worker);
    # a strict gate makes the INT8 point fail whatever the kernels do.
    from bench import store
    from bench.cli import main

    monkeypatch.setattr("bench.env.cpu_features", lambda info=None: ("avx2", "fma", "f16c"))
    monkeypatch.setattr("bench.models.precision.platform.machine", lambda: "x86_64")
    suite = tmp_path / "int8.toml"
    suite.write_text('name = "int8"\nruntimes = ["ort-cpu"]\nprecisions = ["int8"]\nbatches = [1]\n'
                     '[[models]]\nname = "arcface_mbf"\n'
                     '[measure]\nwarmup_s = 0.05\nwindow_s = 0.1\nmax_windows = 4\n'
                     '[checks]\npeak_probes = false\n[parity_gates.cosine_min]\nint8 = 0.999999\n')
    out = tmp_path / "int8.parquet"
    assert main(["run", str(suite), "--out", str(out), "--inline"]) == 0
    (row,) = store.read_rows(out)
    assert row["int8_recipe"] == "u8s8-reduce-range" and row["parity_passed"] is False
    assert "no VNNI: INT8 loses accuracy to saturation on this CPU (recipe u8s8-reduce-range)" in row["parity_summary"]
