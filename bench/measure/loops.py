"""Every timed loop: host, request queue, CUDA events, and N sessions in N threads.

A loop drives a session's steps (bench.session describes them) over the input
buffers it was built with and returns a Window; the loop does nothing but run the
model between its clock readings. `loop_for(session, inputs)` picks the loop the
session names in `session.loop`.

Every loop also records what it did, so that a row says what ran rather than what was
configured: the requests in flight (from its own submit and completion times: the most at
once and the time-weighted mean) and which input buffers it fed. The buffers rotate across
windows, so that short windows still cycle through the whole pool.

CUDA: GPU time between events recorded on the session's stream (cudaEventElapsedTime,
about 0.5 us resolution). Like trtexec, an iteration is marked at four points: before
the input copy, after it, after compute and after the output copies; latency is the
first to the last mark (H2D + compute + D2H). Steady-state windows add a compute-only
pass (the same iterations with input and output left on the device); warm-up does not.
"""
from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from bench.session import CUDA, GROUP, HOST, REQUESTS

STAGES = ("h2d", "compute", "d2h")
MARKS_PER_ITERATION = len(STAGES) + 1
SOLO_ROUNDS = 2  # ORT's CUDA graph: one regular run, then the capture


@dataclass
class Window:
    """One timed run of a loop: wall time of the whole window and every iteration's latency."""

    wall_ns: int
    latencies_ns: list[int]
    iterations: int
    # Extra per-iteration series some loops can split out (e.g. h2d/compute/d2h on GPU).
    extra_ns: dict[str, list[int]] = field(default_factory=dict)
    # CUDA loops: wall time of the same iterations run again with device-resident input and output.
    compute_only_wall_ns: int | None = None
    # Requests in flight: the most at once, and request time inside the window (mean = busy / wall).
    in_flight_max: int = 1
    in_flight_busy_ns: int = 0
    fed: frozenset[int] = frozenset()  # indices of the input buffers fed during the window

    @property
    def in_flight_mean(self) -> float:
        return self.in_flight_busy_ns / self.wall_ns if self.wall_ns > 0 else 0.0


def ms_to_ns(ms: float) -> int:
    return int(round(ms * 1e6))


def in_flight(spans: list[tuple[int, int]], t0: int, t1: int) -> tuple[int, int]:
    """(most requests in flight at once, total request time) of (submit, completion) spans clipped to [t0, t1]."""
    clipped = [(max(a, t0), min(b, t1)) for a, b in spans]
    clipped = [(a, b) for a, b in clipped if b > a]
    edges = sorted([(a, 1) for a, _ in clipped] + [(b, -1) for _, b in clipped])  # an end sorts before a start
    most = current = 0
    for _, step in edges:
        current += step
        most = max(most, current)
    return most, sum(b - a for a, b in clipped)


class Rotation:
    """The input buffers in turn, continuing across windows; remembers which a window fed."""

    def __init__(self, count: int):
        self.count, self._next = count, 0

    def take(self, iterations: int) -> tuple[int, frozenset[int]]:
        """(first index, the indices fed) for a window of `iterations`: index i of the window is (first + i) % count."""
        first = self._next
        self._next = (first + iterations) % self.count
        return first, frozenset((first + i) % self.count for i in range(min(iterations, self.count)))


class Loop:
    """Runs `iterations` batches of one session over its input buffers."""

    min_iterations = 1  # a warm-up round: enough for every request in flight to run once

    def window(self, iterations: int) -> Window:
        raise NotImplementedError

    def compute_only_wall_ns(self, iterations: int) -> int | None:
        """The compute-only pass a steady-state window adds (None: this loop has none)."""
        return None

    def close(self) -> None:
        pass


class HostLoop(Loop):
    """session.run(x) per iteration, each timed on the host clock."""

    def __init__(self, session, inputs: list[np.ndarray]):
        self._run = session.run
        self._inputs = inputs
        self._rotation = Rotation(len(inputs))

    def window(self, iterations: int) -> Window:
        run, inputs, clock = self._run, self._inputs, time.perf_counter_ns
        n = len(inputs)
        first, fed = self._rotation.take(iterations)
        latencies = [0] * iterations
        t0 = clock()
        for i in range(iterations):
            start = clock()
            run(inputs[(first + i) % n])
            latencies[i] = clock() - start
        wall = clock() - t0
        return Window(wall_ns=wall, latencies_ns=latencies, iterations=iterations,
                      in_flight_max=1 if iterations else 0, in_flight_busy_ns=sum(latencies), fed=fed)


class RequestQueueLoop(Loop):
    """`iterations` completions timed from completion to completion with every request busy.

    The requests are filled before the clock starts and drained after it stops, so a
    window measures the steady pipeline, not its fill and drain bubbles (a multi-second
    window of half-second requests would otherwise lose several percent to them).
    Each completed request is restarted at once, in completion order (the session's queue),
    so a fast stream never waits behind a slow one. Each latency is the runtime's own figure.

    A window counts whole rounds (iterations rounded up to a multiple of the requests).
    Requests filled together finish together: the clock starts at the first one's completion
    while the others are about to complete, and a window ending mid-round would count those
    nearly free completions without their time (measured: +14% frames/s on IResNet-50 batch 8
    with 2 streams, 6-7 requests a window).
    """

    def __init__(self, session, inputs: list[np.ndarray]):
        self._queue = session.request_queue(inputs)
        self._rotation = Rotation(len(inputs))

    def window(self, iterations: int) -> Window:
        queue, clock = self._queue, time.perf_counter_ns
        count = queue.size
        iterations = -(-iterations // count) * count
        first, fed = self._rotation.take(iterations + count)  # the fill's inputs are fed too
        n = self._rotation.count
        submitted = [0] * count
        for k in range(count):
            at = clock()
            submitted[queue.start((first + k) % n)] = at
        latencies: list[int] = []
        spans: list[tuple[int, int]] = []
        t0 = last = None
        for i in range(iterations + 1):
            last, latency_ms = queue.wait()
            if t0 is None:
                t0 = clock()  # first completion: the pipeline is full from here
            else:
                latency = ms_to_ns(latency_ms)
                latencies.append(latency)
                spans.append((submitted[last], submitted[last] + latency))
            if i < iterations:
                at = clock()
                submitted[queue.start((first + count + i) % n)] = at
        t1 = clock()
        queue.wait_all()  # drain (`last` was waited already): the others' time in the window counts
        spans += [(submitted[r], submitted[r] + ms_to_ns(queue.latency_ms(r))) for r in range(count) if r != last]
        most, busy = in_flight(spans, t0, t1)
        return Window(wall_ns=t1 - t0, latencies_ns=latencies, iterations=iterations,
                      in_flight_max=most, in_flight_busy_ns=busy, fed=fed)


class StageMarks:
    """Four events per iteration, reused across windows; grown on demand, read after the window."""

    def __init__(self, new_event: Callable[[], Any]):
        self._new_event = new_event
        self._events: list[list[Any]] = []

    def reserve(self, iterations: int) -> None:
        """Create the events before the timed loop so the loop only records them."""
        while len(self._events) < iterations:
            self._events.append([self._new_event() for _ in range(MARKS_PER_ITERATION)])

    def events(self, iteration: int) -> list[Any]:
        return self._events[iteration]

    def gaps_ms(self, iterations: int) -> list[tuple[float, ...]]:
        """(h2d, compute, d2h) ms of the first `iterations`; the stream must have finished them."""
        return [tuple(marks[k].elapsed_ms(marks[k + 1]) for k in range(len(STAGES)))
                for marks in self._events[:iterations]]

    def collect(self, iterations: int) -> tuple[list[int], dict[str, list[int]]]:
        return split_stages(self.gaps_ms(iterations))

    def close(self) -> None:
        for marks in self._events:
            for event in marks:
                event.close()
        self._events = []


def split_stages(gaps_ms: list[tuple[float, ...]]) -> tuple[list[int], dict[str, list[int]]]:
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


class CudaEventLoop(Loop):
    """trtexec's loop on the session's stream: H2D, compute, D2H, four events per iteration."""

    def __init__(self, session, inputs: list[np.ndarray]):
        self._session = session
        self._staged = [session.stage(x) for x in inputs]  # pinned copies, made once, outside the loops
        self._marks = StageMarks(session.new_event)
        self._rotation = Rotation(len(inputs))

    def window(self, iterations: int) -> Window:
        session, marks, staged = self._session, self._marks, self._staged
        marks.reserve(iterations)
        stream, h2d, compute, d2h, clock = session.stream, session.h2d, session.compute, session.d2h, time.perf_counter_ns
        enqueue = [0] * iterations
        n = len(staged)
        first, fed = self._rotation.take(iterations)
        t0 = clock()
        for i in range(iterations):
            events = marks.events(i)
            events[0].record(stream)
            h2d(staged[(first + i) % n])
            events[1].record(stream)
            e0 = clock()
            compute()
            enqueue[i] = clock() - e0
            events[2].record(stream)
            d2h()
            events[3].record(stream)
        session.synchronize()
        wall = clock() - t0
        latencies, series = marks.collect(iterations)
        if session.record_enqueue:
            series["enqueue"] = enqueue
        # One stream runs one iteration at a time: in flight 1, busy for the GPU time of its iterations.
        return Window(wall_ns=wall, latencies_ns=latencies, iterations=iterations, extra_ns=series,
                      in_flight_max=1 if iterations else 0, in_flight_busy_ns=sum(latencies), fed=fed)

    def reserve(self, iterations: int) -> None:
        """Create a window's events ahead of it (a threaded window makes them before its clock)."""
        self._marks.reserve(iterations)

    def bind_thread(self) -> None:
        self._session.bind_thread()

    def compute_only_wall_ns(self, iterations: int) -> int:
        compute, clock = self._session.compute, time.perf_counter_ns
        t0 = clock()
        for _ in range(iterations):
            compute()
        self._session.synchronize()
        return clock() - t0

    def close(self) -> None:
        self._marks.close()


class ThreadedLoop(Loop):
    """N member sessions, one host thread each, N requests in flight; frames/s is the aggregate
    over the window's wall time and each latency is one request's.

    Host members share a window's iterations as they come (each thread takes the next one),
    so the threads finish within one request of each other. CUDA members each run their
    share of the iterations through their own CUDA-event loop on their own stream (trtexec
    --infStreams), latencies from their own events. The runtimes release the GIL while
    they compute.
    """

    def __init__(self, group, inputs: list[np.ndarray]):
        self._members = group.members
        self._inputs = inputs
        self._cuda = [CudaEventLoop(m, inputs) for m in self._members] if self._members[0].loop == CUDA else None
        self._rotation = Rotation(len(inputs))
        self.min_iterations = len(self._members)
        for loop in self._cuda or []:
            # Each member's first rounds alone, before any thread: ORT captures a member's CUDA graph
            # in its first runs, and a capture while another thread allocates on the device fails.
            loop.window(SOLO_ROUNDS)

    def window(self, iterations: int) -> Window:
        if self._cuda is None:
            jobs, shares = self._host_jobs(iterations)
        else:
            jobs, shares = self._cuda_jobs(iterations)
        errors: list[BaseException] = []
        start = threading.Barrier(len(jobs) + 1)

        def serve(job: Callable[[], None]) -> None:
            start.wait()
            try:
                job()
            except BaseException as exc:  # re-raised in the measuring thread: a failed point
                errors.append(exc)

        threads = [threading.Thread(target=serve, args=(job,), daemon=True) for job in jobs]
        for thread in threads:
            thread.start()
        start.wait()
        t0 = time.perf_counter_ns()
        for thread in threads:
            thread.join()
        t1 = time.perf_counter_ns()
        if errors:
            raise errors[0]
        return _merged(shares, t0, t1, iterations)

    def _host_jobs(self, iterations: int):
        taken = itertools.count()  # next() on a count is atomic under the GIL
        inputs = self._inputs
        first, fed = self._rotation.take(iterations)
        shares = [Window(0, [], 0, fed=fed) for _ in self._members]

        def job(run, own: Window) -> Callable[[], None]:
            def serve() -> None:
                clock, spans = time.perf_counter_ns, own.extra_ns.setdefault("spans", [])
                while (i := next(taken)) < iterations:
                    t0 = clock()
                    run(inputs[(first + i) % len(inputs)])
                    t1 = clock()
                    own.latencies_ns.append(t1 - t0)
                    spans.append((t0, t1))
            return serve

        return [job(m.run, own) for m, own in zip(self._members, shares)], shares

    def _cuda_jobs(self, iterations: int):
        counts = [iterations // len(self._cuda) + (k < iterations % len(self._cuda)) for k in range(len(self._cuda))]
        shares: list[Window] = []

        def job(loop: CudaEventLoop, count: int) -> Callable[[], None]:
            def serve() -> None:
                loop.bind_thread()
                shares.append(loop.window(count))
            return serve

        for loop, count in zip(self._cuda, counts):
            loop.reserve(count)  # the events, before the clock and on the loading thread's device
        return [job(loop, count) for loop, count in zip(self._cuda, counts) if count], shares

    def close(self) -> None:
        for loop in self._cuda or []:
            loop.close()


def _merged(shares: list[Window], t0: int, t1: int, iterations: int) -> Window:
    """The members' shares as one window. Host members carry their requests' (start, end) spans;
    CUDA members' GPU-timed iterations count as one request each in flight for their GPU time."""
    latencies = [v for share in shares for v in share.latencies_ns]
    spans = [span for share in shares for span in share.extra_ns.pop("spans", [])]
    if spans:
        most, busy = in_flight(spans, t0, t1)
    else:
        most, busy = sum(1 for s in shares if s.iterations), sum(s.in_flight_busy_ns for s in shares)
    keys = set.intersection(*(set(s.extra_ns) for s in shares)) if shares else set()
    extra = {key: [v for s in shares for v in s.extra_ns[key]] for key in sorted(keys)}
    fed = frozenset().union(*(s.fed for s in shares))
    return Window(wall_ns=t1 - t0, latencies_ns=latencies, iterations=iterations, extra_ns=extra,
                  in_flight_max=most, in_flight_busy_ns=busy, fed=fed)


LOOPS = {HOST: HostLoop, REQUESTS: RequestQueueLoop, CUDA: CudaEventLoop, GROUP: ThreadedLoop}


def loop_for(session, inputs: list[np.ndarray]) -> Loop:
    """The loop that drives `session` (its `loop` names it) over `inputs`."""
    return LOOPS[session.loop](session, inputs)
