"""The GPU kit's CPU side: its step limits, its plan, its suite (docs/gpu-kit.md)."""
from __future__ import annotations

import re
import subprocess

from bench.suite import load_suite
from tests.conftest import REPO

KIT = REPO / "scripts" / "gpu_kit"


def run_steps(tmp_path, script: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    summary = tmp_path / "summary.txt"
    result = subprocess.run(["bash", "-c", f"source {KIT / 'steps.sh'}; {script}"], cwd=REPO, capture_output=True,
                            text=True, env={"PATH": "/usr/bin:/bin", "SUMMARY": str(summary), "STEP_LOGS": str(tmp_path)},
                            timeout=60)
    return result, summary.read_text().splitlines()


def test_a_step_over_its_limit_is_stopped_and_named_and_the_next_one_runs(tmp_path):
    result, lines = run_steps(tmp_path, "step slow 1 sleep 30; step broken 5 false; step fine 5 echo hello")
    assert result.returncode == 0
    verdicts = {line.split()[0]: " ".join(line.split()[1:-2]) for line in lines}
    assert verdicts == {"slow": "TIMED OUT", "broken": "failed (exit 1)", "fine": "ok"}
    assert int(re.search(r"(\d+)s ", lines[0]).group(1)) < 5  # stopped at its limit, not after 30 s
    assert (tmp_path / "fine.log").read_text() == "hello\n"


def test_the_step_limits_fit_twelve_minutes_with_the_machine_start():
    limits = [int(n) for n in re.findall(r"^\s*step \w+ (\d+) ", (KIT / "run.sh").read_text(), re.M)]
    gpu_run = limits[len(limits) // 2:]  # the second branch: the real run (the first is the dry run)
    assert len(gpu_run) == 5 and sum(gpu_run) <= 12 * 60 - 90


def test_prepare_plans_the_locked_versions():
    result = subprocess.run(["bash", str(KIT / "prepare.sh"), "--dry-run"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    lock = (REPO / "locks" / "gpu.txt").read_text()
    version = re.search(r"^onnxruntime-gpu==(\S+)", lock, re.M).group(1)
    assert f"onnxruntime-gpu=={version}" in result.stdout and "onnxconverter-common==" in result.stdout


def test_the_kit_suite_loads_and_covers_what_matters():
    suite = load_suite(str(REPO / "suites" / "gpu-kit.toml"))
    assert suite.runtimes == ["ort-cuda"] and suite.precisions == ["fp32", "fp16"]
    assert suite.batches == [1, 8, 32, 64]
    assert {(m.name, m.input_size) for m in suite.models} == {("arcface_r50", None), ("scrfd_10g", 320)}
    assert [label for label, _ in suite.option_variants("ort-cuda")] == ["prefer_nhwc=false", "prefer_nhwc=true"]


def test_the_tuning_suite_sweeps_every_combination_through_the_typed_options():
    suite = load_suite(str(REPO / "suites" / "gpu-tuning.toml"))
    variants = dict(suite.option_variants("ort-cuda"))
    assert len(variants) == 8 and suite.batches == [16, 64] and suite.precisions == ["fp16"]
    assert variants["prefer_nhwc=true cudnn_conv_algo_search=HEURISTIC cudnn_conv_use_max_workspace=false"] == {
        "cuda_graph": False, "prefer_nhwc": True, "cudnn_conv_algo_search": "HEURISTIC",
        "cudnn_conv_use_max_workspace": False}
