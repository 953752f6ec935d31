"""The one interface every runtime implements.

A Runtime loads a model file for one batch size and precision into a Session and
reports the cold-start phases it could see. A Session runs batches; the shared
measurement protocol (bench.measure.protocol) drives it and never knows which
runtime or device it measures.
"""
from __future__ import annotations

import itertools
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bench.measure.timers import HostTimer, Timer
from bench.runtimes.options import RuntimeOptions


@dataclass
class LoadRequest:
    """What to load: an ONNX file (already validated) at one batch size."""

    model_path: str
    input_name: str
    input_shape: tuple[int, ...]  # concrete, batch included
    precision: str = "fp32"
    input_dtype: str = "float32"  # uint8 for the frame formats (bench.domain.INPUT_FORMATS)
    options: dict[str, Any] = field(default_factory=dict)  # as the suite set them; Runtime.options() types them
    cache_dir: str | None = None


@dataclass
class ColdStart:
    """Cold-start phases in milliseconds; None where a runtime cannot see a phase."""

    read_ms: float | None = None  # read / parse the model file
    compile_ms: float | None = None  # session creation, compile or engine build
    first_infer_ms: float | None = None  # first inference after load
    # GPU runtimes with engine / timing caches: the same cold start again with the caches warm.
    warm_cache_total_ms: float | None = None

    @property
    def total_ms(self) -> float:
        return sum(v for v in (self.read_ms, self.compile_ms, self.first_infer_ms) if v is not None)


@dataclass
class Window:
    """One steady-state window: wall time of the whole window and every iteration's latency."""

    wall_ns: int
    latencies_ns: list[int]
    iterations: int
    # Extra per-iteration series some runtimes can split out (e.g. h2d/compute/d2h on GPU).
    extra_ns: dict[str, list[int]] = field(default_factory=dict)
    # GPU sessions: wall time of the same iterations run again with device-resident input and output.
    compute_only_wall_ns: int | None = None


class Session(ABC):
    """A loaded model at one batch size."""

    timer_kind = "host"

    @abstractmethod
    def infer(self, x: np.ndarray) -> list[np.ndarray]:
        """Run one batch synchronously and return the outputs (host arrays, model order)."""

    def describe(self) -> dict[str, Any]:
        """Effective settings (threads, hint, providers, precision actually used)."""
        return {}

    def effective_precision(self) -> str | None:
        return None

    def make_timer(self) -> Timer:
        return HostTimer()

    def run_window(self, inputs: list[np.ndarray], iterations: int) -> Window:
        """Run `iterations` batches, rotating through `inputs`; timing loop does nothing else."""
        timer = self.make_timer()
        latencies = []
        n_inputs = len(inputs)
        t0 = time.perf_counter_ns()
        for i in range(iterations):
            timer.start()
            self._run_only(inputs[i % n_inputs])
            latencies.append(timer.stop())
        wall = time.perf_counter_ns() - t0
        return Window(wall_ns=wall, latencies_ns=latencies, iterations=iterations)

    def warm_up_window(self, inputs: list[np.ndarray], iterations: int) -> Window:
        """Warm-up: the window's timed loop without any extra pass a window adds (GPU: compute-only)."""
        return self.run_window(inputs, iterations)

    def _run_only(self, x: np.ndarray) -> None:
        """The timed call: subclasses override to skip output conversions the loop does not need."""
        self.infer(x)

    def close(self) -> None:
        pass


class ConcurrentSession(Session):
    """N sessions of one model, one host thread each, N requests in flight (onnxruntime_perf_test -c).

    A window's iterations are shared out as they come (each thread takes the next one), so the
    threads finish within one request of each other; frames/s is the aggregate over the window's
    wall time and each latency is one request's. The runtimes release the GIL while they compute.
    Checks use the first session (every session computes the same outputs).
    """

    def __init__(self, sessions: list[Session], settings: dict[str, Any]):
        self._sessions = sessions
        self._settings = settings

    def infer(self, x: np.ndarray) -> list[np.ndarray]:
        return self._sessions[0].infer(x)

    def describe(self) -> dict[str, Any]:
        return {**self._sessions[0].describe(), **self._settings}

    def effective_precision(self) -> str | None:
        return self._sessions[0].effective_precision()

    def run_window(self, inputs: list[np.ndarray], iterations: int) -> Window:
        taken = itertools.count()  # next() on a count is atomic under the GIL
        latencies: list[list[int]] = [[] for _ in self._sessions]
        errors: list[BaseException] = []
        start = threading.Barrier(len(self._sessions) + 1)

        def serve(session: Session, own: list[int]) -> None:
            start.wait()
            try:
                while (i := next(taken)) < iterations:
                    t0 = time.perf_counter_ns()
                    session._run_only(inputs[i % len(inputs)])
                    own.append(time.perf_counter_ns() - t0)
            except BaseException as exc:  # re-raised in the measuring thread: a failed point
                errors.append(exc)

        threads = [threading.Thread(target=serve, args=(s, own), daemon=True)
                   for s, own in zip(self._sessions, latencies)]
        for thread in threads:
            thread.start()
        start.wait()
        t0 = time.perf_counter_ns()
        for thread in threads:
            thread.join()
        wall = time.perf_counter_ns() - t0
        if errors:
            raise errors[0]
        return Window(wall_ns=wall, latencies_ns=[v for own in latencies for v in own], iterations=iterations)

    def warm_up_window(self, inputs: list[np.ndarray], iterations: int) -> Window:
        """Every session warms up: at least one request each, all in flight together."""
        return self.run_window(inputs, max(iterations, len(self._sessions)))

    def close(self) -> None:
        for session in self._sessions:
            session.close()


class Runtime(ABC):
    """A runtime family member (e.g. ort-cpu, openvino-cpu)."""

    name: str = ""
    device: str = "cpu"  # cpu | gpu | npu
    precisions: tuple[str, ...] = ("fp32",)
    precision_notes: dict[str, str] = {}  # why a precision is not run here, where a reason helps
    Options: type[RuntimeOptions] = RuntimeOptions  # what a suite's [runtime_options.NAME] may set
    uses_cuda = False  # NVML telemetry applies (NVIDIA devices only)
    concurrent = False  # runs more than one request in flight (load_concurrent)

    @abstractmethod
    def available(self) -> tuple[bool, str]:
        """(True, "") or (False, reason). Must not raise; imports happen lazily here."""

    def versions(self) -> dict[str, str]:
        return {}

    def options(self, request: LoadRequest):
        """The request's options, typed (the suite checked them already; direct callers get the same check)."""
        return self.Options.parse(request.options, self.name)

    def artifact_for(self, precision: str) -> str:
        """Which model artifact this runtime consumes for a precision (most: the same name)."""
        return precision

    @abstractmethod
    def load(self, request: LoadRequest) -> tuple[Session, ColdStart]:
        """Load and run the first inference; return the session and the phases it measured."""

    def load_concurrent(self, request: LoadRequest, concurrency: int) -> tuple[Session, ColdStart]:
        """A session that keeps `concurrency` requests in flight (runtimes with `concurrent` override this)."""
        if concurrency == 1:
            return self.load(request)
        raise NotImplementedError(f"{self.name} runs one request in flight only")
