"""Face pipeline: preprocessing, SCRFD decode + NMS, alignment and the staged runner."""
from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from bench.face import align
from bench.face.align import (
    ARCFACE_TEMPLATE,
    align_faces,
    estimate_similarity,
    invert_affine,
    warp_affine,
    warp_affine_numpy,
)
from bench.face.decode import Detections, decode_scrfd, nms
from bench.face.images import resize_bilinear_numpy, to_blob
from bench.face.preprocess import letterbox, letterbox_shape
from bench.pipeline.run import (
    STAGES,
    compare_overlap,
    image_frames,
    run_pipeline,
    synthetic_detections,
    synthetic_frames,
)
from tests.conftest import constant_embedder, ort_infer

ort = pytest.importorskip("onnxruntime")
skdata = pytest.importorskip("skimage.data")

STRIDES = (8, 16, 32)


# ---------------------------------------------------------------- slow, obvious references


def reference_nms(boxes, scores, threshold):
    """insightface's nms written pair by pair in plain Python."""
    order = sorted(range(len(scores)), key=lambda i: -float(scores[i]))
    keep = []
    for i in order:
        ok = True
        for j in keep:
            xx1, yy1 = max(boxes[i][0], boxes[j][0]), max(boxes[i][1], boxes[j][1])
            xx2, yy2 = min(boxes[i][2], boxes[j][2]), min(boxes[i][3], boxes[j][3])
            inter = max(0.0, xx2 - xx1 + 1) * max(0.0, yy2 - yy1 + 1)
            area_i = (boxes[i][2] - boxes[i][0] + 1) * (boxes[i][3] - boxes[i][1] + 1)
            area_j = (boxes[j][2] - boxes[j][0] + 1) * (boxes[j][3] - boxes[j][1] + 1)
            if inter / (area_i + area_j - inter) > threshold:
                ok = False
                break
        if ok:
            keep.append(i)
    return keep


def reference_decode(outputs, input_hw, frame, threshold, nms_threshold):
    """scrfd.py's forward + detect, one anchor row at a time."""
    has_kps = len(outputs) == 9
    boxes, scores, points = [], [], []
    for level, stride in enumerate(STRIDES):
        rows = lambda out: out[frame] if out.ndim == 3 else out  # noqa: E731
        s, b = rows(outputs[level]), rows(outputs[3 + level])
        k = rows(outputs[6 + level]) if has_kps else None
        grid_h, grid_w = input_hw[0] // stride, input_hw[1] // stride
        centres = np.stack(np.mgrid[:grid_h, :grid_w][::-1], axis=-1).astype(np.float32)
        centres = np.repeat((centres * stride).reshape(-1, 2), 2, axis=0)
        for r in range(len(centres)):
            if s[r, 0] >= threshold:
                cx, cy = centres[r]
                d = b[r] * stride
                boxes.append([cx - d[0], cy - d[1], cx + d[2], cy + d[3]])
                scores.append(s[r, 0])
                if has_kps:
                    points.append([[cx + k[r, 2 * p] * stride, cy + k[r, 2 * p + 1] * stride] for p in range(5)])
    keep = reference_nms(boxes, scores, nms_threshold)
    return (np.array([boxes[i] for i in keep]).reshape(-1, 4), np.array([scores[i] for i in keep]),
            np.array([points[i] for i in keep]).reshape(-1, 5, 2) if has_kps else None)


def random_outputs(rng, input_hw, batch, with_kps=True, score_scale=1.0):
    """Random SCRFD outputs, batched layout [N,HWA,K], in model order."""
    counts = [(input_hw[0] // s) * (input_hw[1] // s) * 2 for s in STRIDES]
    scores = [(rng.random((batch, n, 1)) ** score_scale).astype(np.float32) for n in counts]
    bboxes = [rng.uniform(0.2, 4.0, (batch, n, 4)).astype(np.float32) for n in counts]
    kps = [rng.uniform(-3, 3, (batch, n, 10)).astype(np.float32) for n in counts]
    return scores + bboxes + (kps if with_kps else [])


def assert_matches_reference(found: Detections, ref):
    boxes, scores, points = ref
    assert len(found) == len(scores)
    np.testing.assert_allclose(found.boxes, boxes, atol=1e-4)
    np.testing.assert_allclose(found.scores, scores, atol=0)
    if points is None:
        assert found.kps is None
    else:
        np.testing.assert_allclose(found.kps, points, atol=1e-4)


# ---------------------------------------------------------------- preprocessing


@pytest.mark.parametrize("hw", [(300, 500), (500, 300), (512, 512)])
def test_letterbox_keeps_aspect_pastes_top_left_and_pads_zero(hw):
    img = np.full(hw + (3,), 200, np.uint8)
    canvas, scale = letterbox(img, 320)
    new_h, new_w, expected_scale = letterbox_shape(*hw, 320)
    assert canvas.shape == (320, 320, 3) and canvas.dtype == np.uint8
    assert scale == expected_scale == new_h / hw[0]
    assert max(new_h, new_w) == 320 and abs(new_w / new_h - hw[1] / hw[0]) < 0.01
    assert (canvas[:new_h, :new_w] == 200).all()
    assert canvas[new_h:].sum() == 0 and canvas[:, new_w:].sum() == 0


def test_to_blob_is_nchw_rgb_normalised_over_a_batch():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 8, 6, 3), dtype=np.uint8)
    blob = to_blob(list(images), 127.5, 128.0)
    assert blob.shape == (3, 3, 8, 6) and blob.dtype == np.float32
    for n in range(3):
        for c in range(3):  # channel 0 stays red: no BGR swap
            np.testing.assert_allclose(blob[n, c], (images[n, :, :, c] - 127.5) / 128.0, rtol=1e-6)
    np.testing.assert_allclose(to_blob(images, 127.5, 127.5).min(), -1.0, atol=0.01)


def test_numpy_resize_agrees_with_opencv():
    cv2 = pytest.importorskip("cv2")
    img = np.random.default_rng(1).integers(0, 256, (90, 160, 3), dtype=np.uint8)
    for new_h, new_w in ((45, 80), (131, 233)):
        ours = resize_bilinear_numpy(img, new_h, new_w).astype(int)
        theirs = cv2.resize(img, (new_w, new_h), interpolation=cv2.INTER_LINEAR).astype(int)
        assert np.abs(ours - theirs).max() <= 1


# ---------------------------------------------------------------- decode and NMS


def test_nms_uses_the_plus_one_area_convention():
    boxes = np.array([[0, 0, 9, 9], [5, 0, 14, 9]], np.float32)  # IoU 50/150 with +1, 36/126 without
    scores = np.array([0.9, 0.8], np.float32)
    assert nms(boxes, scores, 0.3).tolist() == [0]
    assert nms(boxes, scores, 0.34).tolist() == [0, 1]


@pytest.mark.parametrize("count,spread", [(60, 200), (350, 640), (900, 300)])  # both NMS code paths
def test_nms_matches_reference_on_random_boxes(count, spread):
    rng = np.random.default_rng(count)
    xy = rng.uniform(0, spread, (count, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(4, 90, (count, 2))], axis=1).astype(np.float32)
    scores = rng.random(count).astype(np.float32)
    assert nms(boxes, scores, 0.4).tolist() == reference_nms(boxes.tolist(), scores, 0.4)


def test_decode_places_a_planted_anchor_without_offset():
    outputs = [np.zeros((1, n, k), np.float32) for k in (1, 4, 10) for n in (3200, 800, 200)]
    row = (3 * 20 + 5) * 2 + 1  # stride 16 at 320: cell (y=3, x=5), second anchor
    outputs[1][0, row] = 0.9
    outputs[4][0, row] = [1, 2, 3, 4]
    outputs[7][0, row] = np.arange(10) / 10
    found = decode_scrfd(outputs, (320, 320))
    cx, cy = 5 * 16, 3 * 16
    np.testing.assert_allclose(found.boxes, [[cx - 16, cy - 32, cx + 48, cy + 64]])
    offsets = np.arange(10).reshape(5, 2) / 10 * 16
    np.testing.assert_allclose(found.kps[0], [cx, cy] + offsets, rtol=1e-6)
    np.testing.assert_allclose(found.scores, [0.9])


@pytest.mark.parametrize("with_kps", [True, False])
def test_decode_matches_reference_in_both_layouts(with_kps):
    rng = np.random.default_rng(7)
    input_hw = (320, 320)
    outputs = random_outputs(rng, input_hw, batch=3, with_kps=with_kps, score_scale=12.0)  # few pass 0.5
    for frame in range(3):
        ref = reference_decode(outputs, input_hw, frame, 0.5, 0.4)
        assert len(ref[1]) > 20
        assert_matches_reference(decode_scrfd(outputs, input_hw, frame=frame), ref)
    flattened = [o[1] for o in outputs]  # the 2-D export at batch 1
    assert_matches_reference(decode_scrfd(flattened, input_hw), reference_decode(flattened, input_hw, 0, 0.5, 0.4))


def test_decode_rejects_misuse():
    outputs = random_outputs(np.random.default_rng(0), (320, 320), batch=1)
    with pytest.raises(ValueError, match="single frame"):
        decode_scrfd([o[0] for o in outputs], (320, 320), frame=1)
    with pytest.raises(ValueError, match="rows"):
        decode_scrfd(outputs, (640, 640))
    with pytest.raises(ValueError, match="outputs"):
        decode_scrfd(outputs[:5], (320, 320))


# ---------------------------------------------------------------- alignment


def similarity(angle_deg, scale, tx, ty):
    a = np.deg2rad(angle_deg)
    return np.array([[scale * np.cos(a), -scale * np.sin(a), tx], [scale * np.sin(a), scale * np.cos(a), ty]])


def test_estimate_similarity_recovers_known_transforms_batched():
    truths = np.stack([similarity(30, 1.7, 12, -5), similarity(-80, 0.4, 300, 20), similarity(0, 1, 0, 0)])
    src = np.random.default_rng(3).uniform(0, 200, (3, 5, 2))
    dst = np.einsum("kij,kpj->kpi", truths[:, :, :2], src) + truths[:, None, :, 2]
    np.testing.assert_allclose(estimate_similarity(src, dst), truths, atol=1e-9)
    np.testing.assert_allclose(estimate_similarity(src[0], dst[0]), truths[0], atol=1e-9)


def test_estimate_similarity_matches_skimage_on_noisy_points():
    transform = pytest.importorskip("skimage.transform")
    rng = np.random.default_rng(4)
    src = ARCFACE_TEMPLATE * 2.3 + rng.normal(0, 6, (5, 2)) + 150
    fitted = transform.SimilarityTransform()
    with warnings.catch_warnings():  # estimate() is deprecated in newer scikit-image
        warnings.simplefilter("ignore", FutureWarning)
        fitted.estimate(src, ARCFACE_TEMPLATE)
    np.testing.assert_allclose(estimate_similarity(src, ARCFACE_TEMPLATE), fitted.params[:2], atol=1e-4)


def test_warp_affine_translation_and_rotation_are_exact():
    img = np.random.default_rng(5).integers(0, 256, (200, 160, 3), dtype=np.uint8)
    shift = np.array([[1.0, 0, -10], [0, 1, -20]])  # output(x, y) = img(x + 10, y + 20)
    np.testing.assert_array_equal(warp_affine(img, shift), img[20:132, 10:122])
    np.testing.assert_array_equal(warp_affine_numpy(img, shift[None])[0], img[20:132, 10:122])
    quarter = np.array([[0.0, -1, 111], [1, 0, 0]])  # 90 degrees: output(x, y) = img(y, 111 - x)
    rotated = np.rot90(img[:112, :112], k=1, axes=(1, 0))
    np.testing.assert_array_equal(warp_affine_numpy(img, quarter[None])[0], rotated)
    outside = np.array([[1.0, 0, 500], [0, 1, 500]])
    assert warp_affine_numpy(img, outside[None]).sum() == 0 and warp_affine(img, outside).sum() == 0


def test_numpy_warp_agrees_with_opencv_on_similarities():
    pytest.importorskip("cv2")
    img = skdata.astronaut()
    Ms = np.stack([similarity(17, 0.6, -40, -20), similarity(-45, 1.3, 30, -150)])
    ours = warp_affine_numpy(img, Ms).astype(int)
    theirs = np.stack([warp_affine(img, M) for M in Ms]).astype(int)
    assert np.abs(ours - theirs).max() <= 2 and np.abs(ours - theirs).mean() < 0.1


def test_align_faces_puts_landmarks_on_the_template():
    # Bright dots at a rotated, scaled copy of the template; after alignment they sit on it.
    face_to_image = similarity(25, 2.2, 180, 90)
    kps = ARCFACE_TEMPLATE @ face_to_image[:, :2].T + face_to_image[:, 2]
    img = np.zeros((480, 480, 3), np.uint8)
    ys, xs = np.mgrid[:480, :480]
    for x, y in kps:
        img[(xs - x) ** 2 + (ys - y) ** 2 <= 9] = 255
    crops = align_faces(img, [kps, kps])
    assert crops.shape == (2, 112, 112, 3) and crops.dtype == np.uint8
    np.testing.assert_allclose(estimate_similarity(kps, ARCFACE_TEMPLATE), invert_affine(face_to_image), atol=1e-6)
    weight = crops[0, :, :, 0].astype(float)
    cy, cx = np.mgrid[:112, :112]
    for tx, ty in ARCFACE_TEMPLATE:
        near = ((cx - tx) ** 2 + (cy - ty) ** 2 <= 16) * weight
        centroid = np.array([(near * cx).sum(), (near * cy).sum()]) / near.sum()
        assert np.hypot(*(centroid - (tx, ty))) < 0.5


# ---------------------------------------------------------------- the real detector


REFERENCE_BOX = [180.1, 60.2, 271.6, 179.7]
REFERENCE_KPS = [[204.1, 100.6], [246.8, 103.6], [223.8, 129.2], [202.0, 139.7], [245.7, 142.3]]


def test_real_scrfd_finds_the_astronaut(real_scrfd_path):
    detect = ort_infer(real_scrfd_path)
    flattened = lambda x: {name: o[0] for name, o in detect(x).items()}  # noqa: E731 - same model, 2-D layout
    for det_infer in (detect, flattened):
        result = run_pipeline([skdata.astronaut()], det_infer, constant_embedder, det_size=640, batch=1, overlap=False)
        assert result.frames == 1 and result.faces == 1
        found = result.detections[0]
        assert len(found) == 1
        np.testing.assert_allclose(found.boxes[0], REFERENCE_BOX, atol=3)
        np.testing.assert_allclose(found.scores[0], 0.80, atol=0.01)
        np.testing.assert_allclose(found.kps[0], REFERENCE_KPS, atol=3)


def test_real_astronaut_crop_puts_the_eyes_on_the_template(real_scrfd_path):
    detect = ort_infer(real_scrfd_path)
    result = run_pipeline([skdata.astronaut()], detect, constant_embedder, det_size=640, batch=1, overlap=False)
    kps = result.detections[0].kps[0]
    M = estimate_similarity(kps, ARCFACE_TEMPLATE)
    mapped_eyes = kps[:2] @ M[:, :2].T + M[:, 2]
    # The 5-point least-squares fit itself leaves the eyes 2.1 and 2.5 px off the template on this face.
    assert np.hypot(*(mapped_eyes - ARCFACE_TEMPLATE[:2]).T).max() < 3
    # Re-detect on the crop (framed by a border): the warp puts the eyes where M says.
    canvas = np.zeros((224, 224, 3), np.uint8)
    canvas[56:168, 56:168] = result.aligned[0]
    again = run_pipeline([canvas], detect, constant_embedder, det_size=640, batch=1, overlap=False).detections[0]
    assert len(again) == 1
    eyes_in_crop = again.kps[0, :2] - 56
    assert np.hypot(*(eyes_in_crop - mapped_eyes).T).max() < 2
    assert np.hypot(*(eyes_in_crop - ARCFACE_TEMPLATE[:2]).T).max() < 3


# ---------------------------------------------------------------- staged pipeline end to end


def _initializer(array, name):
    return numpy_helper.from_array(np.asarray(array, np.float32 if np.asarray(array).dtype.kind == "f" else np.int64), name)


def tiny_detector() -> onnx.ModelProto:
    """SCRFD-shaped batched head: per stride AvgPool -> 1x1 conv -> [N,HWA,K] (scores sigmoid)."""
    rng = np.random.default_rng(11)
    nodes, inits, outputs = [], [], []
    for kind, width in (("score", 1), ("bbox", 4), ("kps", 10)):
        for stride in STRIDES:
            name = f"{kind}_{stride}"
            bias = -9.0 if kind == "score" else 1.0  # a handful of faces on natural images
            inits += [_initializer(rng.normal(0, 4, (2 * width, 3, 1, 1)), f"{name}_w"),
                      _initializer(np.full(2 * width, bias), f"{name}_b"),
                      _initializer(np.array([0, -1, width]), f"{name}_shape")]
            head = f"{name}_r" if kind == "score" else name
            nodes += [
                helper.make_node("AveragePool", ["input.1"], [f"{name}_p"], kernel_shape=[stride] * 2, strides=[stride] * 2),
                helper.make_node("Conv", [f"{name}_p", f"{name}_w", f"{name}_b"], [f"{name}_c"]),
                helper.make_node("Transpose", [f"{name}_c"], [f"{name}_t"], perm=[0, 2, 3, 1]),
                helper.make_node("Reshape", [f"{name}_t", f"{name}_shape"], [head]),
            ]
            if kind == "score":
                nodes.append(helper.make_node("Sigmoid", [head], [name]))
            outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", None, width]))
    image = helper.make_tensor_value_info("input.1", TensorProto.FLOAT, ["N", 3, "H", "W"])
    graph = helper.make_graph(nodes, "tiny_scrfd", [image], outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def tiny_embedder() -> onnx.ModelProto:
    """[N,3,112,112] -> conv s2 -> relu -> global pool -> gemm -> [N,512]."""
    rng = np.random.default_rng(12)
    inits = [_initializer(rng.normal(0, 0.3, (16, 3, 3, 3)), "w"),
             _initializer(rng.normal(0, 0.3, (16, 512)), "fc"),
             _initializer(rng.normal(0, 0.3, 512), "fc_b")]
    nodes = [helper.make_node("Conv", ["input.1", "w"], ["c"], strides=[2, 2], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "fc", "fc_b"], ["embedding"])]
    image = helper.make_tensor_value_info("input.1", TensorProto.FLOAT, ["N", 3, 112, 112])
    embedding = helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", 512])
    graph = helper.make_graph(nodes, "tiny_arcface", [image], [embedding], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def replica_or_tiny_models(det_size):
    """The architecture replicas when their builders are there, else the tiny stand-ins."""
    try:
        from bench.models.scrfd import build_scrfd
        det = build_scrfd("500m", det_size)
    except ImportError:
        det = tiny_detector()
    try:
        from bench.models.arcface import build_arcface
        rec = build_arcface("mbf")
    except ImportError:
        rec = tiny_embedder()
    return ort_infer(det), ort_infer(rec)


def test_synthetic_pipeline_end_to_end_on_ort_cpu():
    det_infer, rec_infer = replica_or_tiny_models(320)
    kwargs = dict(det_infer=det_infer, rec_infer=rec_infer, det_size=320, batch=2, synthetic_faces=3,
                  keep_all=True)
    overlapped = run_pipeline(synthetic_frames(5, seed=1, height=240, width=320), overlap=True, **kwargs)
    sequential = run_pipeline(synthetic_frames(5, seed=1, height=240, width=320), overlap=False, **kwargs)
    for result in (overlapped, sequential):
        assert (result.frames, result.faces) == (5, 15)  # 3 batches, the last one padded
        assert result.embeddings.shape == (15, 512)
        np.testing.assert_allclose(np.linalg.norm(result.embeddings, axis=1), 1, rtol=1e-5)
        assert result.face_frame.tolist() == [f for f in range(5) for _ in range(3)]
        assert list(result.stage_s) == list(STAGES) and all(v > 0 for v in result.stage_s.values())
        assert abs(sum(result.stage_share.values()) - 1) < 1e-9
        assert result.frames_per_s > 0 and result.faces_per_s == pytest.approx(3 * result.frames_per_s)
        assert set(result.summary()) >= {"frames_per_s", "faces_per_s", "detector_ms_per_frame", "embedder_share"}
    np.testing.assert_allclose(overlapped.embeddings, sequential.embeddings, atol=1e-5)


def test_batched_detector_decodes_each_frame_as_if_alone():
    det_infer = ort_infer(tiny_detector())
    img = skdata.astronaut()
    frames = [img, img[:, ::-1].copy(), img[100:400, 50:500].copy()]
    batched = run_pipeline(frames, det_infer, constant_embedder, det_size=320, batch=3, keep_all=True)
    alone = [run_pipeline([f], det_infer, constant_embedder, det_size=320, batch=1).detections[0] for f in frames]
    assert sum(len(d) for d in alone) > 0
    for got, want in zip(batched.detections, alone):
        np.testing.assert_allclose(got.boxes, want.boxes, atol=1e-3)
        np.testing.assert_allclose(got.scores, want.scores, atol=1e-6)


def test_embedder_runs_in_fixed_batches_when_asked():
    seen = []

    def fixed_batch_embedder(x):
        seen.append(len(x))
        return {"embedding": np.tile(x.mean(axis=(1, 2, 3))[:, None], (1, 512)) + 1}

    frames = synthetic_frames(2, height=120, width=160)
    result = run_pipeline(frames, ort_infer(tiny_detector()), fixed_batch_embedder, det_size=320, batch=2,
                          synthetic_faces=5, rec_batch=4, overlap=False)
    assert seen == [4, 4, 4] and result.faces == 10 and result.embeddings.shape == (10, 512)


def test_errors_in_a_stage_stop_the_overlapped_pipeline():
    def broken_embedder(x):
        raise RuntimeError("embedder failed")

    with pytest.raises(RuntimeError, match="embedder failed"):
        run_pipeline(synthetic_frames(40, height=60, width=80), ort_infer(tiny_detector()), broken_embedder,
                     det_size=320, batch=1, synthetic_faces=1, queue_depth=1)


def test_compare_overlap_reports_a_gain():
    det_infer, rec_infer = ort_infer(tiny_detector()), ort_infer(tiny_embedder())
    comparison = compare_overlap(lambda: synthetic_frames(4, height=240, width=320), det_infer, rec_infer,
                                 det_size=320, batch=2, synthetic_faces=2)
    assert not comparison.sequential.overlap and comparison.overlapped.overlap
    assert comparison.overlapped.frames == comparison.sequential.frames == 4
    expected = comparison.overlapped.frames_per_s / comparison.sequential.frames_per_s
    assert comparison.gain == pytest.approx(expected)


def test_synthetic_detections_fit_in_the_frame():
    found = synthetic_detections((240, 320), 5)
    assert len(found) == 5 and found.kps.shape == (5, 5, 2)
    assert found.boxes[:, [0, 2]].max() <= 320 and found.boxes[:, [1, 3]].max() <= 240 and found.boxes.min() >= 0


def test_image_frames_decode_rgb(tmp_path):
    cv2 = pytest.importorskip("cv2")
    img = np.zeros((20, 30, 3), np.uint8)
    img[..., 0] = 255  # red in RGB
    cv2.imwrite(str(tmp_path / "a.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    (tmp_path / "notes.txt").write_text("not an image")
    frames = list(image_frames(tmp_path))
    assert len(frames) == 1 and np.array_equal(frames[0], img)


def test_numpy_fallbacks_without_opencv(monkeypatch):
    pytest.importorskip("cv2")
    img = skdata.astronaut()[:300, :400]
    kps = np.array(REFERENCE_KPS) - [100, 0]
    with_cv2 = align_faces(img, [kps]).astype(int), letterbox(img, 320)[0].astype(int)
    monkeypatch.setattr(align, "cv2", None)
    monkeypatch.setattr("bench.face.images.cv2", None)
    without = align_faces(img, [kps]).astype(int), letterbox(img, 320)[0].astype(int)
    for a, b in zip(with_cv2, without):
        assert np.abs(a - b).max() <= 2 and np.abs(a - b).mean() < 0.2
