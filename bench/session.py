"""The session contract: runtimes implement it (bench/runtimes/base.py `Runtime.load` returns a
Session), measure/ drives it. Sessions
time nothing: measure/ drives their steps with its own loops and clocks, and
times the cold start around the phases a runtime names while it loads.

Step contract, by `Session.loop` (the loop in measure/loops.py that drives it):

- "host" (ort-cpu, OpenVINO LATENCY): `run(x)` runs one batch synchronously and leaves
  the outputs unconverted.
- "requests" (OpenVINO THROUGHPUT / streams): `request_queue(inputs)` gives the session's
  queue of infer requests over those input buffers: `size`, `start(k)` (the next idle request,
  run on buffer k; returns which request), `wait()` (blocks until the earliest completion not
  restarted yet: (which request, the runtime's own latency for it in ms)), `wait_all()` and
  `latency_ms(r)` (request r's last latency).
- "cuda" (ort-cuda, ort-trt, trt: bench.runtimes.cuda_session): `stream`, `stage(x)` (a
  pinned copy, made once before any loop), `h2d(staged)`, `compute()`, `d2h()`,
  `synchronize()` and `new_event()`; `record_enqueue` asks for the host time of compute();
  `bind_thread()` makes the session's device current on a loop thread of its own.
- "group" (concurrency N): a SessionGroup of N member sessions, one host thread each.

Every session also has `infer(x)` (the outputs as host arrays by output name, in the model's
output order, for the checks and the pipeline: Polygraphy's runners do the same), `describe()`
(effective settings), `effective_precision()` and `close()`.

Cold start: `Runtime.load(request, phases)` wraps its steps in `with phases("read")`,
`phases("compile")`, `phases("first_infer")`; the caller owns the clock
(ColdStartTimer in measure/cold_start.py). Callers that report no cold start pass nothing.
"""
from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ContextManager, Protocol

import numpy as np

HOST, REQUESTS, CUDA, GROUP = "host", "requests", "cuda", "group"

Outputs = dict[str, np.ndarray]  # output name -> host array; a dict keeps the model's output order


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


class Phases(Protocol):
    """The caller's cold-start clock, as a runtime sees it while it loads."""

    def __call__(self, phase: str) -> ContextManager[None]:
        """Time the block as `phase` (read, compile, first_infer, or a finer name for describe())."""
        ...

    def ms(self, phase: str) -> float | None:
        """What `phase` took so far (None when untimed)."""
        ...

    def total_ms(self) -> float | None:
        """read + compile + first_infer so far."""
        ...

    def record(self, phase: str, ms: float | None) -> None:
        """A figure timed elsewhere, e.g. warm_cache_total from a fresh process."""
        ...

    def fresh_process(self, target: str, request: LoadRequest, **extra: str) -> dict[str, Any]:
        """Run `target` ("module:function", called as function(request, phases, **extra)) in a fresh
        process under a fresh clock; its phase figures (name_ms, total_ms) and notes."""
        ...


class Untimed:
    """Phases for callers that want a session and no cold start: no clock, no probe process."""

    def __call__(self, phase: str) -> ContextManager[None]:
        return contextlib.nullcontext()

    def ms(self, phase: str) -> float | None:
        return None

    def total_ms(self) -> float | None:
        return None

    def record(self, phase: str, ms: float | None) -> None:
        pass

    def fresh_process(self, target: str, request: LoadRequest, **extra: str) -> dict[str, Any]:
        return {"total_ms": None, "note": "not timed"}


UNTIMED = Untimed()


class Session(ABC):
    """A loaded model at one batch size."""

    loop = HOST

    @property
    def timer_kind(self) -> str:
        """Which clock times its latencies: CUDA events for the CUDA loop, the host's otherwise."""
        return "cuda-event" if self.loop == CUDA else "host"

    @abstractmethod
    def infer(self, x: np.ndarray) -> Outputs:
        """Run one batch synchronously and return the outputs by name (host arrays, model order)."""

    def run(self, x: np.ndarray) -> None:
        """The host loop's step: one batch, outputs left as the runtime returns them."""
        self.infer(x)

    def describe(self) -> dict[str, Any]:
        """Effective settings (threads, hint, providers, precision actually used)."""
        return {}

    def effective_precision(self) -> str | None:
        return None

    def close(self) -> None:
        pass


class SessionGroup(Session):
    """N sessions of one model, N requests in flight (onnxruntime_perf_test -c, trtexec --infStreams).

    measure/loops.py serves each member from its own host thread; checks use the first
    member (every member computes the same outputs).
    """

    loop = GROUP

    def __init__(self, members: list[Session], settings: dict[str, Any]):
        self.members = members
        self._settings = settings

    @property
    def timer_kind(self) -> str:
        return self.members[0].timer_kind

    def infer(self, x: np.ndarray) -> Outputs:
        return self.members[0].infer(x)

    def describe(self) -> dict[str, Any]:
        return {**self.members[0].describe(), **self._settings}

    def effective_precision(self) -> str | None:
        return self.members[0].effective_precision()

    def close(self) -> None:
        """Every member, even after one fails to close (their streams and buffers are freed either way)."""
        errors = []
        for member in self.members:
            try:
                member.close()
            except Exception as exc:
                errors.append(exc)
        if errors:
            raise errors[0]
