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


def benchmark_app_fps(path: str, input_name: str, shape: list[int], seconds: float, *mode: str) -> float:
    """`mode`: benchmark_app's performance options, e.g. ("-hint", "throughput") or
    ("-hint", "none", "-nstreams", "2", "-nireq", "2"). FP32 inference, as facebench's fp32 points."""
    beside = Path(sys.executable).parent / "benchmark_app"  # the venv's, when it is not on PATH
    tool = shutil.which("benchmark_app") or (str(beside) if beside.exists() else None) \
        or sys.exit("benchmark_app not found (it comes with the openvino wheel)")
    shape_text = f"{input_name}[{','.join(map(str, shape))}]"
    out = subprocess.run([tool, "-m", path, "-d", "CPU", "-shape", shape_text, *mode, "-t", str(max(1, round(seconds))),
                          "-infer_precision", "f32"], capture_output=True, text=True, check=True).stdout
    # benchmark_app's throughput counts frames (requests x batch).
    return float(re.search(r"Throughput:\s+([\d.]+)\s+FPS", out).group(1))
