"""Machine and package fingerprint carried by every result row."""
from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import socket
import subprocess
import sys
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


# The instruction-set features that decide CPU inference speed and INT8 accuracy
# (/proc/cpuinfo flag names; Arm's "Features" line names the last group).
ISA_FEATURES = (
    "avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16",
    "amx_tile", "amx_int8", "amx_bf16", "asimd", "asimddp", "sve", "sve2", "i8mm", "bf16",
)
LOCK_RECORD = "facebench-lock.txt"  # written into the venv by `make`: "<lock file> <sha256>"


@lru_cache(maxsize=1)
def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo ({} where there is none)."""
    try:
        return parse_cpuinfo(Path("/proc/cpuinfo").read_text())
    except OSError:
        return {}


def parse_cpuinfo(text: str) -> dict[str, str]:
    """The first processor block of a /proc/cpuinfo text, keys lower-cased."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip().lower(), value.strip())
    return fields


def cpu_model() -> str:
    info = _cpuinfo()
    return info.get("model name") or info.get("hardware") or platform.processor() or platform.machine()


def cpu_features(info: dict[str, str] | None = None) -> tuple[str, ...]:
    """The ISA_FEATURES this CPU (or a parse_cpuinfo result) has, in ISA_FEATURES order."""
    info = _cpuinfo() if info is None else info
    flags = set((info.get("flags") or info.get("features") or "").split())
    return tuple(f for f in ISA_FEATURES if f in flags)


def cpu_identity(info: dict[str, str] | None = None) -> dict[str, object]:
    """Vendor, family / model / stepping, ISA, clocks, sockets and whether this is a VM."""
    info = _cpuinfo() if info is None else info
    return {
        "cpu_vendor": info.get("vendor_id") or info.get("cpu implementer"),
        "cpu_family": _int(info.get("cpu family") or info.get("cpu architecture")),
        "cpu_model_number": _int(info.get("model") or info.get("cpu part")),
        "cpu_stepping": _int(info.get("stepping") or info.get("cpu revision")),
        "cpu_isa": " ".join(cpu_features(info)),
        # A VM has no cpufreq; its "cpu MHz" is then the nominal (TSC) clock.
        "cpu_base_mhz": _sysfs_mhz("base_frequency") or _float(info.get("cpu mhz")),
        "cpu_max_mhz": _sysfs_mhz("cpuinfo_max_freq"),
        "cpu_sockets": _sockets(),
        "cpu_virtualized": "hypervisor" in (info.get("flags") or "").split() or _dmi_says_vm(),
    }


def _int(text: str | None) -> int | None:
    try:
        return int(text, 0) if text else None
    except ValueError:
        return None


def _float(text: str | None) -> float | None:
    try:
        return round(float(text), 1) if text else None
    except ValueError:
        return None


def _sysfs_mhz(name: str) -> float | None:
    try:
        return int(Path(f"/sys/devices/system/cpu/cpu0/cpufreq/{name}").read_text()) / 1000.0
    except (OSError, ValueError):
        return None


def _sockets() -> int | None:
    ids = set()
    for path in Path("/sys/devices/system/cpu").glob("cpu[0-9]*/topology/physical_package_id"):
        try:
            ids.add(path.read_text().strip())
        except OSError:
            continue
    return len(ids) or None


def _dmi_says_vm() -> bool:
    """Arm VMs have no hypervisor flag; the DMI product name usually tells."""
    try:
        product = Path("/sys/class/dmi/id/product_name").read_text().lower()
    except OSError:
        return False
    return any(word in product for word in ("kvm", "virtual", "vmware", "qemu", "hvm", "bochs", "cloud"))


def lock_record() -> tuple[str | None, str | None]:
    """(lock file, its sha256) the environment was installed from, or (None, None) outside `make`."""
    try:
        name, digest = (Path(sys.prefix) / LOCK_RECORD).read_text().split()[:2]
    except (OSError, ValueError):
        return None, None
    return name, digest


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
        **cpu_identity(),
    }
    machine["lock_file"], machine["lock_sha256"] = lock_record()
    # The ISA is part of the identity: two "AMD EPYC, 2 cores" VMs on different hosts are different machines.
    key = json.dumps([machine[k] for k in ("host", "cpu_model", "cpu_threads", "gpu_name", "cpu_isa")])
    machine["machine_id"] = hashlib.sha256(key.encode()).hexdigest()[:16]
    machine["harness_version"] = bench.__version__
    machine["git_commit"] = git_commit()
    machine["packages_json"] = json.dumps(package_versions(), sort_keys=True)
    return machine
