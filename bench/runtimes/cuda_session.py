"""What every CUDA session shares: the CUDA step contract over pinned staging and one stream.

A subclass sets up its buffers and says how to copy in, compute and copy out; the loops
that drive these steps and the CUDA events that time them are in measure/loops.py.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from bench.runtimes.cuda import Event, PinnedBuffer, set_device
from bench.session import CUDA, Outputs, Session


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
    """The "cuda" loop's steps. Subclasses set `stream`, `_shape`, `_in_dtype`, `_host_in` (pinned),
    `_settings`, and implement `_copy_in(src_ptr)`, `compute()`, `d2h()` and `_host_outputs()`."""

    loop = CUDA
    record_enqueue = False  # host time of each compute launch (trtexec's "enqueue time")
    device_id = 0  # the CUDA device the session's buffers and stream live on
    _staged: list

    def bind_thread(self) -> None:
        """Make this session's device the calling host thread's current one: the CUDA runtime's
        current device is per thread, and a loop thread starts on device 0."""
        set_device(self.device_id)

    def stage(self, x: np.ndarray):
        """A pinned copy of an input buffer (made once, before any loop); freed with the session."""
        pinned = PinnedBuffer(self._shape, self._in_dtype)
        np.copyto(pinned.array, x.reshape(self._shape), casting="same_kind")
        self._staged.append(pinned)
        return pinned

    def h2d(self, staged) -> None:
        """Copy a staged input to the device, on the stream."""
        self._copy_in(staged.ptr)

    def _copy_in(self, src_ptr: int) -> None:
        raise NotImplementedError

    def compute(self) -> None:
        raise NotImplementedError

    def d2h(self) -> None:
        """Copy every output back into its pinned host buffer, on the stream."""
        raise NotImplementedError

    def synchronize(self) -> None:
        self.stream.synchronize()

    def new_event(self):
        return Event()

    def _host_outputs(self) -> dict[str, PinnedBuffer]:
        """Pinned host buffers of the outputs by output name, in model order."""
        raise NotImplementedError

    def infer(self, x: np.ndarray) -> Outputs:
        np.copyto(self._host_in.array, x.reshape(self._shape), casting="same_kind")
        self.h2d(self._host_in)
        self.compute()
        self.d2h()
        self.synchronize()
        return {name: host.array.copy() for name, host in self._host_outputs().items()}

    def describe(self) -> dict[str, Any]:
        return dict(self._settings)

    def describe_extra(self, extra: dict[str, Any]) -> None:
        self._settings.update(extra)

    def effective_precision(self) -> str | None:
        return self._settings.get("precision_effective")

    def _close_staged(self) -> None:
        for pinned in self._staged:
            pinned.close()
        self._staged = []
