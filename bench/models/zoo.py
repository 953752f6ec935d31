"""The model zoo: built-in replicas (built once, cached) and real files by path.

Cache layout: $FACEBENCH_CACHE (default ~/.cache/facebench)/models/<key>.onnx with a
<key>.json sidecar holding the sha256 and inspection, keyed by builder version and
configuration. A missing or corrupt file is rebuilt.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import onnx

from bench.errors import UserError
from bench.fileio import sha256_file, writable_folder, write_atomically
from bench.models.arcface import build_arcface
from bench.models.info import ModelInfo, inspect_model
from bench.models.scrfd import SCRFD_EXPORTS, build_scrfd

BUILDER_VERSION = 1
DEFAULT_SEED = 0


@dataclass(frozen=True)
class Builtin:
    name: str
    family: str
    summary: str
    default_size: int | None  # detectors take an input size; embedders are 112x112

    def build(self, input_size: int | None, seed: int, export: str = "batched") -> onnx.ModelProto:
        return _BUILDERS[self.name](input_size, seed, export)


def _scrfd(variant: str) -> Callable[[int | None, int, str], onnx.ModelProto]:
    def build(size, seed, export):
        return build_scrfd(variant, size, seed=seed, export=export)
    return build


def _arcface(variant: str) -> Callable[[int | None, int, str], onnx.ModelProto]:
    def build(size, seed, export):
        return build_arcface(variant, seed=seed)
    return build


BUILTINS = {b.name: b for b in (
    Builtin("scrfd_500m", "detector", "SCRFD-500M-KPS (buffalo_s det_500m), MobileNetV1 backbone", 640),
    Builtin("scrfd_2.5g", "detector", "SCRFD-2.5G-KPS (buffalo_m det_2.5g), ResNetV1e backbone", 640),
    Builtin("scrfd_10g", "detector", "SCRFD-10G-KPS (buffalo_l det_10g), ResNetV1e backbone", 640),
    Builtin("scrfd_34g", "detector", "SCRFD-34G (no keypoints), Bottleneck ResNetV1e, GN head", 640),
    Builtin("arcface_r50", "embedder", "ArcFace IResNet-50 (buffalo_l w600k_r50)", None),
    Builtin("arcface_mbf", "embedder", "ArcFace MobileFaceNet (buffalo_s w600k_mbf)", None),
)}
_BUILDERS = {
    "scrfd_500m": _scrfd("500m"), "scrfd_2.5g": _scrfd("2.5g"), "scrfd_10g": _scrfd("10g"),
    "scrfd_34g": _scrfd("34g"), "arcface_r50": _arcface("r50"), "arcface_mbf": _arcface("mbf"),
}


def cache_dir() -> Path:
    """$FACEBENCH_CACHE (default ~/.cache/facebench), created; one line and exit 2 where it cannot be written."""
    root = os.environ.get("FACEBENCH_CACHE") or Path.home() / ".cache" / "facebench"
    return writable_folder(root, "cache folder", "set FACEBENCH_CACHE to a writable folder")


def _cache_key(builtin: Builtin, input_size: int | None, seed: int, export: str = "batched") -> str:
    size = f"-{input_size}" if builtin.family == "detector" else ""
    form = "" if export == "batched" else f"-{export}"
    return f"{builtin.name}{size}{form}-b{BUILDER_VERSION}-s{seed}"


def builtin(name: str) -> Builtin:
    if name not in BUILTINS:
        raise UserError(f"unknown model '{name}'; built-in models: {', '.join(BUILTINS)} (or pass a path to an .onnx file)")
    return BUILTINS[name]


def build_cached(name: str, input_size: int | None = None, seed: int = DEFAULT_SEED,
                 export: str = "batched") -> ModelInfo:
    """The replica's file and inspection, building it when missing or corrupt. `export` picks the
    form of a detector file (bench.models.scrfd.SCRFD_EXPORTS); embedders are built batched."""
    spec = builtin(name)
    if export not in SCRFD_EXPORTS or (export != "batched" and spec.family != "detector"):
        raise UserError(f"--export {export}: detectors take one of {', '.join(SCRFD_EXPORTS)}; embedders only batched")
    size = (input_size or spec.default_size) if spec.family == "detector" else None
    if size is not None and (size <= 0 or size % 32):
        raise UserError(f"model '{name}@{size}': detector input size must be a positive multiple of 32 (strides up to 32), e.g. 320 or 640")
    if input_size and spec.family == "embedder" and input_size != 112:
        raise UserError(f"model '{name}' is an embedder with a fixed 112x112 input; drop the input size")
    folder = cache_dir() / "models"
    key = _cache_key(spec, size, seed, export)
    path, sidecar = folder / f"{key}.onnx", folder / f"{key}.json"
    cached = _read_sidecar(sidecar, path)
    if cached is not None:
        return cached
    folder.mkdir(parents=True, exist_ok=True)
    write_atomically(path, spec.build(size, seed, export).SerializeToString())
    label = (f"{name}-{export}" if export != "batched" else name) + (f"@{size}" if size else "")
    info = inspect_model(path, name=label, input_size=size, source="builtin")
    write_atomically(sidecar, json.dumps(info.to_dict()).encode())
    return info


def _read_sidecar(sidecar: Path, path: Path) -> ModelInfo | None:
    if not (sidecar.is_file() and path.is_file()):
        return None
    try:
        data = json.loads(sidecar.read_text())
        info = ModelInfo(**data)
    except (ValueError, TypeError):
        return None
    if sha256_file(path) != info.sha256:  # corrupt or replaced: rebuild
        return None
    info.input_hw = tuple(info.input_hw)
    info.outputs = [tuple(o) for o in info.outputs]
    info.path = str(path)
    return info


def resolve(ref) -> ModelInfo:
    """A suite ModelRef -> the file to benchmark and what it is."""
    if ref.path:
        return inspect_model(ref.path, name=ref.name, input_size=ref.input_size, source="file")
    return build_cached(ref.name, ref.input_size)
