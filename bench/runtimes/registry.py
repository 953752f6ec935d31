"""Runtime names -> runtime classes, imported lazily so no GPU package loads at start-up."""
from __future__ import annotations

import importlib
from dataclasses import dataclass

from bench.errors import UserError
from bench.runtimes.base import Runtime

# name -> "module:Class". Each module imports its runtime package only inside methods.
RUNTIMES: dict[str, str] = {
    "ort-cpu": "bench.runtimes.onnxruntime:OrtRuntime",
    "openvino-cpu": "bench.runtimes.openvino:OpenVinoRuntime",
    "openvino-cpu-latency": "bench.runtimes.openvino:OpenVinoLatencyRuntime",
    "openvino-gpu": "bench.runtimes.openvino:OpenVinoGpuRuntime",
    "openvino-npu": "bench.runtimes.openvino:OpenVinoNpuRuntime",
    "ort-cuda": "bench.runtimes.ort_gpu:OrtCudaRuntime",
    "ort-trt": "bench.runtimes.ort_gpu:OrtTrtRuntime",
    "trt": "bench.runtimes.tensorrt:TensorRtRuntime",
}


@dataclass
class RuntimeStatus:
    name: str
    device: str
    available: bool
    reason: str
    versions: dict[str, str]


def get_runtime(name: str) -> Runtime:
    if name not in RUNTIMES:
        raise UserError(f"unknown runtime '{name}'; known runtimes: {', '.join(RUNTIMES)} (see facebench runtimes)")
    module_name, class_name = RUNTIMES[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)()


def check_names(names: list[str]) -> None:
    for name in names:
        get_runtime(name)


def runtime_status(name: str) -> RuntimeStatus:
    runtime = get_runtime(name)
    try:
        ok, reason = runtime.available()
    except Exception as exc:  # a broken install must not stop the listing
        ok, reason = False, f"{type(exc).__name__}: {exc}"
    return RuntimeStatus(name, runtime.device, ok, reason, runtime.versions() if ok else {})


def all_statuses() -> list[RuntimeStatus]:
    return [runtime_status(name) for name in RUNTIMES]
