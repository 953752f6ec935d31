"""What every CUDA session shares: pinned staging, the trtexec-style timed loop, CUDA-event timing.

A subclass sets up its buffers and says how to copy in, compute and copy out; the loop
that records the four events per iteration (H2D start, compute start, compute end, D2H
end) and the compute-only loop live here once.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from bench.runtimes.base import Session, Window


@dataclass
class BareParts:
    """What a bare loop needs to run the same model on the same buffers (scripts/bench_gpu_vs_bare.py)."""

    launch: Callable[[], Any]  # the runtime's own compute call: execute_async_v3 or run_with_iobinding
    stream: Any
    input_device_ptr: int
    input_nbytes: int
    outputs: list[tuple[int, int, int]]  # (device ptr, pinned host ptr, bytes)
    sync_after_h2d: bool = False  # ORT on its own stream must see the copy finished


class CudaSession(Session):
    """Subclasses set `_shape`, `_in_dtype`, `_host_in`, `_stream`, `_marks`, `_staged`, `_settings`."""

    timer_kind = "cuda-event"
    record_enqueue = False  # host time of each compute launch (trtexec's "enqueue time")

    def _h2d(self, src_ptr: int) -> None:
        raise NotImplementedError

    def _compute(self) -> None:
        raise NotImplementedError

    def _d2h(self) -> None:
        raise NotImplementedError

    def _host_outputs(self) -> list:
        """Pinned host buffers of the outputs, in model order."""
        raise NotImplementedError

    def _pinned_copy(self, x: np.ndarray):
        """A pinned copy of an input buffer, made once (outside any timed loop)."""
        key = id(x)
        if key not in self._staged:
            from bench.runtimes.cuda import PinnedBuffer

            pinned = PinnedBuffer(self._shape, self._in_dtype)
            np.copyto(pinned.array, x.reshape(self._shape), casting="same_kind")
            self._staged[key] = (x, pinned)  # keep x alive so its id is not reused
        return self._staged[key][1]

    def infer(self, x: np.ndarray) -> list[np.ndarray]:
        np.copyto(self._host_in.array, x.reshape(self._shape), casting="same_kind")
        self._h2d(self._host_in.ptr)
        self._compute()
        self._d2h()
        self._stream.synchronize()
        return [host.array.copy() for host in self._host_outputs()]

    def make_timer(self):
        from bench.measure.cuda_timer import CudaEventTimer

        return CudaEventTimer(self._stream)

    def run_window(self, inputs: list[np.ndarray], iterations: int) -> Window:
        window = self.warm_up_window(inputs, iterations)
        window.compute_only_wall_ns = self.compute_only_wall_ns(iterations)
        return window

    def warm_up_window(self, inputs: list[np.ndarray], iterations: int) -> Window:
        """The timed loop alone, without the compute-only pass a steady-state window adds."""
        staged = [self._pinned_copy(x) for x in inputs]
        self._marks.reserve(iterations)
        marks, stream, compute, clock = self._marks, self._stream, self._compute, time.perf_counter_ns
        enqueue = [0] * iterations
        n = len(staged)
        t0 = clock()
        for i in range(iterations):
            events = marks.events(i)
            events[0].record(stream)
            self._h2d(staged[i % n].ptr)
            events[1].record(stream)
            e0 = clock()
            compute()
            enqueue[i] = clock() - e0
            events[2].record(stream)
            self._d2h()
            events[3].record(stream)
        stream.synchronize()
        wall = clock() - t0
        latencies, series = marks.collect(iterations)
        if self.record_enqueue:
            series["enqueue"] = enqueue
        return Window(wall_ns=wall, latencies_ns=latencies, iterations=iterations, extra_ns=series)

    def compute_only_wall_ns(self, iterations: int) -> int:
        """The same iterations with input and output left on the device."""
        compute = self._compute
        t0 = time.perf_counter_ns()
        for _ in range(iterations):
            compute()
        self._stream.synchronize()
        return time.perf_counter_ns() - t0

    def describe(self) -> dict[str, Any]:
        return dict(self._settings)

    def describe_extra(self, extra: dict[str, Any]) -> None:
        self._settings.update(extra)

    def effective_precision(self) -> str | None:
        return self._settings.get("precision_effective")

    def _close_staged(self) -> None:
        for _, pinned in self._staged.values():
            pinned.close()
        self._staged = {}
