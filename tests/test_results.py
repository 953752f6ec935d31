"""PointResult: one typed result per point, across the worker pipe, flattened by the store alone
(real onnxruntime on the small replicas)."""
from __future__ import annotations

import math
import pickle

import numpy as np
import onnx
import pyarrow.parquet as pq
import pytest

from bench import plan, store
from bench.checks import point_checks
from bench.launchers import make_launcher
from bench.models.info import inspect_model
from bench.models.scrfd import build_scrfd
from bench.results import (
    Environment,
    ModelFacts,
    PeakShares,
    PointIdentity,
    PointResult,
    SteadyState,
)
from bench.suite import load_suite
from tests.conftest import ort_infer, tiny_suite

NEW_PARITY_COLUMNS = ("parity_metric", "parity_value", "parity_gate", "parity_direction")
ENVIRONMENT = Environment(run_id="r1", suite="results", timestamp_utc="2025-01-01T00:00:00+00:00",
                          machine={"host": "here", "machine_id": "m1"})


@pytest.fixture(scope="module")
def measured(tmp_path_factory) -> list[PointResult]:
    """Both batches of a tiny ort-cpu suite, measured in a worker process (parity and contamination on)."""
    folder = tmp_path_factory.mktemp("results")
    (folder / "suite.toml").write_text(tiny_suite("results", [1, 2], checks="parity = true\ncontamination = true"))
    [job] = plan.plan(load_suite(str(folder / "suite.toml"))).jobs
    results = []
    make_launcher(inline=False, point_timeout_s=300).run(
        job, lambda kind, payload: results.append(payload) if kind == "result" else None)
    return results


def same(a, b) -> bool:
    """Equal, NaN included."""
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))


def test_a_measured_point_crosses_the_pipe_as_a_point_result(measured):
    assert [type(r) for r in measured] == [PointResult, PointResult]
    assert [r.point.batch for r in measured] == [1, 2] and {r.status for r in measured} == {"ok"}
    result = measured[1]
    assert result.steady.fps > 0 and result.cold_start.total_ms > 0 and result.cpu.peak_rss_mb > 0
    assert result.contamination.passed and result.parity.passed
    copy = pickle.loads(pickle.dumps(result))
    assert all(same(a, b) for a, b in zip(store.flatten(copy).values(), store.flatten(result).values()))


def test_a_point_flattens_to_the_schema_and_reads_back_equal(measured, tmp_path):
    results = store.ResultStore(tmp_path / "point.parquet")
    for result in measured:
        results.add(result.recorded(ENVIRONMENT))
    rows = [store.flatten(r.recorded(ENVIRONMENT)) for r in measured]
    assert all(list(row) == list(store.COLUMNS) for row in rows)
    back = store.read_rows(results.path)
    assert len(back) == 2
    for row, read in zip(rows, back):
        assert all(same(row[c], read[c]) for c in store.COLUMNS), [c for c in store.COLUMNS if not same(row[c], read[c])]
    row = back[1]
    assert (row["model"], row["runtime"], row["batch"], row["run_id"], row["host"]) == ("arcface_mbf", "ort-cpu", 2, "r1", "here")
    assert row["lat_p99_ms"] > 0 and row["input_buffers"] >= 1 and row["runtime_options_json"].startswith("{")


def test_an_embedders_parity_is_decided_by_its_cosine(measured, tmp_path):
    results = store.ResultStore(tmp_path / "parity.parquet")
    results.add(measured[1])
    [row] = store.read_rows(results.path)
    assert (row["parity_metric"], row["parity_direction"]) == ("cosine_min", "min")
    assert row["parity_gate"] == 0.9999  # the FP32 gate
    assert row["parity_passed"] == (row["parity_value"] >= row["parity_gate"])
    assert row["parity_summary"] == f"cos min {row['parity_value']:.5f}"


def point(batch: int = 1, **parts) -> PointResult:
    return PointResult(PointIdentity("ort-cpu", "fp32", batch, device="cpu"), ModelFacts("m", "0" * 64), **parts)


def test_skipped_and_failed_points_carry_identity_and_reason_only(tmp_path):
    results = store.ResultStore(tmp_path / "rows.parquet")
    results.add(PointResult.skipped(point(1).point, point(1).model, "plateau: 1..2 gained 0.1%"))
    results.add(PointResult.failed(point(2).point, point(2).model, "worker died with SIGKILL"))
    skipped, failed = store.read_rows(results.path)
    assert (skipped["status"], skipped["reason"], failed["status"]) == ("skipped", "plateau: 1..2 gained 0.1%", "failed")
    for row in (skipped, failed):
        assert row["fps"] is None and row["warnings"] is None and row["parity_checked"] is None
        assert (row["model"], row["runtime"], row["input_format"], row["concurrency"]) == ("m", "ort-cpu", "float-nchw", 1)


def test_a_point_has_one_warnings_column_from_all_its_parts():
    steady = SteadyState(fps=10.0, frames=10, wall_s=1.0, warnings=["did not settle"])
    result = point(steady=steady, peaks=PeakShares(note="nominal 150 GFLOP/s is above the conv probe"),
                   notes=["detector runs at batch 1"])
    assert store.flatten(result)["warnings"] == ("did not settle; nominal 150 GFLOP/s is above the conv probe; "
                                                 "detector runs at batch 1")


@pytest.mark.parametrize("scale", [1.0, 1.5], ids=["same", "outputs-off-by-half"])
def test_a_detectors_parity_is_decided_by_its_gated_figure(tmp_path, scale):
    """A replica with random weights finds no face: the relative L2 of the raw outputs decides."""
    path = tmp_path / "scrfd.onnx"
    onnx.save(build_scrfd("500m", 96), path)
    info = inspect_model(path)
    infer = ort_infer(path)
    candidate = lambda x: {name: np.asarray(o) * scale for name, o in infer(x).items()}  # noqa: E731
    parity = point_checks.parity_check(candidate, info, 1, "fp32", point_checks.parity_frames(info)[0])
    results = store.ResultStore(tmp_path / "det.parquet")
    results.add(point(parity=parity))
    [row] = store.read_rows(results.path)
    assert (row["parity_metric"], row["parity_direction"], row["parity_gate"]) == ("output_rel_l2_max", "max", 1e-3)
    assert row["parity_passed"] is (scale == 1.0)
    assert row["parity_passed"] == (row["parity_value"] <= row["parity_gate"])
    if scale != 1.0:
        assert row["parity_value"] == pytest.approx(0.5, rel=1e-3)  # the worst output's error


def test_files_without_the_parity_figures_still_read(tmp_path):
    row = store.flatten(point())
    table = store.to_table([row]).drop_columns(list(NEW_PARITY_COLUMNS))
    pq.write_table(table.replace_schema_metadata({b"facebench.schema_version": b"1"}), tmp_path / "old.parquet")
    [read] = store.read_rows(tmp_path / "old.parquet")
    assert all(read[c] is None for c in NEW_PARITY_COLUMNS) and read["model"] == "m"


def test_files_from_before_requests_in_flight_read_their_concurrency_as_requested(tmp_path):
    """Schema v1 recorded the suite's concurrency only: it reads as the point's requested concurrency (the
    resume key), with no in-flight mean; a v2 row keeps what ran apart from what was asked."""
    rows = [{**store.flatten(point()), "concurrency": c} for c in (1, 4)]
    table = store.to_table(rows).drop_columns(["concurrency_requested", "in_flight_mean"])
    pq.write_table(table.replace_schema_metadata({b"facebench.schema_version": b"1"}), tmp_path / "old.parquet")
    read = store.read_rows(tmp_path / "old.parquet")
    assert [(r["concurrency"], r["concurrency_requested"], r["in_flight_mean"]) for r in read] == [(1, 1, None),
                                                                                                   (4, 4, None)]
    measured = point(steady=SteadyState(fps=10.0, frames=10, wall_s=1.0, in_flight_max=2, in_flight_mean=1.9))
    row = store.flatten(measured)
    assert (row["concurrency"], row["concurrency_requested"], row["in_flight_mean"]) == (2, 1, 1.9)
