"""facebench fleet on a real Ray cluster started here (a head without the facebench_machine slot
and two labelled worker nodes, all on 127.0.0.1) writing to the local S3 server of
test_remote_store; gather, compare and resume read the bucket back."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest

from bench import fleet_store, store
from bench.cli import main
from tests.conftest import REPO, tiny_suite
from tests.test_remote_store import BUCKET, s3  # noqa: F401  (the module's S3 server fixture)

ray = pytest.importorskip("ray", reason="ray is in the fleet extra (make test installs locks/fleet.txt)")
from ray.cluster_utils import Cluster  # noqa: E402

# Loopback only: without the second variable Ray rewrites 127.0.0.1 to the machine's interface address.
RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
MACHINES = ("box-a", "box-b")


def add_machine(cluster: Cluster, name: str):
    return cluster.add_node(num_cpus=1, resources={"facebench_machine": 1}, labels={"facebench-machine": name},
                            node_ip_address="127.0.0.1")


@pytest.fixture(scope="module")
def cluster(s3):  # noqa: F811  (s3 first: the nodes' workers inherit its credentials)
    with pytest.MonkeyPatch.context() as patch:
        for name, value in RAY_ENV.items():
            patch.setenv(name, value)
        patch.setenv("PYTHONPATH", str(REPO))  # the nodes' facebench runs are this checkout's
        head = Cluster(initialize_head=True, connect=False,
                       head_node_args={"num_cpus": 1, "node_ip_address": "127.0.0.1", "include_dashboard": False})
        nodes = {name: add_machine(head, name) for name in MACHINES}
        patch.setenv("RAY_ADDRESS", head.address)
        try:
            yield head, nodes
        finally:
            head.shutdown()


@pytest.fixture(scope="module")
def suite_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("fleet-suite") / "tiny.toml"
    path.write_text(tiny_suite("tiny", [1, 2]))
    return path


def fleet(*args, cwd, timeout=240) -> subprocess.CompletedProcess:
    """The CLI in a fresh process (a driver of its own, as a user's)."""
    return subprocess.run([sys.executable, "-m", "bench", "fleet", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONPATH": str(REPO)})


def start_driver(*args, cwd):
    """A fleet driver in the background; its stdout lines gather in the returned list."""
    driver = subprocess.Popen([sys.executable, "-m", "bench", "fleet", *args], cwd=cwd, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(driver.stdout), daemon=True).start()
    return driver, lines


def wait_for(lines: list[str], condition, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition("".join(lines)):
        assert time.monotonic() < deadline, "".join(lines)
        time.sleep(0.2)


def run_folder_of(result: subprocess.CompletedProcess) -> str:
    line = next(l for l in result.stdout.splitlines() if l.startswith("compare with: facebench gather "))
    return line.removeprefix("compare with: facebench gather ")


def test_fleet_writes_one_file_per_machine_gather_and_compare(cluster, s3, suite_file, tmp_path, capsys):  # noqa: F811
    result = fleet(str(suite_file), "--out", s3("fleet/"), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    folder = run_folder_of(result)
    files = store.find_result_files([folder])
    assert sorted(store.location_name(f) for f in files) == ["box-a.parquet", "box-b.parquet"]
    manifest = fleet_store.read_manifest(folder)
    assert {m.name: m.state for m in manifest.machines.values()} == {"box-a": "done", "box-b": "done"}
    assert all(m.points_done == 2 and m.first_point_s > 0 for m in manifest.machines.values())
    assert all(m.facts["runtimes"] and m.facts["harness_version"] for m in manifest.machines.values())
    # plain lines (stdout is a pipe): the machines' facts and every point
    assert "box-a: [2/2]" in result.stdout and "box-b: facebench" in result.stdout

    merged = tmp_path / "fleet.parquet"
    assert main(["gather", folder, "--out", str(merged)]) == 0
    out = capsys.readouterr().out
    assert "fastest: box-" in out and "box-a" in out and "box-b" in out
    rows = store.read_rows(merged)
    assert {r["machine"] for r in rows} == set(MACHINES) and len(rows) == 4
    assert main(["compare", folder]) == 0
    out = capsys.readouterr().out
    assert "box-a" in out and "box-b" in out


def test_two_fleet_runs_never_share_a_machine(cluster, s3, suite_file, tmp_path):  # noqa: F811
    drivers = [subprocess.Popen([sys.executable, "-m", "bench", "fleet", str(suite_file), "--out", s3(f"twice/{i}/")],
                                cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "PYTHONPATH": str(REPO)}) for i in range(2)]
    outputs = [d.communicate(timeout=300) for d in drivers]
    assert [d.returncode for d in drivers] == [0, 0], outputs
    spans = {}  # machine -> [(start, end) of each fleet's task there]
    for stdout, _ in outputs:
        folder = stdout.split("compare with: facebench gather ")[1].split()[0]
        for entry in fleet_store.read_manifest(folder).machines.values():
            spans.setdefault(entry.name, []).append((entry.started_utc, entry.finished_utc))
    for machine, (first, second) in spans.items():
        assert first[1] <= second[0] or second[1] <= first[0], f"{machine}: {first} overlaps {second}"


def test_lost_node_keeps_its_points_and_resume_finishes_on_a_replacement(cluster, s3, tmp_path):  # noqa: F811
    head, nodes = cluster
    suite = tmp_path / "longer.toml"
    suite.write_text(tiny_suite("longer", [1, 2, 4, 8]).replace("window_s = 0.1", "window_s = 0.4"))
    driver, lines = start_driver(str(suite), "--out", s3("lost/"), "--machines", "facebench-machine=box-b",
                                 "--full-ladder", cwd=tmp_path)  # every batch, whatever the frames/s
    wait_for(lines, lambda text: "box-b: [1/" in text)
    head.remove_node(nodes["box-b"])  # the machine dies mid-run
    driver.wait(timeout=120)
    stdout = "".join(lines)
    assert driver.returncode == 3, stdout + driver.stderr.read()
    folder = stdout.split("continue with: facebench fleet --resume ")[1].split()[0]
    [entry] = fleet_store.read_manifest(folder).machines.values()
    assert entry.state == "failed" and entry.reason
    kept = store.read_rows(fleet_store.machine_location(folder, "box-b"))
    assert 1 <= len(kept) < 4

    nodes["box-b"] = add_machine(head, "box-b")  # a replacement with the same name
    resumed = fleet("--resume", folder, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    rows = store.read_rows(fleet_store.machine_location(folder, "box-b"))
    assert sorted(r["batch"] for r in rows) == [1, 2, 4, 8] and {r["status"] for r in rows} == {"ok"}
    assert {r["timestamp_utc"] for r in kept} <= {r["timestamp_utc"] for r in rows}  # the finished ones kept
    assert fleet_store.read_manifest(folder).machines["box-b"].state == "done"


def test_ctrl_c_stops_every_machine_with_its_points_saved(cluster, s3, tmp_path):  # noqa: F811
    suite = tmp_path / "longer.toml"
    suite.write_text(tiny_suite("longer", [1, 2, 4, 8]).replace("window_s = 0.1", "window_s = 0.4"))
    driver, lines = start_driver(str(suite), "--out", s3("stopped/"), "--full-ladder", cwd=tmp_path)
    wait_for(lines, lambda text: "box-a: [1/" in text and "box-b: [1/" in text)
    driver.send_signal(signal.SIGINT)
    driver.wait(timeout=120)
    stdout = "".join(lines)
    assert driver.returncode == 130, stdout + driver.stderr.read()
    folder = stdout.split("continue with: facebench fleet --resume ")[1].split()[0]
    manifest = fleet_store.read_manifest(folder)
    assert {m.state for m in manifest.machines.values()} == {"stopped"}
    for name in MACHINES:
        assert 1 <= len(store.read_rows(fleet_store.machine_location(folder, name))) < 4


def test_a_machine_with_another_facebench_is_left_out_in_one_line(cluster, s3, suite_file, tmp_path):  # noqa: F811
    # The driver from a copy of the package that says another version: every machine differs from it.
    shutil.copytree(REPO / "bench", tmp_path / "other" / "bench")
    init = tmp_path / "other" / "bench" / "__init__.py"
    init.write_text(init.read_text().replace('__version__ = "', '__version__ = "9.9.9-other-'))
    result = subprocess.run([sys.executable, "-m", "bench", "fleet", str(suite_file), "--out", s3("mixed/")],
                            cwd=tmp_path, capture_output=True, text=True, timeout=240,
                            env={**os.environ, "PYTHONPATH": str(tmp_path / "other")})
    assert result.returncode == 2, result.stdout + result.stderr
    errors = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr
    left_out = [line for line in errors if ": left out (" in line]
    assert len(left_out) == 2 and all("9.9.9-other" in line and "--allow-mixed" in line for line in left_out)

    mixed = subprocess.run([sys.executable, "-m", "bench", "fleet", str(suite_file), "--out", s3("mixed/"),
                            "--allow-mixed", "--machines", "facebench-machine=box-a"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=240,
                           env={**os.environ, "PYTHONPATH": str(tmp_path / "other")})
    assert mixed.returncode == 0, mixed.stdout + mixed.stderr
    rows = store.read_rows(fleet_store.machine_location(run_folder_of(mixed), "box-a"))
    assert rows and all("9.9.9-other" in r["fleet_mixed"] for r in rows)  # the rows say they were mixed


def test_a_machine_with_nothing_to_run_is_reported_not_failed(cluster, s3, suite_file, tmp_path):  # noqa: F811
    result = fleet(str(suite_file), "--out", s3("nothing/"), "--runtimes", "ort-cuda", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr.count("nothing to run (none of ort-cuda is available there)") == 2


@pytest.mark.parametrize("args, says", [
    (["--address", "127.0.0.1:1"], "no Ray cluster answers there"),
    (["--machines", "facebench-machine=nowhere"], "none of the 2 machines carries"),
    (["--accelerator", "H100"], "none of the 2 machines carries"),
    (["--runtimes", "no-such-runtime"], "no-such-runtime"),
])
def test_bad_input_is_one_line_exit_2(cluster, s3, suite_file, tmp_path, args, says):  # noqa: F811
    result = fleet(str(suite_file), "--out", s3("bad/"), *args, cwd=tmp_path, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and says in result.stderr, result.stderr


def test_unwritable_bucket_is_one_line_exit_2(cluster, s3, suite_file, tmp_path):  # noqa: F811
    missing = s3("bad/").replace(f"s3://{BUCKET}/", "s3://no-such-bucket/")
    result = fleet(str(suite_file), "--out", missing, cwd=tmp_path, timeout=120)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "no-such-bucket" in result.stderr


def test_no_cluster_address_is_one_line(tmp_path, suite_file, s3, monkeypatch):  # noqa: F811
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    result = subprocess.run([sys.executable, "-m", "bench", "fleet", str(suite_file), "--out", s3("x/")], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120,
                            env={k: v for k, v in {**os.environ, "PYTHONPATH": str(REPO)}.items() if k != "RAY_ADDRESS"})
    assert result.returncode == 2 and "--address" in result.stderr and len(result.stderr.strip().splitlines()) == 1
