"""What `facebench pipeline` found, as data and pictures, checked against insightface's own SCRFD.

insightface 2.1 is the reference (locks/reference.txt): its SCRFD class is what the model packs
were made for. Everything runs for real: ONNX Runtime sessions, Parquet/JSON/PNG files read back.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from bench import store
from bench.cli import main
from bench.domain import DEFAULT_INPUT_FORMAT, input_format
from bench.models import zoo
from bench.pipeline import bench as pipeline_bench
from bench.pipeline import outputs
from bench.face.align import ALIGNED_SIZE
from bench.pipeline.run import run_pipeline, synthetic_detections
from bench.runtimes.registry import get_runtime
from bench.suite import parse_model_arg
from tests.conftest import FIXTURES, constant_embedder

cv2 = pytest.importorskip("cv2")
pytest.importorskip("onnxruntime")
skdata = pytest.importorskip("skimage.data")
insightface_scrfd = pytest.importorskip("insightface.model_zoo.scrfd",
                                        reason="insightface absent: make test installs locks/reference.txt")

DET_500M = FIXTURES / "det_500m.onnx"  # the model packs' form of the real SCRFD-500M
BOX_PX, SCORE_TOL = 1.0, 0.01  # the agreement: boxes and landmarks within 1 px, scores within 0.01
LANDMARK_COLUMNS = [f"{name}_{axis}" for name in outputs.LANDMARKS for axis in "xy"]
# insightface's norm_crop calls skimage's deprecated SimilarityTransform.estimate.
pytestmark = pytest.mark.filterwarnings("ignore:`estimate` is deprecated:FutureWarning")


@pytest.fixture
def det_500m():
    if not DET_500M.is_file():
        pytest.skip(f"real det_500m.onnx absent at {DET_500M} (set FACEBENCH_FIXTURES)")
    return DET_500M


@pytest.fixture
def astronaut_folder(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    cv2.imwrite(str(folder / "astronaut.png"), cv2.cvtColor(skdata.astronaut(), cv2.COLOR_RGB2BGR))
    return folder


def insightface_detect(model_path, size: int, threshold: float, nms: float):
    """insightface's SCRFD on the astronaut (it takes BGR, as cv2.imread gives): (boxes, scores, kps)."""
    detector = insightface_scrfd.SCRFD(str(model_path))
    detector.prepare(-1, nms_thresh=nms)  # ctx -1: the CPU provider
    dets, kps = detector.detect(cv2.cvtColor(skdata.astronaut(), cv2.COLOR_RGB2BGR), input_size=(size, size),
                                det_thresh=threshold)
    return dets[:, :4], dets[:, 4], kps


def facebench_detect(info, threshold: float, nms: float):
    """facebench's pipeline (ORT CPU session, letterbox, decode, NMS) on the astronaut: (boxes, scores, kps)."""
    session = pipeline_bench.load_session(get_runtime("ort-cpu"), info, 1, input_format(DEFAULT_INPUT_FORMAT))
    try:
        result = run_pipeline([skdata.astronaut()], session.infer, constant_embedder,
                              det_size=info.input_hw[0], batch=1, overlap=False, keep_all=True,
                              score_threshold=threshold, nms_threshold=nms)
    finally:
        session.close()
    found = result.detections[0]
    return found.boxes, found.scores, found.kps


def unmatched(ours, theirs, above: float, score_tol: float) -> list[int]:
    """Indices of our faces scoring >= above with no face of theirs within BOX_PX (box and landmarks)
    and score_tol. `theirs` was decoded at a slightly lower threshold, so float noise at the cut-off
    cannot make a face vanish from one side only."""
    boxes, scores, kps = ours
    missing = []
    for i in np.flatnonzero(scores >= above):
        box_err = np.abs(theirs[0] - boxes[i]).max(axis=1)
        j = int(np.argmin(box_err))
        ok = (box_err[j] <= BOX_PX and abs(theirs[1][j] - scores[i]) <= score_tol
              and np.abs(theirs[2][j] - kps[i]).max() <= BOX_PX)
        if not ok:
            missing.append(int(i))
    return missing


def assert_same_faces(fb, ref, threshold: float, margin: float, score_tol: float) -> None:
    assert not unmatched(fb, ref, threshold + margin, score_tol), "facebench found faces insightface did not"
    assert not unmatched(ref, fb, threshold + margin, score_tol), "insightface found faces facebench did not"


# ---------------------------------------------------------------- the real file, through the command


@pytest.fixture
def real_run(det_500m, astronaut_folder, tmp_path):
    """facebench pipeline on the real det_500m with every output asked for."""
    paths = {"results": tmp_path / "results.parquet", "detections": tmp_path / "faces.parquet",
             "annotated": tmp_path / "annotated"}
    code = main(["pipeline", "--images", str(astronaut_folder), "--det", str(det_500m), "--rec", "arcface_mbf",
                 "--runtime", "ort-cpu", "--repeats", "1", "--out", str(paths["results"]),
                 "--save-detections", str(paths["detections"]), "--save-embeddings",
                 "--save-annotated", str(paths["annotated"])])
    assert code == 0
    return paths


def test_saved_detections_match_insightface_on_the_real_file(real_run, det_500m):
    faces = pd.read_parquet(real_run["detections"])
    ref_boxes, ref_scores, ref_kps = insightface_detect(det_500m, 640, threshold=0.5, nms=0.4)
    assert len(faces) == len(ref_scores) == 1  # the astronaut, at the fixtures' reference box
    face = faces.iloc[0]
    box = face[["x1", "y1", "x2", "y2"]].to_numpy(float)
    landmarks = face[LANDMARK_COLUMNS].to_numpy(float).reshape(5, 2)
    assert np.abs(box - ref_boxes[0]).max() <= BOX_PX
    assert np.abs(landmarks - ref_kps[0]).max() <= BOX_PX
    assert abs(face["score"] - ref_scores[0]) <= SCORE_TOL
    assert np.abs(box - [180.1, 60.2, 271.6, 179.7]).max() < 0.1  # fixtures/README.md
    assert face["source"].endswith("astronaut.png") and (face["frame"], face["face"]) == (0, 0)
    assert (face["runtime"], face["precision"], face["detector"], face["embedder"], face["fixed_box"]) == \
        ("ort-cpu", "fp32", "det_500m", "arcface_mbf", False)
    # The row ties back to the benchmark row saved before the output pass.
    row = store.read_rows(real_run["results"])[0]
    assert (row["status"], row["run_id"]) == ("ok", face["run_id"])


def test_the_embedding_norm_is_that_of_insightfaces_aligned_crop(real_run):
    """The saved norm and embedding are the embedder's output on the crop insightface's norm_crop makes."""
    import onnxruntime as ort
    from insightface.utils.face_align import norm_crop

    face = pd.read_parquet(real_run["detections"]).iloc[0]
    crop = norm_crop(skdata.astronaut(), face[LANDMARK_COLUMNS].to_numpy(np.float32).reshape(5, 2))
    embedder = ort.InferenceSession(zoo.build_cached("arcface_mbf").path, providers=["CPUExecutionProvider"])
    blob = ((crop.astype(np.float32) - 127.5) / 127.5).transpose(2, 0, 1)[None]
    raw = embedder.run(None, {embedder.get_inputs()[0].name: blob})[0][0]
    saved = np.asarray(face["embedding"], np.float32)
    assert face["embedding_norm"] == pytest.approx(float(np.linalg.norm(raw)), rel=0.01)
    assert np.linalg.norm(saved) == pytest.approx(1, abs=1e-5)
    assert float(saved @ raw) / np.linalg.norm(raw) > 0.999  # same direction: cosine similarity


def test_annotated_pictures_show_the_face_and_its_crop(real_run):
    from insightface.utils.face_align import norm_crop

    folder = real_run["annotated"]
    assert sorted(p.name for p in folder.iterdir()) == ["0000-astronaut.png", "crops-000.png"]
    picture = cv2.cvtColor(cv2.imread(str(folder / "0000-astronaut.png")), cv2.COLOR_BGR2RGB)
    original = skdata.astronaut()
    assert picture.shape == original.shape
    face = pd.read_parquet(real_run["detections"]).iloc[0]
    x1, y1, x2, y2 = (int(round(face[k])) for k in ("x1", "y1", "x2", "y2"))
    changed = np.any(picture != original, axis=2)
    assert changed[y1:y2 + 1, x1].all() and changed[y2, x1:x2 + 1].all()  # the box's left and bottom edges
    assert not changed[300:, :].any()  # nothing drawn where there is no face
    sheet = cv2.cvtColor(cv2.imread(str(folder / "crops-000.png")), cv2.COLOR_BGR2RGB)
    assert sheet.shape == (ALIGNED_SIZE + 2, ALIGNED_SIZE + 2, 3)
    crop = sheet[1:1 + ALIGNED_SIZE, 1:1 + ALIGNED_SIZE]
    reference = norm_crop(original, face[LANDMARK_COLUMNS].to_numpy(np.float32).reshape(5, 2))
    below_label = np.s_[20:]  # the top rows carry the frame#face label
    assert np.abs(crop[below_label].astype(int) - reference[below_label]).max() <= 2


# ---------------------------------------------------------------- candidates, without the command


def test_real_file_at_a_lowered_threshold_matches_insightface(det_500m):
    """Many weak detections after NMS: the decode, the mapping back and NMS agree face for face."""
    info = zoo.resolve(parse_model_arg(str(det_500m)))
    fb = facebench_detect(info, threshold=0.05 - 1e-3, nms=0.4)
    ref = insightface_detect(det_500m, 640, threshold=0.05 - 1e-3, nms=0.4)
    assert (fb[1] >= 0.05).sum() >= 5
    assert_same_faces(fb, ref, 0.05, margin=0.0, score_tol=SCORE_TOL)


@pytest.mark.parametrize("size", [320, 640])
def test_pack_replica_candidates_match_insightface(size):
    """The replicas' random weights score every anchor near 0.01, so 0.011 keeps the top ~1% of the
    raw candidates; NMS is off on both sides (threshold 1.0) and scores must agree to 1e-4."""
    info = zoo.build_cached("scrfd_500m", size, export="pack")
    threshold, margin = 0.011, 1e-4
    fb = facebench_detect(info, threshold=threshold - margin, nms=1.0)
    ref = insightface_detect(info.path, size, threshold=threshold - margin, nms=1.0)
    assert (fb[1] >= threshold).sum() >= 20
    assert_same_faces(fb, ref, threshold, margin=margin, score_tol=1e-4)


def test_matching_notices_a_face_that_moved_by_more_than_a_pixel():
    boxes = np.array([[10, 10, 50, 50]], np.float32)
    kps = np.full((1, 5, 2), 30, np.float32)
    face = (boxes, np.array([0.9], np.float32), kps)
    assert unmatched(face, face, 0.5, SCORE_TOL) == []
    assert unmatched(face, (boxes + [1.5, 0, 0, 0], face[1], kps), 0.5, SCORE_TOL) == [0]
    assert unmatched(face, (boxes, face[1], kps + 1.5), 0.5, SCORE_TOL) == [0]
    assert unmatched(face, (boxes, face[1] - 0.02, kps), 0.5, SCORE_TOL) == [0]


# ---------------------------------------------------------------- JSON, synthetic frames


def test_synthetic_run_saves_json_rows_and_four_pictures(tmp_path):
    frames, faces_per_frame = 6, 2
    detections, folder = tmp_path / "faces.json", tmp_path / "annotated"
    code = main(["pipeline", "--synthetic", str(frames), "--det", "scrfd_500m@320", "--rec", "arcface_mbf",
                 "--runtime", "ort-cpu", "--batch", "4", "--faces-per-frame", str(faces_per_frame), "--repeats", "1",
                 "--out", str(tmp_path / "r.parquet"), "--save-detections", str(detections),
                 "--save-annotated", str(folder)])
    assert code == 0
    rows = json.loads(detections.read_text())
    assert len(rows) == frames * faces_per_frame
    assert [(r["frame"], r["face"]) for r in rows] == [(f, k) for f in range(frames) for k in range(faces_per_frame)]
    assert list(rows[0]) == list(outputs.column_types(False))  # no embedding column unless asked
    fixed = synthetic_detections((720, 1280), faces_per_frame)
    np.testing.assert_allclose([[r[k] for k in ("x1", "y1", "x2", "y2")] for r in rows[:2]], fixed.boxes, atol=1e-3)
    assert all(r["fixed_box"] and r["source"] == "synthetic" and r["embedding_norm"] > 0 for r in rows)
    # Synthetic frames repeat a pool of 4 pictures: those 4 are drawn, and their 8 crops on one sheet.
    names = sorted(p.name for p in folder.iterdir())
    assert names == [f"{i:04d}-synthetic.png" for i in range(4)] + ["crops-000.png"]
    sheet = cv2.imread(str(folder / "crops-000.png"))
    assert sheet.shape == (ALIGNED_SIZE + 2, 4 * faces_per_frame * (ALIGNED_SIZE + 2), 3)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("case,args,message", [
    ("csv", ["--save-detections", "{tmp}/faces.csv"], "name the file .parquet or .json"),
    ("detections under a file", ["--save-detections", "{tmp}/file.txt/faces.parquet"], "cannot write in"),
    ("annotated under a file", ["--save-annotated", "{tmp}/file.txt/pictures"], "cannot write in"),
    ("annotated into the images", ["--save-annotated", "{tmp}/images"], "is the --images folder"),
    ("embeddings alone", ["--save-embeddings"], "--save-detections FILE"),
    ("detections over the results", ["--out", "{tmp}/same.parquet", "--save-detections", "{tmp}/same.parquet"],
     "also the --out results file"),
])
def test_unwritable_outputs_are_refused_before_the_benchmark(case, args, message, tmp_path, capsys):
    (tmp_path / "file.txt").write_text("a file, not a folder")
    (tmp_path / "images").mkdir()
    cv2.imwrite(str(tmp_path / "images" / "grey.png"), np.full((64, 64, 3), 128, np.uint8))
    out = tmp_path / "results"
    code = main(["pipeline", "--images", str(tmp_path / "images"), "--det", "scrfd_500m@320", "--rec",
                 "arcface_mbf", "--runtime", "ort-cpu", "--out", str(out),
                 *(a.replace("{tmp}", str(tmp_path)) for a in args)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not out.exists() and not (tmp_path / "same.parquet").exists()  # refused before any file was made


def test_a_write_that_fails_after_the_benchmark_keeps_the_row(tmp_path, capsys, monkeypatch):
    """A folder that breaks after the check (here: never checked) costs the pictures, not the row."""
    monkeypatch.setattr(outputs, "check_outputs", lambda *args: None)
    (tmp_path / "file.txt").write_text("a file, not a folder")
    results = tmp_path / "results.parquet"
    code = main(["pipeline", "--synthetic", "2", "--det", "scrfd_500m@320", "--rec", "arcface_mbf",
                 "--runtime", "ort-cpu", "--repeats", "1", "--out", str(results),
                 "--save-annotated", str(tmp_path / "file.txt" / "pictures")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "--save-annotated" in err and "benchmark row is saved" in err
    assert len(err.splitlines()) == 1
    assert [row["status"] for row in store.read_rows(results)] == ["ok"]
