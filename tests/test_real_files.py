"""One matrix over every form SCRFD and ArcFace files ship in, real and replica, through every
command: inspect, fix-batch, check-batch, run (batches 1 and 4, both CPU runtimes), pipeline.

Forms are export-faithful replicas (bench.models.scrfd SCRFD_EXPORTS, 3 or 5 strides, with and
without keypoints; embedders with a dynamic or a fixed batch; a model with external data), every
.onnx in ../shared/fixtures and ../shared/fixtures/embedders (the trained batch-1 embedder), and every
.onnx in the folder named by $FACEBENCH_MODELS, so a user's
own model packs go through the same checks: `FACEBENCH_MODELS=~/.insightface/models/buffalo_l
make test ARGS=tests/test_real_files.py`.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest

from bench import store
from bench.cli import main
from bench.models import zoo
from bench.models.arcface import build_arcface
from bench.models.batchfix import fix_batch, naive_batch_patch
from bench.models.layout import analyze_batch_layout
from bench.models.scrfd import build_scrfd
from bench.models.validate import validate_model_file
from bench.suite import parse_model_arg
from tests.conftest import FIXTURES, REPO, constant_embedder, ort_infer

ort = pytest.importorskip("onnxruntime")
skdata = pytest.importorskip("skimage.data")

RUN_SIZE = 320  # detectors with dynamic H/W run at 320: short points on 2 cores
SECTION7_MACS_500M = {640: 733_545_600, 320: 183_386_400}
USER_MODELS = os.environ.get("FACEBENCH_MODELS")


@dataclass(frozen=True)
class Form:
    name: str
    path: Path
    family: str  # "detector" | "embedder"
    outputs: int
    dynamic_hw: bool
    needs_fix: bool  # batch > 1 is wrong until fix-batch rewrites it
    macs: dict[int, int] | None = None  # expected MACs per input size (replicas only)

    @property
    def run_ref(self) -> str:
        return f"{self.path}@{RUN_SIZE}" if self.dynamic_hw else str(self.path)


def _replica_models() -> dict[str, tuple[onnx.ModelProto, str, dict[int, int] | None]]:
    pack = build_scrfd("500m", 640, export="pack")
    fixed_batch_mbf = build_arcface("mbf")
    fixed_batch_mbf.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1  # [1,3,112,112]
    for out in fixed_batch_mbf.graph.output:
        out.type.tensor_type.shape.dim[0].dim_value = 1
    return {
        "pack_500m": (pack, "detector", SECTION7_MACS_500M),
        "named_500m": (build_scrfd("500m", RUN_SIZE, export="named"), "detector", {320: SECTION7_MACS_500M[320]}),
        "batched_500m": (build_scrfd("500m", RUN_SIZE, export="batched"), "detector", {320: SECTION7_MACS_500M[320]}),
        "pack_500m_6": (build_scrfd("500m", 640, export="pack", kps=False), "detector", None),
        "pack_500m_10": (build_scrfd("500m", 640, export="pack", levels=5, kps=False), "detector", None),
        "pack_500m_15": (build_scrfd("500m", 640, export="pack", levels=5), "detector", None),
        "mbf_dynamic": (build_arcface("mbf"), "embedder", {112: 437_520_896}),
        "mbf_batch1": (fixed_batch_mbf, "embedder", {112: 437_520_896}),
    }


def _form_of(name: str, path: Path, macs=None) -> Form:
    model = validate_model_file(path)
    layout = analyze_batch_layout(model)
    dims = layout.input_shape
    return Form(name, path, layout.family, len(model.graph.output), not isinstance(dims[2], int),
                not layout.batch_safe, macs)


def _real_files() -> list[Path]:
    folders = [FIXTURES, FIXTURES / "embedders"] + ([Path(USER_MODELS).expanduser()] if USER_MODELS else [])
    return sorted(p for folder in folders if folder.is_dir() for p in folder.glob("*.onnx"))


REPLICA_NAMES = [
    "pack_500m", "named_500m", "batched_500m", "pack_500m_6", "pack_500m_10", "pack_500m_15",
    "mbf_dynamic", "mbf_batch1", "external_data",
]
REAL_NAMES = [f"real:{p.name}" for p in _real_files()]
ALL_FORMS = REPLICA_NAMES + REAL_NAMES


@pytest.fixture(scope="module")
def forms(tmp_path_factory) -> dict[str, Form]:
    folder = tmp_path_factory.mktemp("forms")
    found: dict[str, Form] = {}
    for name, (model, _, macs) in _replica_models().items():
        onnx.save(model, folder / f"{name}.onnx")
        found[name] = _form_of(name, folder / f"{name}.onnx", macs)
    external = folder / "external"
    external.mkdir()
    onnx.save(build_scrfd("500m", 640, export="pack"), external / "external_data.onnx",
              save_as_external_data=True, location="external_data.weights")  # onnx's default: tensors over 1 KB
    found["external_data"] = _form_of("external_data", external / "external_data.onnx", SECTION7_MACS_500M)
    for path in _real_files():
        found[f"real:{path.name}"] = _form_of(f"real:{path.name}", path)
    return found


@pytest.fixture(scope="module")
def fixed(forms, tmp_path_factory) -> dict[str, tuple[Path, object]]:
    """fix-batch on every form that needs it: the output path and the report."""
    folder = tmp_path_factory.mktemp("fixed")
    done = {}
    for name, form in forms.items():
        if form.needs_fix and form.family in ("detector", "embedder"):
            out = folder / f"{name.replace(':', '_')}.fixed.onnx"
            done[name] = (out, fix_batch(form.path, out, verify_batch=2))
    return done


def facebench(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=REPO, capture_output=True, text=True,
                          env=os.environ.copy(), **kwargs)


def assert_one_clean_line(result: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in result.stderr + result.stdout, result.stderr[-2000:]


# ---- inspect --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_FORMS)
def test_inspect_counts_at_the_concrete_shape(forms, name):
    form = forms[name]
    if form.family == "unknown":
        pytest.skip(f"{form.path.name} is neither a detector nor an embedder")
    sizes = (640, 320) if form.dynamic_hw else (None,)
    for size in sizes:
        ref = parse_model_arg(f"{form.path}@{size}" if size else str(form.path))
        info = zoo.resolve(ref)
        assert info.family == form.family
        assert info.macs_per_frame is not None and info.macs_per_frame > 0, info.macs_note
        assert info.params > 0 and info.flops_per_frame == 2 * info.macs_per_frame
        assert info.batch_fixed == (info.input_dims[0] == 1)
        expected = (form.macs or {}).get(size or info.input_hw[0])
        if expected is not None:
            assert info.macs_per_frame == expected
    if form.dynamic_hw and form.family == "detector":  # strides 8..32 divide 320 and 640: exactly 4x
        at = {s: zoo.resolve(parse_model_arg(f"{form.path}@{s}")).macs_per_frame for s in (640, 320)}
        if form.outputs in (6, 9):
            assert at[640] == 4 * at[320]
    result = facebench("models", "inspect", form.run_ref, "--json")
    assert_one_clean_line(result)
    assert result.returncode == 0 and json.loads(result.stdout)["macs_per_frame"] > 0


def test_pack_replica_has_the_real_files_op_counts_params_and_macs(forms):
    real = FIXTURES / "det_500m.onnx"
    if not real.is_file():
        pytest.skip(f"real det_500m.onnx absent at {real} (set FACEBENCH_FIXTURES)")
    real_info = zoo.resolve(parse_model_arg(str(real)))
    replica = zoo.resolve(parse_model_arg(str(forms["pack_500m"].path)))
    assert replica.op_counts == real_info.op_counts == {
        "Conv": 60, "Relu": 41, "Transpose": 9, "Reshape": 9, "Shape": 6, "Gather": 4, "Unsqueeze": 4,
        "Add": 4, "Sigmoid": 3, "Slice": 2, "Concat": 2, "Resize": 2,
    }  # fmt: skip
    assert replica.params == real_info.params and replica.macs_per_frame == real_info.macs_per_frame
    assert replica.outputs == real_info.outputs and replica.input_dims == real_info.input_dims


def test_detector_of_unknown_layout_is_refused_with_what_was_found(forms, tmp_path):
    model = onnx.load(str(forms["pack_500m"].path))
    del model.graph.output[8]  # 8 outputs: no SCRFD layout
    path = tmp_path / "eight.onnx"
    onnx.save(model, path)
    result = facebench("models", "inspect", str(path))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "8 outputs" in result.stderr and len(result.stderr.strip().splitlines()) == 1


# ---- fix-batch and check-batch ------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_FORMS)
def test_fix_batch_then_check_batch(forms, fixed, name):
    form = forms[name]
    if form.family == "unknown":
        pytest.skip(f"{form.path.name} is neither a detector nor an embedder")
    if not form.needs_fix:
        assert name not in fixed
        result = facebench("check-batch", form.run_ref, "--batches", "4")
        assert_one_clean_line(result)
        assert result.returncode == 0 and "clean" in result.stdout
        return
    out, report = fixed[name]
    assert report.max_abs_diff <= 1e-4 and report.frames_checked >= 2
    assert analyze_batch_layout(onnx.load(str(out))).batch_safe
    size_arg = f"@{RUN_SIZE}" if form.dynamic_hw else ""
    clean = facebench("check-batch", f"{out}{size_arg}", "--batches", "4")
    assert_one_clean_line(clean)
    assert clean.returncode == 0 and "all 1 batch sizes clean" in clean.stdout
    naive = out.with_name(out.name.replace(".fixed", ".naive"))
    onnx.save(naive_batch_patch(onnx.load(str(form.path))), naive)
    mixed = facebench("check-batch", f"{naive}{size_arg}", "--batches", "4")
    assert_one_clean_line(mixed)
    if form.family == "embedder":  # nothing mixes: a kept x.view(1, -1) only lays the frames end to end
        assert mixed.returncode == 0
    else:
        assert mixed.returncode == 1 and ("CONTAMINATED" in mixed.stdout or "cannot run" in mixed.stdout)


def test_fix_batch_can_freeze_the_input_size(forms, tmp_path):
    out = tmp_path / "pack_320.onnx"
    report = fix_batch(forms["pack_500m"].path, out, input_size=RUN_SIZE, verify_batch=2)
    assert report.input_shape == ["N", 3, RUN_SIZE, RUN_SIZE] and report.max_abs_diff <= 1e-4
    info = zoo.resolve(parse_model_arg(str(out)))
    assert info.macs_per_frame == SECTION7_MACS_500M[320] and not info.batch_fixed


# ---- run: batches 1 and 4 on both CPU runtimes ---------------------------------------------

ORIGINALS_IN_SWEEP = ("pack_500m", "named_500m")
LEAN_MEASURE = """
[measure]
warmup_s = 0.05
warmup_min_iterations = 2
window_s = 0.1
window_min_iterations = 2
stable_windows = 2
max_windows = 3
stability_pct = 50.0
"""


@pytest.fixture(scope="module")
def sweep(forms, fixed, tmp_path_factory):
    """One sweep over every form: the fixed file where it needs the fix, else the file itself; and the
    unfixed originals of the real files and two replicas (batch 1 runs, batch 4 skips with the fix)."""
    folder = tmp_path_factory.mktemp("sweep")
    entries = []
    for name, form in forms.items():
        if form.family == "unknown":
            continue
        size = f"\ninput_size = {RUN_SIZE}" if form.dynamic_hw else ""
        if name not in fixed or name in ORIGINALS_IN_SWEEP or name.startswith("real:"):
            entries.append(f'[[models]]\npath = "{form.path}"{size}\n')
        if name in fixed:
            entries.append(f'[[models]]\npath = "{fixed[name][0]}"{size}\n')
    suite = folder / "forms.toml"
    suite.write_text('name = "forms"\nruntimes = ["ort-cpu", "openvino-cpu"]\nprecisions = ["fp32"]\n'
                     f'batches = [1, 4]\n{LEAN_MEASURE}\n' + "\n".join(entries))
    result = facebench("run", str(suite), "--out", str(folder / "forms.parquet"), timeout=900)
    assert_one_clean_line(result)
    assert result.returncode == 0, result.stderr[-2000:]
    return store.read_rows(folder / "forms.parquet")


@pytest.mark.parametrize("name", ALL_FORMS)
def test_run_batches_1_and_4_on_both_cpu_runtimes(forms, fixed, sweep, name):
    form = forms[name]
    if form.family == "unknown":
        pytest.skip(f"{form.path.name} is neither a detector nor an embedder")
    by_path = lambda path: [r for r in sweep if r["model_path"] == str(path)]  # noqa: E731
    own = by_path(form.path)
    batch_safe_rows = by_path(fixed[name][0]) if name in fixed else own
    assert {(r["runtime"], r["batch"]) for r in batch_safe_rows if r["status"] == "ok"} == {
        (rt, b) for rt in ("ort-cpu", "openvino-cpu") for b in (1, 4)}
    for row in batch_safe_rows:
        assert row["contamination_passed"] and row["parity_passed"], row
        assert row["macs_per_frame"] and row["gflops_achieved"] > 0
    if name in fixed and (name in ORIGINALS_IN_SWEEP or name.startswith("real:")):
        # the original runs at batch 1 and is told how to fix batch 4
        assert {r["batch"] for r in own if r["status"] == "ok"} == {1}
        assert all("fix-batch" in r["reason"] for r in own if r["batch"] == 4)


# ---- pipeline --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_FORMS)
def test_pipeline(forms, fixed, name, tmp_path):
    form = forms[name]
    if form.family == "unknown":
        pytest.skip(f"{form.path.name} is neither a detector nor an embedder")
    usable = fixed[name][0] if name in fixed else form.path
    size = f"@{RUN_SIZE}" if form.dynamic_hw else ""
    det, rec = (f"{usable}{size}", "arcface_mbf") if form.family == "detector" else ("scrfd_500m@320", str(usable))
    out = tmp_path / "pipe.parquet"
    code = main(["pipeline", "--synthetic", "4", "--det", det, "--rec", rec, "--runtime", "ort-cpu",
                 "--batch", "4", "--repeats", "1", "--faces-per-frame", "2", "--out", str(out)])
    assert code == 0
    row = store.read_rows(out)[0]
    assert row["status"] == "ok" and row["batch"] == 4 and row["frames_total"] == 4
    assert row["macs_per_frame"]


# ---- real weights, real answer -------------------------------------------------------------


def insightface_detect(path: Path, image: np.ndarray, size: int = 640, threshold: float = 0.5):
    """SCRFD.detect from insightface (reference/models.md 6.2), written independently of bench:
    cv2 letterbox, forward, anchor centres without offset, distance2bbox/kps, NMS 0.4, / det_scale."""
    cv2 = pytest.importorskip("cv2")
    scale = size / max(image.shape[:2])
    resized = cv2.resize(image, (int(image.shape[1] * scale), int(image.shape[0] * scale)))
    canvas = np.zeros((size, size, 3), np.uint8)
    canvas[: resized.shape[0], : resized.shape[1]] = resized
    blob = ((canvas.astype(np.float32) - 127.5) / 128.0).transpose(2, 0, 1)[None]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outs = session.run(None, {session.get_inputs()[0].name: blob})
    fmc = 3 if len(outs) in (6, 9) else 5
    strides, anchors = ([8, 16, 32], 2) if fmc == 3 else ([8, 16, 32, 64, 128], 1)
    boxes, scores, points = [], [], []
    for idx, stride in enumerate(strides):
        score = outs[idx].reshape(-1)
        bbox = outs[idx + fmc].reshape(-1, 4) * stride
        kps = outs[idx + 2 * fmc].reshape(-1, 10) * stride
        h, w = size // stride, size // stride
        centres = (np.stack(np.mgrid[:h, :w][::-1], axis=-1).astype(np.float32) * stride).reshape(-1, 2)
        centres = np.stack([centres] * anchors, axis=1).reshape(-1, 2)
        keep = np.where(score >= threshold)[0]
        c = centres[keep]
        boxes.append(np.concatenate([c - bbox[keep, :2], c + bbox[keep, 2:]], axis=1))
        points.append(c[:, None] + kps[keep].reshape(-1, 5, 2))
        scores.append(score[keep])
    boxes, scores, points = np.concatenate(boxes), np.concatenate(scores), np.concatenate(points)
    order, kept = scores.argsort()[::-1], []
    while order.size:
        i = order[0]
        kept.append(i)
        xx1, yy1 = np.maximum(boxes[i, 0], boxes[order[1:], 0]), np.maximum(boxes[i, 1], boxes[order[1:], 1])
        xx2, yy2 = np.minimum(boxes[i, 2], boxes[order[1:], 2]), np.minimum(boxes[i, 3], boxes[order[1:], 3])
        inter = np.maximum(0, xx2 - xx1 + 1) * np.maximum(0, yy2 - yy1 + 1)
        area = lambda b: (b[..., 2] - b[..., 0] + 1) * (b[..., 3] - b[..., 1] + 1)  # noqa: E731
        order = order[1:][inter / (area(boxes[i]) + area(boxes[order[1:]]) - inter) <= 0.4]
    return boxes[kept] / scale, scores[kept], points[kept] / scale


@pytest.mark.parametrize("fixture", ["det_500m.onnx", "scrfd_500m_bnkps.onnx"])
def test_real_weights_find_the_one_astronaut_where_insightface_does(fixture, tmp_path):
    from skimage import io

    from bench.pipeline.run import run_pipeline

    path = FIXTURES / fixture
    if not path.is_file():
        pytest.skip(f"real {fixture} absent at {path} (set FACEBENCH_FIXTURES)")
    image = skdata.astronaut()
    want_boxes, want_scores, want_kps = insightface_detect(path, image)
    assert len(want_scores) == 1
    result = run_pipeline([image], ort_infer(path), constant_embedder, det_size=640,
                          batch=1, overlap=False)
    found = result.detections[0]
    assert len(found) == 1
    np.testing.assert_allclose(found.boxes[0], want_boxes[0], atol=1.0)
    np.testing.assert_allclose(found.kps[0], want_kps[0], atol=1.0)
    np.testing.assert_allclose(found.scores[0], want_scores[0], atol=0.01)
    # and the command itself: one frame, one face
    folder = tmp_path / "images"
    folder.mkdir()
    io.imsave(folder / "astronaut.png", image, check_contrast=False)
    out = tmp_path / "astronaut.parquet"
    assert main(["pipeline", "--images", str(folder), "--det", str(path), "--rec", "arcface_mbf",
                 "--runtime", "ort-cpu", "--repeats", "1", "--out", str(out)]) == 0
    row = store.read_rows(out)[0]
    assert (row["frames_total"], row["faces_total"]) == (1, 1) and row["macs_per_frame"] == SECTION7_MACS_500M[640]


def _model_with_data_dependent_shapes(path):
    """An embedder whose Conv input size depends on the input's values (Resize scales computed from
    them): no shape inference can know it, so its MACs cannot be counted."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("ReduceMax", ["input"], ["peak"], keepdims=0),
        helper.make_node("Mul", ["peak", "zero"], ["nothing"]),
        helper.make_node("Add", ["ones", "nothing"], ["scales"]),  # [1,1,1,1] at run time, unknown before
        helper.make_node("Resize", ["input", "", "scales"], ["resized"], mode="nearest"),
        helper.make_node("Conv", ["resized", "w"], ["features"], kernel_shape=[3, 3]),
        helper.make_node("GlobalAveragePool", ["features"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["embedding"]),
    ]
    inits = [numpy_helper.from_array(np.float32(0), "zero"), numpy_helper.from_array(np.ones(4, np.float32), "ones"),
             numpy_helper.from_array(rng.standard_normal((16, 3, 3, 3)).astype(np.float32), "w")]
    graph = helper.make_graph(nodes, "data_dependent", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 112, 112])],
                              [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", 16])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_macs_that_cannot_be_derived_are_null_with_the_reason_and_the_point_still_runs(tmp_path):
    path = _model_with_data_dependent_shapes(tmp_path / "data_dependent.onnx")
    info = zoo.resolve(parse_model_arg(str(path)))
    assert info.macs_per_frame is None and "MACs unknown at 112x112" in info.macs_note
    suite = tmp_path / "dd.toml"
    suite.write_text('name = "dd"\nruntimes = ["ort-cpu"]\nbatches = [1]\n[measure]\nwarmup_s = 0.05\n'
                     'window_s = 0.1\nmax_windows = 3\n[checks]\nparity = false\npeak_probes = false\n'
                     f'[[models]]\npath = "{path}"\n')
    out = tmp_path / "dd.parquet"
    assert main(["run", str(suite), "--out", str(out)]) == 0
    (row,) = store.read_rows(out)
    assert row["status"] == "ok" and row["fps"] > 0
    assert row["macs_per_frame"] is None and row["gflops_achieved"] is None and "MACs unknown" in row["macs_note"]
