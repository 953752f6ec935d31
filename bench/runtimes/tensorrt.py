"""Native TensorRT (10.x and 11.x): build or load an engine, run it with execute_async_v3.

Build: the ONNX parser into a network (strongly typed on 11, where precision comes
from the ONNX artifact: FP16 or BF16 weights and casts, or Q/DQ INT8; on 10.x the FP16 / BF16 /
INT8 builder flags are set for those artifacts, since 10.x networks are weakly typed), one
optimisation profile (min 1 / opt = the batch / max 64, or exactly the batch with
profile = "per-batch"; at concurrency N, N identical profiles, one per execution
context), and a timing cache. Engine and timing cache live in a
folder keyed by model sha256, TensorRT version, GPU, precision and profile
(bench.runtimes.gpu_cache). Cold start is reported twice: built with empty caches
(parse + build + deserialise, then the first inference), and loaded from the warm
cache (read + deserialise + first inference).

Run: pinned host buffers (cudaMallocHost), device buffers bound once with
set_tensor_address, execute_async_v3 on a non-blocking stream. Each iteration is
marked with CUDA events around the H2D copy, compute and the D2H copies (trtexec's
split); enqueue time is the host time of the enqueue call. Optionally the compute is
captured once as a CUDA graph (trtexec's sequence; plain enqueue when capture fails).
Concurrency N: N execution contexts of the engine, each selecting its own profile on its
own stream, with its own buffers; measure/loops.py serves each from one host thread.

tensorrt and cuda-python are imported only inside load().
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from bench.fileio import write_atomically
from bench.models.info import sha256_file
from bench.runtimes.base import Runtime
from bench.runtimes.cuda import (CUDA_PYTHON_DISTS, CudaGraph, DeviceBuffer, PinnedBuffer, Stream, copy_d2h_async,
                                 copy_h2d_async, cuda_python_reason, device_identity, dist_version, import_cudart,
                                 join_reasons, module_present, nvidia_gpu_reason, set_device)
from bench.runtimes.cuda_session import BareParts, CudaSession
from bench.runtimes.gpu_cache import (CacheKey, TrtBuildOptions, build_options, cache_folder, cache_root, key_profile,
                                      request_profile)
from bench.runtimes.options import option
from bench.session import UNTIMED, LoadRequest, Phases, Session, SessionGroup

ENGINE_FILE = "engine.plan"
TIMING_FILE = "timing.cache"
TRT_DISTS = ("tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt-cu13-libs", "tensorrt-cu12-libs", "tensorrt-libs")
BF16_MIN_COMPUTE_CAPABILITY = 8.0  # Ampere: the first GPUs with BF16 tensor cores

_TRT_TYPES = {"FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "INT32": np.int32,
              "INT64": np.int64, "BOOL": np.bool_, "UINT8": np.uint8}


def import_tensorrt():
    import tensorrt

    return tensorrt


def trt_major(version: str | None) -> int | None:
    try:
        return int(str(version).split(".")[0])
    except (TypeError, ValueError):
        return None


def numpy_dtype(trt_dtype: Any) -> np.dtype:
    """tensorrt.DataType.HALF -> float16, by name (the same on 10.x and 11.x)."""
    name = getattr(trt_dtype, "name", str(trt_dtype)).rsplit(".", 1)[-1].upper()
    if name not in _TRT_TYPES:
        raise ValueError(f"TensorRT tensor type {name} has no NumPy equivalent here")
    return np.dtype(_TRT_TYPES[name])


def precision_flags(precision: str, major: int | None) -> list[str]:
    """Builder flags for an artifact: none on 11 (strong typing; the flags are gone)."""
    if major is None or major >= 11:
        return []
    return {"fp16": ["FP16"], "bf16": ["BF16"], "int8": ["FP16", "INT8"]}.get(precision, [])


def _output_types(layer: dict) -> list[str]:
    """Each output's data type: 11.x 'DataType' ("Half"), 10.x 'Format/Datatype' ("Row major linear FP16 format")."""
    outputs = layer.get("Outputs", [])
    return [str(o.get("DataType") or o.get("Format/Datatype") or "") for o in outputs if isinstance(o, dict)]


def _layer_precision(layer: Any) -> str | None:
    """A layer's output precision from its inspector entry; tensor names never count."""
    if not isinstance(layer, dict):
        return None  # LAYER_NAMES_ONLY verbosity: names, no types
    text = " ".join(_output_types(layer)).lower()
    if "int8" in text:
        return "int8"
    if "fp16" in text or "half" in text:
        return "fp16"
    if "bf16" in text or "bfloat" in text:  # 11.x "BFloat16", which would otherwise read as a float
        return "bf16"
    if "fp32" in text or "float" in text:
        return "fp32"
    return None


def precision_from_inspector(info_json: str) -> tuple[str | None, dict[str, int]]:
    """(most reduced precision any layer runs in, layer count per precision) from engine information."""
    try:
        data = json.loads(info_json)
    except (TypeError, ValueError):
        return None, {}
    counts = Counter(p for p in (_layer_precision(layer) for layer in data.get("Layers", [])) if p)
    for precision in ("int8", "fp16", "bf16", "fp32"):
        if counts.get(precision):
            return precision, dict(counts)
    return None, dict(counts)


def deserialize(runtime, plan: bytes, what: str):
    """An engine from a serialized plan; TensorRT returns None (and logs why) when it cannot."""
    engine = runtime.deserialize_cuda_engine(plan)
    if engine is None:
        raise RuntimeError(f"TensorRT could not deserialise {what} (the TensorRT log above says why)")
    return engine


@dataclass
class BuildResult:
    plan: bytes
    timing_cache: bytes
    flags: list[str]


def context_profiles(profile, contexts: int) -> list[int | None]:
    """The optimisation profile each of `contexts` execution contexts selects: its own for a dynamic
    input (no two contexts may share one, so the engine is built with one per context), none for a
    static input (TensorRT builds it without profiles and contexts need none)."""
    return [None] * contexts if profile is None else list(range(contexts))


@dataclass(frozen=True)
class TrtOptions(TrtBuildOptions):
    profiling_verbosity: str = option("detailed", str, choices=("detailed", "layer_names_only", "none"))
    tf32: bool = option(False, bool)  # fp32 only: TensorRT's TF32 default is off here unless asked


def build_engine(trt, logger, model_bytes: bytes, model_path: str, input_name: str, profile,
                 precision: str, options: TrtOptions, timing_cache: bytes = b"", profiles: int = 1,
                 phases: Phases = UNTIMED) -> BuildResult:
    """Parse the ONNX and build a serialized engine with `profiles` copies of one profile and a timing cache."""
    major = trt_major(trt.__version__)
    with phases("parse"):
        builder = trt.Builder(logger)
        network = builder.create_network(0)  # explicit batch on 10.x; strongly typed on 11.x
        parser = trt.OnnxParser(network, logger)
        if not parser.parse(model_bytes, str(model_path)):
            errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
            raise RuntimeError(f"TensorRT could not parse {Path(model_path).name}: {errors[0] if errors else 'unknown error'}")
    with phases("build"):
        config = builder.create_builder_config()
        config.builder_optimization_level = options.builder_optimization_level
        if options.workspace_mb is not None:
            config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mb * 2**20)
        config.profiling_verbosity = getattr(trt.ProfilingVerbosity, options.profiling_verbosity.upper())
        flags = [f for f in precision_flags(precision, major) if hasattr(trt.BuilderFlag, f)]
        for flag in flags:
            config.set_flag(getattr(trt.BuilderFlag, flag))
        # Strict FP32 unless asked: TensorRT enables TF32 for FP32 layers by default.
        if precision == "fp32" and not options.tf32 and hasattr(trt.BuilderFlag, "TF32"):
            config.clear_flag(trt.BuilderFlag.TF32)
        if profile is not None:  # None: a static input, which TensorRT builds without a profile
            for _ in range(profiles):  # one per execution context (concurrency N)
                optimisation = builder.create_optimization_profile()
                optimisation.set_shape(input_name, profile.min, profile.opt, profile.max)
                config.add_optimization_profile(optimisation)
        cache = config.create_timing_cache(timing_cache)
        config.set_timing_cache(cache, False)
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise RuntimeError("TensorRT engine build failed (the TensorRT log above says why)")
    return BuildResult(bytes(memoryview(plan)), bytes(memoryview(cache.serialize())), flags)


class TensorRtSession(CudaSession):
    record_enqueue = True

    def __init__(self, trt, runtime, engine, request: LoadRequest, settings: dict[str, Any], stream,
                 profile_index: int | None = None):
        self._runtime, self._engine = runtime, engine
        self.device_id = runtime.options(request).device_id
        self._context = engine.create_execution_context()
        self._settings = settings
        self.stream = stream
        self._cudart = import_cudart()
        self._shape = tuple(request.input_shape)
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        if inputs != [request.input_name]:
            raise RuntimeError(f"engine inputs {inputs}: facebench drives one image input '{request.input_name}'")
        if profile_index is not None:  # this context's own optimisation profile, selected on its stream
            if profile_index >= engine.num_optimization_profiles:
                raise RuntimeError(f"the engine has {engine.num_optimization_profiles} optimisation profiles; "
                                   f"context {profile_index} needs its own")
            if not self._context.set_optimization_profile_async(profile_index, stream.handle):
                raise RuntimeError(f"could not select optimisation profile {profile_index} (the TensorRT log says why)")
        if not self._context.set_input_shape(request.input_name, self._shape):
            raise RuntimeError(f"input shape {list(self._shape)} is outside the engine's profile (the TensorRT log says why)")
        self._in_dtype = numpy_dtype(engine.get_tensor_dtype(request.input_name))
        self._host_in = PinnedBuffer(self._shape, self._in_dtype)
        self._device_in = DeviceBuffer(self._host_in.nbytes)
        self._context.set_tensor_address(request.input_name, self._device_in.ptr)
        self._outputs = {}  # the engine's output tensor names, in its I/O order
        for name in (n for n in names if n not in inputs):
            shape = tuple(self._context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise RuntimeError(f"output {name} has unresolved shape {list(shape)} at input {list(self._shape)}")
            host = PinnedBuffer(shape, numpy_dtype(engine.get_tensor_dtype(name)))
            device = DeviceBuffer(host.nbytes)
            self._context.set_tensor_address(name, device.ptr)
            self._outputs[name] = (device, host)
        self._staged = []
        self._graph = None
        self._launch = self._enqueue

    def another_context(self, trt, request: LoadRequest, stream, profile_index: int | None) -> "TensorRtSession":
        """A session on this engine with its own execution context, profile, stream and buffers."""
        try:
            return TensorRtSession(trt, self._runtime, self._engine, request, dict(self._settings), stream,
                                   profile_index=profile_index)
        except BaseException:
            stream.close()
            raise

    # -- launching
    def _enqueue(self) -> None:
        if not self._context.execute_async_v3(self.stream.handle):
            raise RuntimeError("execute_async_v3 returned false (the TensorRT log says why)")

    def _graph_launch(self) -> None:
        self._graph.launch(self.stream)

    def enable_cuda_graph(self) -> str:
        """Capture compute as a CUDA graph after one plain enqueue; "" or why it fell back."""
        self._enqueue()  # keeps lazy initialisation out of the graph
        self.stream.synchronize()
        graph, reason = CudaGraph.capture(self.stream, self._enqueue)
        if graph is None:
            return reason
        self._graph = graph
        self._launch = self._graph_launch
        return ""

    # -- copies and compute
    def _copy_in(self, src_ptr: int) -> None:
        copy_h2d_async(self._device_in.ptr, src_ptr, self._host_in.nbytes, self.stream, self._cudart)

    def d2h(self) -> None:
        for device, host in self._outputs.values():
            copy_d2h_async(host.ptr, device.ptr, host.nbytes, self.stream, self._cudart)

    def compute(self) -> None:
        self._launch()

    def _host_outputs(self) -> dict[str, PinnedBuffer]:
        return {name: host for name, (_, host) in self._outputs.items()}

    def parts(self) -> BareParts:
        return BareParts(partial(self._context.execute_async_v3, self.stream.handle), self.stream,
                         self._device_in.ptr, self._host_in.nbytes,
                         [(d.ptr, h.ptr, h.nbytes) for d, h in self._outputs.values()])

    def inspect_precision(self, trt) -> None:
        """Read the engine's layer precisions (needs profiling_verbosity = detailed)."""
        try:
            inspector = self._engine.create_engine_inspector()
            inspector.execution_context = self._context
            info = inspector.get_engine_information(trt.LayerInformationFormat.JSON)
        except Exception as exc:  # an inspector failure must not cost the measurement
            self._settings["layer_precisions"] = f"inspector failed: {exc}"
            return
        effective, counts = precision_from_inspector(info)
        self._settings["precision_effective"] = effective
        self._settings["layer_precisions"] = counts
        requested = self._settings.get("precision_requested")
        if effective and requested in ("fp16", "bf16", "int8") and effective == "fp32":
            self._settings["precision_note"] = (f"requested {requested} but every layer runs in FP32: on TensorRT 11 "
                                                "precision comes from the ONNX (use the fp16 / bf16 / int8 artifact)")

    def close(self, keep_stream: bool = False) -> None:
        if self._graph is not None:
            self._graph.close()
            self._graph = None
        self._close_staged()
        for device, host in self._outputs.values():
            device.close()
            host.close()
        self._outputs = {}
        self._device_in.close()
        self._host_in.close()
        # Context before engine before runtime, as TensorRT requires.
        self._context = None
        self._engine = None
        self._runtime = None
        if not keep_stream:
            self.stream.close()


class TensorRtRuntime(Runtime):
    name = "trt"
    device = "gpu"
    precisions = ("fp32", "fp16", "bf16", "int8")
    uses_cuda = True
    Options = TrtOptions
    concurrent = True  # N execution contexts on N streams

    def available(self) -> tuple[bool, str]:
        reasons = [r for r in (nvidia_gpu_reason(),) if r]
        if not module_present("tensorrt"):
            reasons.append("tensorrt not installed; make bench EXTRA=gpu installs it")
        cuda_reason = cuda_python_reason()
        if cuda_reason:
            reasons.append(cuda_reason)
        return (not reasons), join_reasons(reasons)

    def native_precision_problem(self, precision: str) -> str:
        """BF16 kernels need compute capability 8.0 (Ampere) or later."""
        from bench.runtimes.cuda import gpu_compute_capabilities

        if precision != "bf16":
            return ""
        found = gpu_compute_capabilities()
        if not found or max(found) >= BF16_MIN_COMPUTE_CAPABILITY:  # unknown: the build says what it lacks
            return ""
        return (f"trt has no native BF16 here: it needs compute capability {BF16_MIN_COMPUTE_CAPABILITY} (Ampere) "
                f"or later, these GPUs have {', '.join(map(str, found))}; measure fp16 instead")

    def versions(self) -> dict[str, str]:
        found = {"tensorrt": dist_version(*TRT_DISTS), "cuda-python": dist_version(*CUDA_PYTHON_DISTS)}
        return {k: v for k, v in found.items() if v}

    def profile(self, request: LoadRequest):
        return request_profile(request, self.options(request))

    def cache_key(self, trt, request: LoadRequest, identity, contexts: int = 1):
        opts = self.options(request)
        profiles = len(set(context_profiles(self.profile(request), contexts)) - {None})
        return CacheKey(
            runtime=self.name, model_sha256=sha256_file(request.model_path), precision=request.precision,
            profile=key_profile(self.profile(request), request), gpu=identity.label, trt_version=trt.__version__,
            cuda_runtime=identity.cuda_runtime,
            build=build_options({"opt_level": opts.builder_optimization_level,
                                 "workspace_mb": opts.workspace_mb,
                                 "tf32": opts.tf32 if request.precision == "fp32" else None,
                                 "verbosity": opts.profiling_verbosity,
                                 "profiles": profiles if profiles > 1 else None}),
        )

    def load(self, request: LoadRequest, phases: Phases = UNTIMED) -> Session:
        return self._open(request, phases, contexts=1)[0]

    def load_concurrent(self, request: LoadRequest, concurrency: int, phases: Phases = UNTIMED) -> Session:
        """N execution contexts of one engine, each with its own optimisation profile and stream,
        served by one host thread each (trtexec --infStreams); the cold start is the first context's."""
        if concurrency == 1:
            return self.load(request, phases)
        members = self._open(request, phases, contexts=concurrency)
        profiles = context_profiles(self.profile(request), concurrency)
        return SessionGroup(members, {"contexts": concurrency, "streams": concurrency,
                                      "context_profiles": profiles})

    def _open(self, request: LoadRequest, phases: Phases, contexts: int) -> list[TensorRtSession]:
        """Load (building if needed) the engine, then `contexts` sessions on it, the first one timed."""
        trt = import_tensorrt()
        set_device(self.options(request).device_id)
        identity = device_identity(self.options(request).device_id)
        folder = cache_folder(cache_root(request.cache_dir), self.cache_key(trt, request, identity, contexts))
        logger = trt.Logger(trt.Logger.WARNING)
        profiles = context_profiles(self.profile(request), contexts)
        stream = Stream()
        try:
            if self.options(request).cold_start == "warm" and (folder / ENGINE_FILE).is_file():
                first = self._load_engine(trt, logger, request, folder, stream, phases, profile_index=profiles[0])
                phases.record("warm_cache_total", phases.total_ms())
                first.describe_extra({"cold_start": "warm (engine cache hit)"})
            else:
                first = self._build_then_reload(trt, logger, request, folder, stream, phases, profiles)
        except BaseException:
            stream.close()
            raise
        members = [first]
        try:
            members += [first.another_context(trt, request, Stream(), k) for k in profiles[1:]]
            for member in members:
                member.describe_extra({"engine_cache": str(folder), "gpu": identity.label,
                                       "cuda_runtime": identity.cuda_runtime})
                self._maybe_graph(member, request)
            first.inspect_precision(trt)
        except BaseException:
            for member in members:
                member.close()
            raise
        return members

    def _settings(self, trt, request: LoadRequest, flags: list[str]) -> dict[str, Any]:
        profile = self.profile(request)
        return {
            "tensorrt": trt.__version__, "precision_requested": request.precision,
            "precision_effective": None, "builder_flags": flags,
            "tf32": self.options(request).tf32 if request.precision == "fp32" else "TensorRT default",
            "profile": ({"min": list(profile.min), "opt": list(profile.opt), "max": list(profile.max)}
                        if profile is not None else "none: static input shape"),
            "builder_optimization_level": self.options(request).builder_optimization_level,
            "execution": "execute_async_v3 on a non-blocking stream; pinned host buffers",
            "fps": "end-to-end (H2D + compute + D2H per iteration); fps_compute: device-resident input and output",
        }

    def _build_then_reload(self, trt, logger, request: LoadRequest, folder: Path, stream, phases: Phases,
                           profiles: list[int | None]) -> TensorRtSession:
        """Cold start with empty caches (build), save the caches, then cold start again from them."""
        built, first = self._cold_build(trt, logger, request, folder, stream, phases, profiles)
        self._save_caches(folder, built)
        flags, engine_mib = built.flags, len(built.plan) / 2**20
        detail = {f"{name}_ms": phases.ms(name) for name in ("parse", "build", "deserialize_and_context")}
        first.close(keep_stream=True)
        del first, built  # the first engine leaves the GPU before the probe and the reload
        probe = warm_probe(request, folder, phases)  # like ort-trt: a fresh process pays for libraries, context, kernels
        phases.record("warm_cache_total", probe.get("total_ms"))
        session = self._load_engine(trt, logger, request, folder, stream, UNTIMED, flags=flags,
                                    profile_index=profiles[0])
        session.describe_extra({"cold_start": "empty caches; warm figure from a fresh process",
                                "cold_phases_ms": {**detail, "engine_mib": engine_mib}, "warm_probe": probe})
        return session

    def _cold_build(self, trt, logger, request: LoadRequest, folder: Path, stream, phases: Phases,
                    profiles: list[int | None]) -> tuple[BuildResult, TensorRtSession]:
        """read; compile = parse + build + deserialise + execution context and buffers; first inference."""
        with phases("read"):
            model_bytes = Path(request.model_path).read_bytes()
        with phases("compile"):
            # "both": an honest empty-cache build; "warm" without an engine: reuse a timing cache if one is there.
            warm = self.options(request).cold_start == "warm" and (folder / TIMING_FILE).is_file()
            timing = (folder / TIMING_FILE).read_bytes() if warm else b""
            built = build_engine(trt, logger, model_bytes, request.model_path, request.input_name,
                                 self.profile(request), request.precision, self.options(request), timing,
                                 profiles=len(set(profiles) - {None}) or 1, phases=phases)
            with phases("deserialize_and_context"):
                runtime = trt.Runtime(logger)
                engine = deserialize(runtime, built.plan, "the engine it just built")
                first = TensorRtSession(trt, runtime, engine, request, self._settings(trt, request, built.flags),
                                        stream, profile_index=profiles[0])
        x = np.zeros(request.input_shape, dtype=request.input_dtype)
        with phases("first_infer"):
            first.infer(x)
        return built, first

    def _save_caches(self, folder: Path, built: BuildResult) -> None:
        write_atomically(folder / ENGINE_FILE, built.plan)
        write_atomically(folder / TIMING_FILE, built.timing_cache)

    def _load_engine(self, trt, logger, request: LoadRequest, folder: Path, stream, phases: Phases,
                     flags: list[str] | None = None, profile_index: int | None = None) -> TensorRtSession:
        """Read + deserialise the cached engine + first inference."""
        with phases("read"):
            plan = (folder / ENGINE_FILE).read_bytes()
        with phases("compile"):
            runtime = trt.Runtime(logger)
            engine = deserialize(runtime, plan, f"the cached engine {folder / ENGINE_FILE} (delete that folder)")
            flags = flags if flags is not None else precision_flags(request.precision, trt_major(trt.__version__))
            session = TensorRtSession(trt, runtime, engine, request, self._settings(trt, request, flags), stream,
                                      profile_index=profile_index)
        x = np.zeros(request.input_shape, dtype=request.input_dtype)
        with phases("first_infer"):
            session.infer(x)
        return session

    def _maybe_graph(self, session: TensorRtSession, request: LoadRequest) -> None:
        if not self.options(request).cuda_graph:
            session.describe_extra({"cuda_graph": "off"})
            return
        reason = session.enable_cuda_graph()
        session.describe_extra({"cuda_graph": "on" if not reason else f"off: capture failed ({reason}); plain enqueue"})


# --------------------------------------------------------------------------- warm-cache probe


def warm_probe(request: LoadRequest, folder: Path, phases: Phases) -> dict[str, Any]:
    """Read + deserialise the saved engine + context + first inference, in a fresh process."""
    return phases.fresh_process("bench.runtimes.tensorrt:warm_start", request, folder=str(folder))


def warm_start(request: LoadRequest, phases: Phases, folder: str) -> dict[str, Any]:
    """The warm-cache cold start the probe process times: CUDA context, then the cached engine's load."""
    trt = import_tensorrt()  # the import is each point's process_start_ms, not its cold start
    runtime = TensorRtRuntime()
    runtime.profile(request)  # reads the ONNX once, outside the clock, as the worker did before its own
    with phases("cuda_context"):
        set_device(runtime.options(request).device_id)
        stream = Stream()
    session = runtime._load_engine(trt, trt.Logger(trt.Logger.WARNING), request, Path(folder), stream, phases)
    session.close()
    return {"total_ms": (phases.ms("cuda_context") or 0.0) + (phases.total_ms() or 0.0),
            "note": "engine cache loaded in a fresh process"}
