"""Small CUDA runtime helpers over cuda-python, shared by the GPU runtimes.

cuda-python is imported only inside the functions and classes that call it, so
importing this module costs nothing on a machine without a GPU. With cuda-bindings
13 the module is `cuda.bindings.runtime`; cuda-python 12.x also offered
`from cuda import cudart`, removed in 13.0 (runtimes.md 4). Every cudart call
returns `(cudaError_t, *results)`; `check` turns a failure into CudaError.

Availability probes (nvidia_gpu_reason, dist_version) never import a GPU package:
they look at nvidia-smi and the installed distributions only.
"""
from __future__ import annotations

import ctypes
import importlib.metadata
import importlib.util
import shutil
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable

import numpy as np


class CudaError(RuntimeError):
    """A CUDA runtime call failed."""


def import_cudart():
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        from cuda import cudart  # cuda-python 12.x before the cuda.bindings layout
    return cudart


def check(result: Any, what: str = "CUDA call") -> Any:
    """Unpack a cudart result tuple: raise CudaError unless its error is cudaSuccess (0).

    Returns None, the single value, or a tuple of values, as the call produced them.
    """
    if isinstance(result, tuple):
        err, values = result[0], result[1:]
    else:
        err, values = result, ()
    code = int(getattr(err, "value", err))
    if code != 0:
        raise CudaError(f"{what} failed: {_error_name(err)} ({code})")
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def _error_name(err: Any) -> str:
    name = getattr(err, "name", None)
    if name:
        return str(name)
    try:
        _, text = import_cudart().cudaGetErrorName(err)
        return text.decode() if isinstance(text, bytes) else str(text)
    except Exception:  # the error is already being reported; its name is a nicety
        return str(err)


def native_handle(obj: Any) -> int:
    """The integer behind a cudaStream_t / cudaEvent_t / pointer (TensorRT and ORT take ints)."""
    if isinstance(obj, int):
        return obj
    try:
        from cuda.bindings.utils import get_cuda_native_handle

        return int(get_cuda_native_handle(obj))
    except (ImportError, TypeError, AttributeError):
        return int(obj)  # cuda-python 12.x objects implement __int__


# --------------------------------------------------------------------------- availability probes


@lru_cache(maxsize=1)
def nvidia_gpu_reason() -> str | None:
    """None when nvidia-smi lists a GPU, else why not (no CUDA import)."""
    return _query_gpus("name")[1]


def gpu_compute_capabilities() -> list[float]:
    """Each GPU's compute capability as nvidia-smi lists it (no CUDA import); [] where it cannot say."""
    values, _ = _query_gpus("compute_cap")
    try:
        return [float(v) for v in values]
    except ValueError:  # a driver too old for compute_cap prints an error text
        return []


def _query_gpus(field: str) -> tuple[list[str], str | None]:
    """(one value per GPU, None) from `nvidia-smi --query-gpu=FIELD`, or ([], why there are none)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return [], "no NVIDIA GPU (nvidia-smi not found)"
    try:
        out = subprocess.run([exe, f"--query-gpu={field}", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.SubprocessError) as exc:
        return [], f"no NVIDIA GPU (nvidia-smi failed: {exc})"
    if out.returncode != 0 or not out.stdout.strip():
        detail = (out.stderr or out.stdout).strip().splitlines()
        return [], f"no NVIDIA GPU (nvidia-smi: {detail[0] if detail else f'exit status {out.returncode}'})"
    return [line.strip() for line in out.stdout.strip().splitlines()], None


def dist_version(*names: str) -> str | None:
    """Version of the first installed distribution among `names` (metadata only, no import)."""
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def module_present(name: str) -> bool:
    """Whether a top-level module can be imported, without importing it."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


CUDA_PYTHON_DISTS = ("cuda-bindings", "cuda-python")
INSTALL_HINT = "make bench EXTRA=gpu installs it"


# The oldest Linux driver each CUDA major runs on (CUDA's release notes: 13.0 needs 580, 12.0 525).
MIN_DRIVER_FOR_CUDA = {13: 580, 12: 525, 11: 450}


@lru_cache(maxsize=1)
def driver_version() -> str | None:
    """The NVIDIA driver version nvidia-smi reports (no CUDA import); None without one."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = out.stdout.strip().splitlines()
    return lines[0].strip() if out.returncode == 0 and lines else None


def driver_cuda_major() -> int | None:
    """The CUDA major the driver runs (cudaDriverGetVersion: forward-compatibility packages
    included), or None when it cannot be asked."""
    try:
        version = int(check(import_cudart().cudaDriverGetVersion(), "cudaDriverGetVersion"))
    except Exception:  # no usable cuda-python here: the driver-version table decides
        return None
    return version // 1000 if version > 0 else None


def driver_mismatch_reason(bindings_version: str | None, driver: str | None,
                           driver_cuda: int | None = None) -> str | None:
    """Why cuda-python of this CUDA major cannot run on this driver, or None. `driver_cuda`,
    when known, decides (a data-centre driver with cuda-compat runs newer CUDA); else the
    driver's version against CUDA's minimum."""
    try:
        cuda_major = int(str(bindings_version).split(".")[0])
        driver_major = int(str(driver).split(".")[0])
    except ValueError:
        return None
    needed = MIN_DRIVER_FOR_CUDA.get(cuda_major)
    if driver_cuda is not None:
        if driver_cuda >= cuda_major:
            return None
    elif needed is None or driver_major >= needed:
        return None
    older = cuda_major - 1
    update = f"update the driver (CUDA {cuda_major} needs >= {needed})" if needed else "update the driver"
    return (f"cuda-python {bindings_version} is built for CUDA {cuda_major}, which driver {driver} cannot run: "
            f"{update}, or install the CUDA {older} builds "
            f"(pip install 'cuda-python<{cuda_major}' and the CUDA {older} onnxruntime-gpu / tensorrt-cu{older})")


def cuda_python_reason() -> str | None:
    version = dist_version(*CUDA_PYTHON_DISTS)
    if version is None:
        return f"cuda-python not installed (pinned buffers and CUDA events need it); {INSTALL_HINT}"
    driver = driver_version()
    if driver is None:
        return None  # no NVIDIA driver: nvidia_gpu_reason says so
    return driver_mismatch_reason(version, driver, driver_cuda_major())


def join_reasons(reasons: list[str]) -> str:
    """One line; the install hint said once when several packages are missing."""
    suffix = f"; {INSTALL_HINT}"
    hinted = [r for r in reasons if r.endswith(suffix)]
    if len(hinted) < 2:
        return "; ".join(reasons)
    trimmed = [r[: -len(suffix)] if r.endswith(suffix) else r for r in reasons]
    return "; ".join(trimmed) + "; make bench EXTRA=gpu installs them"


# --------------------------------------------------------------------------- memory, streams, events


def array_view(ptr: int, shape: tuple[int, ...], dtype) -> np.ndarray:
    """A NumPy array over `ptr` (host memory we own); no copy."""
    dtype = np.dtype(dtype)
    count = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctypes.c_uint8)), (max(count, 1),))
    return raw[:count].view(dtype).reshape(shape)


class PinnedBuffer:
    """Page-locked host memory (cudaMallocHost) with a NumPy view, so H2D/D2H copies are DMA."""

    def __init__(self, shape: tuple[int, ...], dtype=np.float32):
        self.shape = tuple(int(d) for d in shape)
        self.dtype = np.dtype(dtype)
        self.nbytes = int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize
        self._cudart = import_cudart()
        self.ptr = native_handle(check(self._cudart.cudaMallocHost(max(self.nbytes, 1)), "cudaMallocHost"))
        self.array = array_view(self.ptr, self.shape, self.dtype)

    def close(self) -> None:
        if self.ptr:
            self.array = None
            check(self._cudart.cudaFreeHost(self.ptr), "cudaFreeHost")
            self.ptr = 0

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown: the driver frees it anyway
            pass


class DeviceBuffer:
    """Device memory (cudaMalloc)."""

    def __init__(self, nbytes: int):
        self.nbytes = int(nbytes)
        self._cudart = import_cudart()
        self.ptr = native_handle(check(self._cudart.cudaMalloc(max(self.nbytes, 1)), "cudaMalloc"))

    def close(self) -> None:
        if self.ptr:
            check(self._cudart.cudaFree(self.ptr), "cudaFree")
            self.ptr = 0

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


class Stream:
    """A non-blocking stream: it never synchronises with the legacy default stream."""

    def __init__(self, non_blocking: bool = True):
        self._cudart = cudart = import_cudart()
        flags = cudart.cudaStreamNonBlocking if non_blocking else cudart.cudaStreamDefault
        self.raw = check(cudart.cudaStreamCreateWithFlags(flags), "cudaStreamCreateWithFlags")
        self.handle = native_handle(self.raw)

    def synchronize(self) -> None:
        check(self._cudart.cudaStreamSynchronize(self.raw), "cudaStreamSynchronize")

    def close(self) -> None:
        if self.raw is not None:
            check(self._cudart.cudaStreamDestroy(self.raw), "cudaStreamDestroy")
            self.raw = None


class Event:
    """A timing event; `elapsed_ms(end)` is the GPU time between this event and `end`."""

    def __init__(self, timing: bool = True):
        self._cudart = cudart = import_cudart()
        flags = cudart.cudaEventDefault if timing else cudart.cudaEventDisableTiming
        self.raw = check(cudart.cudaEventCreateWithFlags(flags), "cudaEventCreateWithFlags")

    def record(self, stream: Stream) -> None:
        check(self._cudart.cudaEventRecord(self.raw, stream.raw), "cudaEventRecord")

    def synchronize(self) -> None:
        check(self._cudart.cudaEventSynchronize(self.raw), "cudaEventSynchronize")

    def elapsed_ms(self, end: "Event") -> float:
        return float(check(self._cudart.cudaEventElapsedTime(self.raw, end.raw), "cudaEventElapsedTime"))

    def close(self) -> None:
        if self.raw is not None:
            check(self._cudart.cudaEventDestroy(self.raw), "cudaEventDestroy")
            self.raw = None


def set_device(index: int) -> None:
    check(import_cudart().cudaSetDevice(int(index)), "cudaSetDevice")


def copy_h2d_async(dst_ptr: int, src_ptr: int, nbytes: int, stream: Stream, cudart=None) -> None:
    cudart = cudart or import_cudart()
    check(cudart.cudaMemcpyAsync(dst_ptr, src_ptr, nbytes, cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, stream.raw),
          "cudaMemcpyAsync H2D")


def copy_d2h_async(dst_ptr: int, src_ptr: int, nbytes: int, stream: Stream, cudart=None) -> None:
    cudart = cudart or import_cudart()
    check(cudart.cudaMemcpyAsync(dst_ptr, src_ptr, nbytes, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream.raw),
          "cudaMemcpyAsync D2H")


class CudaGraph:
    """A captured stream segment replayed with one launch (trtexec's sequence, runtimes.md 3.7)."""

    def __init__(self, graph, graph_exec, cudart):
        self._graph, self._exec, self._cudart = graph, graph_exec, cudart

    @classmethod
    def capture(cls, stream: Stream, enqueue: Callable[[], None]) -> tuple["CudaGraph | None", str]:
        """Capture `enqueue` on `stream`; (graph, "") or (None, why) when capture is refused."""
        cudart = import_cudart()
        mode = cudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        try:
            check(cudart.cudaStreamBeginCapture(stream.raw, mode), "cudaStreamBeginCapture")
        except CudaError as exc:
            return None, str(exc)
        failure = ""
        try:
            enqueue()
        except Exception as exc:  # e.g. an engine whose enqueue synchronises
            failure = f"enqueue during capture: {exc}"
        try:
            graph = check(cudart.cudaStreamEndCapture(stream.raw), "cudaStreamEndCapture")
        except CudaError as exc:
            return None, failure or str(exc)
        if failure:
            check(cudart.cudaGraphDestroy(graph), "cudaGraphDestroy")
            return None, failure
        try:
            graph_exec = check(cudart.cudaGraphInstantiate(graph, 0), "cudaGraphInstantiate")
        except CudaError as exc:
            check(cudart.cudaGraphDestroy(graph), "cudaGraphDestroy")
            return None, str(exc)
        return cls(graph, graph_exec, cudart), ""

    def launch(self, stream: Stream) -> None:
        check(self._cudart.cudaGraphLaunch(self._exec, stream.raw), "cudaGraphLaunch")

    def close(self) -> None:
        if self._exec is not None:
            check(self._cudart.cudaGraphExecDestroy(self._exec), "cudaGraphExecDestroy")
            check(self._cudart.cudaGraphDestroy(self._graph), "cudaGraphDestroy")
            self._exec = self._graph = None


# --------------------------------------------------------------------------- device identity


@dataclass(frozen=True)
class DeviceIdentity:
    """What ties a CUDA device to its NVML handle and names it in cache keys."""

    index: int
    name: str
    uuid: str  # NVML form: GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx
    pci_bus_id: str  # NVML form: 00000000:65:00.0
    compute_capability: str  # "8.9"
    cuda_runtime: str  # "12.8"

    @property
    def label(self) -> str:
        return f"{self.name} sm{self.compute_capability.replace('.', '')}"


def uuid_string(raw: bytes) -> str:
    """16 UUID bytes from cudaDeviceProp.uuid -> NVML's 'GPU-8-4-4-4-12' spelling."""
    text = bytes(raw).hex()
    if len(text) != 32:
        raise ValueError(f"a CUDA UUID has 16 bytes, got {len(raw)}")
    return f"GPU-{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def pci_bus_id(domain: int, bus: int, device: int) -> str:
    """NVML's busId spelling: 8-hex-digit domain, bus, device, function 0."""
    return f"{domain:08X}:{bus:02X}:{device:02X}.0"


def runtime_version_text(version: int) -> str:
    """cudaRuntimeGetVersion's 12080 -> '12.8'."""
    return f"{version // 1000}.{(version % 1000) // 10}"


def device_identity(index: int = 0) -> DeviceIdentity:
    cudart = import_cudart()
    prop = check(cudart.cudaGetDeviceProperties(index), "cudaGetDeviceProperties")
    name = prop.name.decode(errors="replace") if isinstance(prop.name, bytes) else str(prop.name)
    raw_uuid = getattr(prop.uuid, "bytes", prop.uuid)
    if isinstance(raw_uuid, str):
        raw_uuid = raw_uuid.encode("latin-1")
    version = check(cudart.cudaRuntimeGetVersion(), "cudaRuntimeGetVersion")
    return DeviceIdentity(
        index=index, name=name.strip("\x00 "), uuid=uuid_string(bytes(raw_uuid)[:16]),
        pci_bus_id=pci_bus_id(prop.pciDomainID, prop.pciBusID, prop.pciDeviceID),
        compute_capability=f"{prop.major}.{prop.minor}", cuda_runtime=runtime_version_text(int(version)),
    )
