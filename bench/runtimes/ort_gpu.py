"""ONNX Runtime on NVIDIA GPUs: CUDAExecutionProvider (ort-cuda) and TensorrtExecutionProvider (ort-trt).

Both run through IOBinding: the input is a device OrtValue filled from pinned host
memory with cudaMemcpyAsync, the outputs are preallocated device OrtValues copied
back into pinned host memory. Each iteration is marked with CUDA events before and
after the input copy, after compute and after the output copies, so a window
reports end-to-end frames/s (copies included; the `fps` column), the H2D / compute /
D2H split, and then runs the same iterations again with device-resident input and
output for compute-only frames/s (`fps_compute`).

ONNX Runtime runs on our own non-blocking stream (`user_compute_stream`), so the
copies and the inference are ordered on one stream. CUDA EP FP32 runs set
use_tf32=0 (strict FP32; ORT's default is TF32). cudnn_conv_algo_search is recorded;
EXHAUSTIVE searches again for each new input shape, so every batch size (its own
session here) pays that in its first inference and warms up on its own.

ort-trt uses explicit profile shapes (min 1 / opt = the batch / max 64) so the engine
is never rebuilt inside a sweep, and engine + timing caches in a folder keyed by
model sha256, ORT and TensorRT versions, GPU, precision and profile
(bench.runtimes.gpu_cache). Its cold start is reported twice: with empty caches
(built into a fresh folder) and with warm ones (a fresh process loading the saved
caches: within one process the EP may not find its own cache files,
onnxruntime #14269).

Nothing here imports onnxruntime, cuda-python or tensorrt at module import.
"""
from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from bench.models.info import sha256_file
from bench.runtimes.base import Runtime
from bench.runtimes.cuda import (CUDA_PYTHON_DISTS, PinnedBuffer, Stream, copy_d2h_async, copy_h2d_async,
                                 cuda_python_reason, device_identity, dist_version, import_cudart, join_reasons,
                                 module_present, nvidia_gpu_reason, set_device)
from bench.runtimes.cuda_session import BareParts, CudaSession
from bench.runtimes.gpu_cache import (CacheKey, TrtBuildOptions, build_options, cache_folder, cache_root, cached_files,
                                      key_profile, ort_profile_options, replace_payload, request_profile)
from bench.runtimes.onnxruntime import OrtCpuOptions, OrtRuntime, import_onnxruntime
from bench.runtimes.options import option
from bench.session import UNTIMED, LoadRequest, Phases, Session, SessionGroup

ALGO_SEARCH = ("EXHAUSTIVE", "HEURISTIC", "DEFAULT")
GRAPH_ID_SKIP = "-1"  # gpu_graph_id that disables CUDA-graph capture for one run
TRT_DISTS = ("tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt-cu13-libs", "tensorrt-cu12-libs", "tensorrt-libs")

_ORT_TYPES = {
    "tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
    "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_,
}


def ort_type_to_numpy(type_text: str) -> np.dtype:
    """ORT's 'tensor(float)' -> np.float32."""
    if type_text not in _ORT_TYPES:
        raise ValueError(f"unsupported tensor type {type_text}")
    return np.dtype(_ORT_TYPES[type_text])


def graph_id_for(batch: int) -> int:
    """One CUDA-graph id per batch shape; 0 is ORT's default id and -1 means 'do not capture'."""
    return int(batch)


def _flag(value: bool) -> str:
    return "True" if value else "False"


def _major(version: str | None) -> int | None:
    try:
        return int(str(version).split(".")[0])
    except (TypeError, ValueError):
        return None


# --------------------------------------------------------------------------- availability


def ort_gpu_reasons(provider: str, *, gpu_reason: str | None, ort_gpu_version: str | None,
                    ort_cpu_version: str | None, cuda_python_reason: str | None,
                    providers: list[str] | None, tensorrt_present: bool | None = None) -> list[str]:
    """Every reason an ORT GPU runtime cannot run, from probes that import no GPU package."""
    reasons = []
    if gpu_reason:
        reasons.append(gpu_reason)
    if ort_gpu_version is None:
        if ort_cpu_version:
            reasons.append("onnxruntime-gpu not installed (the CPU onnxruntime wheel is); make bench EXTRA=gpu installs it")
        else:
            reasons.append("onnxruntime-gpu not installed; make bench EXTRA=gpu installs it")
    elif ort_cpu_version:
        reasons.append(f"both onnxruntime {ort_cpu_version} and onnxruntime-gpu {ort_gpu_version} are installed: "
                       "`import onnxruntime` may load the CPU build; python scripts/ensure_one_onnxruntime.py --after gpu")
    elif providers is not None and provider not in providers:
        reasons.append(f"{provider} missing from onnxruntime providers [{', '.join(providers)}]")
    if cuda_python_reason:
        reasons.append(cuda_python_reason)
    if tensorrt_present is False:
        reasons.append("tensorrt not installed (the TensorRT EP loads its libraries); make bench EXTRA=gpu installs it")
    return reasons


@dataclass(frozen=True)
class OrtCudaOptions(OrtCpuOptions):
    device_id: int = option(0, int, minimum=0)
    cudnn_conv_algo_search: str = option("EXHAUSTIVE", str, choices=ALGO_SEARCH)
    use_tf32: bool | None = option(None, bool)  # None: strict FP32 for fp32, on for the others
    cuda_graph: bool = option(False, bool)
    # NHWC kernels feed the tensor cores without layout transposes (cuDNN 9); ORT's default is NCHW.
    prefer_nhwc: bool = option(False, bool)
    # The largest cuDNN workspace: faster FP16 convolutions on some models, slower on some ResNets.
    cudnn_conv_use_max_workspace: bool = option(True, bool)


@dataclass(frozen=True)
class OrtTrtOptions(OrtCudaOptions, TrtBuildOptions):
    pass


# --------------------------------------------------------------------------- session


class IoBindingSession(CudaSession):
    """One ORT GPU session at one batch size, driven through IOBinding on our stream."""

    def __init__(self, ort_session, request: LoadRequest, settings: dict[str, Any], stream,
                 device_id: int = 0, graph_id: int | None = None):
        ort = import_onnxruntime()
        self._session = ort_session
        self._settings = settings
        self.stream = stream
        self.device_id = device_id
        self._cudart = import_cudart()
        self._shape = tuple(request.input_shape)
        self._in_dtype = ort_type_to_numpy(ort_session.get_inputs()[0].type)
        self._device_in = ort.OrtValue.ortvalue_from_shape_and_type(list(self._shape), self._in_dtype, "cuda", device_id)
        self._host_in = PinnedBuffer(self._shape, self._in_dtype)
        self._in_bytes = self._host_in.nbytes
        self._io = ort_session.io_binding()
        self._io.bind_ortvalue_input(request.input_name, self._device_in)
        self._run_options = ort.RunOptions()
        if graph_id is not None:
            self._run_options.add_run_config_entry("gpu_graph_id", str(graph_id))
        self._outputs = self._bind_outputs(ort, device_id, capture=bool(settings.get("cuda_graph")))
        # Bound OrtValues never move, so their addresses are read once, outside the loops.
        self._in_ptr = self._device_in.data_ptr()
        self._copies_out = [(host.ptr, device.data_ptr(), nbytes) for device, host, nbytes in self._outputs.values()]
        self._staged = []
        # Without our stream inside ORT the copy must finish before ORT's stream reads the input.
        self._sync_after_h2d = not settings.get("shares_stream", False)

    def _bind_outputs(self, ort, device_id: int, capture: bool) -> dict[str, tuple[Any, Any, int]]:
        """Learn output shapes from one uncaptured run, then bind fixed device outputs (by output name)."""
        names = [o.name for o in self._session.get_outputs()]
        probe = ort.RunOptions()
        if capture:  # a graph captured over these temporary outputs would write to freed memory
            probe.add_run_config_entry("gpu_graph_id", GRAPH_ID_SKIP)
        for name in names:
            self._io.bind_output(name, "cuda", device_id)
        self._session.run_with_iobinding(self._io, probe)
        learned = [(tuple(v.shape()), ort_type_to_numpy(v.data_type())) for v in self._io.get_outputs()]
        self._io.clear_binding_outputs()
        outputs = {}
        for name, (shape, dtype) in zip(names, learned):
            device = ort.OrtValue.ortvalue_from_shape_and_type(list(shape), dtype, "cuda", device_id)
            self._io.bind_ortvalue_output(name, device)
            host = PinnedBuffer(shape, dtype)
            outputs[name] = (device, host, host.nbytes)
        return outputs

    def _copy_in(self, src_ptr: int) -> None:
        copy_h2d_async(self._in_ptr, src_ptr, self._in_bytes, self.stream, self._cudart)
        if self._sync_after_h2d:
            self.stream.synchronize()

    def d2h(self) -> None:
        for host_ptr, device_ptr, nbytes in self._copies_out:
            copy_d2h_async(host_ptr, device_ptr, nbytes, self.stream, self._cudart)

    def compute(self) -> None:
        self._session.run_with_iobinding(self._io, self._run_options)

    def _host_outputs(self) -> dict[str, PinnedBuffer]:
        return {name: host for name, (_, host, _) in self._outputs.items()}

    def parts(self) -> BareParts:
        return BareParts(partial(self._session.run_with_iobinding, self._io, self._run_options), self.stream,
                         self._in_ptr, self._in_bytes, [(d, h, n) for h, d, n in self._copies_out],
                         sync_after_h2d=self._sync_after_h2d)

    def close(self) -> None:
        self._close_staged()
        for _, host, _ in self._outputs.values():
            host.close()
        self._host_in.close()
        self._io = None
        self._session = None
        self.stream.close()


# --------------------------------------------------------------------------- runtimes


class _OrtGpuRuntime(OrtRuntime):
    device = "gpu"
    concurrent = False  # ort-trt: one session (N sessions would build N engines); ort-cuda runs N
    precisions = ("fp32", "fp16", "int8")
    precision_notes = {"bf16": "facebench runs BF16 on NVIDIA GPUs through trt only (a BF16 ONNX artifact); measure bf16 on trt"}
    uses_cuda = True
    Options = OrtCudaOptions
    needs_tensorrt = False

    def available(self) -> tuple[bool, str]:
        gpu_version = dist_version("onnxruntime-gpu")
        cpu_version = dist_version("onnxruntime")
        providers = None
        if gpu_version and not cpu_version:
            try:
                providers = list(import_onnxruntime().get_available_providers())
            except ImportError as exc:
                return False, f"onnxruntime-gpu {gpu_version} is installed but does not import ({exc})"
        reasons = ort_gpu_reasons(
            self.provider, gpu_reason=nvidia_gpu_reason(), ort_gpu_version=gpu_version, ort_cpu_version=cpu_version,
            cuda_python_reason=cuda_python_reason(), providers=providers,
            tensorrt_present=module_present("tensorrt") if self.needs_tensorrt else None)
        return (not reasons), join_reasons(reasons)

    def versions(self) -> dict[str, str]:
        found = {"onnxruntime-gpu": dist_version("onnxruntime-gpu"), "cuda-python": dist_version(*CUDA_PYTHON_DISTS)}
        if self.needs_tensorrt:
            found["tensorrt"] = dist_version(*TRT_DISTS)
        return {k: v for k, v in found.items() if v}

    # -- provider options
    def device_id(self, request: LoadRequest) -> int:
        return self.options(request).device_id

    def cuda_options(self, request: LoadRequest, stream) -> dict[str, str]:
        options = self.options(request)
        # Strict FP32 unless asked: TF32 changes FP32 results and speed (ORT's default is on).
        tf32 = options.use_tf32 if options.use_tf32 is not None else request.precision != "fp32"
        return {
            "device_id": str(options.device_id),
            "cudnn_conv_algo_search": options.cudnn_conv_algo_search,
            "use_tf32": "1" if tf32 else "0",
            "do_copy_in_default_stream": "1",
            "enable_cuda_graph": "1" if self.cuda_graph(request) else "0",
            "prefer_nhwc": "1" if options.prefer_nhwc else "0",
            "cudnn_conv_use_max_workspace": "1" if options.cudnn_conv_use_max_workspace else "0",
            "user_compute_stream": str(stream.handle),
        }

    def cuda_graph(self, request: LoadRequest) -> bool:
        return self.options(request).cuda_graph

    def graph_id(self, request: LoadRequest) -> int | None:
        """The CUDA EP's gpu_graph_id run option for this batch shape (None: no CUDA EP graph)."""
        if not self.cuda_graph(request) or self.provider != "CUDAExecutionProvider":
            return None
        return graph_id_for(request.input_shape[0])

    def gpu_providers(self, request: LoadRequest, stream, cache_path: str | None) -> list:
        return [(self.provider, self.cuda_options(request, stream))]

    # -- loading
    def create_session(self, request: LoadRequest, model_bytes: bytes, stream, cache_path: str | None):
        ort = import_onnxruntime()
        options = self.session_options(request)
        session = ort.InferenceSession(model_bytes, sess_options=options,
                                       providers=self.gpu_providers(request, stream, cache_path))
        active = session.get_providers()
        if self.provider not in active:
            raise RuntimeError(f"{self.provider} did not load (session runs on {', '.join(active)}); "
                               f"{self._load_hint()}")
        return session, options

    def _load_hint(self) -> str:
        return ("check the CUDA and cuDNN libraries onnxruntime-gpu needs "
                "(python -c 'import onnxruntime; onnxruntime.preload_dlls()')")

    def _prepare(self) -> None:
        ort = import_onnxruntime()
        # ORT >= 1.31 warns on every "cuda" OrtValue that no plugin EP device is registered, then uses
        # the built-in CUDA allocator; sessions log on their own (severity 3) and errors still show.
        ort.set_default_logger_severity(3)
        preload = getattr(ort, "preload_dlls", None)
        if preload is not None:  # CUDA / cuDNN from the nvidia-* wheels, when that is how they came
            try:
                preload()
            except Exception:
                pass

    def load(self, request: LoadRequest, phases: Phases = UNTIMED) -> Session:
        self._prepare()
        set_device(self.device_id(request))  # the stream ORT computes on must live on its device
        stream = Stream()
        try:
            return self.load_on(request, stream, phases)
        except BaseException:
            stream.close()
            raise

    def load_concurrent(self, request: LoadRequest, concurrency: int, phases: Phases = UNTIMED) -> Session:
        """N sessions, each on its own CUDA stream, served by one host thread each (measure/loops.py)."""
        if concurrency == 1 or not self.concurrent:
            return Runtime.load_concurrent(self, request, concurrency, phases)
        members = [self.load(request, phases)]
        try:
            members += [self.load(request) for _ in range(concurrency - 1)]
        except BaseException:
            for member in members:
                member.close()
            raise
        return SessionGroup(members, {"sessions": concurrency, "streams": concurrency})

    def load_on(self, request: LoadRequest, stream, phases: Phases) -> Session:
        return self.session_on(request, stream, cache_path=None, phases=phases)

    def session_on(self, request: LoadRequest, stream, cache_path: str | None, phases: Phases) -> Session:
        with phases("read"):
            model_bytes = Path(request.model_path).read_bytes()
        with phases("compile"):
            ort_session, options = self.create_session(request, model_bytes, stream, cache_path)
        settings = self.gpu_settings(ort_session, options, request, cache_path)
        # Binding runs the first inference (to learn the output shapes): engine build or cuDNN search land here.
        with phases("first_infer"):
            return IoBindingSession(ort_session, request, settings, stream, self.device_id(request),
                                    self.graph_id(request))

    def gpu_settings(self, ort_session, options, request: LoadRequest, cache_path: str | None) -> dict[str, Any]:
        settings = self.describe_session(ort_session, options, request)
        effective = ort_session.get_provider_options()
        cuda = effective.get("CUDAExecutionProvider", {})
        mine = effective.get(self.provider, {})
        stream_value = mine.get("user_compute_stream", "0")
        settings.update({
            "cudnn_conv_algo_search": cuda.get("cudnn_conv_algo_search"),
            "use_tf32": cuda.get("use_tf32"),
            "prefer_nhwc": cuda.get("prefer_nhwc"),
            "cudnn_conv_use_max_workspace": cuda.get("cudnn_conv_use_max_workspace"),
            "cuda_graph": self.cuda_graph(request),
            "graph_id": self.graph_id(request),
            "shares_stream": stream_value not in ("", "0", None),
            "io": "IOBinding: pinned host -> device OrtValue; outputs bound on the device",
            "fps": "end-to-end (H2D + compute + D2H per iteration); fps_compute: device-resident input and output",
        })
        return settings


class OrtCudaRuntime(_OrtGpuRuntime):
    name = "ort-cuda"
    concurrent = True  # N sessions on N streams
    provider = "CUDAExecutionProvider"
    # A QDQ model on the CUDA EP runs FP32 kernels between quantise/dequantise nodes: ONNX Runtime
    # runs INT8 on NVIDIA GPUs through TensorRT, so calling it int8 here would mislead.
    precisions = ("fp32", "fp16")
    precision_notes = {"int8": "the CUDA EP has no INT8 kernels for QDQ models; use ort-trt or trt for INT8",
                       **_OrtGpuRuntime.precision_notes}


class OrtTrtRuntime(_OrtGpuRuntime):
    name = "ort-trt"
    Options = OrtTrtOptions
    provider = "TensorrtExecutionProvider"
    needs_tensorrt = True

    def _prepare(self) -> None:
        super()._prepare()
        # Importing tensorrt loads libnvinfer from its wheel, where the EP's dlopen then finds it.
        try:
            import tensorrt  # noqa: F401
        except ImportError:
            pass

    def _load_hint(self) -> str:
        return (f"onnxruntime-gpu {dist_version('onnxruntime-gpu')} needs the TensorRT major version it was built "
                f"with; installed tensorrt {dist_version(*TRT_DISTS)}")

    def trt_version(self) -> str | None:
        return dist_version(*TRT_DISTS)

    def profile(self, request: LoadRequest):
        return request_profile(request, self.options(request))

    def trt_options(self, request: LoadRequest, stream, cache_path: str | None) -> dict[str, str]:
        typed = self.options(request)
        options = {
            "device_id": str(typed.device_id),
            "trt_builder_optimization_level": str(typed.builder_optimization_level),
            "trt_cuda_graph_enable": _flag(self.cuda_graph(request)),
            "user_compute_stream": str(stream.handle),
        }
        profile = self.profile(request)
        if profile is not None:  # a static input has no profile to give
            options.update(ort_profile_options(request.input_name, profile))
        if typed.workspace_mb is not None:
            options["trt_max_workspace_size"] = str(typed.workspace_mb * 2**20)
        if cache_path:
            options.update({"trt_engine_cache_enable": "True", "trt_engine_cache_path": cache_path,
                            "trt_timing_cache_enable": "True", "trt_timing_cache_path": cache_path})
        # TensorRT 11 has no FP16/INT8 builder flags: precision comes from the ONNX artifact.
        if (_major(self.trt_version()) or 11) < 11:
            options["trt_fp16_enable"] = _flag(request.precision in ("fp16", "int8"))
            options["trt_int8_enable"] = _flag(request.precision == "int8")
        return options

    def gpu_providers(self, request: LoadRequest, stream, cache_path: str | None) -> list:
        cuda = self.cuda_options(request, stream)
        cuda["enable_cuda_graph"] = "0"  # graphs, if any, belong to the TensorRT EP here
        return [(self.provider, self.trt_options(request, stream, cache_path)), ("CUDAExecutionProvider", cuda)]

    def cache_key(self, request: LoadRequest):
        options = self.options(request)
        identity = device_identity(options.device_id)
        return CacheKey(
            runtime=self.name, model_sha256=sha256_file(request.model_path), precision=request.precision,
            profile=key_profile(self.profile(request), request), gpu=identity.label,
            trt_version=str(self.trt_version()),
            ort_version=import_onnxruntime().__version__, cuda_runtime=identity.cuda_runtime,
            build=build_options({"opt_level": options.builder_optimization_level,
                                 "workspace_mb": options.workspace_mb}),
        )

    def load_on(self, request: LoadRequest, stream, phases: Phases) -> Session:
        mode = self.options(request).cold_start
        folder = cache_folder(cache_root(request.cache_dir), self.cache_key(request))
        if mode == "warm":
            hit = bool(cached_files(folder))
            session = self.session_on(request, stream, str(folder), phases)
            phases.record("warm_cache_total", phases.total_ms() if hit else None)
            session.describe_extra({"engine_cache": str(folder), "cold_start": "warm" if hit else "empty (first build)"})
            return session
        empty = Path(tempfile.mkdtemp(prefix=".empty-", dir=folder.parent))
        try:
            session = self.session_on(request, stream, str(empty), phases)
            replace_payload(folder, empty)
        finally:
            shutil.rmtree(empty, ignore_errors=True)
        probe = warm_probe(request, str(folder), phases)
        phases.record("warm_cache_total", probe.get("total_ms"))
        session.describe_extra({"engine_cache": str(folder), "cold_start": "empty caches; warm figure from a fresh process",
                                "warm_probe": probe})
        return session


# --------------------------------------------------------------------------- warm-cache probe


def engine_files(folder: str) -> dict[str, int]:
    """Engine files (name -> mtime) in a cache folder; a changed set means the engine was rebuilt.

    Only engines count: the EP may rewrite its timing cache on a hit.
    """
    files = cached_files(folder)
    engines = [p for p in files if p.suffix == ".engine"] or files
    return {p.name: p.stat().st_mtime_ns for p in engines}


def warm_probe(request: LoadRequest, cache_path: str, phases: Phases) -> dict[str, Any]:
    """Session creation + first inference in a fresh process with the caches in `cache_path`."""
    before = engine_files(cache_path)
    result = phases.fresh_process("bench.runtimes.ort_gpu:warm_start", request, cache_path=cache_path)
    if result.get("total_ms") is None:
        return result
    rebuilt = engine_files(cache_path) != before
    result["note"] = ("cache miss: the probe wrote new engine files" if rebuilt else "cache hit")
    if rebuilt:
        result["total_ms"] = None  # a rebuild is not a warm-cache cold start
    return result


def warm_start(request: LoadRequest, phases: Phases, cache_path: str) -> dict[str, Any]:
    """The warm-cache cold start the probe process times: CUDA context, session creation, first inference."""
    runtime = OrtTrtRuntime()
    runtime._prepare()  # the import is each point's process_start_ms, not its cold start
    runtime.profile(request)  # reads the ONNX once, outside the clock, as the worker did before its own
    with phases("cuda_context"):
        set_device(runtime.device_id(request))
        stream = Stream()
    with phases("compile"):
        model_bytes = Path(request.model_path).read_bytes()
        session, _ = runtime.create_session(request, model_bytes, stream, cache_path)
    with phases("first_infer"):
        session.run(None, {request.input_name: np.zeros(request.input_shape, dtype=request.input_dtype)})
    # total: the whole fresh-process cold start, the CUDA context included
    return {"total_ms": sum(phases.ms(p) or 0.0 for p in ("cuda_context", "compile", "first_infer"))}
