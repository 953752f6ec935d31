"""`facebench pipeline` end to end: real runtimes, real Parquet files read back."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from bench import store
from bench.cli import main
from bench.models import zoo
from bench.pipeline.run import STAGES
from bench.suite import parse_model_arg

pytest.importorskip("onnxruntime")
skdata = pytest.importorskip("skimage.data")

FRAMES, BATCH, FACES_PER_FRAME = 8, 4, 2


def pipeline_args(*extra: str) -> list[str]:
    return ["pipeline", "--det", "scrfd_500m@320", "--rec", "arcface_mbf", "--runtime", "ort-cpu", "--repeats", "1", *extra]


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory):
    """One synthetic run on the replicas, shared by the tests that read its file."""
    with pytest.MonkeyPatch.context() as patch:  # the module scope misses conftest's per-test cache setting
        patch.setenv("FACEBENCH_CACHE", str(tmp_path_factory.getbasetemp() / "facebench-cache"))
        folder = tmp_path_factory.mktemp("pipeline")
        code = main(pipeline_args("--synthetic", str(FRAMES), "--batch", str(BATCH),
                                  "--faces-per-frame", str(FACES_PER_FRAME), "--out", str(folder)))
        files = list(folder.glob("*.parquet"))  # --out FOLDER: results/<host>-<UTC>-pipeline.parquet
        assert len(files) == 1 and files[0].name.endswith("-pipeline.parquet")
        return code, files[0]


def test_synthetic_run_writes_a_pipeline_row(synthetic_run):
    code, out = synthetic_run
    assert code == 0
    rows = store.read_rows(out)
    assert len(rows) == 1
    row = rows[0]
    assert (row["kind"], row["status"], row["suite"], row["runtime"], row["precision"]) == \
        ("pipeline", "ok", "pipeline", "ort-cpu", "fp32")
    assert (row["model"], row["family"], row["batch"]) == ("scrfd_500m@320", "detector", BATCH)
    assert row["input_shape"] == f"{BATCH},3,320,320"
    assert (row["frames_total"], row["faces_total"]) == (FRAMES, FRAMES * FACES_PER_FRAME)
    assert row["fps"] > 0 and row["wall_s"] > 0 and row["host"] and row["run_id"] and row["timestamp_utc"]
    assert row["faces_per_s"] == pytest.approx(FACES_PER_FRAME * row["fps"])
    assert row["fps"] == pytest.approx(row["frames_total"] / row["wall_s"])
    assert row["model_sha256"] == zoo.build_cached("scrfd_500m", 320).sha256


def test_stages_json_says_where_the_time_goes(synthetic_run):
    stages = json.loads(store.read_rows(synthetic_run[1])[0]["stages_json"])
    assert list(stages["stages"]) == sorted(STAGES) and stages["stage_order"] == list(STAGES)
    assert sum(s["share"] for s in stages["stages"].values()) == pytest.approx(1, abs=1e-6)
    assert all(s["ms_per_frame"] > 0 and 0 <= s["overlapped_busy"] <= 1 for s in stages["stages"].values())
    assert stages["sequential_fps"] > 0 and stages["overlapped_fps"] > 0
    assert stages["overlap_gain"] == pytest.approx(stages["sequential_wall_s"] / stages["overlapped_wall_s"])
    embedder = zoo.build_cached("arcface_mbf")
    assert stages["embedder"]["model"] == "arcface_mbf" and stages["embedder"]["sha256"] == embedder.sha256
    assert (stages["source"], stages["synthetic_faces_per_frame"]) == ("synthetic", FACES_PER_FRAME)
    assert stages["rec_batch"] == 8


def test_show_prints_the_pipeline_table(synthetic_run, capsys):
    capsys.readouterr()
    assert main(["show", str(synthetic_run[1])]) == 0
    text = capsys.readouterr().out
    assert "pipeline: scrfd_500m@320 -> arcface_mbf" in text
    for header in ("frames/s", "faces/s", "gain", "embed"):
        assert header in text
    assert "steady state" not in text  # no model table for a pipeline-only file


# ---------------------------------------------------------------- the real detector


@pytest.fixture
def astronaut_folder(tmp_path):
    from skimage import io

    folder = tmp_path / "images"
    folder.mkdir()
    io.imsave(folder / "astronaut.png", skdata.astronaut(), check_contrast=False)
    return folder


def flattened_copy(path, out):
    """The same detector with 2-D outputs [HWA,K], as some exporters write it: head Reshapes target [-1,K]."""
    model = onnx.load(str(path))
    producers = {o: node for node in model.graph.node for o in node.output}
    for output in model.graph.output:
        reshape = producers[output.name]
        if reshape.op_type == "Sigmoid":
            reshape = producers[reshape.input[0]]
        dims = output.type.tensor_type.shape.dim
        rows, width = dims[1].dim_value, dims[2].dim_value
        target = f"{output.name}_flat_target"
        model.graph.initializer.append(numpy_helper.from_array(np.array([-1, width], np.int64), target))
        reshape.input[1] = target
        dims[0].dim_value, dims[1].dim_value = rows, width
        del dims[2]
    onnx.save(model, str(out))
    return out


def test_real_detector_finds_the_one_astronaut(real_scrfd_path, astronaut_folder, tmp_path, capsys):
    out = tmp_path / "real.parquet"
    code = main(["pipeline", "--images", str(astronaut_folder), "--det", str(real_scrfd_path), "--rec", "arcface_mbf",
                 "--runtime", "ort-cpu", "--batch", "4", "--out", str(out)])
    assert code == 0
    row = store.read_rows(out)[0]
    assert (row["frames_total"], row["faces_total"], row["status"]) == (1, 1, "ok")
    # The file's batch is fixed at 1: it runs at batch 1 and the user is told how to fix it.
    assert row["batch"] == 1 and "fix-batch" in row["warnings"] and "fix-batch" in capsys.readouterr().out
    stages = json.loads(row["stages_json"])
    assert (stages["source"], stages["synthetic_faces_per_frame"], stages["requested_batch"]) == ("images", None, 4)


def test_flattened_detector_layout_works_at_batch_1(real_scrfd_path, astronaut_folder, tmp_path):
    flat = flattened_copy(real_scrfd_path, tmp_path / "flat.onnx")
    info = zoo.resolve(parse_model_arg(str(flat)))
    assert info.flattened_outputs and info.outputs[0][1] == [12800, 1]
    out = tmp_path / "flat.parquet"
    assert main(["pipeline", "--images", str(astronaut_folder), "--det", str(flat), "--rec", "arcface_mbf",
                 "--runtime", "ort-cpu", "--out", str(out)]) == 0
    row = store.read_rows(out)[0]
    assert (row["batch"], row["frames_total"], row["faces_total"]) == (1, 1, 1)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("case,args,message", [
    ("missing folder", ["--images", "{tmp}/nope"], "no such folder"),
    ("empty folder", ["--images", "{tmp}/empty"], "no images (.bmp"),
    ("no frames", [], "--images DIR"),
    ("zero frames", ["--synthetic", "0"], "--synthetic 0"),
    ("zero batch", ["--synthetic", "2", "--batch", "0"], "--batch 0"),
    ("negative batch", ["--synthetic", "2", "--batch", "-3"], "--batch -3"),
    ("odd det size", ["--synthetic", "2", "--det-size", "300"], "multiple of 32"),
    ("unknown input format", ["--synthetic", "2", "--input", "uint8-hwc"], "--input: unknown input format"),
])
def test_bad_input_is_one_line_and_exit_2(case, args, message, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("not a picture")
    out = tmp_path / "out.parquet"
    argv = pipeline_args(*[a.format(tmp=tmp_path) for a in args], "--out", str(out))
    assert main(argv) == 2
    assert_one_line_error(capsys, message)
    assert not out.exists()  # nothing written for bad input


@pytest.mark.parametrize("flag,value,message", [
    ("--runtime", "no-such-runtime", "unknown runtime"),
    ("--det", "scrfd_nope@320", "unknown model"),
    ("--det", "arcface_mbf", "is an embedder, not a detector"),
    ("--rec", "scrfd_500m@320", "is a detector, not an embedder"),
    ("--det", "missing/model.onnx", "no such model file"),
])
def test_bad_runtime_or_model_is_one_line_and_exit_2(flag, value, message, tmp_path, capsys):
    argv = pipeline_args("--synthetic", "2", "--out", str(tmp_path / "out.parquet"))
    argv[argv.index(flag) + 1] = value
    assert main(argv) == 2
    assert_one_line_error(capsys, message)
    assert not (tmp_path / "out.parquet").exists()


def assert_one_line_error(capsys, message: str) -> None:
    err = capsys.readouterr().err.strip()
    assert err.startswith("facebench: error:") and "\n" not in err and "Traceback" not in err
    assert message in err


def test_an_image_that_does_not_decode_is_a_failed_row(tmp_path, capsys):
    pytest.importorskip("cv2")
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "truncated.png").write_bytes(b"\x89PNG not really")
    out = tmp_path / "out.parquet"
    assert main(pipeline_args("--images", str(folder), "--out", str(out))) == 2
    assert_one_line_error(capsys, "cannot decode image")
    row = store.read_rows(out)[0]  # the failure is recorded, as the sweep records a failed point
    assert (row["kind"], row["status"], row["frames_total"]) == ("pipeline", "failed", None)
    assert "cannot decode image" in row["reason"]
    assert json.loads(row["stages_json"])["embedder"]["model"] == "arcface_mbf"
