"""Input formats: uint8 frames with the preprocessing inside the graph (issue 17).

Real onnxruntime and openvino on small replicas; every check is also run against an
artifact broken on purpose (wrong channel order, a batch-mixing model) so it can fail.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import pyarrow.parquet as pq
import pytest

ort = pytest.importorskip("onnxruntime")
ov = pytest.importorskip("openvino")

from bench import store  # noqa: E402
from bench.checks import point_checks  # noqa: E402
from bench.cli import main  # noqa: E402
from bench.domain import FLOAT_NCHW, INPUT_FORMATS, input_format  # noqa: E402
from bench.errors import UserError  # noqa: E402
from bench.measure.protocol import make_inputs  # noqa: E402
from bench.models.arcface import build_arcface  # noqa: E402
from bench.models.batchfix import naive_batch_patch  # noqa: E402
from bench.models.info import inspect_model  # noqa: E402
from bench.models.input_artifact import make_input_artifact  # noqa: E402
from bench.models.precision import make_fp16  # noqa: E402
from bench.models.scrfd import build_scrfd  # noqa: E402
from bench.suite import override, parse_suite  # noqa: E402
from tests.conftest import REPO, openvino_infer, ort_infer  # noqa: E402

UINT8_FORMATS = [name for name, fmt in INPUT_FORMATS.items() if fmt.carries_pixels]
DET_SIZE = 96


@pytest.fixture(scope="module")
def embedder(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("formats") / "mbf.onnx"
    onnx.save(build_arcface("mbf"), path)
    return path


def parity(infer, info, fmt, frames, precision="fp32"):
    gates = point_checks.gates_for_input(fmt, {})
    return point_checks.parity_check(point_checks.infer_in_format(infer, fmt, info), info, 2, precision, frames, gates)


@pytest.mark.parametrize("name", UINT8_FORMATS)
@pytest.mark.parametrize("runner", [ort_infer, openvino_infer], ids=["ort-cpu", "openvino-cpu"])
def test_uint8_artifact_matches_the_float_model_on_the_same_frames(embedder, tmp_path, name, runner):
    fmt = input_format(name)
    info = inspect_model(embedder)
    artifact = make_input_artifact(embedder, fmt, info.mean, info.std, tmp_path)
    graph_input = onnx.load(str(artifact)).graph.input[0]
    assert graph_input.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert [d.dim_value for d in graph_input.type.tensor_type.shape.dim][1:] == list(fmt.shape(1, (112, 112))[1:])
    result = parity(runner(artifact), info, fmt, point_checks.parity_frames(info)[0])
    assert result.passed, result.summary()
    assert result.cosine_min >= point_checks.UINT8_FP32_COSINE_MIN
    assert (result.deciding.metric, result.deciding.gate) == ("cosine_min", point_checks.UINT8_FP32_COSINE_MIN)


def test_frames_in_the_wrong_channel_order_fail_the_uint8_gate(embedder, tmp_path):
    """An RGB artifact fed BGR frames (a missing flip) must not pass: the gate can fail."""
    info = inspect_model(embedder)
    rgb_artifact = make_input_artifact(embedder, input_format("uint8-nhwc-rgb"), info.mean, info.std, tmp_path)
    result = parity(ort_infer(rgb_artifact), info, input_format("uint8-nhwc-bgr"), point_checks.parity_frames(info)[0])
    assert result.passed is False and result.deciding.value < result.deciding.gate


def test_contamination_check_sees_through_the_uint8_input(tmp_path):
    pack = build_scrfd("500m", DET_SIZE, export="pack")
    fmt = input_format("uint8-nhwc-bgr")
    results = {}
    for name, model in {"batched": build_scrfd("500m", DET_SIZE), "naive": naive_batch_patch(pack)}.items():
        onnx.save(model, tmp_path / f"{name}.onnx")
        info = inspect_model(tmp_path / f"{name}.onnx")
        artifact = make_input_artifact(tmp_path / f"{name}.onnx", fmt, info.mean, info.std, tmp_path / "cache")
        infer = point_checks.infer_in_format(ort_infer(artifact), fmt, info)
        results[name] = point_checks.contamination_check(infer, info, 2, "fp32", seed=0).passed
    assert results == {"batched": True, "naive": False}


def test_artifacts_are_cached_per_format_and_combine_with_fp16(embedder, tmp_path):
    info = inspect_model(embedder)
    bgr = input_format("uint8-nhwc-bgr")
    first = make_input_artifact(embedder, bgr, info.mean, info.std, tmp_path)
    stamp = first.stat().st_mtime_ns
    assert make_input_artifact(embedder, bgr, info.mean, info.std, tmp_path) == first
    assert first.stat().st_mtime_ns == stamp  # reused, not rebuilt
    assert make_input_artifact(embedder, input_format("uint8-nchw"), info.mean, info.std, tmp_path) != first
    assert make_input_artifact(embedder, bgr, info.mean, 128.0, tmp_path) != first  # other preprocessing
    assert make_input_artifact(embedder, FLOAT_NCHW, info.mean, info.std, tmp_path) == embedder

    fp16_uint8 = make_input_artifact(make_fp16(embedder, tmp_path), bgr, info.mean, info.std, tmp_path)
    assert onnx.load(str(fp16_uint8)).graph.node[0].op_type == "Cast"
    result = parity(ort_infer(fp16_uint8), info, bgr, point_checks.parity_frames(info)[0], precision="fp16")
    assert result.passed, result.summary()


def test_make_inputs_gives_uint8_frames_in_the_formats_shape():
    shape = input_format("uint8-nhwc-rgb").shape(2, (8, 8))
    frames = make_inputs(shape, 2, 0, dtype="uint8")
    assert shape == (2, 8, 8, 3) and all(f.dtype == np.uint8 and f.shape == shape for f in frames)
    floats = make_inputs((2, 3, 8, 8), 1, 0, 127.5, 128.0)[0]
    assert floats.dtype == np.float32 and -1.0 <= floats.min() and floats.max() <= 1.0
    assert input_format("uint8-nchw").bytes_per_frame((112, 112)) * 4 == FLOAT_NCHW.bytes_per_frame((112, 112))


def test_suite_takes_formats_per_suite_per_model_and_from_the_command_line():
    data = {"runtimes": ["ort-cpu"], "input": ["float-nchw", "uint8-nhwc-bgr"],
            "models": [{"name": "arcface_mbf", "input": "uint8-nchw"}, "scrfd_500m@320"]}
    suite = parse_suite(data, "s", "s.toml")
    assert [suite.inputs_for(m) for m in suite.models] == [["uint8-nchw"], ["float-nchw", "uint8-nhwc-bgr"]]
    cli = override(suite, inputs=["uint8-nhwc-rgb"])
    assert [cli.inputs_for(m) for m in cli.models] == [["uint8-nhwc-rgb"]] * 2
    assert parse_suite({"runtimes": ["ort-cpu"], "models": ["arcface_mbf"]}, "s", "s.toml").inputs == ["float-nchw"]
    with pytest.raises(UserError, match="unknown input format 'uint8'; use one of float-nchw"):
        parse_suite({**data, "input": "uint8"}, "s", "s.toml")


def test_bad_input_format_on_the_command_line_is_one_line_and_exit_2(capsys):
    assert main(["run", str(REPO / "suites" / "quick.toml"), "--input", "rgb24"]) == 2
    err = capsys.readouterr().err
    assert "--input: unknown input format 'rgb24'" in err and len(err.strip().splitlines()) == 1


def test_a_sweep_measures_uint8_beside_float_and_says_so(tmp_path, capsys):
    suite = tmp_path / "formats.toml"
    suite.write_text((REPO / "suites" / "quick.toml").read_text().replace("[checks]", "[checks]\npeak_probes = false"))
    out = tmp_path / "out"
    assert main(["run", str(suite), "--models", "arcface_mbf", "--runtimes", "ort-cpu", "--batches", "2",
                 "--input", "float-nchw,uint8-nhwc-bgr", "--out", str(out), "--inline"]) == 0
    [path] = out.glob("*.parquet")
    rows = pd.DataFrame(store.read_rows(path)).set_index("input_format")
    assert rows.loc["float-nchw", "input_bytes_per_frame"] == 3 * 112 * 112 * 4
    assert rows.loc["uint8-nhwc-bgr", "input_bytes_per_frame"] == 3 * 112 * 112
    assert rows.status.eq("ok").all() and rows.parity_passed.all() and rows.contamination_passed.all()
    capsys.readouterr()
    assert main(["show", str(path)]) == 0
    assert "uint8-nhwc-bgr" in capsys.readouterr().out
    assert main(["compare", str(path), "--by", "input"]) == 0
    assert "by input" in capsys.readouterr().out


def test_files_from_before_input_formats_read_as_float_nchw(tmp_path):
    row = {"schema_version": 1, "model": "m", "model_sha256": "s", "runtime": "ort-cpu", "precision": "fp32",
           "batch": 1, "kind": "model", "status": "ok"}
    table = store.to_table([row]).drop_columns(["input_format", "input_bytes_per_frame"])
    pq.write_table(table.replace_schema_metadata({b"facebench.schema_version": b"1"}), tmp_path / "old.parquet")
    [read] = store.read_rows(tmp_path / "old.parquet")
    assert read["input_format"] == "float-nchw" and read["input_bytes_per_frame"] is None
