"""CUDA-event timing: a Timer over one stream, and the per-iteration H2D / compute / D2H split.

GPU time between two events recorded on the stream (cudaEventElapsedTime, about
0.5 us resolution). Like trtexec, an iteration is marked at four points: before the
input copy, after it, after compute and after the output copies; latency is the
first to the last mark (H2D + compute + D2H).
"""
from __future__ import annotations

from bench.runtimes.cuda import Event, Stream

STAGES = ("h2d", "compute", "d2h")
MARKS_PER_ITERATION = len(STAGES) + 1


def ms_to_ns(ms: float) -> int:
    return int(round(ms * 1e6))


class CudaEventTimer:
    """Timer protocol on a stream: start() and stop() record events; stop() waits and returns ns."""

    def __init__(self, stream: Stream):
        self._stream = stream
        self._start = Event()
        self._end = Event()

    def start(self) -> None:
        self._start.record(self._stream)

    def stop(self) -> int:
        self._end.record(self._stream)
        self._end.synchronize()
        return ms_to_ns(self._start.elapsed_ms(self._end))

    def close(self) -> None:
        self._start.close()
        self._end.close()


def split_stages(gaps_ms: list[tuple[float, float, float]]) -> tuple[list[int], dict[str, list[int]]]:
    """Per-iteration (h2d, compute, d2h) ms -> (latencies ns, {stage: ns series}).

    Latency is the sum of the three, as trtexec defines it.
    """
    series: dict[str, list[int]] = {stage: [] for stage in STAGES}
    latencies = []
    for gaps in gaps_ms:
        parts = [ms_to_ns(g) for g in gaps]
        for stage, value in zip(STAGES, parts):
            series[stage].append(value)
        latencies.append(sum(parts))
    return latencies, series


class StageMarks:
    """Four events per iteration, reused across windows; grown on demand, read after the window."""

    def __init__(self) -> None:
        self._events: list[list[Event]] = []

    def reserve(self, iterations: int) -> None:
        """Create the events before the timed loop so the loop only records them."""
        while len(self._events) < iterations:
            self._events.append([Event() for _ in range(MARKS_PER_ITERATION)])

    def mark(self, iteration: int, point: int, stream: Stream) -> None:
        self._events[iteration][point].record(stream)

    def events(self, iteration: int) -> list[Event]:
        return self._events[iteration]

    def gaps_ms(self, iterations: int) -> list[tuple[float, float, float]]:
        """(h2d, compute, d2h) ms of the first `iterations`; the stream must have finished them."""
        out = []
        for marks in self._events[:iterations]:
            out.append(tuple(marks[k].elapsed_ms(marks[k + 1]) for k in range(len(STAGES))))
        return out

    def collect(self, iterations: int) -> tuple[list[int], dict[str, list[int]]]:
        return split_stages(self.gaps_ms(iterations))

    def close(self) -> None:
        for marks in self._events:
            for event in marks:
                event.close()
        self._events = []
