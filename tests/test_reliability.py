"""Reliability, proven by injecting faults into real processes (docs/reliability.md).

The harness runs as `python -m bench run` in its own process with real worker processes,
real onnxruntime and real Parquet files; faults come from outside: signals to the harness
at random moments, signals to its workers (found as its children), a tiny time limit, a
small memory limit, a results folder that turns read-only or fills up, hostile files.
After each fault the results file is read back: every point that finished must be there.

Random moments come from FACEBENCH_FAULT_SEED (printed in every failure message): 0 by
default so that CI replays the same faults; set a number to replay a run, or "random" to
draw a new seed from the clock.
"""
from __future__ import annotations

import collections
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import onnx
import psutil
import pyarrow.parquet as pq
import pytest
from onnx import TensorProto, helper

from bench import store
from bench.cli import main
from bench.models import zoo
from bench.models.validate import validate_model_file
from tests.conftest import REPO

_SEED_TEXT = os.environ.get("FACEBENCH_FAULT_SEED", "0")
SEED = time.time_ns() % 2**31 if _SEED_TEXT == "random" else int(_SEED_TEXT)
FAULTS: collections.Counter = collections.Counter()  # kind -> injected, printed at the end (pytest -s)
QUICK_MEASURE = """
[measure]
warmup_s = 0.05
window_s = {window_s}
window_min_iterations = 3
max_windows = 4
"""
DEFAULT_MODELS = (("scrfd_500m", 160), ("arcface_mbf", None))
POLL_S = 0.05


# --- suites and processes ---

def write_suite(folder: Path, name: str = "rel", models=DEFAULT_MODELS, batches=(1, 2), window_s: float = 0.1,
                extra: str = "") -> Path:
    """A quick suite: ort-cpu, short measurement, parity and peak probes off (not the point here; the probes,
    cached per machine, would otherwise run inside whichever test comes first, memory limit included)."""
    lines = [f'name = "{name}"', 'runtimes = ["ort-cpu"]', f"batches = {list(batches)}", extra]
    for model, size in models:
        lines += ["[[models]]", f'name = "{model}"'] + ([f"input_size = {size}"] if size else [])
    lines += [QUICK_MEASURE.format(window_s=window_s), "[checks]", "parity = false", "peak_probes = false"]
    path = folder / f"{name}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _no_core_dumps() -> None:  # the SIGSEGV and SIGABRT workers must not drop core files
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def start(*args: str) -> subprocess.Popen:
    """`facebench ARGS` in its own session (a process group, as a terminal would give it)."""
    return subprocess.Popen([sys.executable, "-m", "bench", *args], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, preexec_fn=_no_core_dumps)


def facebench(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    process = start(*args)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    finally:
        _kill_group(process)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def _kill_group(process: subprocess.Popen) -> None:
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(timeout=30)


def workers_of(pid: int) -> list[psutil.Process]:
    """The harness's worker processes (spawned multiprocessing children)."""
    try:
        children = psutil.Process(pid).children()
    except psutil.Error:
        return []
    found = []
    for child in children:
        try:
            if "spawn_main" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.Error:
            pass
    return found


def main_started(pid: int) -> bool:
    """facebench's main() has installed its SIGTERM handler: from here on signals are its to handle."""
    try:
        with open(f"/proc/{pid}/status") as status:
            caught = next(line for line in status if line.startswith("SigCgt:"))
    except (OSError, StopIteration):
        return False
    return bool(int(caught.split()[1], 16) & (1 << (signal.SIGTERM - 1)))


def rows_on_disk(location: Path) -> int:
    """Rows in the results file (or the one file in a folder); 0 while there is none."""
    path = results_file(location) if location.is_dir() else location
    try:
        return len(store.read_rows(path)) if path else 0
    except Exception:
        return 0


def results_file(folder: Path) -> Path | None:
    files = sorted(folder.glob("*.parquet"))
    assert len(files) <= 1, files
    return files[0] if files else None


def wait_for(condition, process: subprocess.Popen, timeout: float = 240, seen: set | None = None) -> bool:
    """Poll until `condition()`; False when the process ended first. Records worker pids in `seen`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if seen is not None:
            seen.update(w.pid for w in workers_of(process.pid))
        if condition():
            return True
        if process.poll() is not None:
            return False
        time.sleep(POLL_S)
    raise AssertionError(f"timed out waiting (seed {SEED})")


def kill_worker(harness: subprocess.Popen, sig: signal.Signals) -> int:
    workers = workers_of(harness.pid)
    assert len(workers) == 1, f"expected one worker, found {workers}"
    os.kill(workers[0].pid, sig)
    FAULTS[f"worker {sig.name}"] += 1
    return workers[0].pid


def assert_gone(pids: set[int]) -> None:
    """No worker outlives its harness (they die with it, even when it is SIGKILLed)."""
    procs = []
    for pid in pids:
        try:
            procs.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=5)
    assert not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE], f"orphan workers {alive}"


def rows_by_runtime_and_precision(path: Path) -> dict[tuple, dict]:
    return {(r["runtime"], r["precision"]): r for r in checked_rows(path)}


def checked_rows(path: Path) -> list[dict]:
    """Read a results file back the way show/compare do: schema version, checksum, one row per point."""
    table, check = store.read_table(path)
    assert check.schema_version == store.SCHEMA_VERSION
    assert check.checksum_ok is True, check.note
    rows = table.to_pylist()
    keys = [store.point_key(r) for r in rows]
    assert len(keys) == len(set(keys)), f"duplicate points in {path}"
    return rows


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in text, text
    return lines[0]


@pytest.fixture(scope="module", autouse=True)
def report_faults():
    yield
    total = sum(FAULTS.values())
    print(f"\nfault injection (seed {SEED}): {total} faults: "
          + ", ".join(f"{kind} x{n}" for kind, n in sorted(FAULTS.items())))


@pytest.fixture(scope="module", autouse=True)
def replicas(tmp_path_factory):
    """Build the replicas once, in the cache every test (and subprocess) of the session uses."""
    cache = tmp_path_factory.getbasetemp() / "facebench-cache"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FACEBENCH_CACHE", str(cache))
        for name, size in (*DEFAULT_MODELS, ("scrfd_500m", 640)):
            zoo.build_cached(name, size)


# --- 1. the harness killed at random moments ---

@pytest.mark.parametrize("moment", [0, 1, 2])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=lambda s: s.name)
def test_harness_killed_at_a_random_moment_keeps_every_finished_point(tmp_path, sig, moment):
    rng = random.Random(f"{SEED}-{sig.name}-{moment}")
    rows_before, delay = rng.randint(0, 3), rng.uniform(0, 0.8)  # from start-up to the last point
    where = f"seed {SEED}: {sig.name} after {rows_before} rows + {delay:.2f} s"
    out = tmp_path / "out"
    harness = start("run", str(write_suite(tmp_path)), "--out", str(out))
    workers: set[int] = set()
    try:
        wait_for(lambda: main_started(harness.pid), harness, seen=workers)
        if rows_before:
            wait_for(lambda: out.is_dir() and rows_on_disk(out) >= rows_before, harness, seen=workers)
        time.sleep(delay)
        seen = rows_on_disk(out) if out.is_dir() else 0
        _inject(harness, sig, rng)
        stdout, stderr = harness.communicate(timeout=120)
    finally:
        _kill_group(harness)
    assert_gone(workers)

    path = results_file(out) if out.is_dir() else None
    rows = checked_rows(path) if path else []
    assert len(rows) >= seen, where  # nothing finished was lost
    assert all(r["status"] == "ok" and r["fps"] > 0 for r in rows), where  # and nothing half-done was added
    if sig == signal.SIGKILL:
        assert harness.returncode in (0, -signal.SIGKILL), where
        return
    said = " ".join(stdout.split())
    if f"4 points saved in {path}" in said and "interrupted" not in said:
        # The sweep had finished: the signal came while the process exited, where Python's own
        # handling applies (it may end with the signal). The file was complete already.
        assert len(rows) == 4 and harness.returncode in (0, 130, -sig), where
        return
    assert harness.returncode == 130, f"{where}: {stderr}"
    assert "Traceback" not in stderr, f"{where}: {stderr}"
    if path is None or "no results file written" in said:
        assert not rows, where
        return
    assert f"interrupted: {len(rows)} points saved in {path}" in said, f"{where}: {said}"
    assert f"--resume {path}" in said
    assert not list(out.glob(".*")), f"{where}: temporary or lock files left behind"


def _inject(harness: subprocess.Popen, sig: signal.Signals, rng: random.Random) -> None:
    """Ctrl-C reaches the whole process group twice (the second while stopping); SIGTERM and
    SIGKILL reach the harness alone, as `kill PID` and the out-of-memory killer send them."""
    if sig == signal.SIGINT:
        send = lambda: os.killpg(harness.pid, sig)  # noqa: E731
    else:
        send = lambda: os.kill(harness.pid, sig)  # noqa: E731
    try:
        send()
        FAULTS[f"harness {sig.name}"] += 1
        if sig != signal.SIGKILL:
            time.sleep(rng.uniform(0, 0.3))
            send()
            FAULTS[f"harness second {sig.name} while stopping"] += 1
    except ProcessLookupError:
        pass  # it had finished


# --- 2. worker faults: signals, time limit, memory limit ---

def test_killed_workers_are_failed_rows_and_the_sweep_goes_on(tmp_path):
    out = tmp_path / "workers.parquet"
    harness = start("run", str(write_suite(tmp_path)), "--out", str(out))
    try:
        wait_for(lambda: rows_on_disk(out) >= 1, harness)  # first model's batch 2 is being measured
        kill_worker(harness, signal.SIGKILL)
        wait_for(lambda: rows_on_disk(out) >= 3, harness)  # a new worker measured arcface_mbf batch 1
        kill_worker(harness, signal.SIGSEGV)
        stdout, stderr = harness.communicate(timeout=120)
    finally:
        _kill_group(harness)
    assert harness.returncode == 0, stderr
    rows = {(r["model"], r["batch"]): r for r in checked_rows(out)}
    assert len(rows) == 4 and "4 points saved" in stdout
    assert rows["scrfd_500m@160", 1]["status"] == rows["arcface_mbf", 1]["status"] == "ok"
    assert _failed(rows["scrfd_500m@160", 2]) == "worker died with SIGKILL (killed: out of memory?)"
    assert _failed(rows["arcface_mbf", 2]) == "worker died with SIGSEGV"


def _failed(row: dict) -> str:
    assert row["status"] == "failed" and row["fps"] is None
    return row["reason"]


def test_point_over_its_time_limit_fails_and_the_next_worker_starts(tmp_path):
    suite = write_suite(tmp_path, models=DEFAULT_MODELS[:1], window_s=1.0, extra="point_timeout_s = 0.5")
    out = tmp_path / "timeout.parquet"
    result = facebench("run", str(suite), "--out", str(out))
    FAULTS["point over point_timeout_s"] += 2
    assert result.returncode == 0, result.stderr
    rows = checked_rows(out)
    assert [r["batch"] for r in rows] == [1, 2]  # batch 2 ran in a new worker after batch 1's was killed
    for row in rows:
        assert _failed(row) == "timeout: point exceeded point_timeout_s = 0.5 s; worker killed"


def test_batch_over_the_memory_limit_fails_not_the_sweep(tmp_path):
    # SCRFD at 640: batch 48 needs ~2.7 GB (its input buffers alone 236 MB each), batch 1 ~150 MB:
    # the limit sits far from both, whatever the allocator keeps or returns.
    suite = write_suite(tmp_path, models=[("scrfd_500m", 640)], batches=(48, 1))
    out = tmp_path / "memory.parquet"
    result = facebench("run", str(suite), "--out", str(out), "--max-worker-memory", "600")
    FAULTS["worker over --max-worker-memory"] += 1
    assert result.returncode == 0, result.stderr
    rows = {r["batch"]: r for r in checked_rows(out)}
    assert _failed(rows[48]) == "out of memory: worker exceeded --max-worker-memory 600 MB; worker killed"
    assert rows[1]["status"] == "ok" and rows[1]["peak_rss_mb"] < 600


# --- 3. resume after a kill ---

def test_resume_after_a_kill_measures_only_what_is_missing_or_failed(tmp_path):
    suite = write_suite(tmp_path)
    out = tmp_path / "resumed.parquet"
    harness = start("run", str(suite), "--out", str(out))
    try:
        wait_for(lambda: rows_on_disk(out) >= 1, harness)
        kill_worker(harness, signal.SIGABRT)  # as an abort inside a native runtime would
        wait_for(lambda: rows_on_disk(out) >= 3, harness)
        harness.send_signal(signal.SIGKILL)
        FAULTS["harness SIGKILL"] += 1
        harness.wait(timeout=60)
    finally:
        _kill_group(harness)
    first = {(r["model"], r["batch"]): r for r in checked_rows(out)}
    assert _failed(first["scrfd_500m@160", 2]) == "worker died with SIGABRT"
    missing = 4 - len(first)
    (first_run,) = {r["run_id"] for r in first.values()}

    result = facebench("run", str(suite), "--resume", str(out))
    assert result.returncode == 0, result.stderr
    assert f"facebench: {1 + missing} points" in result.stdout  # the failed one and the missing ones
    final = {(r["model"], r["batch"]): r for r in checked_rows(out)}
    assert len(final) == 4 and all(r["status"] == "ok" for r in final.values())
    for key, row in first.items():
        if row["status"] == "ok":
            assert final[key] == row  # kept as it was, never measured again
    resumed = {k for k, r in final.items() if r["run_id"] != first_run}
    assert resumed == {("scrfd_500m@160", 2)} | {k for k in final if k not in first}
    (second_run,) = {final[k]["run_id"] for k in resumed}
    assert pq.read_schema(out).metadata[b"facebench.run_ids"].decode() == f'["{first_run}", "{second_run}"]'


def test_resume_measures_points_skipped_while_their_runtime_was_unavailable(tmp_path, monkeypatch):
    suite = write_suite(tmp_path, models=[("arcface_mbf", None)], batches=(1,))
    out = tmp_path / "later.parquet"
    shadow = tmp_path / "shadow" / "openvino"  # as on a machine without OpenVINO
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text('raise ImportError("not on this machine yet")\n')
    narrow = ("--runtimes", "ort-cpu,openvino-cpu", "--precisions", "fp32,ir")  # ort-cpu never runs ir
    monkeypatch.setenv("PYTHONPATH", str(shadow.parent))
    first = facebench("run", str(suite), *narrow, "--out", str(out))
    assert first.returncode == 0, first.stderr
    before = rows_by_runtime_and_precision(out)
    assert before["openvino-cpu", "fp32"]["status"] == "skipped"
    assert "not on this machine yet" in before["openvino-cpu", "fp32"]["reason"]
    assert before["ort-cpu", "ir"]["status"] == "skipped" and "does not run ir" in before["ort-cpu", "ir"]["reason"]

    monkeypatch.delenv("PYTHONPATH")  # OpenVINO installed since
    resumed = facebench("run", str(suite), *narrow, "--resume", str(out))
    assert resumed.returncode == 0, resumed.stderr
    assert "facebench: 2 points" in resumed.stdout  # OpenVINO's two; ort-cpu's ir would skip again
    after = rows_by_runtime_and_precision(out)
    assert after["openvino-cpu", "fp32"]["status"] == after["openvino-cpu", "ir"]["status"] == "ok"
    for kept in (("ort-cpu", "fp32"), ("ort-cpu", "ir")):
        assert after[kept] == before[kept]  # as it was, run_id included
    again = facebench("run", str(suite), *narrow, "--resume", str(out))
    assert again.returncode == 0 and "facebench: 0 points" in again.stdout, again.stdout + again.stderr
    assert rows_by_runtime_and_precision(out) == after  # nothing measured again


def test_resume_refuses_an_edited_file(tmp_path, two_runs, capsys):
    edited = _edited_copy(two_runs[0], tmp_path)
    assert main(["run", str(write_suite(tmp_path)), "--resume", str(edited)]) == 2
    assert "refusing to resume" in one_line(capsys.readouterr().err)


def test_resume_refuses_another_machines_file(tmp_path, two_runs, capsys):
    theirs = tmp_path / "h100.parquet"
    rows = [{**r, "host": "gpu-box", "machine_id": "feedfacecafe0000", "gpu_name": "NVIDIA H100 80GB HBM3"}
            for r in store.read_rows(two_runs[0])]
    store.write_rows(theirs, rows)
    before = theirs.read_bytes()
    assert main(["run", str(write_suite(tmp_path)), "--resume", str(theirs)]) == 2
    said = one_line(capsys.readouterr().err)
    assert "another machine (gpu-box, NVIDIA H100 80GB HBM3)" in said and "--out" in said
    assert theirs.read_bytes() == before


# --- 4. two runs at once ---

@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> list[Path]:
    """Two complete sweeps started together into one folder."""
    folder = tmp_path_factory.mktemp("together")
    suite = write_suite(folder)
    out = folder / "results"
    harnesses = [start("run", str(suite), "--out", str(out)) for _ in range(2)]
    try:
        results = [h.communicate(timeout=300) for h in harnesses]
    finally:
        for harness in harnesses:
            _kill_group(harness)
    for harness, (_, stderr) in zip(harnesses, results):
        assert harness.returncode == 0, stderr
    return sorted(out.glob("*.parquet"))


def test_two_runs_at_once_write_two_files(two_runs):
    assert len(two_runs) == 2
    for path in two_runs:
        rows = checked_rows(path)
        assert len(rows) == 4 and len({r["run_id"] for r in rows}) == 1
    assert checked_rows(two_runs[0])[0]["run_id"] != checked_rows(two_runs[1])[0]["run_id"]


def test_runs_reserving_names_in_the_same_second_never_share_a_file(tmp_path, monkeypatch):
    monkeypatch.setattr(store.time, "strftime", lambda fmt, t=None: "20250101T000000Z")  # one second for all
    names: list[Path] = []
    barrier = threading.Barrier(8)

    def reserve():
        barrier.wait()
        names.append(store.reserve_results_path(tmp_path, "same"))
    threads = [threading.Thread(target=reserve) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(names)) == 8 and sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in names)
    assert all(store.read_rows(path) == [] for path in names)  # each a whole (empty) results file from the start


@pytest.mark.parametrize("option", ["--out", "--resume"])
def test_a_file_another_run_is_writing_is_refused(tmp_path, two_runs, capsys, option):
    target = tmp_path / "busy.parquet"
    shutil.copy(two_runs[0], target)
    lock = store.WriterLock(target)  # what a running facebench holds on its file
    assert lock.acquire()
    try:
        assert main(["run", str(write_suite(tmp_path)), option, str(target)]) == 2
    finally:
        lock.release()
    assert "another facebench run is writing this file" in one_line(capsys.readouterr().err)
    assert store.read_rows(target) == store.read_rows(two_runs[0])  # untouched


# --- 5. the results folder: read-only at start, read-only or full during a run ---

@pytest.fixture
def tmpfs(tmp_path):
    """A small tmpfs (root can mount one; elsewhere these tests skip)."""
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        folder = tmp_path / f"tmpfs{len(mounted)}"
        folder.mkdir()
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                                capture_output=True, text=True)
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({result.stderr.strip() or 'mount failed'})")
        mounted.append(folder)
        return folder
    yield mount
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def remount_read_only(folder: Path) -> None:
    for _ in range(100):  # busy while a write is open: retry
        if subprocess.run(["mount", "-o", "remount,ro", str(folder)], capture_output=True).returncode == 0:
            return
        time.sleep(0.02)
    raise AssertionError(f"could not remount {folder} read-only")


def test_read_only_results_folder_at_start_is_one_line_exit_2(tmp_path, tmpfs, two_runs, capsys):
    folder = tmpfs("1m")
    shutil.copy(two_runs[0], folder / "old.parquet")
    remount_read_only(folder)
    FAULTS["read-only results folder at start"] += 3
    suite = str(write_suite(tmp_path))
    for args, message in ((["--out", str(folder)], "output folder is not writable"),
                          (["--out", str(folder / "new.parquet")], "output folder is not writable"),
                          (["--resume", str(folder / "old.parquet")], "cannot write results (Read-only file system)")):
        assert main(["run", suite, *args]) == 2
        assert message in one_line(capsys.readouterr().err)
    assert sorted(p.name for p in folder.iterdir()) == ["old.parquet"]


@pytest.mark.parametrize("fault", ["read-only", "full"])
def test_results_folder_failing_mid_run_keeps_the_last_good_file(tmp_path, tmpfs, fault):
    folder = tmpfs("300k")
    harness = start("run", str(write_suite(tmp_path)), "--out", str(folder))
    try:
        wait_for(lambda: rows_on_disk(folder) >= 1, harness)
        if fault == "read-only":
            remount_read_only(folder)
        else:
            _fill(folder)
        saved = rows_on_disk(folder)
        FAULTS[f"results folder {fault} mid-run"] += 1
        stdout, stderr = harness.communicate(timeout=120)
    finally:
        _kill_group(harness)
    path = results_file(folder)
    rows = checked_rows(path)
    assert len(rows) == saved >= 1 and all(r["status"] == "ok" for r in rows)
    assert harness.returncode == 1, stderr
    reason = "Read-only file system" if fault == "read-only" else "No space left on device"
    assert f"{4 - saved} measured points could not be saved" in one_line(stderr) and reason in stderr
    said = " ".join(stdout.split())
    assert f"{saved} points saved in {path}" in said and f"--resume {path}" in said
    assert not list(folder.glob(".*.tmp")), "temporary files left on the full disk"


def _fill(folder: Path) -> None:
    with open(folder / "ballast", "wb", buffering=0) as handle:
        try:
            while True:
                handle.write(b"\0" * 4096)
        except OSError:
            pass  # full


# --- 6. hostile and broken inputs: one line, exit status 2 ---

def _tiny_model(shape=("N", 3, 112, 112), elem=TensorProto.FLOAT, opset=17) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("input.1", elem, list(shape))
    y = helper.make_tensor_value_info("out", elem, ["N", 3])
    nodes = [helper.make_node("GlobalAveragePool", ["input.1"], ["pooled"]), helper.make_node("Flatten", ["pooled"], ["out"])]
    return helper.make_model(helper.make_graph(nodes, "tiny", [x], [y]), opset_imports=[helper.make_opsetid("", opset)])


def _with_external_data(folder: Path, location: str) -> Path:
    """arcface_mbf with its weights in a side file, then pointed at `location`."""
    model = onnx.load(zoo.build_cached("arcface_mbf").path)
    folder.mkdir(exist_ok=True)
    path = folder / "ext.onnx"
    onnx.save(model, str(path), save_as_external_data=True, location="weights.bin", size_threshold=0)
    model = onnx.load(str(path), load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    onnx.save(model, str(path))
    return path


def _hostile(kind: str, tmp: Path) -> Path:
    path = tmp / f"{kind}.onnx"
    whole = Path(zoo.build_cached("scrfd_500m", 160).path).read_bytes()
    if kind == "zero-byte":
        path.touch()
    elif kind == "truncated":
        path.write_bytes(whole[: len(whole) // 3])
    elif kind == "png":
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 200)
    elif kind == "text":
        path.write_text("this is not a model\n")
    elif kind == "folder":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "dangling-symlink":
        path.symlink_to(tmp / "nowhere.onnx")
    elif kind == "symlink-loop":
        path.symlink_to(tmp / "loop.onnx")
        (tmp / "loop.onnx").symlink_to(path)
    elif kind == "huge":
        with open(path, "wb") as handle:  # sparse: no disk used
            handle.truncate(5 * 2**30)
            handle.seek(0)
            handle.write(whole[:64])
    elif kind == "no-nodes":
        model = _tiny_model()
        del model.graph.node[:]
        onnx.save(model, str(path))
    elif kind == "opset-3":
        onnx.save(_tiny_model(opset=3), str(path))
    elif kind == "rank-3":
        onnx.save(_tiny_model(shape=("N", 3, 112)), str(path))
    elif kind == "int64-input":
        onnx.save(_tiny_model(elem=TensorProto.INT64), str(path))
    elif kind == "absurd-dims":
        onnx.save(_tiny_model(shape=("N", 3, 10**6, 112)), str(path))
    elif kind == "external-data-escapes":
        return _with_external_data(tmp / "m", "../../../etc/passwd")
    elif kind == "external-data-absolute":
        return _with_external_data(tmp / "m", "/etc/passwd")
    elif kind == "external-data-symlink-out":
        path = _with_external_data(tmp / "m", "weights.bin")
        outside = tmp / "elsewhere.bin"
        (tmp / "m" / "weights.bin").rename(outside)
        (tmp / "m" / "weights.bin").symlink_to(outside)
    elif kind == "external-data-missing":
        path = _with_external_data(tmp / "m", "weights.bin")
        (tmp / "m" / "weights.bin").unlink()
    return path


HOSTILE_MODELS = {
    "missing": "model file not found", "zero-byte": "empty file (0 bytes)", "truncated": "truncated or damaged",
    "png": "not an ONNX file", "text": "not an ONNX file", "folder": "not a regular file",
    "fifo": "not a regular file", "dangling-symlink": "model file not found",
    "symlink-loop": "cannot reach the file (Too many levels of symbolic links)",
    "huge": "larger than any supported model", "no-nodes": "graph has no nodes", "opset-3": "opset 3 outside",
    "rank-3": "has rank 3", "int64-input": "not a float image tensor", "absurd-dims": "input dimension 1000000 is absurd",
    "external-data-escapes": "points outside the model's folder",
    "external-data-absolute": "points outside the model's folder",
    "external-data-symlink-out": "points outside the model's folder",
    "external-data-missing": "external data file 'weights.bin' is missing",
}


@pytest.mark.parametrize("kind", HOSTILE_MODELS)
def test_hostile_model_file_is_one_line_exit_2_before_any_runtime(tmp_path, capsys, kind):
    path = _hostile(kind, tmp_path)
    out = tmp_path / "out"
    FAULTS["hostile model file"] += 1
    assert main(["run", str(write_suite(tmp_path)), "--models", str(path), "--out", str(out)]) == 2
    line = one_line(capsys.readouterr().err)
    assert str(path) in line and HOSTILE_MODELS[kind] in line
    assert not out.exists()  # refused before a results file was made


def test_model_file_may_be_a_symlink_out_of_the_tree(tmp_path, capsys):
    link = tmp_path / "linked.onnx"
    link.symlink_to(zoo.build_cached("arcface_mbf").path)  # the file itself lives in the cache
    validate_model_file(link)
    assert main(["models", "inspect", str(link)]) == 0
    assert "embedder" in capsys.readouterr().out


def test_unreadable_paths_are_one_line_exit_2(tmp_path, two_runs):
    """Runs without the privilege to bypass file permissions (as root: the capabilities dropped)."""
    prefix = _unprivileged()
    locked, closed = tmp_path / "locked", tmp_path / "closed.onnx"
    locked.mkdir()
    shutil.copy(zoo.build_cached("arcface_mbf").path, locked / "m.onnx")
    shutil.copy(two_runs[0], locked / "r.parquet")
    shutil.copy(zoo.build_cached("arcface_mbf").path, closed)
    suite = write_suite(tmp_path)
    unreadable_suite = tmp_path / "unreadable.toml"
    shutil.copy(suite, unreadable_suite)
    for path in (closed, unreadable_suite):
        path.chmod(0)
    locked.chmod(0)
    tmp_path.chmod(0o755)
    cases = [
        (["run", str(suite), "--models", str(locked / "m.onnx"), "--out", str(tmp_path)], "cannot reach the file (Permission denied)"),
        (["run", str(suite), "--models", str(closed), "--out", str(tmp_path)], "cannot read the file (permission denied)"),
        (["run", str(unreadable_suite)], "cannot read the suite"),
        (["show", str(locked / "r.parquet")], "not a readable Parquet file"),
        (["compare", str(locked / "r.parquet")], "cannot reach this path (Permission denied)"),
    ]
    try:
        for args, message in cases:
            result = subprocess.run([*prefix, sys.executable, "-m", "bench", *args], cwd=REPO,
                                    capture_output=True, text=True, timeout=120)
            FAULTS["unreadable path"] += 1
            assert result.returncode == 2, (args, result.stderr)
            assert message in one_line(result.stderr), args
    finally:
        locked.chmod(0o755)


def _unprivileged() -> list[str]:
    if os.geteuid() != 0:
        return []
    if not shutil.which("setpriv"):
        pytest.skip("running as root without setpriv: cannot drop the right to read any file")
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]


@pytest.mark.parametrize("content, message", [
    (b"", "no models"),
    (b"\xff\xfe\x00garbage", "cannot read the suite"),
    (b"runtimes = ['ort-cpu']\n[measure]\nwindw_s = 1.0\n[[models]]\nname = 'arcface_mbf'\n", "unknown key 'windw_s'"),
    (b"runtimes = ['ort-cpu']\n[[models]]\nname = 'arcface_mbf'\nsize = 3\n", "unknown key 'size'"),
    (b"runtimes = ['ort-cpu']\npoint_timeout_s = 'soon'\n[[models]]\nname = 'arcface_mbf'\n", "key 'point_timeout_s'"),
    (b"runtimes = 'ort-cpu'\n[[models]]\nname = 'arcface_mbf'\n", "key 'runtimes' must be a list"),
    (b"runtimes = ['ort-cpu']\n[checks]\nparity = 'no'\n[[models]]\nname = 'arcface_mbf'\n", "key 'parity'"),
])
def test_broken_suite_names_the_offending_key(tmp_path, capsys, content, message):
    suite = tmp_path / "broken.toml"
    suite.write_bytes(content)
    assert main(["run", str(suite), "--out", str(tmp_path / "out")]) == 2
    assert message in one_line(capsys.readouterr().err)


def test_suite_that_is_a_folder_is_one_line_exit_2(tmp_path, capsys):
    (tmp_path / "s.toml").mkdir()
    assert main(["run", str(tmp_path / "s.toml")]) == 2
    assert "cannot read the suite" in one_line(capsys.readouterr().err)


# --- 7. results integrity: show and compare verify every file ---

def _edited_copy(path: Path, folder: Path) -> Path:
    import pyarrow as pa

    table = pq.read_table(path)  # keeps the metadata, checksum included
    fps = table.column("fps").to_pylist()
    fps[0] *= 2  # someone "improves" a number by hand
    edited = folder / "edited.parquet"
    pq.write_table(table.set_column(table.column_names.index("fps"), "fps", pa.array(fps)), edited)
    return edited


def test_show_and_compare_say_when_a_file_was_edited(tmp_path, two_runs, capsys):
    edited = _edited_copy(two_runs[0], tmp_path)
    assert main(["show", str(two_runs[0])]) == 0
    assert "edited or damaged" not in capsys.readouterr().err
    assert main(["show", str(edited)]) == 0
    assert f"{edited}: rows do not match the recorded checksum" in " ".join(capsys.readouterr().err.split())
    assert main(["compare", str(two_runs[1]), str(edited)]) == 0
    captured = capsys.readouterr()
    assert f"{edited}: rows do not match the recorded checksum" in " ".join((captured.out + captured.err).split())


@pytest.mark.parametrize("damage, messages", [
    ("zero-byte", ["not a readable Parquet file"] * 2),
    ("truncated", ["not a readable Parquet file"] * 2),
    ("text", ["not a readable Parquet file"] * 2),
    ("plain-parquet", ["not a facebench results file"] * 2),
    ("folder", ["not a facebench results file", "folder holds no .parquet results files"]),
])
def test_damaged_results_file_is_one_line_exit_2(tmp_path, two_runs, capsys, damage, messages):
    path = tmp_path / "damaged.parquet"
    whole = two_runs[0].read_bytes()
    if damage == "zero-byte":
        path.touch()
    elif damage == "truncated":
        path.write_bytes(whole[: len(whole) // 2])
    elif damage == "text":
        path.write_text("fps,model\n1,x\n")
    elif damage == "plain-parquet":
        pq.write_table(pq.read_table(two_runs[0]).replace_schema_metadata({}), path)
    else:
        path.mkdir()
    FAULTS["damaged results file"] += 1
    for command, message in zip(("show", "compare"), messages):
        assert main([command, str(path)]) == 2
        assert message in one_line(capsys.readouterr().err), command
