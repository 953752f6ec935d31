"""Model zoo: the replica cache, inspection of real files, and model-file validation."""
from __future__ import annotations

import json
import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from bench.cli import main
from bench.errors import ModelFileError, UserError
from bench.models import zoo
from bench.models.info import inspect_model
from bench.models.validate import validate_model_file


def test_cache_hit_returns_same_file_without_rebuilding():
    first = zoo.build_cached("scrfd_500m", 320)
    mtime = os.stat(first.path).st_mtime_ns
    second = zoo.build_cached("scrfd_500m", 320)
    assert second.path == first.path and second.sha256 == first.sha256
    assert os.stat(second.path).st_mtime_ns == mtime


def test_corrupt_cache_file_is_rebuilt():
    info = zoo.build_cached("arcface_mbf")
    with open(info.path, "r+b") as handle:
        handle.seek(1000)
        handle.write(b"\xff" * 64)
    rebuilt = zoo.build_cached("arcface_mbf")
    assert rebuilt.sha256 == info.sha256  # deterministic weights: the same bytes again
    assert inspect_model(rebuilt.path).sha256 == info.sha256


def test_builtin_inspection_carries_params_and_flops():
    info = zoo.build_cached("scrfd_500m", 640)
    assert info.family == "detector" and info.input_hw == (640, 640)
    assert abs(info.macs_per_frame - 733_545_600) / 733_545_600 < 0.01
    assert info.flops_per_frame == 2 * info.macs_per_frame
    assert not info.batch_fixed and not info.flattened_outputs
    assert (info.mean, info.std) == (127.5, 128.0)


def test_inspect_real_fixture_json(real_scrfd_path, capsys):
    assert main(["models", "inspect", str(real_scrfd_path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["family"] == "detector" and data["input_name"] == "input.1"
    assert data["batch_fixed"] is True and data["input_hw"] == [640, 640]
    assert data["sha256"] == "b467f878e26ff1e7ee05cd9936fdff63fa2a5af5d732ed17ee231f2dd5cc07ae"
    assert abs(data["params"] - 626_322) < 100 and data["flops_per_frame"] == 2 * data["macs_per_frame"]
    assert data["op_counts"]["Conv"] == 60
    info = inspect_model(real_scrfd_path)
    assert info.batch_limit_reason(1) is None
    assert "fix-batch" in info.batch_limit_reason(4)


def test_inspect_prints_interface_for_builtin(capsys):
    assert main(["models", "inspect", "arcface_mbf"]) == 0
    out = capsys.readouterr().out
    assert "embedder" in out and "MACs / frame" in out and "(x - 127.5) / 127.5" in out


def _save(model: onnx.ModelProto, path, **kwargs) -> str:
    onnx.save(model, str(path), **kwargs)
    return str(path)


def _tiny_embedder(shape=("N", 3, 112, 112), elem=TensorProto.FLOAT) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("input.1", elem, list(shape))
    y = helper.make_tensor_value_info("out", elem, ["N", 3])
    pool = helper.make_node("GlobalAveragePool", ["input.1"], ["pooled"])
    flat = helper.make_node("Flatten", ["pooled"], ["out"])
    graph = helper.make_graph([pool, flat], "tiny", [x], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _file(folder, name: str, content: bytes | None) -> str:
    path = folder / name
    if content is not None:
        path.write_bytes(content)
    return str(path)


@pytest.mark.parametrize("name, content, message", [
    ("missing.onnx", None, "not found"),
    ("empty.onnx", b"", "empty file"),
    ("pic.onnx", b"\x89PNG\r\n\x1a\n" + b"0" * 100, "not an ONNX file"),
])
def test_unusable_files_are_refused(tmp_path, name, content, message):
    with pytest.raises(ModelFileError, match=message):
        validate_model_file(_file(tmp_path, name, content))


def test_folder_and_unreadable_paths_are_refused(tmp_path):
    with pytest.raises(ModelFileError, match="not a regular file"):
        validate_model_file(tmp_path)
    link = tmp_path / "dangling.onnx"
    link.symlink_to(tmp_path / "nowhere.onnx")
    with pytest.raises(ModelFileError, match="not found"):
        validate_model_file(link)


def test_truncated_file_is_refused(tmp_path):
    whole = zoo.build_cached("scrfd_500m", 320).path
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(open(whole, "rb").read()[:300_000])
    with pytest.raises(ModelFileError, match="truncated or damaged"):
        validate_model_file(cut)


def test_external_data_missing_and_outside_folder(tmp_path):
    model = onnx.load(zoo.build_cached("arcface_mbf").path)
    inside = tmp_path / "m"
    inside.mkdir()
    path = _save(model, inside / "ext.onnx", save_as_external_data=True, location="weights.bin", size_threshold=0)
    validate_model_file(path)  # complete: fine
    os.remove(inside / "weights.bin")
    with pytest.raises(ModelFileError, match="missing"):
        validate_model_file(path)
    escaped = onnx.load(path, load_external_data=False)
    for tensor in escaped.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "../../etc/passwd"
    with pytest.raises(ModelFileError, match="outside the model's folder"):
        validate_model_file(_save(escaped, inside / "escape.onnx"))


@pytest.mark.parametrize("shape, elem, message", [
    (("N", 3, 112), TensorProto.FLOAT, "rank 3"),
    (("N", 3, 112, 112), TensorProto.INT64, "not a float image tensor"),
    (("N", 1, 112, 112), TensorProto.FLOAT, "1 channels"),
    (("N", 3, 100000, 112), TensorProto.FLOAT, "absurd"),
])
def test_non_image_inputs_are_refused(tmp_path, shape, elem, message):
    model = _tiny_embedder(shape, elem)
    model.graph.node[0].op_type = "Identity" if len(shape) != 4 else "GlobalAveragePool"
    with pytest.raises(ModelFileError, match=message):
        validate_model_file(_save(model, tmp_path / "bad.onnx"))


def test_bad_model_on_command_line_is_one_line_exit_2(tmp_path, capsys):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"\x08\x07garbage" * 10)
    assert main(["models", "inspect", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(bad) in err[0]


def test_unknown_builtin_names_the_choices():
    with pytest.raises(UserError, match="built-in models: scrfd_500m"):
        zoo.build_cached("scrfd_1000g")


def test_replica_runs_finite_in_onnxruntime():
    import onnxruntime as ort

    info = zoo.build_cached("scrfd_500m", 320)
    session = ort.InferenceSession(info.path, providers=["CPUExecutionProvider"])
    outputs = session.run(None, {"input.1": np.random.default_rng(0).standard_normal((2, 3, 320, 320), np.float32)})
    assert [o.shape for o in outputs[:3]] == [(2, 3200, 1), (2, 800, 1), (2, 200, 1)]
    assert all(np.isfinite(o).all() for o in outputs)
