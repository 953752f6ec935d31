"""Trained weights and real faces (issue 28): the group photo through the pipeline, as insightface
finds it, and precision judged by whether identities survive.

Real files: ../shared/fixtures/det_500m.onnx (SCRFD-500M) and embedders/fr_feature.onnx (a trained
batch-1 embedder, fixed here with fix-batch); real photos from installed packages: insightface's
t1.jpg (six faces), scikit-image's astronaut and camera. Skipped with the reason where absent.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import pytest

from bench import store
from bench.checks.identities import VARIANTS, face_set, identity_figures, load_faces
from bench.checks.parity import check_parity
from bench.cli import main
from bench.models.batchfix import fix_batch
from tests.conftest import FIXTURES, ort_infer, tiny_suite

cv2 = pytest.importorskip("cv2")
ort = pytest.importorskip("onnxruntime")
skdata = pytest.importorskip("skimage.data")

DET_500M = FIXTURES / "det_500m.onnx"
FR_FEATURE = FIXTURES / "embedders" / "fr_feature.onnx"
EMB = 512


# ---------------------------------------------------------------- identities, on made-up embeddings


def embeddings_in_face_set_order(faces: int, spread: float, seed: int = 0) -> np.ndarray:
    """Orthogonal-ish originals, each followed (in FaceSet order) by variants `spread` away."""
    rng = np.random.default_rng(seed)
    originals = rng.standard_normal((faces, EMB))
    variants = np.repeat(originals, len(VARIANTS), axis=0) + spread * rng.standard_normal((faces * len(VARIANTS), EMB))
    return np.concatenate([originals, variants]).astype(np.float32)


def test_identity_figures_count_matches_and_margins():
    embeddings = embeddings_in_face_set_order(5, spread=0.3)
    figures = identity_figures(embeddings, 5)
    assert figures.rank1 == 1.0 and figures.margin_min > 0.5
    swapped = embeddings.copy()
    swapped[5] = embeddings[1]  # face 0's first variant now looks exactly like face 1
    worse = identity_figures(swapped, 5)
    assert worse.matched.sum() == 19 and not worse.matched[0]
    assert worse.margin_min < 0 and worse.rank1 == pytest.approx(19 / 20)


def test_parity_fails_a_precision_that_loses_a_match_fp32_keeps():
    reference = embeddings_in_face_set_order(4, spread=0.3)
    candidate = reference.copy()
    candidate[4 + 2] = reference[3]  # face 0's third variant drifts onto face 3: cosine elsewhere stays high
    kept = check_parity({"fc1": reference}, {"fc1": reference + 1e-4}, "embedder", "fp16", (112, 112),
                        identity_faces=4)
    lost = check_parity({"fc1": reference}, {"fc1": candidate}, "embedder", "int8", (112, 112), identity_faces=4)
    assert kept.passed and kept.identity_lost == 0 and kept.identity_rank1 == 1.0
    assert not lost.passed and lost.identity_lost == 1 and lost.identity_ref_rank1 == 1.0
    assert "real-face match(es) that FP32 keeps lost" in lost.reason
    assert lost.deciding.metric == "identity_lost_max"
    no_faces = check_parity({"fc1": reference}, {"fc1": reference}, "embedder", "fp32", (112, 112))
    assert no_faces.identity_rank1 is None and no_faces.cosine_median == pytest.approx(1.0)


def test_variants_are_deterministic_and_each_changes_the_face():
    face = skdata.astronaut()[40:152, 170:282]
    first, again = face_set([face]), face_set([face])
    assert first.crops.shape == (1 + len(VARIANTS), 112, 112, 3) and np.array_equal(first.crops, again.crops)
    for variant in first.crops[1:]:
        assert np.abs(variant.astype(int) - face).mean() > 1


# ---------------------------------------------------------------- the real files


@pytest.fixture(scope="module")
def real_files(tmp_path_factory) -> dict[str, Path]:
    for path in (DET_500M, FR_FEATURE):
        if not path.is_file():
            pytest.skip(f"real {path.name} absent at {path} (set FACEBENCH_FIXTURES)")
    folder = tmp_path_factory.mktemp("real")
    fixed = folder / "fr_fixed.onnx"
    fix_batch(FR_FEATURE, fixed, verify_batch=2)
    return {"det": DET_500M, "rec": fixed}


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    insightface_images = pytest.importorskip("insightface").__file__
    t1 = Path(insightface_images).parent / "data" / "images" / "t1.jpg"
    if not t1.is_file():
        pytest.skip(f"insightface's t1.jpg absent at {t1}")
    folder = tmp_path_factory.mktemp("photos")
    (folder / "t1.jpg").write_bytes(t1.read_bytes())
    cv2.imwrite(str(folder / "astronaut.png"), cv2.cvtColor(skdata.astronaut(), cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(folder / "camera.png"), skdata.camera())
    return folder


@pytest.fixture(scope="module")
def pipeline_run(real_files, photos, tmp_path_factory) -> dict[str, Path]:
    """facebench pipeline, real detector and trained embedder at embedder batch 8, crops and faces saved."""
    folder = tmp_path_factory.mktemp("pipeline")
    paths = {"results": folder / "results.parquet", "faces": folder / "faces.parquet", "crops": folder / "crops"}
    code = main(["pipeline", "--images", str(photos), "--det", str(real_files["det"]), "--rec",
                 str(real_files["rec"]), "--runtime", "ort-cpu", "--rec-batch", "8", "--repeats", "1",
                 "--out", str(paths["results"]), "--save-detections", str(paths["faces"]), "--save-embeddings",
                 "--save-crops", str(paths["crops"])])
    assert code == 0
    return paths


def test_the_pipeline_finds_t1s_faces_as_insightface_does(pipeline_run, photos):
    from tests.test_pipeline_output import BOX_PX, LANDMARK_COLUMNS, SCORE_TOL, insightface_scrfd

    detector = insightface_scrfd.SCRFD(str(DET_500M))
    detector.prepare(-1, nms_thresh=0.4)
    dets, kps = detector.detect(cv2.imread(str(photos / "t1.jpg")), input_size=(640, 640), det_thresh=0.5)
    faces = pd.read_parquet(pipeline_run["faces"])
    ours = faces[faces["source"].str.endswith("t1.jpg")]
    assert len(ours) == len(dets) == 6
    row = store.read_rows(pipeline_run["results"])[0]
    assert row["status"] == "ok" and row["faces_total"] == len(faces) == 8  # t1 6, astronaut 1, camera 1
    for _, face in ours.iterrows():
        box = face[["x1", "y1", "x2", "y2"]].to_numpy(float)
        j = int(np.argmin(np.abs(dets[:, :4] - box).max(axis=1)))
        assert np.abs(dets[j, :4] - box).max() <= BOX_PX
        assert np.abs(kps[j] - face[LANDMARK_COLUMNS].to_numpy(float).reshape(5, 2)).max() <= BOX_PX
        assert abs(dets[j, 4] - face["score"]) <= SCORE_TOL


def test_saved_crops_are_the_faces_and_the_trained_embedder_tells_them_apart(pipeline_run, real_files):
    crops = sorted(pipeline_run["crops"].glob("*.png"))
    assert len(crops) == 8 and all(p.name.endswith(("-0.png", "-1.png", "-2.png", "-3.png", "-4.png", "-5.png"))
                                   for p in crops)
    faces = load_faces([str(p) for p in crops], (112, 112))
    found = face_set(faces)
    session = ort.InferenceSession(str(real_files["rec"]), providers=["CPUExecutionProvider"])
    blob = ((found.crops.astype(np.float32) - 127.5) / 127.5).transpose(0, 3, 1, 2)
    figures = identity_figures(session.run(None, {"input": blob})[0], found.faces)
    assert figures.rank1 == 1.0 and figures.margin_min > 0.3  # 0.585 measured: fixtures/README says 0.586


def damaged(path: Path, out: Path, noise: float) -> Path:
    from tests.test_precision import perturbed

    onnx.save(perturbed(onnx.load(str(path)), noise), out)
    return out


def test_run_carries_identities_and_a_damaged_embedder_fails_the_gate(pipeline_run, real_files, tmp_path):
    """`run --images CROPS`: the row's identity columns on the real faces; the same figures on a copy
    with 10% weight noise lose matches FP32 keeps."""
    suite = tmp_path / "faces.toml"
    suite.write_text(tiny_suite("faces", [1], model="x", checks="parity = true").replace(
        'name = "x"', f'path = "{real_files["rec"]}"'))
    out = tmp_path / "faces.parquet"
    assert main(["run", str(suite), "--images", str(pipeline_run["crops"]), "--out", str(out)]) == 0
    (row,) = store.read_rows(out)
    assert row["parity_passed"] and row["parity_identity_faces"] == 8
    assert row["parity_identity_rank1"] == 1.0 and row["parity_identity_lost"] == 0
    assert row["parity_identity_margin_min"] > 0.3

    faces = load_faces([str(p) for p in sorted(pipeline_run["crops"].glob("*.png"))], (112, 112))
    found = face_set(faces)
    blob = ((found.crops.astype(np.float32) - 127.5) / 127.5).transpose(0, 3, 1, 2)
    run = lambda path: ort_infer(path)(blob)  # noqa: E731
    reference = run(real_files["rec"])

    def noisy(noise: float):  # judged by the loosest (INT8) gates
        candidate = run(damaged(real_files["rec"], tmp_path / f"noisy-{noise}.onnx", noise))
        return check_parity(reference, candidate, "embedder", "int8", (112, 112), identity_faces=found.faces)

    tenth = noisy(0.10)  # measured: cosine min 0.62, margin 0.585 -> 0.35, every match kept
    assert not tenth.passed and "smallest real-face margin" in tenth.reason and "cosine min" in tenth.reason
    fifth = noisy(0.20)  # measured: two matches lost
    assert not fifth.passed and fifth.identity_lost >= 1 and "FP32 keeps lost" in fifth.reason


def test_detector_precisions_keep_t1s_faces(real_files, photos, tmp_path):
    """FP16 and INT8 (this host's recipe) of the real detector on t1.jpg's six faces, against FP32."""
    from bench.checks import point_checks
    from bench.models import zoo
    from bench.models.precision import calibration_frames, make_artifact
    from bench.suite import parse_model_arg

    info = zoo.resolve(parse_model_arg(str(real_files["det"])))
    t1 = (str(photos / "t1.jpg"),)
    frames, faces = point_checks.parity_frames(info, t1)
    assert faces is None  # identities are for embedders
    calibration = calibration_frames(info.input_shape(1), "detector", 8, images=list(t1))
    for precision in ("fp16", "int8"):
        artifact = make_artifact(info.path, precision, tmp_path, calibration_frames=calibration)
        result = point_checks.parity_check(ort_infer(artifact), info, 1, precision, frames[:1])
        assert result.passed, result.summary()
        assert result.ref_detections == 6 and result.det_recall == 1.0 and result.det_precision == 1.0
        assert result.box_err_max_px < (0.5 if precision == "fp16" else 4.0)
