"""Machine and package fingerprint carried by every result row."""
from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import socket
import subprocess
from functools import lru_cache
from pathlib import Path

import psutil

import bench

# Distributions whose versions explain a number; missing ones are simply left out.
TRACKED_PACKAGES = (
    "numpy", "onnx", "onnxruntime", "onnxruntime-gpu", "openvino", "tensorrt",
    "cuda-python", "cuda-bindings", "nvidia-ml-py", "onnxconverter-common", "pandas", "pyarrow",
)


def package_versions() -> dict[str, str]:
    versions = {}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@lru_cache(maxsize=1)
def nvidia_gpu() -> dict[str, str] | None:
    """Name, driver and CUDA version from nvidia-smi; None without a usable NVIDIA GPU."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,uuid", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip().splitlines()
    except (OSError, subprocess.SubprocessError):
        return None
    if not out:
        return None
    name, driver, uuid = (part.strip() for part in out[0].split(",")[:3])
    return {"gpu_name": name, "gpu_driver": driver, "gpu_uuid": uuid, "cuda_version": _cuda_version()}


def _cuda_version() -> str | None:
    try:
        text = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    marker = "CUDA Version:"
    if marker in text:
        return text.split(marker, 1)[1].split()[0]
    return None


@lru_cache(maxsize=1)
def git_commit() -> str | None:
    repo = Path(__file__).resolve().parents[1]
    try:
        return subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short=12", "HEAD"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


@lru_cache(maxsize=1)
def fingerprint() -> dict[str, object]:
    """Everything a row needs to be compared on another machine without the run that made it."""
    gpu = nvidia_gpu() or {}
    machine = {
        "host": socket.gethostname(),
        "cpu_model": cpu_model(),
        "cpu_cores": psutil.cpu_count(logical=False) or os.cpu_count(),
        "cpu_threads": psutil.cpu_count(logical=True),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python_version": platform.python_version(),
        "gpu_name": gpu.get("gpu_name"),
        "gpu_driver": gpu.get("gpu_driver"),
        "cuda_version": gpu.get("cuda_version"),
    }
    key = json.dumps([machine[k] for k in ("host", "cpu_model", "cpu_threads", "gpu_name")])
    machine["machine_id"] = hashlib.sha256(key.encode()).hexdigest()[:16]
    machine["harness_version"] = bench.__version__
    machine["git_commit"] = git_commit()
    machine["packages_json"] = json.dumps(package_versions(), sort_keys=True)
    return machine
