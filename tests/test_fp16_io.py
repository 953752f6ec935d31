"""fp16-nchw: FP16 I/O artifacts (float16 inputs and outputs at the graph boundary), parity-checked on ORT CPU."""
from __future__ import annotations

import numpy as np
import pytest

from bench.domain import DETECTOR, input_format
from bench.models import zoo
from bench.models.input_artifact import make_input_artifact
from bench.pipeline.run import run_pipeline
from tests.conftest import constant_embedder, ort_infer

ort = pytest.importorskip("onnxruntime")
skdata = pytest.importorskip("skimage.data")
FP16 = input_format("fp16-nchw")


def session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_fp16_io_halves_the_bytes_per_frame():
    assert FP16.bytes_per_frame((640, 640)) * 2 == input_format("float-nchw").bytes_per_frame((640, 640))


@pytest.mark.parametrize("name,size,worst", [("scrfd_500m", 320, 1e-2), ("arcface_mbf", None, 1e-2)])
def test_fp16_io_artifact_is_float16_at_the_boundary_and_matches_the_float_model(name, size, worst, tmp_path):
    info = zoo.build_cached(name, size) if size else zoo.build_cached(name)
    fp16 = session(make_input_artifact(info.path, FP16, info.mean, info.std, tmp_path))
    assert {i.type for i in fp16.get_inputs()} == {o.type for o in fp16.get_outputs()} == {"tensor(float16)"}
    frames = np.random.default_rng(0).integers(0, 256, info.input_shape(2), dtype=np.uint8)
    normalised = ((frames - np.float32(info.mean)) / np.float32(info.std)).astype(np.float32)
    reference = session(info.path)
    want = reference.run(None, {reference.get_inputs()[0].name: normalised})
    got = fp16.run(None, {fp16.get_inputs()[0].name: FP16.from_normalised(normalised, info.mean, info.std)})
    for mine, theirs in zip(got, want, strict=True):
        assert mine.dtype == np.float16
        assert np.linalg.norm(mine.astype(np.float64) - theirs) / np.linalg.norm(theirs) < worst


def test_an_fp16_io_session_says_it_computes_in_fp16(tmp_path):
    """The row's precision_effective: an fp16-nchw point runs an FP16 graph, though the suite asked fp32."""
    from bench.session import LoadRequest
    from bench.runtimes.registry import get_runtime

    info = zoo.build_cached("arcface_mbf")
    path = make_input_artifact(info.path, FP16, info.mean, info.std, tmp_path)
    runtime = get_runtime("ort-cpu")
    for model, dtype, expected in ((path, "float16", "fp16"), (info.path, "float32", "fp32")):
        loaded = runtime.load(LoadRequest(str(model), info.input_name, info.input_shape(1), "fp32", input_dtype=dtype))
        try:
            assert loaded.effective_precision() == expected
        finally:
            loaded.close()


def test_pipeline_finds_the_astronaut_through_fp16_io(real_scrfd_path, tmp_path):
    fp16 = ort_infer(make_input_artifact(real_scrfd_path, FP16, DETECTOR.mean, DETECTOR.std, tmp_path))
    reference = ort_infer(real_scrfd_path)
    run = lambda infer, fmt: run_pipeline([skdata.astronaut()], infer, constant_embedder,  # noqa: E731
                                          det_size=640, batch=1, overlap=False, input_format=fmt).detections[0]
    want, got = run(reference, input_format("float-nchw")), run(fp16, FP16)
    assert len(got) == len(want) == 1
    np.testing.assert_allclose(got.boxes, want.boxes, atol=1.0)
    np.testing.assert_allclose(got.kps, want.kps, atol=1.0)


def test_fp16_io_over_an_fp16_or_int8_artifact_is_refused_at_load(tmp_path, capsys):
    from bench import cli

    suite = tmp_path / "fp16io.toml"
    suite.write_text('name = "fp16io"\nruntimes = ["ort-cpu"]\nprecisions = ["fp32", "int8"]\n'
                     'input = ["float-nchw", "fp16-nchw"]\nbatches = [1]\n[[models]]\nname = "arcface_mbf"\n')
    assert cli.main(["run", str(suite), "--out", str(tmp_path / "x.parquet")]) == 2
    err = capsys.readouterr().err
    assert "fp16-nchw" in err and "precision int8" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.parquet").exists()
