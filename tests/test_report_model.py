"""The report model (bench.report.model): which points count, best, knee and the budget answer,
computed once from rows written to real Parquet by bench.store, and rendered the same by the
terminal tables, the Markdown report and compare."""
from __future__ import annotations

import pytest

from bench import cli, store
from bench.report.model import KNEE_PCT, build_report_model, parse_budget
from bench.report.text import best_and_knee


def row(runtime, batch, fps, p99, **changes):
    figures = {"fps": fps, "ms_per_frame": 1000.0 / fps, "lat_p50_ms": p99 / 2, "lat_p95_ms": p99,
               "lat_p99_ms": p99} if fps else {}
    return {"model": "m", "model_sha256": "a" * 64, "kind": "model", "machine_id": "id-1", "host": "box",
            "run_id": "r1", "runtime": runtime, "precision": "fp32", "batch": batch, "concurrency": 1,
            "status": "ok", "verdict": "VALID", **figures, **changes}


# One series with a known curve, the knee at batch 2 (1900 >= 2000 x 95%); faster points that
# must not count: unstable, contaminated, parity failed; others that are no number at all.
SERIES = [
    row("ort-cpu", 1, 1000.0, 4.0),
    row("ort-cpu", 2, 1900.0, 6.0),
    row("ort-cpu", 4, 1960.0, 12.0),
    row("ort-cpu", 8, 2000.0, 25.0),
    row("ort-cpu", 16, 5000.0, 20.0, verdict="UNSTABLE"),
    row("openvino-cpu", 1, 6000.0, 3.0, contamination_checked=True, contamination_passed=False,
        contamination_max_rel=0.1),
    row("openvino-cpu", 2, 7000.0, 5.0, parity_checked=True, parity_passed=False, parity_summary="cos 0.2"),
    row("openvino-cpu", 4, 1990.0, 9.0, parity_checked=True, parity_passed=True),  # checked and passed
    row("openvino-cpu", 8, None, None, status="skipped", reason="not on this CPU"),
    row("openvino-cpu", 16, None, None, status="failed", reason="worker died"),
    row("ort-cpu", 1, 1950.0, 8.0, concurrency=2),  # another series: never the first series' knee
]
EXPECTED_BEST = ("ort-cpu fp32 batch 8 at 2,000 frames/s (p99 25.00 ms); knee: batch 2 reaches 1,900 frames/s "
                 "(within 5% of best) with p99 6.00 ms")


@pytest.fixture
def results_file(tmp_path):
    path = tmp_path / "known.parquet"
    store.write_rows(path, SERIES)
    return path


def test_trustworthy_excludes_unstable_failed_checks_and_skipped(results_file):
    report = build_report_model(store.read_rows(results_file))
    marks = {(p.series.runtime, p.batch, p.series.concurrency): p.marks for p in report.points}
    assert marks == {
        ("ort-cpu", 1, 1): (), ("ort-cpu", 2, 1): (), ("ort-cpu", 4, 1): (), ("ort-cpu", 8, 1): (),
        ("ort-cpu", 16, 1): ("unstable",), ("openvino-cpu", 1, 1): ("contaminated",),
        ("openvino-cpu", 2, 1): ("parity failed",), ("openvino-cpu", 4, 1): (),
        ("openvino-cpu", 8, 1): ("skipped",), ("openvino-cpu", 16, 1): ("failed",), ("ort-cpu", 1, 2): ()}
    [summary] = report.models
    assert [(p.batch, line) for p, line in summary.warnings] == [
        (1, "cross-frame contamination (max rel diff 1.00e-01); its frames/s is not a valid figure"),
        (2, "parity gate failed (cos 0.2)"), (16, "failed: worker died")]


def test_best_and_knee_on_a_known_series(results_file):
    [summary] = build_report_model(store.read_rows(results_file)).models
    assert (summary.best.series.runtime, summary.best.batch, summary.best.fps) == ("ort-cpu", 8, 2000.0)
    # Batch 1 at concurrency 2 (1950) is within 5% too, but of another series.
    assert (summary.knee.series, summary.knee.batch) == (summary.best.series, 2) and KNEE_PCT == 5.0
    assert [(s.key.runtime, s.key.concurrency, [p.batch for p in s.points]) for s in summary.series] == [
        ("ort-cpu", 1, [1, 2, 4, 8, 16]), ("openvino-cpu", 1, [1, 2, 4, 8, 16]), ("ort-cpu", 2, [1])]
    assert best_and_knee(summary) == EXPECTED_BEST


def test_nothing_trustworthy_has_no_best_and_no_knee(tmp_path):
    path = tmp_path / "shaky.parquet"
    store.write_rows(path, [row("ort-cpu", 1, 100.0, 5.0, verdict="UNSTABLE"),
                            row("ort-cpu", 2, None, None, status="failed", reason="x")])
    [summary] = build_report_model(store.read_rows(path)).models
    assert summary.best is None and summary.knee is None and best_and_knee(summary) is None


def test_budget_answer_and_none_meets(results_file):
    rows = store.read_rows(results_file)
    [summary] = build_report_model(rows, parse_budget("p99:10ms")).models
    # openvino-cpu batch 4 (1990 frames/s, p99 9 ms) meets it; the faster ones within it are not trustworthy.
    answer = summary.budget
    assert (answer.best.series.runtime, answer.best.batch) == ("openvino-cpu", 4)
    assert [p.meets_budget for p in summary.points if p.measured] == [
        True, True, False, False, False, True, True, True, True]
    [summary] = build_report_model(rows, parse_budget("p99:2ms")).models
    # Nothing meets it: the lowest p99 of any measured point, trustworthy or not (openvino batch 1: 3 ms).
    assert summary.budget.best is None and summary.budget.lowest_ms == 3.0


def test_tables_markdown_and_compare_show_the_same_best_and_knee(results_file, tmp_path, capsys):
    assert cli.main(["show", str(results_file), "--latency-budget", "p99:10ms"]) == 0
    shown = " ".join(capsys.readouterr().out.split())  # rich wraps long lines
    assert f"m best: {EXPECTED_BEST}" in shown
    budget = "under budget p99 <= 10 ms: openvino-cpu fp32 batch 4 at 1,990 frames/s (p99 9.00 ms)"
    assert f"m {budget}" in shown
    contamination = "cross-frame contamination (max rel diff 1.00e-01)"
    assert f"m openvino-cpu fp32 batch 1: {contamination}" in shown

    report = tmp_path / "report.md"
    assert cli.main(["report", str(results_file), "--out", str(report), "--no-plots",
                     "--latency-budget", "p99:10ms"]) == 0
    text = report.read_text()
    assert f"**Best configuration:** {EXPECTED_BEST}" in text
    assert "**Best under p99 <= 10 ms:** openvino-cpu fp32 batch 4 at 1,990 frames/s (p99 9.00 ms)" in text
    assert f"m openvino-cpu fp32 batch 1 (known): {contamination}" in text  # the same warning, with the run
    capsys.readouterr()

    # compare by runtime: each runtime's best; ort-cpu's is the file's best.
    assert cli.main(["compare", str(results_file), "--by", "runtime", "--latency-budget", "p99:10ms"]) == 0
    compared = " ".join(capsys.readouterr().out.split())
    assert f"m ort-cpu: best: {EXPECTED_BEST}" in compared
    assert f"m openvino-cpu: {budget}" in compared
    assert ("m openvino-cpu: best: openvino-cpu fp32 batch 4 at 1,990 frames/s (p99 9.00 ms); knee: batch 4 "
            "reaches 1,990 frames/s") in compared


def test_answers_are_per_machine(results_file, tmp_path, capsys):
    other = tmp_path / "other.parquet"
    store.write_rows(other, [row("ort-cpu", 1, 50.0, 30.0, host="slow", machine_id="id-2", run_id="r2")])
    assert cli.main(["show", str(results_file), str(other)]) == 0
    shown = " ".join(capsys.readouterr().out.split())
    assert f"m on box best: {EXPECTED_BEST}" in shown
    assert "m on slow best: ort-cpu fp32 batch 1 at 50.0 frames/s" in shown
    report = build_report_model(store.read_rows(results_file) + store.read_rows(other), context=["machine_id"])
    assert [(m.context["machine_id"], m.best.fps) for m in report.models] == [("id-1", 2000.0), ("id-2", 50.0)]
