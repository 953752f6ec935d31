"""`facebench pipeline --input FORMAT`: uint8 frames straight into artifacts that normalise in the graph."""
from __future__ import annotations

import json

import numpy as np
import pytest

from bench import store
from bench.cli import main
from bench.domain import DETECTOR, EMBEDDER, INPUT_FORMATS, input_format
from bench.models import zoo
from bench.models.input_artifact import make_input_artifact
from bench.face.images import to_blob
from bench.face.preprocess import model_batch
from bench.pipeline.run import run_pipeline, synthetic_frames
from tests.conftest import ort_infer

ort = pytest.importorskip("onnxruntime")
skdata = pytest.importorskip("skimage.data")

UINT8_FORMATS = [name for name, fmt in INPUT_FORMATS.items() if fmt.carries_pixels]


def in_format(path, fmt, family, tmp_path):
    return ort_infer(make_input_artifact(path, fmt, family.mean, family.std, tmp_path / "artifacts"))


@pytest.mark.parametrize("name", UINT8_FORMATS)
def test_model_batch_carries_the_pixels_in_the_format(name):
    fmt = input_format(name)
    images = np.random.default_rng(3).integers(0, 256, (2, 8, 6, 3), dtype=np.uint8)
    batch = model_batch(images, fmt, DETECTOR.mean, DETECTOR.std)
    assert batch.dtype == np.uint8 and batch.shape == fmt.shape(2, (8, 6))
    expected = fmt.from_normalised(to_blob(images, DETECTOR.mean, DETECTOR.std), DETECTOR.mean, DETECTOR.std)
    np.testing.assert_array_equal(batch, expected)


def test_replica_candidates_and_embeddings_match_the_float_path(tmp_path):
    """Replica SCRFD-500M@320 (random weights: every anchor near 0.01) with NMS off keeps the raw
    candidates above 0.0115 (44 on these frames), so every box and score counts; the embedder
    sees the same crops."""
    det, rec = zoo.build_cached("scrfd_500m", 320), zoo.build_cached("arcface_mbf")
    kwargs = dict(det_size=320, batch=2, rec_batch=4, overlap=False, keep_all=True,
                  score_threshold=0.0115, nms_threshold=1.0)
    frames = lambda: synthetic_frames(2, seed=5, height=240, width=320)  # noqa: E731
    ref = run_pipeline(frames(), ort_infer(det.path), ort_infer(rec.path), **kwargs)
    assert ref.faces > 10
    fmt = input_format("uint8-nhwc-bgr")  # a missing or doubled channel flip moves every candidate
    got = run_pipeline(frames(), in_format(det.path, fmt, DETECTOR, tmp_path), in_format(rec.path, fmt, EMBEDDER, tmp_path),
                       input_format=fmt, **kwargs)
    for mine, theirs in zip(got.detections, ref.detections, strict=True):
        assert len(mine) == len(theirs)
        np.testing.assert_allclose(mine.boxes, theirs.boxes, atol=1e-3)
        np.testing.assert_allclose(mine.scores, theirs.scores, atol=1e-6)
    assert np.sum(got.embeddings * ref.embeddings, axis=1).min() >= 0.99999


def run_astronaut(detector, folder, out, *extra):
    assert main(["pipeline", "--images", str(folder), "--det", str(detector),
                 "--rec", "arcface_mbf", "--runtime", "ort-cpu", "--repeats", "1",
                 "--save-detections", str(out.with_suffix(".json")), "--out", str(out), *extra]) == 0
    return store.read_rows(out)[0], json.loads(out.with_suffix(".json").read_text())


def test_real_detector_finds_the_same_astronaut_from_uint8_frames(real_scrfd_path, tmp_path, capsys):
    from skimage import io

    folder = tmp_path / "images"
    folder.mkdir()
    io.imsave(folder / "astronaut.png", skdata.astronaut(), check_contrast=False)
    float_row, float_faces = run_astronaut(real_scrfd_path, folder, tmp_path / "float.parquet")
    row, faces = run_astronaut(real_scrfd_path, folder, tmp_path / "bgr.parquet", "--input", "uint8-nhwc-bgr")
    assert len(faces) == len(float_faces) == 1
    for key in ("x1", "y1", "x2", "y2", "left_eye_x", "mouth_right_y"):
        assert faces[0][key] == pytest.approx(float_faces[0][key], abs=1e-3)
    assert faces[0]["embedding_norm"] == pytest.approx(float_faces[0]["embedding_norm"], rel=1e-4)
    assert (float_row["input_format"], float_row["input_bytes_per_frame"]) == ("float-nchw", 640 * 640 * 3 * 4)
    assert (row["input_format"], row["input_bytes_per_frame"], row["input_shape"]) == \
        ("uint8-nhwc-bgr", 640 * 640 * 3, "1,640,640,3")
    stages = json.loads(row["stages_json"])
    assert (stages["input_format"], stages["normalisation"]) == ("uint8-nhwc-bgr", "model")
    assert (stages["detector_bytes_per_frame"], stages["embedder_bytes_per_face"]) == (640 * 640 * 3, 112 * 112 * 3)
    assert json.loads(float_row["stages_json"])["normalisation"] == "host"
    capsys.readouterr()
    assert main(["show", str(tmp_path / "bgr.parquet")]) == 0
    text = capsys.readouterr().out
    assert "uint8-nhwc-bgr" in text and "normalisation runs inside the detector" in text
