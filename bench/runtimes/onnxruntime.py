"""ONNX Runtime: the CPU execution provider (ort-cpu).

The GPU providers (ort-cuda, ort-trt) subclass OrtRuntime in their own module.
onnxruntime is imported lazily so that listing runtimes never needs it.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from bench.runtimes.base import Runtime
from bench.runtimes.options import RuntimeOptions, option
from bench.session import UNTIMED, LoadRequest, Outputs, Phases, Session, SessionGroup


def physical_cores() -> int:
    import psutil

    return psutil.cpu_count(logical=False) or psutil.cpu_count() or 1


def import_onnxruntime():
    import onnxruntime

    return onnxruntime


_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC",
           "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}


@dataclass(frozen=True)
class OrtCpuOptions(RuntimeOptions):
    intra_op_threads: int = option(0, int, minimum=0)  # 0: ONNX Runtime's default (physical cores)
    graph_optimization_level: str = option("all", str, choices=tuple(_LEVELS))


class OrtSession(Session):
    def __init__(self, session, input_name: str, settings: dict[str, Any]):
        self._session = session
        self._input_name = input_name
        self._output_names = [o.name for o in session.get_outputs()]
        self._settings = settings

    def infer(self, x: np.ndarray) -> Outputs:
        return dict(zip(self._output_names, self._session.run(self._output_names, {self._input_name: x})))

    def describe(self) -> dict[str, Any]:
        return dict(self._settings)

    def effective_precision(self) -> str | None:
        return self._settings.get("precision_effective")

    def close(self) -> None:
        self._session = None


class OrtRuntime(Runtime):
    name = "ort-cpu"
    device = "cpu"
    precisions = ("fp32", "fp16", "int8", "simplified")
    precision_notes = {"bf16": "ONNX Runtime's CPU provider has no BF16 kernels for these models' convolutions; "
                               "measure bf16 on openvino-cpu"}
    provider = "CPUExecutionProvider"
    Options = OrtCpuOptions
    concurrent = True

    def available(self) -> tuple[bool, str]:
        try:
            ort = import_onnxruntime()
        except ImportError as exc:
            return False, f"onnxruntime is not installed ({exc}); make bench EXTRA=cpu installs it"
        providers = ort.get_available_providers()
        if self.provider not in providers:
            return False, f"{self.provider} not in this onnxruntime build (has {', '.join(providers)})"
        return True, ""

    def versions(self) -> dict[str, str]:
        try:
            return {"onnxruntime": import_onnxruntime().__version__}
        except ImportError:
            return {}

    def session_options(self, request: LoadRequest):
        ort = import_onnxruntime()
        typed = self.options(request)
        options = ort.SessionOptions()
        options.intra_op_num_threads = typed.intra_op_threads
        options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _LEVELS[typed.graph_optimization_level])
        options.log_severity_level = 3
        # The model is passed as bytes (read timed apart); external data resolves beside the file.
        options.add_session_config_entry("session.model_external_initializers_file_folder_path",
                                         str(Path(request.model_path).resolve().parent))
        return options

    def providers(self, request: LoadRequest) -> list:
        return [self.provider]

    def load(self, request: LoadRequest, phases: Phases = UNTIMED) -> Session:
        ort = import_onnxruntime()
        with phases("read"):
            model_bytes = Path(request.model_path).read_bytes()
        with phases("compile"):
            options = self.session_options(request)
            session = ort.InferenceSession(model_bytes, sess_options=options, providers=self.providers(request))
        wrapped = self.wrap(session, request, self.describe_session(session, options, request))
        x = np.zeros(request.input_shape, dtype=request.input_dtype)
        with phases("first_infer"):
            wrapped.infer(x)
        return wrapped

    def load_concurrent(self, request: LoadRequest, concurrency: int, phases: Phases = UNTIMED) -> Session:
        """N sessions, one request each, as onnxruntime_perf_test -c does; ORT's default threads
        (one per physical core) are divided among them, so N sessions do not oversubscribe the
        cores. The cold start is the first session's (what each deployed session pays)."""
        if concurrency == 1 or not self.concurrent:
            return Runtime.load_concurrent(self, request, concurrency, phases)
        requested = self.options(request).intra_op_threads
        per_session = requested or max(1, physical_cores() // concurrency)
        shared = replace(request, options={**request.options, "intra_op_threads": per_session})
        members = [self.load(shared, phases)] + [self.load(shared) for _ in range(concurrency - 1)]
        settings = {"sessions": concurrency, "intra_op_threads": per_session,
                    "threads_divided": not requested}
        return SessionGroup(members, settings)

    def wrap(self, session, request: LoadRequest, settings: dict[str, Any]) -> Session:
        return OrtSession(session, request.input_name, settings)

    def describe_session(self, session, options, request: LoadRequest) -> dict[str, Any]:
        threads = options.intra_op_num_threads
        return {
            "providers": ",".join(session.get_providers()),
            "intra_op_threads": threads if threads else "default (physical cores)",
            "graph_optimization_level": str(options.graph_optimization_level).rsplit(".", 1)[-1],
            # ORT computes in the precision the graph carries; the artifact decides it (float16 I/O,
            # the fp16-nchw input format, is an FP16 graph whatever the requested precision).
            "precision_effective": "fp16" if request.input_dtype == "float16" else request.precision,
        }
