"""[sweep_options]: runtime options as a sweep axis, through the CLI on the real onnxruntime."""
from __future__ import annotations

import pytest

from bench import cli, store
from tests.conftest import tiny_suite

SWEEP = tiny_suite("sweep", [1], extra='[runtime_options.ort-cpu]\ngraph_optimization_level = "all"\n')


def write(tmp_path, extra: str):
    path = tmp_path / "sweep.toml"
    path.write_text(SWEEP + extra)
    return str(path)


def test_each_combination_is_its_own_point_and_compare_splits_by_it(tmp_path, capsys):
    suite = write(tmp_path, "[sweep_options.ort-cpu]\nintra_op_threads = [1, 2]\n")
    out = tmp_path / "sweep.parquet"
    assert cli.main(["run", suite, "--out", str(out), "--inline"]) == 0
    assert "intra_op_threads=1" in capsys.readouterr().out  # the table's options column
    rows = {r["options_variant"]: r for r in store.read_rows(out)}
    assert set(rows) == {"intra_op_threads=1", "intra_op_threads=2"}
    assert all(r["status"] == "ok" for r in rows.values())
    assert {r["threads"] for r in rows.values()} == {1, 2}  # what the session reported it ran
    assert cli.main(["compare", str(out), "--by", "options", "--baseline", "intra_op_threads=1"]) == 0
    shown = capsys.readouterr().out
    assert "intra_op_threads=2" in shown and "x" in shown


def test_rows_without_a_sweep_read_as_the_default_variant(tmp_path):
    out = tmp_path / "plain.parquet"
    assert cli.main(["run", write(tmp_path, ""), "--out", str(out), "--inline"]) == 0
    (row,) = store.read_rows(out)
    assert row["options_variant"] == "default"


@pytest.mark.parametrize("extra, message", [
    ("[sweep_options.ort-cpu]\nintra_op_threads = 2\n", "'intra_op_threads' must be a non-empty list of values"),
    ("[sweep_options.ort-cpu]\nintra_op_threads = [1, -1]\n", "intra_op_threads"),
    ("[sweep_options.ort-cpu]\nwarp_speed = [1, 2]\n", "unknown option 'warp_speed'"),
    ("[sweep_options.ort-nope]\nintra_op_threads = [1]\n", "unknown runtime"),
])
def test_a_bad_sweep_is_one_line_exit_2(tmp_path, capsys, extra, message):
    assert cli.main(["run", write(tmp_path, extra), "--out", str(tmp_path / "x.parquet")]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.parquet").exists()
