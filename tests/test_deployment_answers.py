"""Issue 16: the adaptive batch ladder, the latency budget answer and the concurrency axis.

The ladder and the budget are driven with recorded figures (no timing), then through small
real sweeps on the CPU runtimes; no assertion depends on how fast this machine is.
"""
from __future__ import annotations

import json

import pytest

from tests.conftest import tiny_suite
from bench import cli, store
from bench.ladder import LadderPoint, LadderRule, is_ladder_skip, stop_reason
from bench.report.model import LatencyBudget, build_report_model, parse_budget
from bench.report.text import budget_line

SUITE = tiny_suite("answers", [1, 2, 4, 8], checks="parity = false\ncontamination = false")


def write_suite(tmp_path, extra: str = "", name: str = "answers.toml") -> str:
    path = tmp_path / name
    path.write_text(SUITE + extra)
    return str(path)


# ---------------------------------------------------------------- the ladder rule on recorded frames/s

def curve(*pairs) -> list[LadderPoint]:
    return [LadderPoint(batch, fps, p99) for batch, fps, p99 in pairs]


RECORDED = curve((1, 100.0, 10.0), (2, 150.0, 14.0), (4, 156.0, 26.0), (8, 158.0, 51.0), (16, 159.0, 101.0))


def test_the_ladder_stops_where_two_steps_gain_under_the_threshold():
    rule = LadderRule(plateau_pct=5.0, steps=2)
    # 4 and 8 together gain 5.3% over 2's 150 -> not yet; 8 and 16 gain 1.9% over 4's 156 -> stop.
    assert stop_reason(rule, RECORDED, 16) == ""
    reason = stop_reason(rule, RECORDED, 32)
    assert reason == "plateau: 8..16 gained 1.9% over 4 (< 5%)" and is_ladder_skip(reason)
    assert stop_reason(rule, RECORDED[:2], 4) == ""  # too few steps to judge


def test_the_ladder_judges_only_the_points_below_the_batch():
    rule = LadderRule(plateau_pct=5.0, steps=2)
    # A resumed file may hold bigger batches than the one being re-measured: they do not count.
    assert stop_reason(rule, RECORDED, 8) == ""
    assert stop_reason(rule, list(reversed(RECORDED)), 32) == stop_reason(rule, RECORDED, 32)


def test_a_latency_ceiling_stops_the_ladder_and_full_ladder_never_stops():
    assert stop_reason(LadderRule(latency_ceiling_ms=50.0), RECORDED[:4], 16) == \
        "latency ceiling: batch 8 p99 51 ms > 50 ms"
    assert stop_reason(LadderRule(adaptive=False), RECORDED, 32) == ""
    assert stop_reason(None, RECORDED, 32) == ""


# ---------------------------------------------------------------- the budget on recorded rows

def recorded_row(runtime, batch, fps, p99, p95=None, verdict="VALID", concurrency=1, status="ok"):
    return {"model": "m", "model_sha256": "s", "kind": "model", "machine_id": "a", "host": "h",
            "runtime": runtime, "precision": "fp32", "batch": batch, "concurrency": concurrency,
            "status": status, "verdict": verdict, "fps": fps, "lat_p99_ms": p99,
            "lat_p95_ms": p95 if p95 is not None else p99, "lat_p50_ms": p99 / 2}


def stored_rows(tmp_path, rows):
    path = tmp_path / "recorded.parquet"
    store.write_rows(path, rows)
    return store.read_rows(path)


def answer(rows, budget):
    [summary] = build_report_model(rows, budget).models
    return summary.budget


def test_the_budget_picks_the_fastest_point_within_it(tmp_path):
    rows = stored_rows(tmp_path, [
        recorded_row("ort-cpu", 1, 100.0, 12.0),
        recorded_row("ort-cpu", 4, 180.0, 28.0, concurrency=2),  # the answer
        recorded_row("openvino-cpu", 8, 300.0, 45.0, p95=29.0),  # faster, but its p99 is over
        recorded_row("openvino-cpu", 2, 250.0, 20.0, verdict="UNSTABLE"),  # within, but not a valid figure
    ])
    best = answer(rows, LatencyBudget("p99", 30.0)).best
    assert (best.series.runtime, best.batch, best.series.concurrency) == ("ort-cpu", 4, 2)
    assert budget_line(answer(rows, parse_budget("30ms"))) == \
        "under budget p99 <= 30 ms: ort-cpu fp32 batch 4 concurrency 2 at 180.0 frames/s (p99 28.00 ms)"
    assert answer(rows, parse_budget("p95:30ms")).best.series.runtime == "openvino-cpu"  # p95 29 meets it


def test_no_configuration_meeting_the_budget_is_said_plainly(tmp_path, capsys):
    rows = [recorded_row("ort-cpu", 1, 100.0, 12.0), recorded_row("ort-cpu", 2, 150.0, 25.0)]
    stored = stored_rows(tmp_path, rows)
    assert answer(stored, parse_budget("p99:5ms")).best is None
    assert budget_line(answer(stored, parse_budget("p99:5ms"))) == \
        "under budget p99 <= 5 ms: no configuration meets the budget (the lowest p99 is 12.00 ms)"
    assert cli.main(["show", str(tmp_path / "recorded.parquet"), "--latency-budget", "5ms"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "no configuration meets the budget" in out and "misses" in out


@pytest.mark.parametrize("text", ["30", "p99:30ms", "0.03s"])
def test_budget_spellings(text):
    assert parse_budget(text) == LatencyBudget("p99", 30.0)


# ---------------------------------------------------------------- a real sweep: ladder, resume, bad input

# plateau_pct = 1000: batch 2 can never be 11x batch 1, so the ladder stops after 1 and 2 on any
# machine; the test is about what the harness does with the decision, not about this CPU.
ALWAYS_PLATEAU = "[ladder]\nsteps = 1\nplateau_pct = 1000.0\n"


def test_the_ladder_stops_in_a_real_sweep_and_resume_keeps_or_measures_its_skips(tmp_path):
    suite = write_suite(tmp_path, ALWAYS_PLATEAU)
    out = tmp_path / "ladder.parquet"
    assert cli.main(["run", suite, "--out", str(out), "--inline"]) == 0
    rows = {r["batch"]: r for r in store.read_rows(out)}
    assert [rows[b]["status"] for b in (1, 2, 4, 8)] == ["ok", "ok", "skipped", "skipped"]
    assert rows[4]["reason"].startswith("plateau: 2 gained") and rows[4]["reason"].endswith("over 1 (< 1000%)")

    # An interrupted run (only 1 and 2 on disk): resume goes on from the recorded points and
    # skips without measuring.
    interrupted = tmp_path / "interrupted.parquet"
    store.write_rows(interrupted, [rows[1], rows[2]])
    assert cli.main(["run", suite, "--resume", str(interrupted), "--inline"]) == 0
    resumed = {r["batch"]: r for r in store.read_rows(interrupted)}
    assert [resumed[b]["status"] for b in (1, 2, 4, 8)] == ["ok", "ok", "skipped", "skipped"]
    assert resumed[1]["run_id"] == rows[1]["run_id"]  # the measured points were kept, not measured again

    # Resume keeps the ladder's skips; with --full-ladder it measures them.
    assert cli.main(["run", suite, "--resume", str(out), "--inline"]) == 0
    assert {r["batch"]: r["status"] for r in store.read_rows(out)} == {1: "ok", 2: "ok", 4: "skipped", 8: "skipped"}
    assert cli.main(["run", suite, "--resume", str(out), "--full-ladder", "--inline"]) == 0
    final = {r["batch"]: r for r in store.read_rows(out)}
    assert [final[b]["status"] for b in (1, 2, 4, 8)] == ["ok"] * 4
    assert final[1]["run_id"] == rows[1]["run_id"]


@pytest.mark.parametrize("args, message", [
    (["--concurrency", "0"], "concurrency 0 is out of range"),
    (["--concurrency", "two"], "--concurrency 'two'"),
    (["--latency-budget", "p42:30ms"], "--latency-budget 'p42:30ms'"),
])
def test_bad_concurrency_or_budget_is_one_line_exit_2(tmp_path, capsys, args, message):
    assert cli.main(["run", write_suite(tmp_path), "--out", str(tmp_path / "x.parquet"), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_a_bad_ladder_table_is_one_line_exit_2(tmp_path, capsys):
    suite = write_suite(tmp_path, "[ladder]\nsteps = 0\n")
    assert cli.main(["run", suite]) == 2
    assert "[ladder]: steps must be 1 or more" in capsys.readouterr().err


# ---------------------------------------------------------------- concurrency on both CPU runtimes

# Windows of exactly 5 iterations (window_s is far below one request, so none is resized), three of
# them, every one accepted (stability_pct 1000): what the loop fed is then known from the counts
# alone, whatever the machine's speed. The pool, 10 MiB, holds 70 frames of 3x112x112 float32: more
# than the windows can feed, so that input_buffers counts the loop's feeding, not the pool's size.
FIXED_WINDOWS = SUITE.replace("window_s = 0.1\nmax_windows = 4\n",
                              "window_s = 0.000001\nwindow_min_iterations = 5\nmax_windows = 3\nstable_windows = 3\n"
                              "stability_pct = 1000.0\ninput_pool_mb = 10.0\n")
FRAME_BYTES = 3 * 112 * 112 * 4


def fed_by_queue(requests: int, windows: int = 3, asked: int = 5) -> int:
    """Buffers a request-queue loop feeds: each window runs whole rounds and starts every request once more."""
    return windows * (-(-asked // requests) * requests + requests)


@pytest.mark.parametrize("runtime", ["ort-cpu", "openvino-cpu"])
def test_concurrency_1_and_2_run_the_requests_and_inputs_they_record(tmp_path, capsys, runtime):
    suite = tmp_path / "conc.toml"
    suite.write_text("concurrency = [1, 2]\n" + FIXED_WINDOWS)  # a top-level key, before the tables
    out = tmp_path / "conc.parquet"
    assert cli.main(["run", str(suite), "--runtimes", runtime, "--batches", "1", "--out", str(out), "--inline"]) == 0
    assert "conc" in capsys.readouterr().out  # the table groups by it
    rows = {r["concurrency_requested"]: r for r in store.read_rows(out)}
    assert set(rows) == {1, 2}
    for row in rows.values():
        assert row["status"] == "ok" and row["verdict"] == "VALID" and row["iterations"] >= 15
        assert row["lat_p99_ms"] >= row["lat_p50_ms"] > 0
    settings = {asked: json.loads(row["runtime_options_json"]) for asked, row in rows.items()}
    if runtime == "ort-cpu":  # 1: one session; 2: two sessions, ORT's default threads divided between them
        assert settings[2]["sessions"] == 2 and settings[2]["threads_divided"] is True
        assert rows[2]["threads"] == settings[2]["intra_op_threads"] >= 1
        fed = {1: 15, 2: 15}  # one buffer per iteration, 3 windows x 5
    else:  # 1 keeps the THROUGHPUT hint and its requests; 2: explicit streams, one request per stream, no hint
        assert rows[1]["mode"] == "throughput" and rows[2]["mode"] == "streams"
        assert settings[2]["num_streams"] == "2" and settings[2]["infer_requests"] == 2
        fed = {asked: fed_by_queue(settings[asked]["infer_requests"]) for asked in rows}
    # What ran: the loop's own submit/complete times. OpenVINO's hint may keep several requests in
    # flight at "concurrency 1", and the row says so.
    ran = {1: settings[1].get("infer_requests", 1), 2: 2}
    for asked, row in rows.items():
        assert row["concurrency"] == ran[asked]
        assert row["in_flight_mean"] <= ran[asked] + 1e-9
        if ran[asked] > 1:
            assert row["in_flight_mean"] > 1.0  # the requests overlapped, not merely existed
        assert (row["input_buffers"], row["input_pool_bytes"]) == (fed[asked], fed[asked] * FRAME_BYTES)


def test_compare_and_report_give_each_machines_best_under_the_budget(tmp_path, capsys):
    fast, slow = tmp_path / "fast.parquet", tmp_path / "slow.parquet"
    store.write_rows(fast, [{**recorded_row("ort-cpu", 1, 100.0, 12.0), "host": "fast", "machine_id": "f"},
                            {**recorded_row("ort-cpu", 1, 300.0, 25.0, concurrency=2), "host": "fast", "machine_id": "f"}])
    store.write_rows(slow, [{**recorded_row("ort-cpu", 1, 50.0, 24.0), "host": "slow", "machine_id": "s"},
                            {**recorded_row("ort-cpu", 4, 90.0, 60.0, concurrency=2), "host": "slow", "machine_id": "s"}])
    assert cli.main(["compare", str(fast), str(slow), "--latency-budget", "30ms"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "fast: under budget p99 <= 30 ms: ort-cpu fp32 batch 1 concurrency 2 at 300.0 frames/s" in out
    assert "slow: under budget p99 <= 30 ms: ort-cpu fp32 batch 1 at 50.0 frames/s" in out
    assert cli.main(["compare", str(fast), "--by", "concurrency", "--baseline", "1"]) == 0  # concurrency as a group
    assert "300.0 (3.00x)" in capsys.readouterr().out
    report = tmp_path / "report.md"
    assert cli.main(["report", str(fast), "--out", str(report), "--no-plots", "--latency-budget", "p99:10ms"]) == 0
    assert "**Best under p99 <= 10 ms:** no configuration meets the budget" in report.read_text()
