"""The measurement protocol and its statistics, on real sessions where timing matters."""
from __future__ import annotations

import time

import numpy as np
import pyarrow.parquet as pq
import pytest

from bench import store
from bench.measure.protocol import (UNSTABLE, VALID, MeasureSettings, _stable, make_inputs, measure,
                                    resize_window, spread_pct, window_iterations)
from bench.measure.cold_start import ColdStartTimer
from bench.measure.loops import Window
from bench.measure.stats import latency_stats, nearest_rank
from bench.models import zoo
from bench.session import LoadRequest, Session
from bench.runtimes.registry import get_runtime

SHORT = MeasureSettings(warmup_s=0.05, warmup_min_iterations=2, window_s=0.1, window_min_iterations=3, max_windows=6)


def test_nearest_rank_matches_trtexec():
    values = np.arange(1, 101, dtype=float)
    assert nearest_rank(values, 90) == 90 and nearest_rank(values, 99) == 99 and nearest_rank(values, 50) == 50
    ten = np.arange(1, 11, dtype=float)
    assert nearest_rank(ten, 90) == 9 and nearest_rank(ten, 100) == 10


def test_latency_stats_in_milliseconds():
    stats = latency_stats(np.array([1e6, 2e6, 3e6, 4e6]))
    assert stats.min_ms == 1 and stats.max_ms == 4 and stats.p50_ms == 2.5 and stats.mean_ms == 2.5
    assert stats.cov_pct == pytest.approx(np.std([1, 2, 3, 4]) / 2.5 * 100)


def _window(fps: float, latency_ms: float, batch: int = 1, iterations: int = 10) -> Window:
    wall_ns = int(batch * iterations / fps * 1e9)
    return Window(wall_ns=wall_ns, latencies_ns=[int(latency_ms * 1e6)] * iterations, iterations=iterations)


def test_stability_rule_is_three_windows_within_ten_percent():
    settings = MeasureSettings()
    assert _stable([_window(100, 10), _window(105, 10.2), _window(108, 9.9)], 1, settings)
    assert not _stable([_window(100, 10), _window(115, 10), _window(100, 10)], 1, settings)  # throughput moved
    assert not _stable([_window(100, 10), _window(100, 12), _window(100, 10)], 1, settings)  # latency moved
    assert spread_pct([100, 110]) == pytest.approx(10)


def test_window_sizing_from_warm_up_and_resizing_of_short_windows():
    settings = MeasureSettings(window_s=1.0, window_min_iterations=5)
    assert window_iterations(0.01, settings) == 100
    assert window_iterations(1.0, settings) == 5  # never below the minimum count
    short = Window(wall_ns=int(0.1e9), latencies_ns=[], iterations=100)
    assert resize_window(100, short, settings) == 1000
    long_enough = Window(wall_ns=int(0.8e9), latencies_ns=[], iterations=100)
    assert resize_window(100, long_enough, settings) == 100


@pytest.mark.parametrize("runtime_name", ["ort-cpu", "openvino-cpu", "openvino-cpu-latency"])
def test_measure_on_a_real_session(runtime_name):
    info = zoo.build_cached("scrfd_500m", 160)
    batch = 2
    phases = ColdStartTimer()
    session = get_runtime(runtime_name).load(LoadRequest(info.path, info.input_name, info.input_shape(batch), "fp32"),
                                             phases)
    counter = WindowCounter()
    try:
        result = measure(session, make_inputs(info.input_shape(batch), 3, 0, info.mean, info.std), batch, SHORT,
                         [counter])
    finally:
        session.close()
    cold = phases.result()
    assert cold.read_ms > 0 and cold.compile_ms > 0 and cold.first_infer_ms > 0 and cold.warm_cache_total_ms is None
    assert session.loop == ("requests" if runtime_name == "openvino-cpu" else "host")
    # The samplers heard every steady-state window, and only those (warm-up ran first, unheard).
    assert counter.started == counter.stopped == len(result.windows) and counter.windows == result.windows
    assert 3 <= len(result.windows) <= SHORT.max_windows
    # Which verdict depends on the machine's noise; that it matches the windows does not.
    used = result.windows[-result.used_windows:]
    if result.verdict == VALID:
        assert result.used_windows == SHORT.stable_windows and _stable(used, batch, SHORT)
    else:  # a window resized late leaves fewer equal-sized windows to report from
        assert result.verdict == UNSTABLE and len(result.windows) == SHORT.max_windows
        assert 1 <= result.used_windows <= SHORT.stable_windows
    assert result.frames == batch * result.iterations
    # Against the sampler's own clock around each window (which also holds the hooks and, for a request
    # queue, its fill and drain): never slower, and not by more than those few requests.
    outside_s = sum(counter.seconds[-result.used_windows:])
    assert result.frames / outside_s <= result.fps <= 10 * result.frames / outside_s
    assert len(np.concatenate([w.latencies_ns for w in used])) == result.iterations
    assert result.latency.min_ms <= result.latency.p50_ms <= result.latency.p99_ms <= result.latency.max_ms
    if result.verdict == UNSTABLE:
        assert any("did not settle" in w for w in result.warnings)


class WindowCounter:
    """A sampler that counts the hook calls it hears (bench.telemetry.base.Sampler)."""

    def __init__(self):
        self.started, self.stopped, self.windows, self.seconds = 0, 0, [], []

    def window_started(self):
        self.started += 1
        self._t0 = time.perf_counter()

    def window_stopped(self, window):
        self.seconds.append(time.perf_counter() - self._t0)
        self.stopped += 1
        self.windows.append(window)

    def figures(self, measurement):
        return {}


def test_threaded_loop_serves_n_real_sessions():
    info = zoo.build_cached("arcface_mbf")
    runtime = get_runtime("ort-cpu")
    phases = ColdStartTimer()
    group = runtime.load_concurrent(LoadRequest(info.path, info.input_name, info.input_shape(1), "fp32"), 2, phases)
    try:
        assert group.loop == "group" and len(group.members) == 2 and group.describe()["sessions"] == 2
        result = measure(group, make_inputs(info.input_shape(1), 2, 0, info.mean, info.std), 1, SHORT)
    finally:
        group.close()
    assert phases.result().compile_ms > 0  # the first member's cold start, timed once
    for window in result.windows:  # each request's own latency, every iteration served once
        assert len(window.latencies_ns) == window.iterations and min(window.latencies_ns) > 0
    assert result.warmup_iterations >= SHORT.warmup_min_iterations


class ScriptedClock:
    """The host clock for the protocol and its loops, advanced only by the scripted session (integer ns)."""

    def __init__(self):
        self.now_ns = 0

    def seconds(self) -> float:
        return self.now_ns / 1e9

    def ns(self) -> int:
        return self.now_ns


class ScriptedSession(Session):
    """Host-loop steps whose latency comes from a script: latency_s(window) for each run in steady-state
    window `window` (0, 1, ...), latency_s(None) in warm-up; it hears the windows as a sampler does."""

    def __init__(self, clock: ScriptedClock, latency_s):
        self.clock, self.latency_s, self.window_index, self.calls = clock, latency_s, None, []

    def infer(self, x):
        return {"x": x}

    def run(self, x) -> None:
        self.clock.now_ns += int(round(self.latency_s(self.window_index) * 1e9))

    def window_started(self):
        self.window_index = 0 if self.window_index is None else self.window_index + 1

    def window_stopped(self, window):
        self.calls.append(window.iterations)

    def figures(self, measurement):
        return {}


@pytest.fixture
def clock(monkeypatch) -> ScriptedClock:
    fake = ScriptedClock()
    monkeypatch.setattr("bench.measure.protocol.time.perf_counter", fake.seconds)
    monkeypatch.setattr("bench.measure.loops.time.perf_counter_ns", fake.ns)
    return fake


SCRIPTED = MeasureSettings(warmup_s=0.05, warmup_min_iterations=5, window_s=1.0, window_min_iterations=5,
                           max_windows=6)


def scripted_measure(session: ScriptedSession, batch: int):
    return measure(session, [np.zeros(1, np.float32)], batch, SCRIPTED, [session])


def test_scripted_async_session_gets_its_windows_resized_then_settles(clock):
    # Serial warm-up at 10 ms, windows overlapping requests at 1 ms: the first window (sized from
    # the warm-up) lasts 0.1 s, so it is resized to 1000 iterations and only equal windows count.
    session = ScriptedSession(clock, lambda window: 0.010 if window is None else 0.001)
    result = scripted_measure(session, 2)
    assert session.calls == [100, 1000, 1000, 1000]
    assert result.verdict == VALID and result.warmup_iterations == 5
    assert result.iterations == 3000 and result.wall_s == pytest.approx(3.0)
    assert result.fps == pytest.approx(2000.0) and result.window_spread_pct == pytest.approx(0.0)
    assert result.latency.p50_ms == pytest.approx(1.0) and not result.warnings


def test_scripted_session_that_never_settles_is_unstable_at_max_windows(clock):
    # Windows alternate between 10 ms and 13 ms per iteration: 30% apart, never within 10%.
    session = ScriptedSession(clock, lambda window: 0.010 if window is None or window % 2 == 0 else 0.013)
    result = scripted_measure(session, 1)
    assert len(result.windows) == SCRIPTED.max_windows == len(session.calls)
    assert result.verdict == UNSTABLE and result.used_windows == 3
    assert result.window_spread_pct == pytest.approx(30.0)
    assert any("did not settle" in w and "after 6 windows" in w for w in result.warnings)


def test_scripted_session_settling_late_uses_only_the_last_windows(clock):
    # Two slow windows (a cold cache), then steady: VALID on windows 3-5, the slow ones left out.
    session = ScriptedSession(clock, lambda window: 0.010 if window is None else (0.020 if window < 2 else 0.010))
    result = scripted_measure(session, 1)
    assert result.verdict == VALID and len(result.windows) == 5
    assert result.fps == pytest.approx(100.0) and result.latency.max_ms == pytest.approx(10.0)


class ScriptedQueue:
    """Infer requests on their own streams, request r done `periods_s[r]` after its start on the
    scripted clock, restarted in completion order as OpenVINO's AsyncInferQueue does."""

    loop = "requests"

    def __init__(self, clock: ScriptedClock, streams: int = 2, period_s: float = 0.1,
                 periods_s: list[float] | None = None):
        self.clock = clock
        self.periods_ns = [int(p * 1e9) for p in (periods_s or [period_s] * streams)]
        self.size = len(self.periods_ns)
        self.idle, self.busy = list(range(self.size)), {}  # idle in completion order; busy: request -> done
        self.fed: list[int] = []  # every buffer a request was started on, in order

    def request_queue(self, inputs):
        return self

    def _complete_earliest(self):
        if not self.idle:  # block until the earliest completion; all that finish by then turn idle
            self.clock.now_ns = max(self.clock.now_ns, min(self.busy.values()))
            for _, r in sorted((done, r) for r, done in self.busy.items() if done <= self.clock.now_ns):
                del self.busy[r]
                self.idle.append(r)

    def start(self, buffer: int) -> int:
        self._complete_earliest()
        r = self.idle.pop(0)
        self.busy[r] = self.clock.now_ns + self.periods_ns[r]
        self.fed.append(buffer)
        return r

    def wait(self) -> tuple[int, float]:
        self._complete_earliest()
        return self.idle[0], self.latency_ms(self.idle[0])

    def latency_ms(self, request: int) -> float:
        return self.periods_ns[request] / 1e6

    def wait_all(self):
        if self.busy:
            self.clock.now_ns = max(self.clock.now_ns, *self.busy.values())
            self.idle += sorted(self.busy, key=self.busy.get)
            self.busy = {}


@pytest.mark.parametrize("asked", [4, 5, 7])
def test_request_queue_windows_count_whole_rounds(clock, asked):
    """Two streams filled together finish together. A window of 5 from the first completion would
    end one nearly free completion later than a round (2.5 requests per period instead of 2):
    windows count whole rounds, so the figure is exact whatever the size asked."""
    from bench.measure.loops import RequestQueueLoop

    loop = RequestQueueLoop(ScriptedQueue(clock, streams=2, period_s=0.1), [np.zeros(1, np.float32)])
    window = loop.window(asked)
    assert window.iterations == asked + asked % 2 and len(window.latencies_ns) == window.iterations
    assert window.iterations / (window.wall_ns / 1e9) == pytest.approx(20.0)  # 2 requests per 0.1 s


def test_older_schema_file_is_upgraded_and_its_checksum_still_holds(tmp_path):
    path = tmp_path / "old.parquet"
    store.write_rows(path, [{"model": "m", "runtime": "ort-cpu", "batch": 1, "status": "ok", "fps": 10.0}])
    table = pq.read_table(path)
    older = table.drop_columns(["faces_per_s"])  # a column a previous version did not have
    metadata = dict(table.schema.metadata)
    metadata[b"facebench.rows_sha256"] = store.rows_checksum(older).encode()
    pq.write_table(older.replace_schema_metadata(metadata), path)
    upgraded, check = store.read_table(path)
    assert check.checksum_ok is True
    assert upgraded.column("faces_per_s").to_pylist() == [None]
    assert upgraded.column("fps").to_pylist() == [10.0]


def test_a_row_the_schema_cannot_hold_becomes_a_failed_point(tmp_path):
    from bench.results import ModelFacts, PointIdentity, PointResult, SteadyState

    results = store.ResultStore(tmp_path / "rows.parquet")

    def point(batch, fps):
        return PointResult(PointIdentity("ort-cpu", "fp32", batch), ModelFacts("m", "0" * 64),
                           steady=SteadyState(fps=fps, frames=batch, wall_s=1.0))
    results.add(point(1, "fast"))
    results.add(point(2, 5.0))
    rows = {r["batch"]: r for r in store.read_rows(results.path)}
    assert rows[1]["status"] == "failed" and "could not be stored" in rows[1]["reason"]
    assert rows[2]["status"] == "ok" and rows[2]["fps"] == 5.0  # later points still land on disk


@pytest.mark.parametrize("streams", [1, 2, 3])
def test_request_queue_windows_measure_the_requests_in_flight(clock, streams):
    """Requests on their own streams overlap fully: as many in flight as requests, at every moment of
    the window, from the loop's own submit times and the runtime's latencies (not from settings)."""
    from bench.measure.loops import RequestQueueLoop

    loop = RequestQueueLoop(ScriptedQueue(clock, streams=streams, period_s=0.1), [np.zeros(1, np.float32)])
    window = loop.window(6)
    assert window.in_flight_max == streams
    assert window.in_flight_mean == pytest.approx(streams, rel=1e-6)


def test_request_queue_windows_rotate_through_the_input_pool(clock):
    """Each start names the next buffer, across windows: 2 requests over 8 buffers feed all 8 in two
    windows of 2 completions, and the window says which it fed."""
    from bench.measure.loops import RequestQueueLoop

    queue = ScriptedQueue(clock, streams=2, period_s=0.1)
    loop = RequestQueueLoop(queue, [np.zeros(1, np.float32)] * 8)
    first, second = loop.window(2), loop.window(2)
    assert queue.fed == [0, 1, 2, 3, 4, 5, 6, 7]  # fill (2) + 2 restarts, twice
    assert first.fed == {0, 1, 2, 3} and second.fed == {4, 5, 6, 7}


def test_in_flight_counts_overlap_from_spans():
    from bench.measure.loops import in_flight

    # Two requests overlapping for 5 ns, a third alone; the window clips the first and the last.
    spans = [(0, 10), (5, 15), (20, 40)]
    assert in_flight(spans, 2, 30) == (2, 8 + 10 + 10)
    assert in_flight([(0, 10), (10, 20)], 0, 20) == (1, 20)  # back to back: never two at once


def test_request_queue_restarts_a_fast_stream_without_waiting_for_a_slow_one(clock):
    """Another process's load on one core slows one stream: the fast stream keeps completing
    (10 + 2.5 requests/s), where a round-robin wait would hold both to the slow one's pace (5/s)."""
    from bench.measure.loops import RequestQueueLoop

    window = RequestQueueLoop(ScriptedQueue(clock, periods_s=[0.1, 0.4]), [np.zeros(1, np.float32)]).window(200)
    assert window.iterations / (window.wall_ns / 1e9) == pytest.approx(12.5, rel=0.02)
    assert sorted(set(window.latencies_ns)) == [100_000_000, 400_000_000]  # each request's own latency
    assert window.in_flight_max == 2 and window.in_flight_mean == pytest.approx(2.0, rel=0.01)
