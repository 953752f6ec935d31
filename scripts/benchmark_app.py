"""OpenVINO's benchmark_app (shipped in the openvino wheel), run on one file and shape: its frames/s.

Shared by scripts/compare_anchors.py (THROUGHPUT hint) and scripts/bench_concurrency.py
(explicit streams and requests).
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

# What benchmark_app computes in by default: no -infer_precision (bf16 on CPUs with AMX/AVX512_BF16).
RUNTIME_DEFAULT = None


def benchmark_app_fps(path: str, input_name: str, shape: list[int], seconds: float, *mode: str,
                      infer_precision: str | None = "f32") -> float:
    """`mode`: benchmark_app's performance options, e.g. ("-hint", "throughput") or
    ("-hint", "none", "-nstreams", "2", "-nireq", "2"). FP32 inference, as facebench's fp32 points,
    unless `infer_precision` says otherwise (RUNTIME_DEFAULT: the flag left out)."""
    return benchmark_app_run(path, input_name, shape, seconds, *mode, infer_precision=infer_precision)[0]


def benchmark_app_run(path: str, input_name: str, shape: list[int], seconds: float, *mode: str,
                      infer_precision: str | None = "f32") -> tuple[float, str]:
    """(frames/s, the INFERENCE_PRECISION_HINT benchmark_app's compiled model reports)."""
    beside = Path(sys.executable).parent / "benchmark_app"  # the venv's, when it is not on PATH
    tool = shutil.which("benchmark_app") or (str(beside) if beside.exists() else None) \
        or sys.exit("benchmark_app not found (it comes with the openvino wheel)")
    shape_text = f"{input_name}[{','.join(map(str, shape))}]"
    precision = ["-infer_precision", infer_precision] if infer_precision else []
    out = subprocess.run([tool, "-m", path, "-d", "CPU", "-shape", shape_text, *mode, "-t", str(max(1, round(seconds))),
                          *precision], capture_output=True, text=True, check=True).stdout
    # benchmark_app's throughput counts frames (requests x batch).
    fps = float(re.search(r"Throughput:\s+([\d.]+)\s+FPS", out).group(1))
    ran = re.search(r"INFERENCE_PRECISION_HINT:\s*(?:<Type: ')?(\w+)", out)  # "<Type: 'bfloat16'>" or "bf16"
    return fps, ran.group(1) if ran else "unknown"
