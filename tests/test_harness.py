"""The harness end to end: the quick suite through the CLI, in real worker processes,
real onnxruntime and openvino, a real Parquet file read back."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from bench import store
from bench.cli import main
from tests.conftest import REPO

QUICK = str(REPO / "suites" / "quick.toml")


def facebench(*args: str, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, **kwargs)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("quick")
    result = facebench("run", QUICK, "--out", str(out), timeout=600)
    assert result.returncode == 0, result.stderr
    files = list(out.glob("*.parquet"))
    assert len(files) == 1
    return files[0], result.stdout


def test_quick_suite_writes_sane_parquet(quick_run):
    path, stdout = quick_run
    assert path.name.endswith("-quick.parquet")
    frame = pd.read_parquet(path)  # plain pandas reads it: no pickled objects
    assert len(frame) == 2 * 2 * 2  # models x runtimes x batches
    ok = frame[frame.status == "ok"]
    assert set(ok.runtime) == {"ort-cpu", "openvino-cpu"}
    assert (ok.fps > 0).all()
    assert (ok.lat_p50_ms <= ok.lat_p99_ms).all()
    assert (ok.lat_min_ms <= ok.lat_p50_ms).all()
    assert (ok.frames == ok.batch * ok.iterations).all()
    # frames/s comes from the window wall time, not from mean latency
    assert ((ok.fps - ok.frames / ok.wall_s).abs() < 1e-6 * ok.fps).all()
    assert (ok.cold_compile_ms > 0).all() and (ok.cold_first_infer_ms > 0).all()
    assert (ok.params > 0).all() and (ok.flops_per_frame == 2 * ok.macs_per_frame).all()
    assert ok.contamination_passed.all() and ok.parity_passed.all()
    assert frame.schema_version.eq(store.SCHEMA_VERSION).all()
    assert frame.host.notna().all() and frame.model_sha256.str.len().eq(64).all()
    assert set(ok.precision_effective) <= {"fp32"}
    assert (frame[frame.status == "skipped"].reason.str.len() > 0).all()


def test_quick_suite_prints_tables(quick_run):
    _, stdout = quick_run
    assert "scrfd_500m@320: steady state" in stdout and "arcface_mbf: cold start" in stdout
    assert "best:" in stdout and "knee: batch" in stdout


def test_show_reads_the_file_back(quick_run, capsys):
    path, _ = quick_run
    assert main(["show", str(path)]) == 0
    assert "arcface_mbf: steady state" in capsys.readouterr().out


def test_file_checksum_detects_edits(quick_run, tmp_path, capsys):
    path, _ = quick_run
    import pyarrow as pa
    import pyarrow.parquet as pq

    _, check = store.read_table(path)
    assert check.checksum_ok is True
    raw = pq.read_table(path)
    fps = raw.column("fps").to_pylist()
    fps[0] *= 2  # someone "improves" a number by hand
    edited = tmp_path / "edited.parquet"
    pq.write_table(raw.set_column(raw.column_names.index("fps"), "fps", pa.array(fps)), edited)
    _, check = store.read_table(edited)
    assert check.checksum_ok is False
    assert main(["show", str(edited)]) == 0
    assert "edited or damaged" in capsys.readouterr().err


def test_batch_one_file_skips_larger_batches_with_fix_hint(real_scrfd_path, tmp_path):
    out = tmp_path / "real.parquet"
    code = main(["run", QUICK, "--models", str(real_scrfd_path), "--runtimes", "ort-cpu", "--batches", "1,2",
                 "--out", str(out), "--inline"])
    assert code == 0
    rows = {r["batch"]: r for r in store.read_rows(out)}
    assert rows[1]["status"] == "ok" and rows[1]["model_source"] == "file"
    assert rows[2]["status"] == "skipped" and "facebench fix-batch" in rows[2]["reason"]


def test_killed_sweep_keeps_finished_points(tmp_path):
    out = tmp_path / "killed.parquet"
    process = subprocess.Popen([sys.executable, "-m", "bench", "run", QUICK, "--out", str(out)], cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and _rows(out) < 2:
            time.sleep(0.2)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    rows = store.read_rows(out)
    assert len(rows) >= 2
    assert all(r["status"] == "ok" and r["fps"] > 0 for r in rows)


def test_ctrl_c_stops_cleanly_and_says_what_was_saved(tmp_path):
    out = tmp_path / "interrupted.parquet"
    process = subprocess.Popen([sys.executable, "-m", "bench", "run", QUICK, "--out", str(out)], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and _rows(out) < 1:
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    saved = len(store.read_rows(out))
    assert saved >= 1 and f"interrupted: {saved} points saved in {out}" in " ".join(stdout.split())


def _rows(path: Path) -> int:
    try:
        return len(store.read_rows(path))
    except Exception:
        return 0


@pytest.mark.parametrize("suite_text, message", [
    ("runtimes = ['ort-cpu']\n[[models]]\nname = 'nope'\n", "unknown model 'nope'"),
    ("runtimes = ['warp-drive']\n[[models]]\nname = 'arcface_mbf'\n", "unknown runtime 'warp-drive'"),
    ("runtimes = ['ort-cpu'\n", "malformed TOML"),
    ("runtimes = ['ort-cpu']\nbatches = [0]\n[[models]]\nname = 'arcface_mbf'\n", "batch 0"),
    ("runtimes = ['ort-cpu']\nbatches = [128]\n[[models]]\nname = 'arcface_mbf'\n", "allow_large_batch"),
    ("runtimes = ['ort-cpu']\nbatchez = [1]\n[[models]]\nname = 'arcface_mbf'\n", "unknown key 'batchez'"),
    ("runtimes = ['ort-cpu']\n[measure]\nwindow_s = 'long'\n[[models]]\nname = 'arcface_mbf'\n", "window_s"),
])
def test_bad_suite_is_one_line_and_exit_2(tmp_path, suite_text, message):
    suite = tmp_path / "bad.toml"
    suite.write_text(suite_text)
    result = facebench("run", str(suite), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_unwritable_output_folder_is_exit_2(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = facebench("run", QUICK, "--out", str(blocker / "sub"))
    assert result.returncode == 2 and "cannot create the output folder" in result.stderr


def test_missing_suite_is_exit_2():
    result = facebench("run", "suites/does-not-exist.toml")
    assert result.returncode == 2 and "suite file not found" in result.stderr


def test_runtimes_lists_availability():
    result = facebench("runtimes")
    assert result.returncode == 0
    lines = {line.split()[1]: line for line in result.stdout.splitlines() if line.startswith("│ ")}
    assert "available" in lines["ort-cpu"] and "unavailable" not in lines["ort-cpu"]
    assert "unavailable" in lines["openvino-gpu"] and "unavailable" in lines["trt"]
