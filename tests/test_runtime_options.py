"""Typed runtime options: checked when the suite loads, read as fields by the runtimes."""
from __future__ import annotations

import subprocess
import sys

import pytest

from bench.errors import UserError
from bench.session import LoadRequest
from bench.runtimes.registry import get_runtime
from bench.suite import parse_suite
from tests.conftest import REPO
from tests.test_harness import facebench


def suite_with(runtime: str, **options):
    return parse_suite({"runtimes": [runtime], "models": ["arcface_mbf"], "runtime_options": {runtime: options}},
                       default_name="t", where="t.toml")


@pytest.mark.parametrize("runtime, options, says", [
    ("openvino-cpu", {"mode": "warp"}, 'mode = "warp"; use one of throughput, latency'),
    ("openvino-cpu", {"threads": True}, "threads = true must be a whole number"),
    ("openvino-cpu", {"threads": 0}, "threads = 0 is out of range; use 1 or more"),
    ("ort-cpu", {"intra_op_threads": "4"}, 'intra_op_threads = "4" must be a whole number'),
    ("ort-cpu", {"graph_optimization_level": "max"}, "use one of disable, basic, extended, all"),
    ("ort-cuda", {"cudnn_conv_algo_search": "fastest"}, "use one of EXHAUSTIVE, HEURISTIC, DEFAULT"),
    ("ort-cuda", {"use_tf32": 1}, "use_tf32 = 1 must be true or false"),
    ("ort-trt", {"profile": "dynamic"}, "use one of range, per-batch"),
    ("ort-trt", {"profiling_verbosity": "detailed"}, "unknown option 'profiling_verbosity'; ort-trt takes"),
    ("trt", {"builder_optimization_level": 6}, "builder_optimization_level = 6 is out of range; use 0..5"),
    ("trt", {"cold_start": "cold"}, "use one of both, warm"),
    ("trt", {"workspace_mb": 0.5}, "workspace_mb = 0.5 must be a whole number"),
])
def test_a_bad_option_is_one_line_naming_the_key_and_the_fix(runtime, options, says):
    with pytest.raises(UserError) as caught:
        suite_with(runtime, **options)
    message = str(caught.value)
    assert message.startswith(f"t.toml [runtime_options.{runtime}]: ") and says in message and "\n" not in message


def test_every_old_option_key_is_still_taken():
    before = {  # the option_keys each runtime declared before its options were typed
        "ort-cpu": {"intra_op_threads", "graph_optimization_level"},
        "openvino-cpu": {"mode", "threads", "model_cache"},
        "ort-cuda": {"intra_op_threads", "graph_optimization_level", "device_id", "cudnn_conv_algo_search",
                     "use_tf32", "cuda_graph"},
        "ort-trt": {"intra_op_threads", "graph_optimization_level", "device_id", "cudnn_conv_algo_search", "use_tf32",
                    "cuda_graph", "profile", "profile_max_batch", "builder_optimization_level", "workspace_mb",
                    "cold_start"},
        "trt": {"device_id", "builder_optimization_level", "workspace_mb", "profiling_verbosity", "tf32", "profile",
                "profile_max_batch", "cold_start", "cuda_graph"},
    }
    for name, keys in before.items():
        assert keys <= set(get_runtime(name).Options.keys()), name  # new options may come; none may go


def test_choices_are_matched_without_case_and_kept_canonical():
    suite = suite_with("ort-cuda", cudnn_conv_algo_search="heuristic", use_tf32=True)
    options = get_runtime("ort-cuda").Options.parse(suite.runtime_options["ort-cuda"], "ort-cuda")
    assert options.cudnn_conv_algo_search == "HEURISTIC" and options.use_tf32 is True
    assert options.device_id == 0 and options.cuda_graph is False  # unset: the runtime's defaults


def test_checking_every_runtime_imports_no_gpu_package():
    code = ("import sys\nfrom bench.suite import parse_suite\nfrom bench.runtimes.registry import RUNTIMES\n"
            "parse_suite({'runtimes': list(RUNTIMES), 'models': ['arcface_mbf'], 'runtime_options': "
            "{'trt': {'cuda_graph': True}, 'ort-trt': {'workspace_mb': 256}, 'ort-cuda': {'device_id': 0}}}, 't', 't')\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('tensorrt', 'cuda', 'onnxruntime', 'openvino', 'pynvml')))\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_a_bad_option_stops_the_run_before_any_worker(tmp_path):
    suite = tmp_path / "bad-option.toml"
    suite.write_text("runtimes = ['openvino-cpu']\nbatches = [1]\n[[models]]\nname = 'arcface_mbf'\n"
                     "[runtime_options.openvino-cpu]\nmode = 'warp'\n")
    out = tmp_path / "out"
    result = facebench("run", str(suite), "--out", str(out))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [f"facebench: error: {suite} [runtime_options.openvino-cpu]: "
                                                  "mode = \"warp\"; use one of throughput, latency"]
    assert not out.exists()  # nothing ran, so nothing was written


def relu_model(path) -> str:
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, 112, 112])
    y = helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 3, 112, 112])
    graph = helper.make_graph([helper.make_node("Relu", ["input.1"], ["out"])], "g", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return str(path)


def test_the_typed_options_reach_the_runtime(tmp_path):
    model = relu_model(tmp_path / "relu.onnx")
    for name, options, wanted in [("ort-cpu", {"intra_op_threads": 1, "graph_optimization_level": "basic"},
                                   {"intra_op_threads": 1, "graph_optimization_level": "ORT_ENABLE_BASIC"}),
                                  ("openvino-cpu", {"mode": "latency", "threads": 1},
                                   {"mode": "latency", "inference_num_threads": 1})]:
        runtime = get_runtime(name)
        session = runtime.load(LoadRequest(model_path=model, input_name="input.1", input_shape=(1, 3, 112, 112),
                                           options=options))
        try:
            described = session.describe()
            assert {k: described[k] for k in wanted} == wanted, name
        finally:
            session.close()
