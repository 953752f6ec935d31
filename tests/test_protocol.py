"""The measurement protocol and its statistics, on real sessions where timing matters."""
from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from bench import store
from bench.measure.protocol import (UNSTABLE, VALID, MeasureSettings, _stable, make_inputs, measure,
                                    resize_window, spread_pct, window_iterations)
from bench.measure.stats import latency_stats, nearest_rank
from bench.models import zoo
from bench.runtimes.base import LoadRequest, Window
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
    session, cold = get_runtime(runtime_name).load(
        LoadRequest(info.path, info.input_name, info.input_shape(batch), "fp32"))
    try:
        result = measure(session, make_inputs(info.input_shape(batch), 3, 0, info.mean, info.std), batch, SHORT)
    finally:
        session.close()
    assert cold.compile_ms > 0 and cold.first_infer_ms > 0
    assert result.verdict in (VALID, UNSTABLE) and 3 <= len(result.windows) <= SHORT.max_windows
    assert result.used_windows == SHORT.stable_windows
    assert result.frames == batch * result.iterations
    assert result.fps == pytest.approx(result.frames / result.wall_s)
    assert len(np.concatenate([w.latencies_ns for w in result.windows[-3:]])) == result.iterations
    assert result.latency.min_ms <= result.latency.p50_ms <= result.latency.p99_ms <= result.latency.max_ms
    if result.verdict == UNSTABLE:
        assert any("did not settle" in w for w in result.warnings)


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
    results = store.ResultStore(tmp_path / "rows.parquet")
    results.add({"model": "m", "runtime": "ort-cpu", "precision": "fp32", "batch": 1, "status": "ok", "fps": "fast"})
    results.add({"model": "m", "runtime": "ort-cpu", "precision": "fp32", "batch": 2, "status": "ok", "fps": 5.0})
    rows = {r["batch"]: r for r in store.read_rows(results.path)}
    assert rows[1]["status"] == "failed" and "could not be stored" in rows[1]["reason"]
    assert rows[2]["status"] == "ok" and rows[2]["fps"] == 5.0  # later points still land on disk
