"""The fleet's Ray-less half: the manifest, gathering the machines' files of any scheduler, and
compare staying readable with many machines (no Ray needed)."""
from __future__ import annotations

import json

import pytest

from bench import fleet_store, store
from bench.cli import main
from tests.conftest import tiny_suite


@pytest.fixture(scope="module")
def two_machines(tmp_path_factory):
    """The Ray-less route: `facebench run --machine` on each machine into one folder (a Slurm array's)."""
    root = tmp_path_factory.mktemp("slurm-run")
    suite = root / "tiny.toml"
    suite.write_text(tiny_suite("tiny", [1, 2]).replace('runtimes = ["ort-cpu"]', 'runtimes = ["ort-cpu", "ort-cuda"]'))
    for name in ("node-1", "node-2"):
        assert main(["run", str(suite), "--machine", name, "--out", str(root / "run" / f"{name}.parquet"),
                     "--inline"]) == 0
    return root / "run"


def test_gather_merges_files_of_any_scheduler(two_machines, tmp_path, capsys):
    capsys.readouterr()
    assert main(["gather", str(two_machines), "--out", str(tmp_path / "all.parquet")]) == 0
    out = capsys.readouterr().out
    assert "fastest: node-" in out and "node-1" in out and "node-2" in out
    rows = store.read_rows(tmp_path / "all.parquet")
    assert {r["machine"] for r in rows} == {"node-1", "node-2"} and len(rows) == 8


def test_gather_refuses_two_files_of_one_machine(two_machines, tmp_path):
    folder = tmp_path / "twice"
    folder.mkdir()
    rows = store.read_rows(two_machines / "node-1.parquet")
    store.write_rows(folder / "a.parquet", rows)
    store.write_rows(folder / "b.parquet", rows)
    with pytest.raises(Exception, match="both hold machine node-1"):
        fleet_store.gather(str(folder))


def test_compare_folds_points_no_machine_measured_and_pages_many_machines(two_machines, tmp_path, capsys,
                                                                         monkeypatch):
    rows = store.read_rows(two_machines / "node-1.parquet")
    many = tmp_path / "many"
    many.mkdir()
    for n in range(12):  # the same rows as twelve machines' files
        store.write_rows(many / f"m{n:02}.parquet", [{**r, "machine": f"m{n:02}"} for r in rows])
    from bench.console import console

    monkeypatch.setattr(console, "width", 100)
    capsys.readouterr()
    assert main(["compare", str(many)]) == 0
    out = capsys.readouterr().out
    assert "(1/" in out and "(2/" in out  # paged, not wrapped
    assert "ort-cuda: 2 points skipped everywhere" in out
    assert "skipped │" not in out  # no rows of skipped cells
    assert max(len(line) for line in out.splitlines() if line[:1] in "┏┃┡│└") <= 100  # tables fit the width


def test_manifest_round_trips():
    manifest = fleet_store.Manifest(run_id="r", suite_name="s", suite_toml="name = 's'", run_options=["--batches", "1"],
                                    driver={"harness_version": "1"}, selection={}, runtimes=["ort-cpu"])
    manifest.machines["m"] = fleet_store.MachineEntry("m", state="failed", reason="lost", facts={"runtimes": []})
    back = fleet_store.Manifest.from_json(manifest.to_json())
    assert back == manifest and json.loads(manifest.to_json())["machines"]["m"]["state"] == "failed"


def test_gather_and_resume_bad_input_is_one_line(two_machines, tmp_path, capsys):
    """Read without Ray: a file where a run folder belongs, an unwritable --out, and options that a
    resumed fleet takes from its own manifest."""
    file_not_folder = two_machines / "node-1.parquet"
    capsys.readouterr()
    assert main(["gather", str(two_machines), "--out", str(file_not_folder / "all.parquet")]) == 2
    assert main(["fleet", "--resume", str(two_machines), "--repeats", "3"]) == 2
    assert main(["fleet", "--resume", str(file_not_folder)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    err = [line for line in err if not line.startswith("facebench: note:")]  # gather's notes on the folder
    assert len(err) == 3 and "Traceback" not in "\n".join(err), err
    assert "cannot write there" in err[0] and "drop --repeats" in err[1] and "no fleet.json there" in err[2]
    assert store.read_rows(file_not_folder)  # nothing finished was touched


def test_fleet_refuses_relative_model_paths(tmp_path, monkeypatch, capsys):
    """Each machine runs the suite from a folder of its own: a relative path would name another file."""
    from bench.models import zoo

    model = tmp_path / "models" / "mbf.onnx"
    model.parent.mkdir()
    model.write_bytes(open(zoo.build_cached("arcface_mbf").path, "rb").read())
    suite = tmp_path / "rel.toml"
    suite.write_text(tiny_suite("rel", [1]).replace('name = "arcface_mbf"', 'path = "models/mbf.onnx"'))
    monkeypatch.chdir(tmp_path)
    assert main(["fleet", str(suite), "--out", f"file://{tmp_path}/bucket"]) == 2
    assert "models/mbf.onnx is relative" in capsys.readouterr().err
    assert not (tmp_path / "bucket").exists()  # refused before any run folder
