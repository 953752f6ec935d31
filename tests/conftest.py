import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
# The licensed real SCRFD-500M lives beside the checkout, never in it.
FIXTURES = Path(os.environ.get("FACEBENCH_FIXTURES", REPO.parent / "shared" / "fixtures"))
REAL_SCRFD_500M = FIXTURES / "scrfd_500m_bnkps.onnx"


@pytest.fixture
def real_scrfd_path() -> Path:
    if not REAL_SCRFD_500M.is_file():
        pytest.skip(f"real SCRFD-500M fixture absent at {REAL_SCRFD_500M} (set FACEBENCH_FIXTURES)")
    return REAL_SCRFD_500M


def ort_infer(model, threads: int = 1):
    """bench's OrtSession.infer on a real ONNX Runtime CPU session of `model` (a path or a ModelProto):
    outputs by name, as every Session returns them."""
    import onnxruntime as ort

    from bench.runtimes.onnxruntime import OrtSession

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads  # two cores shared with other test runs
    options.log_severity_level = 3  # naive batch patches keep batch-1 output shapes: warnings only
    source = model.SerializeToString() if hasattr(model, "SerializeToString") else str(model)
    session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    return OrtSession(session, session.get_inputs()[0].name, {}).infer


def openvino_infer(path, input_shape: tuple[int, ...] | None = None):
    """bench's OpenVinoSession.infer on OpenVINO CPU (FP32, one thread) of the file at `path`, reshaped to
    `input_shape` when given: outputs by name, as every Session returns them."""
    ov = pytest.importorskip("openvino")

    from bench.runtimes.openvino import OpenVinoSession, output_names

    core = ov.Core()
    model = core.read_model(str(path))
    input_name = model.inputs[0].get_any_name()
    if input_shape is not None:
        model.reshape({input_name: list(input_shape)})
    # f32 explicitly: OpenVINO CPU may pick bf16 on its own, which is not what the tests check.
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 1})
    return OpenVinoSession(compiled, input_name, {}, asynchronous=False, names=output_names(model)).infer


def constant_embedder(x):
    """An embedder stand-in for detector tests: one 512-d embedding per face."""
    return {"embedding": np.ones((len(x), 512), np.float32)}


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    # One model cache per test session, never the user's ~/.cache; session-scoped so that
    # module fixtures (which run first) and their subprocesses see it too.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FACEBENCH_CACHE", str(tmp_path_factory.getbasetemp() / "facebench-cache"))
        yield


def tiny_suite(name: str, batches: list[int], model: str = "arcface_mbf", checks: str = "parity = false",
               extra: str = "") -> str:
    """A suite TOML that measures in a blink: one model on ort-cpu, short windows, no peak probes.
    `checks`: the [checks] lines; `extra`: more TOML after them."""
    return (f'name = "{name}"\nruntimes = ["ort-cpu"]\nbatches = {batches}\n[[models]]\nname = "{model}"\n'
            "[measure]\nwarmup_s = 0.05\nwindow_s = 0.1\nmax_windows = 4\n"
            f"[checks]\n{checks}\npeak_probes = false\n{extra}")
