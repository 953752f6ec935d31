"""Bad input through the real CLI (a subprocess): one line naming the problem and the fix, exit
status 2, no traceback, and nothing finished lost. The tests run as root, which writes through
any permission bits: unwritable folders are paths under a regular file, or in /proc."""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bench import store
from bench.models import zoo
from tests.conftest import tiny_suite
from tests.test_harness import facebench


def refused(result, *fragments: str) -> str:
    """The one error line of a run that exited 2, after checking it names every fragment."""
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("facebench: error: ") and all(f in line for f in fragments), line
    return line


@pytest.fixture
def suite(tmp_path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(tiny_suite("tiny", [1]))
    return path


@pytest.fixture
def under_a_file(tmp_path) -> Path:
    """A folder path no one can create: its parent is a regular file."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    return blocker / "cache"


@pytest.mark.parametrize("command", ["run", "probe", "pipeline"])
def test_unwritable_cache_folder(tmp_path, suite, under_a_file, command):
    out = tmp_path / "out.parquet"
    args = {"run": ["run", str(suite), "--out", str(out)],
            "probe": ["probe", "--runtimes", "ort-cpu", "--precisions", "fp32"],
            "pipeline": ["pipeline", "--synthetic", "2", "--det", "scrfd_500m@320", "--rec", "arcface_mbf",
                         "--runtime", "ort-cpu", "--out", str(out)]}[command]
    result = facebench(*args, env={"FACEBENCH_CACHE": str(under_a_file)}, timeout=300, cwd=tmp_path)
    refused(result, str(under_a_file), "cache folder cannot be written", "Not a directory", "set FACEBENCH_CACHE")
    assert not out.exists()


def test_unwritable_home_folder_without_facebench_cache(tmp_path, suite, under_a_file):
    env = {"HOME": str(under_a_file), "FACEBENCH_CACHE": ""}  # empty: the default under the home folder
    result = facebench("run", str(suite), "--out", str(tmp_path / "out.parquet"), env=env, timeout=300, cwd=tmp_path)
    refused(result, str(under_a_file / ".cache" / "facebench"), "cannot be written", "set FACEBENCH_CACHE")


def test_fix_batch_into_an_unwritable_folder_writes_nothing(tmp_path):
    source = zoo.build_cached("scrfd_500m", 320).path
    result = facebench("fix-batch", source, "/proc/fixed.onnx", timeout=300)
    refused(result, "/proc: output folder cannot be written", "choose another OUT")
    assert not Path("/proc/fixed.onnx").exists()


@pytest.fixture
def mistyped(tmp_path) -> tuple[Path, Path]:
    """(a good results file, a copy whose fps column an editor turned into text)."""
    good, bad = tmp_path / "good.parquet", tmp_path / "bad.parquet"
    store.write_rows(good, [{"model": "m", "runtime": "ort-cpu", "precision": "fp32", "batch": 1, "status": "ok",
                             "fps": 10.0}])
    table = pq.read_table(good)
    index = table.schema.get_field_index("fps")
    pq.write_table(table.set_column(index, pa.field("fps", pa.string()), pa.array(["fast"])), bad)
    return good, bad


@pytest.mark.parametrize("command", ["show", "compare"])
def test_results_file_with_a_mistyped_column(mistyped, command):
    good, bad = mistyped
    before = bad.read_bytes()
    result = facebench(command, *([str(good)] if command == "compare" else []), str(bad), timeout=120)
    refused(result, str(bad), "column 'fps' holds string values that are not double", "'fast'", "was edited")
    assert bad.read_bytes() == before


@pytest.mark.parametrize("limit", ["0", "-5"])
def test_worker_memory_limit_must_be_positive(tmp_path, suite, limit):
    out = tmp_path / "out.parquet"
    result = facebench("run", str(suite), "--out", str(out), "--max-worker-memory", limit, timeout=120)
    refused(result, f"--max-worker-memory {limit}", "positive number of MB")
    assert not out.exists()  # refused before any worker ran (a negative limit killed every one)


def test_negative_measure_seed(tmp_path):
    path = tmp_path / "seeded.toml"
    path.write_text(tiny_suite("seeded", [1]).replace("[measure]\n", "[measure]\nseed = -3\n"))
    result = facebench("run", str(path), "--out", str(tmp_path / "out.parquet"), timeout=120)
    refused(result, "[measure]: seed -3 cannot be negative", "use 0 or a positive")
