"""OpenVINO: CPU (and GPU / NPU where OpenVINO reports them).

Each batch size gets a static reshape and its own compile (the CPU plugin optimises
known shapes better), so compile time is part of every batch's cold start.
Two modes: THROUGHPUT, a queue of OPTIMAL_NUMBER_OF_INFER_REQUESTS requests kept busy
as benchmark_app does (the "requests" loop, measure/loops.py), and LATENCY with one
synchronous request (the "host" loop). Concurrency N > 1 is a third, "streams": no performance hint,
NUM_STREAMS = N and N infer requests, as `benchmark_app -hint none -nstreams N -nireq N`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from bench.domain import PRECISIONS
from bench.runtimes.base import Runtime
from bench.runtimes.options import RuntimeOptions, option
from bench.session import HOST, REQUESTS, UNTIMED, LoadRequest, Outputs, Phases, Session

# OpenVINO's name for each precision hint we request.
_HINTS = {"fp32": "f32", "fp16": "f16", "bf16": "bf16"}


@dataclass(frozen=True)
class OpenVinoOptions(RuntimeOptions):
    mode: str | None = option(None, str, choices=("throughput", "latency"))  # None: the runtime's own mode
    threads: int | None = option(None, int, minimum=1)  # INFERENCE_NUM_THREADS; None: the plugin decides
    model_cache: bool = option(False, bool)  # OpenVINO's CACHE_DIR in the run's cache folder


def import_openvino():
    import openvino

    return openvino


class RequestQueue:
    """OpenVINO's AsyncInferQueue in the request-queue step contract (bench.session): a request is
    restarted as soon as it completes, in completion order, as benchmark_app does. A round-robin
    wait() left a fast stream idle behind a slow one: on a machine shared with other work, whose load
    lands on one core, facebench then read 0.6-0.75 of benchmark_app. No Python callback: the queue's
    own C++ one marks a request idle, so no OpenVINO thread ever needs the GIL (which deadlocked)."""

    def __init__(self, compiled, input_name: str, count: int, inputs: list[np.ndarray]):
        ov = import_openvino()
        self._queue = ov.AsyncInferQueue(compiled, count)
        # Tensors sharing the loop's arrays: starting on one sets it, copying nothing.
        self._feeds = [{input_name: ov.Tensor(x, shared_memory=True)} for x in inputs]
        self.size = count

    def start(self, buffer: int) -> int:
        """Start the next idle request (the one completed earliest) on input buffer `buffer`; which request."""
        request = self._queue.get_idle_request_id()  # the request start_async takes next
        self._queue.start_async(self._feeds[buffer])
        return request

    def wait(self) -> tuple[int, float]:
        """Block until the earliest completion not restarted yet: (which request, OpenVINO's latency, ms)."""
        request = self._queue.get_idle_request_id()
        return request, self._queue[request].latency

    def latency_ms(self, request: int) -> float:
        return self._queue[request].latency

    def wait_all(self) -> None:
        self._queue.wait_all()


def output_names(model) -> list[str]:
    """The model's output names as read, before compiling: a compiled output also carries the names of
    the tensors fused into it (SCRFD's score_8 becomes {'450', 'score_8'}), and its any_name may be one."""
    return [output.get_any_name() for output in model.outputs]


class OpenVinoSession(Session):
    def __init__(self, compiled, input_name: str, settings: dict[str, Any], asynchronous: bool,
                 names: list[str]):
        self._compiled = compiled
        self._input_name = input_name
        self._names = names  # output_names(model) of the model compiled
        self._settings = settings
        self.loop = REQUESTS if asynchronous else HOST
        self._request = compiled.create_infer_request()
        self._queue = None

    def infer(self, x: np.ndarray) -> Outputs:
        results = self._request.infer({self._input_name: x})
        return {name: np.array(results[out]) for name, out in zip(self._names, self._compiled.outputs)}

    def run(self, x: np.ndarray) -> None:
        self._request.infer({self._input_name: x}, share_inputs=True, share_outputs=True)

    def request_queue(self, inputs: list[np.ndarray]) -> RequestQueue:
        """OPTIMAL_NUMBER_OF_INFER_REQUESTS requests (or one per stream) over the input buffers, each
        started on the buffer the loop names (inference-only); made on the first call and kept."""
        if self._queue is None:
            self._queue = RequestQueue(self._compiled, self._input_name, self._settings["infer_requests"], inputs)
        return self._queue

    def describe(self) -> dict[str, Any]:
        return dict(self._settings)

    def effective_precision(self) -> str | None:
        return self._settings.get("inference_precision")

    def close(self) -> None:
        if self._queue is not None:
            self._queue.wait_all()
        self._queue = None
        self._request = None
        self._compiled = None


class OpenVinoRuntime(Runtime):
    name = "openvino-cpu"
    ov_device = "CPU"
    device = "cpu"
    mode = "throughput"
    precisions = PRECISIONS
    Options = OpenVinoOptions
    concurrent = True

    def available(self) -> tuple[bool, str]:
        try:
            ov = import_openvino()
        except ImportError as exc:
            return False, f"openvino is not installed ({exc}); make bench installs it"
        devices = ov.Core().available_devices
        if not any(d.split(".")[0] == self.ov_device for d in devices):
            return False, f"OpenVINO reports no {self.ov_device} device (has {', '.join(devices) or 'none'})"
        return True, ""

    def versions(self) -> dict[str, str]:
        try:
            return {"openvino": import_openvino().get_version()}
        except ImportError:
            return {}

    def native_precision_problem(self, precision: str) -> str:
        """BF16 only where the device computes it: emulated BF16 is slower than FP32 (openvino #18866).
        (FP16 without native support compiles as FP32 and the row's precision_effective says so.)"""
        if precision != "bf16" or self._supports(import_openvino().Core(), "bf16"):
            return ""
        missing = ("this CPU has neither avx512_bf16 nor amx_bf16" if self.ov_device == "CPU"
                   else f"OpenVINO's {self.ov_device} plugin lists no BF16 in OPTIMIZATION_CAPABILITIES")
        return f"{self.name} has no native BF16 here: {missing}; measure fp32 (or fp16/int8) on this machine"

    def artifact_for(self, precision: str) -> str:
        # FP16 and BF16 on OpenVINO come from the precision hint over the FP32 graph.
        return "fp32" if precision in _HINTS else precision

    def compile_config(self, core, request: LoadRequest) -> dict[str, Any]:
        options = self.options(request)
        config: dict[str, Any] = {"PERFORMANCE_HINT": (options.mode or self.mode).upper()}
        # Everything but fp16/bf16 asks for f32: int8 keeps f32 for its non-quantised layers, and
        # without a hint AMX / AVX512-BF16 CPUs silently compute in bf16.
        hint = _HINTS.get(request.precision, "f32")
        config["INFERENCE_PRECISION_HINT"] = hint if self._supports(core, hint) else "f32"
        if options.threads is not None:
            config["INFERENCE_NUM_THREADS"] = options.threads
        if request.cache_dir and options.model_cache:
            config["CACHE_DIR"] = request.cache_dir
        return config

    def _supports(self, core, hint: str) -> bool:
        if hint == "f32":
            return True
        capabilities = core.get_property(self.ov_device, "OPTIMIZATION_CAPABILITIES")
        return {"f16": "FP16", "bf16": "BF16"}[hint] in capabilities

    def load(self, request: LoadRequest, phases: Phases = UNTIMED) -> Session:
        return self._load(request, phases, streams=None)

    def load_concurrent(self, request: LoadRequest, concurrency: int, phases: Phases = UNTIMED) -> Session:
        if concurrency == 1 or not self.concurrent:
            return super().load_concurrent(request, concurrency, phases)
        return self._load(request, phases, streams=concurrency)

    def _load(self, request: LoadRequest, phases: Phases, streams: int | None) -> Session:
        """`streams`: explicit NUM_STREAMS and one infer request per stream, without a performance
        hint (the hint would choose the streams itself)."""
        ov = import_openvino()
        core = ov.Core()
        with phases("read"):
            model = core.read_model(request.model_path)
        with phases("compile"):
            model.reshape({request.input_name: ov.PartialShape(list(request.input_shape))})
            config = self.compile_config(core, request)
            if streams:
                del config["PERFORMANCE_HINT"]
                config["NUM_STREAMS"] = streams
            compiled = core.compile_model(model, self.ov_device, config)
        settings = self._effective_settings(compiled, config)
        if streams:  # every request in flight, one per stream
            settings.update(mode="streams", performance_hint="none", infer_requests=streams)
        session = OpenVinoSession(compiled, request.input_name, settings,
                                  asynchronous=settings["mode"] in ("throughput", "streams"), names=output_names(model))
        x = np.zeros(request.input_shape, dtype=request.input_dtype)
        with phases("first_infer"):
            session.infer(x)
        return session

    def _effective_settings(self, compiled, config: dict[str, Any]) -> dict[str, Any]:
        """What the plugin actually chose, read back as benchmark_app's step 8 prints it."""
        def prop(name: str):
            try:
                return compiled.get_property(name)
            except RuntimeError:
                return None

        precision = _precision_name(prop("INFERENCE_PRECISION_HINT"))
        layers = _layer_precisions(compiled)
        if layers.get("i8", 0) + layers.get("u8", 0):
            precision = "int8"  # quantised layers ran in int8; the hint covers the rest
        return {
            "mode": config.get("PERFORMANCE_HINT", "none").lower(),
            "performance_hint": str(prop("PERFORMANCE_HINT")),
            "infer_requests": int(prop("OPTIMAL_NUMBER_OF_INFER_REQUESTS") or 1),
            "num_streams": str(prop("NUM_STREAMS")),
            "inference_num_threads": prop("INFERENCE_NUM_THREADS"),
            "inference_precision": precision,
            "requested_precision_hint": config.get("INFERENCE_PRECISION_HINT"),
            "layer_precisions": layers,
        }


def _layer_precisions(compiled) -> dict[str, int]:
    """Layers of the compiled (runtime) model by the precision the plugin executes them in."""
    counts: dict[str, int] = {}
    try:
        for op in compiled.get_runtime_model().get_ordered_ops():
            info = op.get_rt_info()
            if "runtimePrecision" in info:
                name = info["runtimePrecision"].astype(str)
                counts[name] = counts.get(name, 0) + 1
    except RuntimeError:  # plugins without a runtime model (some NPUs) tell nothing here
        return {}
    return counts


def _precision_name(value) -> str | None:
    """ov.Type f32 -> 'fp32'."""
    if value is None:
        return None
    text = getattr(value, "type_name", None) or str(value)
    return {"f32": "fp32", "f16": "fp16", "bf16": "bf16", "i8": "int8", "u8": "int8"}.get(text, text)


class OpenVinoLatencyRuntime(OpenVinoRuntime):
    name = "openvino-cpu-latency"
    mode = "latency"


class OpenVinoGpuRuntime(OpenVinoRuntime):
    name = "openvino-gpu"
    ov_device = "GPU"
    device = "gpu"
    concurrent = False  # explicit streams verified on the CPU plugin only


class OpenVinoNpuRuntime(OpenVinoRuntime):
    name = "openvino-npu"
    ov_device = "NPU"
    device = "npu"
    concurrent = False
