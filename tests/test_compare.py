"""compare, the regression gate, plots and the Markdown report, on real result files.

One real quick-suite run (ort-cpu, batches 1 and 2) per module; slower copies and other
machines are derived from its rows through the store API and written as real Parquet files.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bench import cli, store
from bench.errors import UserError
from bench.commands import compare as commands
from bench.report import compare, gate
from bench.report.plots import PIXELS

REPO = Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def measured(tmp_path_factory) -> Path:
    """A results file from a real sweep of the quick suite."""
    out = tmp_path_factory.mktemp("measured")
    with pytest.MonkeyPatch.context() as patch:  # module scope: conftest's per-test cache is not set yet
        patch.setenv("FACEBENCH_CACHE", str(tmp_path_factory.getbasetemp() / "facebench-cache"))
        code = cli.main(["run", str(REPO / "suites" / "quick.toml"), "--runtimes", "ort-cpu",
                         "--batches", "1,2", "--out", str(out / "base.parquet")])
    assert code == 0
    rows = store.read_rows(out / "base.parquet")
    assert [r["status"] for r in rows] == ["ok"] * 4
    return out / "base.parquet"


def base_rows(path: Path) -> list[dict]:
    return store.read_rows(path)


def scaled(rows: list[dict], factor, **changes) -> list[dict]:
    """Copies of rows as if each ran `factor(row)` times as fast: fps up, times down, consistently."""
    out = []
    for row in rows:
        f = factor(row) if callable(factor) else factor
        row = {**row, **changes}
        for column in ("fps", "gflops_achieved"):
            row[column] = row[column] * f if row[column] is not None else None
        for column in ("ms_per_frame", "lat_mean_ms", "lat_p50_ms", "lat_p90_ms", "lat_p95_ms", "lat_p99_ms",
                       "lat_min_ms", "lat_max_ms"):
            row[column] = row[column] / f if row[column] is not None else None
        out.append(row)
    return out


def write(path: Path, rows: list[dict]) -> str:
    store.write_rows(path, rows)
    return str(path)


def point_key(row) -> tuple:
    return row["model"], row["runtime"], row["precision"], row["batch"]


def cells_by_key(comparison) -> dict[tuple, dict]:
    return {(m.model, p.labels["runtime"], p.labels["precision"], p.labels["batch"]): p.cells
            for m in comparison.models for p in m.points}


@pytest.fixture
def slow_copy(measured, tmp_path) -> str:
    return write(tmp_path / "slow.parquet", scaled(base_rows(measured), 0.5, run_id="slow-run"))


# --- matching and ratios ---------------------------------------------------------------------

def test_compare_matches_points_and_computes_ratios(measured, slow_copy):
    results = commands.load_inputs([slow_copy], str(measured))
    comparison = compare.build_comparison(results, "fps", None, str(measured))
    assert comparison.by == "run" and comparison.baseline == "base" and comparison.groups == ["base", "slow"]
    cells = cells_by_key(comparison)
    rows = base_rows(measured)
    assert set(cells) == {point_key(r) for r in rows}
    assert comparison.comparable_points == len(rows) == 4
    for row in rows:
        base, slow = cells[point_key(row)]["base"], cells[point_key(row)]["slow"]
        assert base.value == pytest.approx(row["fps"]) and base.ratio == 1.0
        assert slow.ratio == pytest.approx(0.5)
        assert slow.spread_pct == pytest.approx(row["window_spread_pct"])
        assert not slow.best
        assert base.best == base.trustworthy  # the faster cell is best unless its number is marked


def test_lower_is_better_metrics(measured, slow_copy):
    results = commands.load_inputs([slow_copy], str(measured))
    for metric in ("ms_per_frame", "p99"):
        comparison = compare.build_comparison(results, metric, None, str(measured))
        for cells in cells_by_key(comparison).values():
            assert cells["slow"].ratio == pytest.approx(2.0)
            assert cells["slow"].best is False
        result = gate.regression_gate(comparison, 5.0)
        assert result.checked == 4 and len(result.findings) == 4
        assert all(f.slower_pct == pytest.approx(100.0) for f in result.findings)  # twice the time: 100% slower


def test_only_same_model_file_precision_and_batch_are_matched(measured, tmp_path):
    rows = base_rows(measured)
    other = scaled(rows, 1.0, run_id="other")
    other[0]["model_sha256"] = "f" * 64  # a different file under the same name
    other[1]["precision"] = "fp16"
    other[2]["batch"] = 8
    path = write(tmp_path / "other.parquet", other)
    comparison = compare.build_comparison(commands.load_inputs([path], str(measured)), "fps", None, str(measured))
    comparable = {k for k, cells in cells_by_key(comparison).items() if len(cells) == 2}
    assert comparable == {point_key(rows[3])}
    assert any("different model files" in note for note in comparison.notes)


def test_by_machine_default_and_baseline_by_host(measured, tmp_path):
    other = scaled(base_rows(measured), 1.25, host="gpu-box", machine_id="feedfacecafe", gpu_driver="550.54")
    path = write(tmp_path / "gpu-box.parquet", other)
    results = compare.load_results([str(measured), path])
    comparison = compare.build_comparison(results, "fps", None, "gpu-box")
    host = base_rows(measured)[0]["host"]
    assert comparison.by == "machine" and comparison.groups == ["gpu-box", host]
    for cells in cells_by_key(comparison).values():
        assert cells[host].ratio == pytest.approx(0.8)
    assert {d.name: d.values for d in comparison.differences}["GPU driver"] == {"gpu-box": "550.54", host: "-"}


def test_machines_sharing_a_host_name_are_told_apart_by_hardware(measured, tmp_path):
    host = base_rows(measured)[0]["host"]
    h100 = scaled(base_rows(measured), 2.0, machine_id="feedfacecafe", gpu_name="NVIDIA H100 80GB HBM3")
    twin = scaled(base_rows(measured), 1.0, machine_id="0123456789ab", run_id="twin")  # same hardware, new VM
    labels = set(compare.load_results([str(measured), write(tmp_path / "h100.parquet", h100)]).frame.machine_label)
    assert f"{host} H100 80GB HBM3" in labels and len(labels) == 2 and host not in labels
    same = set(compare.load_results([str(measured), write(tmp_path / "twin.parquet", twin)]).frame.machine_label)
    ours = base_rows(measured)[0]["machine_id"][:6]
    assert len(same) == 2 and {label.split()[-1] for label in same} == {ours, "012345"}  # same hardware: ids
    assert all(label.startswith(f"{host} ") for label in same)


def test_environment_differences_list_only_what_differs(measured, tmp_path):
    rows = base_rows(measured)
    packages = json.loads(rows[0]["packages_json"])
    packages["onnxruntime"] = "0.0.1"
    changed = []
    for row in rows:
        options = json.loads(row["runtime_options_json"])
        options["intra_op_threads"] = 1
        changed.append({**row, "packages_json": json.dumps(packages), "threads": 1,
                        "runtime_options_json": json.dumps(options), "gpu_sm_clock_mean_mhz": 1410.0})
    path = write(tmp_path / "threads1.parquet", changed)
    comparison = compare.build_comparison(commands.load_inputs([path], str(measured)), "fps", None, str(measured))
    differences = {d.name: d.values for d in comparison.differences}
    assert differences["package onnxruntime"]["threads1"] == "0.0.1"
    assert differences["ort-cpu threads"] == {"base": "-", "threads1": "1"}
    assert differences["ort-cpu option intra_op_threads"]["threads1"] == "1"
    assert differences["GPU SM clock mean MHz"] == {"base": "-", "threads1": "~1400"}
    assert "CPU" not in differences and "package numpy" not in differences


def test_marked_points_are_flagged_not_silently_compared(measured, tmp_path):
    rows = scaled(base_rows(measured), 2.0, run_id="marked", verdict="VALID")
    rows[0].update(contamination_checked=True, contamination_passed=False)
    rows[1].update(parity_checked=True, parity_passed=False)
    rows[2].update(verdict="UNSTABLE")
    rows[3].update(status="failed", reason="worker died")
    path = write(tmp_path / "marked.parquet", rows)
    comparison = compare.build_comparison(commands.load_inputs([path], str(measured)), "fps", None, str(measured))
    cells = cells_by_key(comparison)
    marked = [cells[point_key(r)]["marked"] for r in rows]
    assert [c.marks for c in marked] == [("contaminated",), ("parity failed",), ("unstable",), ("failed",)]
    assert not any(c.best for c in marked)  # 2x faster, yet never the quoted best
    assert marked[3].value is None
    result = gate.regression_gate(comparison, 5.0)
    assert result.checked == 1  # only the unstable point is gated
    assert sorted(line.split(": ", 1)[1] for line in result.not_checked) == [
        "new point contaminated", "new point failed", "new point parity failed"]


def test_fps_per_watt(measured, tmp_path):
    rows = base_rows(measured)
    powered = [{**r, "gpu_power_mean_w": 100.0, "device": "cuda"} for r in rows]
    half = [{**r, "gpu_power_mean_w": 200.0, "device": "cuda", "run_id": "hot"} for r in rows]
    a, b = write(tmp_path / "cool.parquet", powered), write(tmp_path / "hot.parquet", half)
    comparison = compare.build_comparison(compare.load_results([a, b]), "fps_per_watt", "run", None)
    for row in rows:
        cells = cells_by_key(comparison)[point_key(row)]
        assert cells["cool"].value == pytest.approx(row["fps"] / 100.0)
        assert cells["hot"].ratio == pytest.approx(0.5)
    cpu = compare.build_comparison(compare.load_results([str(measured), a]), "fps_per_watt", "run", None)
    for cells in cells_by_key(cpu).values():
        assert cells["base"].value is None and "no power (CPU)" in cells["base"].marks


# --- regression gate -------------------------------------------------------------------------

def quiet(rows: list[dict], spread_pct: float = 2.0, other_cpu: float = 1.0) -> list[dict]:
    """Measured rows with the figures a verdict rests on given by the test: the window spread and the
    other processes' CPU (so no verdict depends on how busy the machine running the tests was)."""
    return [{**r, "window_spread_pct": spread_pct, "other_cpu_percent": other_cpu, "verdict": "VALID"} for r in rows]


def test_gate_fails_on_slowed_copy_and_names_points(measured, tmp_path, capsys):
    rows = quiet(base_rows(measured))
    old = write(tmp_path / "old.parquet", rows)
    slowed = write(tmp_path / "slowed.parquet", scaled(rows, 0.1, run_id="slowed"))  # 90% slower, noise 4%
    code = cli.main(["compare", "--baseline", old, slowed, "--fail-if-slower", "5%"])
    out = capsys.readouterr().out
    assert code == 1
    assert "gate failed: 4 points checked against old (frames/s); 4 slower by more than 5%" in out
    flagged = [line for line in out.splitlines() if line.strip().startswith("slower ")]
    assert len(flagged) == 4
    for row in rows:
        assert any(f"{row['model']} ort-cpu fp32 batch {row['batch']} on slowed" in line and "90.0% slower" in line
                   and "within-run noise 4.0%" in line for line in flagged)


@pytest.mark.parametrize("factor, spread_pct, code, outcome", [
    (0.5, 2.0, 1, "gate failed"),  # 50.0% slower: beyond 5%, the noise (4%) and the 20% floor
    (0.75, 2.0, 1, "gate failed"),  # 25.0% slower
    (0.75, 15.0, 3, "gate inconclusive"),  # 25.0% slower, within the noise of 30%
    (0.9, 2.0, 3, "gate inconclusive"),  # 10.0% slower: below the 20% floor of single runs
    (0.97, 2.0, 0, "gate passed"),  # 3.0% slower: within the threshold
])
def test_gate_threshold_noise_and_floor_on_controlled_figures(measured, tmp_path, capsys, factor, spread_pct, code,
                                                              outcome):
    rows = quiet(base_rows(measured), spread_pct)
    old = write(tmp_path / "old.parquet", rows)
    new = write(tmp_path / "new.parquet", scaled(rows, factor, run_id="new"))
    assert cli.main(["compare", "--baseline", old, new, "--fail-if-slower", "5%"]) == code
    out = capsys.readouterr().out
    assert f"{outcome}: 4 points checked against old" in out
    assert out.count(f"{(1 - factor) * 100:.1f}% slower") == (4 if code else 0)  # not-slower points stay quiet
    if code == 3:
        assert cli.main(["compare", "--baseline", old, new, "--fail-if-slower", "5%", "--inconclusive-passes"]) == 0
        assert "4 inconclusive, passed by --inconclusive-passes" in capsys.readouterr().out


def test_gate_rerun_below_the_floor_does_not_fail(measured, tmp_path, capsys):
    """An unchanged rerun without repeats, 12.3% slower (issue 25's quick-suite pair), is inconclusive;
    a faster one is not slower."""
    rows = quiet(base_rows(measured), 1.65)
    old = write(tmp_path / "old.parquet", rows)
    rerun = write(tmp_path / "rerun.parquet", scaled(rows, 79.6 / 90.8, run_id="r2"))
    comparison = compare.build_comparison(commands.load_inputs([rerun], old), "fps", None, old)
    result = gate.regression_gate(comparison, 5.0)
    assert [f.verdict for f in result.findings] == ["inconclusive"] * 4 and not result.failed and not result.passed
    assert all(f.slower_pct == pytest.approx(12.335, abs=1e-3) and f.noise_pct == pytest.approx(3.3)
               for f in result.findings)
    assert cli.main(["compare", "--baseline", old, rerun, "--fail-if-slower", "5%"]) == 3
    assert "measure both runs with --repeats 5 to decide" in capsys.readouterr().out
    faster = write(tmp_path / "faster.parquet", scaled(rows, 1.3, run_id="r3"))
    assert cli.main(["compare", "--baseline", old, faster, "--fail-if-slower", "5"]) == 0
    assert "gate passed: 4 points checked against old" in capsys.readouterr().out


def test_noise_rule_and_threshold_parsing():
    assert gate.combined_noise_pct(2.0, 3.5) == 5.5
    assert gate.parse_threshold("5%") == 5.0 and gate.parse_threshold("2.5") == 2.5
    for bad in ("abc", "-1%", "150%"):
        with pytest.raises(UserError, match="--fail-if-slower"):
            gate.parse_threshold(bad)
    fps = compare.METRICS["fps"]
    assert gate.slower_pct(fps, 100.0, 90.0) == pytest.approx(10.0)
    assert gate.slower_pct(compare.METRICS["p99"], 10.0, 11.0) == pytest.approx(10.0)


# --- plots and report ------------------------------------------------------------------------

def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_plots_are_valid_pngs_of_the_expected_size(measured, tmp_path, capsys):
    gpu_rows = [{**r, "gpu_util_mean": 40.0 + r["batch"], "gpu_power_mean_w": 90.0 + r["batch"],
                 "host": "gpu-box", "machine_id": "feedfacecafe"} for r in base_rows(measured)]
    other = write(tmp_path / "gpu-box.parquet", gpu_rows)
    out = tmp_path / "plots"
    assert cli.main(["plot", str(measured), other, "--out", f"file://{out}"]) == 0
    names = sorted(p.name for p in out.iterdir())
    for model in ("scrfd_500m-320", "arcface_mbf"):
        for kind in ("fps-vs-batch", "latency-vs-fps", "cold-start", "gpu"):
            assert f"{model}-{kind}.png" in names
    for path in out.iterdir():
        assert png_size(path.read_bytes()) == PIXELS
    assert "8 plots written" in capsys.readouterr().out


def test_cpu_only_results_have_no_gpu_plot(measured, tmp_path):
    from bench.report.plots import write_plots

    written = write_plots(compare.load_results([str(measured)]), str(tmp_path / "p"))
    assert {p.kind for p in written.plots} == {"fps-vs-batch", "latency-vs-fps", "cold-start"}


def test_report_contains_environment_tables_best_and_plots(measured, slow_copy, tmp_path):
    out = tmp_path / "site" / "report.md"
    assert cli.main(["report", str(measured), slow_copy, "--out", str(out), "--baseline", str(measured)]) == 0
    text = out.read_text()
    for heading in ("# facebench report", "## Environment", "## Comparison", "## scrfd_500m@320", "## arcface_mbf"):
        assert heading in text
    assert "| runtime | prec | batch | base (baseline) | slow |" in text
    assert "(0.50x)" in text
    assert text.count("**Best configuration on base:**") == 2
    assert "| run | runtime | prec | batch | frames/s |" in text
    links = [line.split("](", 1)[1].rstrip(")") for line in text.splitlines() if line.startswith("![")]
    assert len(links) == 6 and all((out.parent / link).is_file() for link in links)


def test_report_to_uri_without_plots(measured, tmp_path):
    write(tmp_path / "base.parquet", base_rows(measured))
    out = tmp_path / "deep" / "r.md"
    assert cli.main(["report", f"file://{tmp_path}", "--out", f"file://{out}", "--no-plots"]) == 0
    assert "## scrfd_500m@320" in out.read_text() and not (tmp_path / "deep" / "r-plots").exists()


# --- many files, many places -----------------------------------------------------------------

def test_inputs_mix_files_folders_globs_and_uris(measured, tmp_path):
    folder = tmp_path / "fleet"
    (folder / "a").mkdir(parents=True)
    rows = base_rows(measured)
    store.write_rows(f"file://{folder}/a/one.parquet", rows)  # remote code path: temp key + move
    write(folder / "two.parquet", rows)
    (folder / "notes.txt").write_text("not a result")
    assert not [p for p in folder.rglob(".*")]  # no temporary left behind
    found = store.find_result_files([str(folder), f"file://{folder}/a/*.parquet", str(folder / "*.parquet"),
                                     str(measured)])
    assert [store.location_name(f) for f in found] == ["one.parquet", "two.parquet", "base.parquet"]
    uri_found = store.find_result_files([f"file://{folder}"])
    assert all(f.startswith("file://") for f in uri_found) and len(uri_found) == 2
    table, check = store.read_table(uri_found[0])
    assert table.num_rows == 4 and check.checksum_ok


def test_older_schema_is_upgraded(measured, tmp_path):
    table = pq.read_table(measured).drop_columns(["gpu_power_mean_w", "faces_per_s"])
    table = table.replace_schema_metadata({b"facebench.schema_version": b"1"})
    pq.write_table(table, tmp_path / "old.parquet")
    upgraded, check = store.read_table(tmp_path / "old.parquet")
    assert upgraded.schema == store.SCHEMA and upgraded.column("gpu_power_mean_w").null_count == 4
    assert check.checksum_ok is None


# --- bad input: one line, exit status 2 ------------------------------------------------------

def _other_schema(path: Path) -> str:
    pq.write_table(pa.table({"x": [1, 2]}), path)
    return str(path)


def _newer_schema(path: Path, measured: Path) -> str:
    table = pq.read_table(measured)
    pq.write_table(table.replace_schema_metadata({b"facebench.schema_version": b"99"}), path)
    return str(path)


@pytest.mark.parametrize("case, message", [
    ("not-parquet", "not a readable Parquet file"),
    ("other-schema", "not a facebench results file"),
    ("newer-schema", "newer than this facebench"),
    ("missing", "no such file or folder"),
    ("empty-folder", "holds no .parquet results files"),
    ("empty-glob", "pattern matches no files"),
    ("bad-uri", "cannot open this location"),
    ("no-comparable", "no comparable points"),
    ("one-group", "every input is the same"),
    ("baseline-nothing", "--baseline no-such-run matches no results file"),
    ("cpu-watts", "fps_per_watt needs GPU power"),
    ("bad-threshold", "--fail-if-slower"),
])
def test_bad_input_is_one_line_and_exit_2(case, message, measured, tmp_path, capsys):
    base = str(measured)
    (tmp_path / "empty").mkdir()
    mismatched = [{**r, "model_sha256": "0" * 64, "run_id": "x"} for r in base_rows(measured)]
    argv = {
        "not-parquet": ["compare", base, _text_file(tmp_path / "x.parquet")],
        "other-schema": ["compare", base, _other_schema(tmp_path / "other.parquet")],
        "newer-schema": ["compare", base, _newer_schema(tmp_path / "new.parquet", measured)],
        "missing": ["compare", base, str(tmp_path / "nope.parquet")],
        "empty-folder": ["compare", base, str(tmp_path / "empty")],
        "empty-glob": ["compare", base, str(tmp_path / "*.nothing")],
        "bad-uri": ["compare", base, "nosuchfs://bucket/x.parquet"],
        "no-comparable": ["compare", base, write(tmp_path / "mismatch.parquet", mismatched)],
        "one-group": ["compare", base, "--by", "machine"],
        "baseline-nothing": ["compare", base, write(tmp_path / "copy.parquet", base_rows(measured)),
                             "--baseline", "no-such-run"],
        "cpu-watts": ["compare", base, "--metric", "fps_per_watt"],
        "bad-threshold": ["compare", base, "--fail-if-slower", "fast"],
    }[case]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and "Traceback" not in err


def _text_file(path: Path) -> str:
    path.write_text("runtime,fps\nort-cpu,100\n")
    return str(path)


def test_parser_choices_match_the_comparison_module():
    assert commands.METRIC_CHOICES == tuple(compare.METRICS)
    assert commands.BY_CHOICES == compare.BY_CHOICES


def test_by_runtime_keeps_runs_apart(measured, tmp_path):
    rows = base_rows(measured)
    both = rows + scaled(rows, 2.0, runtime="openvino-cpu")  # a second runtime in the same run
    first = write(tmp_path / "first.parquet", both)
    second = write(tmp_path / "second.parquet", scaled(both, 0.5, run_id="second"))
    comparison = compare.build_comparison(compare.load_results([first, second]), "fps", None, "openvino-cpu")
    assert comparison.by == "runtime" and comparison.groups == ["openvino-cpu", "ort-cpu"]
    model = comparison.models[0]
    assert model.row_dims == ["run", "precision", "batch"]
    assert {p.labels["run"] for p in model.points} == {"first", "second"}
    assert all(p.cells["ort-cpu"].ratio == pytest.approx(0.5) for p in model.points)
    assert not comparison.notes


# --- pipeline points (facebench pipeline) ----------------------------------------------------

PIPELINE_TITLE = "pipeline scrfd_500m@320 -> arcface_mbf (synthetic, 4 faces/frame, embedder batch 8, queue 2)"


@pytest.fixture(scope="module")
def pipeline_measured(tmp_path_factory) -> Path:
    """A results file from a real `facebench pipeline` run on the replicas (one pipeline row)."""
    out = tmp_path_factory.mktemp("pipeline") / "pipe.parquet"
    with pytest.MonkeyPatch.context() as patch:  # module scope: conftest's per-test cache is not set yet
        patch.setenv("FACEBENCH_CACHE", str(tmp_path_factory.getbasetemp() / "facebench-cache"))
        code = cli.main(["pipeline", "--synthetic", "8", "--det", "scrfd_500m@320", "--rec", "arcface_mbf",
                         "--runtime", "ort-cpu", "--batch", "4", "--repeats", "1", "--out", str(out)])
    assert code == 0
    rows = store.read_rows(out)
    assert [(r["kind"], r["status"]) for r in rows] == [("pipeline", "ok")]
    return out


def scaled_pipeline(rows: list[dict], factor: float, **changes) -> list[dict]:
    """Pipeline rows as if the whole pipeline ran `factor` times as fast."""
    return [{**row, **changes, "fps": row["fps"] * factor, "faces_per_s": row["faces_per_s"] * factor,
             "ms_per_frame": row["ms_per_frame"] / factor, "wall_s": row["wall_s"] / factor} for row in rows]


def test_pipeline_only_inputs_are_compared(pipeline_measured, tmp_path, capsys):
    row = base_rows(pipeline_measured)[0]
    slow = write(tmp_path / "slow.parquet", scaled_pipeline([row], 0.5, run_id="slow-run"))
    comparison = compare.build_comparison(commands.load_inputs([slow], str(pipeline_measured)), "fps", None,
                                          str(pipeline_measured))
    assert (comparison.models, comparison.groups, comparison.comparable_points) == ([], ["pipe", "slow"], 1)
    [pipeline] = comparison.pipelines
    assert (pipeline.model, pipeline.sha256, pipeline.row_dims) == (PIPELINE_TITLE, row["model_sha256"],
                                                                    ["runtime", "batch"])
    [point] = pipeline.points
    assert point.labels == {"runtime": "ort-cpu", "batch": 4}
    base, slowed = point.cells["pipe"], point.cells["slow"]
    assert (base.value, base.ratio, base.faces_per_s) == (pytest.approx(row["fps"]), 1.0,
                                                          pytest.approx(row["faces_per_s"]))
    assert slowed.ratio == pytest.approx(0.5) and slowed.faces_per_s == pytest.approx(row["faces_per_s"] / 2)
    assert base.best and not slowed.best and not base.marks  # no verdict recorded is no "unstable" mark
    assert cli.main(["compare", "--baseline", str(pipeline_measured), slow]) == 0
    out = " ".join(capsys.readouterr().out.split())  # rich wraps the long title
    assert "pipeline scrfd_500m@320 -> arcface_mbf" in out and "frames/s by run" in out
    assert "(0.50x)" in out and "faces/s" in out and "1 comparable points" in out


def test_gate_lists_pipeline_points_without_spread_as_not_checked(measured, pipeline_measured, tmp_path, capsys):
    rows = quiet(base_rows(measured)) + base_rows(pipeline_measured)
    mixed = write(tmp_path / "mixed.parquet", rows)
    rerun = scaled(rows[:4], 1.0, run_id="rerun") + scaled_pipeline(rows[4:], 0.5, run_id="rerun")
    new = write(tmp_path / "new.parquet", rerun)
    assert cli.main(["compare", "--baseline", mixed, new, "--fail-if-slower", "5%"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "scrfd_500m@320: frames/s by run" in out and "arcface_mbf: frames/s by run" in out  # model tables
    assert "pipeline scrfd_500m@320 -> arcface_mbf" in out
    assert "gate: not checked: pipeline scrfd_500m@320 -> arcface_mbf" in out
    assert "pipeline points record no window spread" in out and "not gated" in out
    assert "gate passed: 4 points checked against mixed (frames/s; pipelines on frames/s)" in out
    # Only pipeline points, none with a spread: the gate refuses to pass on nothing.
    only = write(tmp_path / "only.parquet", scaled_pipeline(rows[4:], 0.5, run_id="only"))
    assert cli.main(["compare", "--baseline", str(pipeline_measured), only, "--fail-if-slower", "5%"]) == 2
    assert "recorded no spread" in capsys.readouterr().err


@pytest.mark.parametrize("factor, other_cpu, code", [(0.5, 1.0, 1), (0.99, 1.0, 0), (0.5, 80.0, 3)])
def test_gate_checks_pipeline_points_that_carry_a_spread(pipeline_measured, tmp_path, capsys, factor, other_cpu, code):
    """A real pipeline row with the spread and the other processes' CPU set by the test: halved it
    fails, unchanged it passes, halved on a shared machine it is inconclusive."""
    rows = [{**r, "window_spread_pct": 1.0, "other_cpu_percent": 1.0} for r in base_rows(pipeline_measured)]
    new_rows = [{**r, "other_cpu_percent": other_cpu} for r in scaled_pipeline(rows, factor)]
    old, new = write(tmp_path / "old.parquet", rows), write(tmp_path / "new.parquet", new_rows)
    assert cli.main(["compare", "--metric", "p99", "--baseline", old, new, "--fail-if-slower", "5%"]) == code
    out = " ".join(capsys.readouterr().out.split())
    assert "1 points checked against old" in out and "not checked" not in out
    if factor == 0.5:  # gated on frames/s whatever --metric says: pipelines record no p99
        verdict = "slower" if code == 1 else "gate: inconclusive"
        assert f"{verdict} pipeline scrfd_500m@320 -> arcface_mbf" in out and "ort-cpu batch 4 on new" in out
        assert "frames/s" in out and "50.0% slower (no repeats: within-run noise 2.0%, between runs up to 20%)" in out
    assert ("new run: shared machine: other processes used 80% CPU" in out) == (other_cpu == 80.0)


def test_pipelines_with_other_workloads_are_not_matched(pipeline_measured, tmp_path):
    row = base_rows(pipeline_measured)[0]
    stages = json.loads(row["stages_json"])
    other = write(tmp_path / "other.parquet", [{**row, "run_id": "other",
                                                "stages_json": json.dumps({**stages, "rec_batch": 16})}])
    comparison = compare.build_comparison(compare.load_results([str(pipeline_measured), other]), "fps", "run", None)
    assert len(comparison.pipelines) == 2 and comparison.comparable_points == 0
    assert any("different model files or workloads" in note for note in comparison.notes)


def test_report_has_pipeline_comparison_and_section(measured, pipeline_measured, tmp_path):
    rows = base_rows(pipeline_measured)
    slow = write(tmp_path / "slow.parquet", scaled_pipeline(rows, 0.5, run_id="slow-run"))
    out = tmp_path / "report.md"
    assert cli.main(["report", str(measured), str(pipeline_measured), slow, "--out", str(out),
                     "--by", "run", "--baseline", "pipe", "--no-plots"]) == 0
    text = out.read_text()
    assert "## scrfd_500m@320" in text and "## arcface_mbf" in text  # the model points are still reported
    assert f"### {PIPELINE_TITLE}: frames/s by run" in text
    assert "| runtime | batch | pipe (baseline) | base | slow |" in text
    assert "(0.50x)" in text and "faces/s]" in text
    section = text.split("## Pipeline", 1)[1]
    assert "### scrfd_500m@320 -> arcface_mbf" in section
    header = "| run | runtime | batch | frames | faces | frames/s | faces/s | seq frames/s | gain | decode | detector |"
    assert header in section
    stages = json.loads(rows[0]["stages_json"])
    line = next(line for line in section.splitlines() if line.startswith("| pipe |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[1:5] == ["ort-cpu", "4", "8", "32"]
    assert cells[5] == f"{rows[0]['fps']:.1f}" and cells[7] == f"{stages['sequential_fps']:.1f}"
    assert cells[8] == f"x{stages['overlap_gain']:.2f}"
    embed = stages["stages"]["embedder"]
    assert cells[-1] == f"{embed['ms_per_frame']:.2f} ({100 * embed['share']:.0f}%)"
    assert any(line.startswith("| slow |") for line in section.splitlines())
