"""The harness end to end: the quick suite through the CLI, in real worker processes,
real onnxruntime and openvino, a real Parquet file read back."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pandas as pd
import pytest

from bench import store
from bench.cli import main
from bench.measure.cold_start import ColdStartTimer
from bench.measure.protocol import MeasureSettings, make_inputs, measure
from bench.models import zoo
from bench.report.model import point_of
from bench.report.text import NO_BEST
from bench.session import LoadRequest
from bench.runtimes.registry import get_runtime
from tests.conftest import REPO

QUICK = str(REPO / "suites" / "quick.toml")


def facebench(*args: str, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=kwargs.pop("cwd", REPO), capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, **kwargs)


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
    assert (ok.cold_compile_ms > 0).all() and (ok.cold_first_infer_ms > 0).all()
    assert (ok.params > 0).all() and (ok.flops_per_frame == 2 * ok.macs_per_frame).all()
    assert ok.contamination_passed.all() and ok.parity_passed.all()
    assert frame.schema_version.eq(store.SCHEMA_VERSION).all()
    assert frame.host.notna().all() and frame.model_sha256.str.len().eq(64).all()
    assert set(ok.precision_effective) <= {"fp32"}
    assert (frame[frame.status == "skipped"].reason.str.len() > 0).all()


class WindowClock:
    """A sampler (bench.telemetry.base.Sampler) that times each steady-state window on its own clock
    and counts the session's runs inside it: an account of the loop kept apart from the loop's."""

    def __init__(self, session: "CountedSession"):
        self.session, self.spans = session, []  # (ns, runs) per window

    def window_started(self):
        self._runs, self._start = self.session.runs, time.perf_counter_ns()

    def window_stopped(self, window):
        self.spans.append((time.perf_counter_ns() - self._start, self.session.runs - self._runs))

    def figures(self, measurement):
        return {}


class CountedSession:
    """A real session whose run() calls are counted (everything else is the session's own)."""

    def __init__(self, session):
        self._session, self.runs = session, 0

    def run(self, x):
        self.runs += 1
        return self._session.run(x)

    def __getattr__(self, name):
        return getattr(self._session, name)


def test_frames_per_s_agrees_with_an_outside_clock():
    """The harness's frames/s against the runs counted and the time measured around its windows:
    frames are batch x counted runs, and fps can be no lower than frames over the outside time
    (which holds the loop's own), and not far above it (a window is 0.1 s; the hooks take microseconds)."""
    info = zoo.build_cached("scrfd_500m", 160)
    batch = 2
    session = get_runtime("ort-cpu").load(LoadRequest(info.path, info.input_name, info.input_shape(batch), "fp32"),
                                          ColdStartTimer())
    counted = CountedSession(session)
    clock = WindowClock(counted)
    settings = MeasureSettings(warmup_s=0.05, warmup_min_iterations=2, window_s=0.1, window_min_iterations=3,
                               max_windows=6)
    try:
        result = measure(counted, make_inputs(info.input_shape(batch), 3, 0, info.mean, info.std), batch, settings,
                         [clock])
    finally:
        session.close()
    assert session.loop == "host" and len(clock.spans) == len(result.windows)
    used = clock.spans[-result.used_windows:]
    outside_s = sum(ns for ns, _ in used) / 1e9
    assert result.frames == batch * sum(runs for _, runs in used) and result.iterations == sum(r for _, r in used)
    assert result.frames / outside_s <= result.fps <= 2 * result.frames / outside_s
    assert result.wall_s <= outside_s


def test_quick_suite_prints_tables(quick_run):
    path, stdout = quick_run
    assert "scrfd_500m@320: steady state" in stdout and "arcface_mbf: cold start" in stdout
    # Whether a point settles depends on the machine's noise; that the answer line follows it does not.
    frame = pd.read_parquet(path)
    text = " ".join(stdout.split())  # rich may wrap a long answer line
    for model, rows in frame.groupby("model"):
        assert text.count(f"{model} best:") == 1
        answer = text[text.index(f"{model} best:"):][:250]  # the answer line and a little after
        if any(point_of(row).trustworthy for row in rows.to_dict("records")):
            assert "knee: batch" in answer and not answer.startswith(f"{model} {NO_BEST}")
        else:
            assert answer.startswith(f"{model} {NO_BEST}")


def test_show_reads_the_file_back(quick_run, capsys):
    path, _ = quick_run
    assert main(["show", str(path)]) == 0
    assert "arcface_mbf: steady state" in capsys.readouterr().out


def test_batch_one_file_skips_larger_batches_with_fix_hint(real_scrfd_path, tmp_path):
    out = tmp_path / "real.parquet"
    code = main(["run", QUICK, "--models", str(real_scrfd_path), "--runtimes", "ort-cpu", "--batches", "1,2",
                 "--out", str(out), "--inline"])
    assert code == 0
    rows = {r["batch"]: r for r in store.read_rows(out)}
    assert rows[1]["status"] == "ok" and rows[1]["model_source"] == "file"
    assert rows[2]["status"] == "skipped" and "facebench fix-batch" in rows[2]["reason"]


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


def test_images_and_uri_output(tmp_path):
    from PIL import Image
    from skimage import data

    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(data.astronaut()).save(images / "astronaut.png")
    bucket = tmp_path / "bucket"
    result = facebench("run", QUICK, "--models", "arcface_mbf", "--runtimes", "ort-cpu", "--batches", "1",
                       "--images", str(images), "--out", f"file://{bucket}/", "--inline", timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    copies = list(bucket.glob("*-quick.parquet"))
    assert len(copies) == 1 and "copied to file://" in result.stdout
    rows = store.read_rows(copies[0])
    assert rows[0]["status"] == "ok" and rows[0]["parity_passed"] is True
    assert (tmp_path / "results" / copies[0].name).is_file()  # measured locally first, then copied


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


def test_suite_parity_gates_override_the_defaults(tmp_path):
    suite = tmp_path / "strict.toml"
    suite.write_text(
        "runtimes = ['ort-cpu']\nbatches = [1]\n[[models]]\nname = 'arcface_mbf'\n"
        "[measure]\nwarmup_s = 0.05\nwindow_s = 0.1\nwindow_min_iterations = 3\nmax_windows = 4\n"
        "[parity_gates.cosine_min]\nfp32 = 1.5\n")  # no cosine reaches 1.5: the gate must fail
    out = tmp_path / "strict.parquet"
    assert main(["run", str(suite), "--out", str(out), "--inline"]) == 0
    [row] = store.read_rows(out)
    assert row["status"] == "ok" and row["parity_checked"] is True and row["parity_passed"] is False
    assert "cos min" in row["parity_summary"]


def test_unknown_parity_gate_is_exit_2(tmp_path):
    suite = tmp_path / "bad.toml"
    suite.write_text("runtimes = ['ort-cpu']\n[[models]]\nname = 'arcface_mbf'\n[parity_gates.cosine]\nfp32 = 0.9\n")
    result = facebench("run", str(suite))
    assert result.returncode == 2 and "unknown metric 'cosine'" in result.stderr


def test_failed_point_is_a_row_and_its_traceback_goes_to_a_log(tmp_path, capsys, monkeypatch):
    from bench.runtimes.openvino import OpenVinoRuntime

    def refuse(self, core, request):  # a plugin that will not compile, past every check at suite load
        raise RuntimeError("openvino refused to compile (injected)")

    monkeypatch.setattr(OpenVinoRuntime, "compile_config", refuse)  # --inline: the worker runs in this process
    suite = tmp_path / "refused.toml"
    suite.write_text("runtimes = ['openvino-cpu']\nbatches = [1]\n[[models]]\nname = 'arcface_mbf'\n")
    out = tmp_path / "failed.parquet"
    assert main(["run", str(suite), "--out", str(out), "--inline"]) == 0  # a failed point is a result, not a crash
    [row] = store.read_rows(out)
    assert row["status"] == "failed" and "openvino refused to compile (injected)" in row["reason"]
    log = tmp_path / "failed.parquet.log"
    assert "Traceback" in log.read_text()
    assert f"tracebacks of failed points: {log}" in " ".join(capsys.readouterr().out.split())


def test_openvino_reports_the_precision_it_compiled(tmp_path):
    out = tmp_path / "ov.parquet"
    assert main(["run", QUICK, "--models", "arcface_mbf", "--runtimes", "openvino-cpu", "--precisions", "fp32,int8",
                 "--batches", "1", "--out", str(out), "--inline"]) == 0
    rows = {r["precision"]: r for r in store.read_rows(out)}
    assert rows["fp32"]["precision_effective"] == "fp32"  # the f32 hint holds even on bf16-capable CPUs
    assert rows["int8"]["precision_effective"] == "int8"
    layers = json.loads(rows["int8"]["runtime_options_json"])["layer_precisions"]
    assert layers.get("i8", 0) + layers.get("u8", 0) > 0


def test_show_keeps_machines_apart(quick_run, tmp_path, capsys):
    path, _ = quick_run
    rows = store.read_rows(path)
    other = tmp_path / "other.parquet"
    store.write_rows(other, [{**r, "host": "bigbox", "machine_id": "feedfacefeedface"} for r in rows])
    assert main(["show", str(path), str(other)]) == 0
    out = capsys.readouterr().out
    assert "arcface_mbf on bigbox: steady state" in out
    assert f"arcface_mbf on {rows[0]['host']}: steady state" in out


def test_a_log_groups_skipped_points_into_one_line(tmp_path, capsys):
    # Not a terminal (as under CI or `| tee`): one line per finished point, but one line per model,
    # runtime and reason for the points skipped together (every GPU point on a CPU machine).
    if get_runtime("ort-cuda").available()[0]:
        pytest.skip("ort-cuda is available here: its points are measured, not skipped")
    out = tmp_path / "skipped.parquet"
    assert main(["run", QUICK, "--models", "arcface_mbf", "--runtimes", "ort-cuda", "--precisions", "fp32,fp16",
                 "--batches", "1,2,4", "--out", str(out), "--inline"]) == 0
    reason = store.read_rows(out)[0]["reason"]
    lines = [line for line in capsys.readouterr().out.splitlines() if "skipped" in line and "[" in line]
    assert lines == [f"[6/6] skipped arcface_mbf ort-cuda fp32/fp16 batches 1..4: {reason}"]
    assert len(store.read_rows(out)) == 6  # every point still has its row
