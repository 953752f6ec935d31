"""Engine and timing-cache folders for the TensorRT runtimes, and optimisation-profile shapes.

A TensorRT engine or timing cache is valid only for one model, precision, profile,
GPU, and TensorRT (and, for the ORT EP, ONNX Runtime) version (runtimes.md 2.2, 3.5).
Every such combination gets its own folder named by a digest of all of them, so a
changed version or GPU never picks up a stale cache.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.fileio import write_atomically
from bench.models.zoo import cache_dir as default_cache_dir
from bench.runtimes.options import RuntimeOptions, option

DEFAULT_MAX_BATCH = 64  # the suite's batch ceiling (bench.domain.MAX_BATCH)
PROFILE_MODES = ("range", "per-batch")
COLD_START_MODES = ("both", "warm")


@dataclass(frozen=True)
class TrtBuildOptions(RuntimeOptions):
    """What both TensorRT runtimes (trt, ort-trt) build an engine with."""

    device_id: int = option(0, int, minimum=0)
    profile: str = option("range", str, choices=PROFILE_MODES)
    profile_max_batch: int = option(DEFAULT_MAX_BATCH, int, minimum=1)
    builder_optimization_level: int = option(3, int, minimum=0, maximum=5)
    workspace_mb: int | None = option(None, int, minimum=1)  # None: TensorRT's default pool
    cold_start: str = option("both", str, choices=COLD_START_MODES)
    cuda_graph: bool = option(False, bool)


KEY_FILE = "key.json"


@dataclass(frozen=True)
class ProfileShapes:
    """One optimisation profile for the image input: TensorRT tunes kernels for `opt`."""

    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    @property
    def label(self) -> str:
        """Batch bounds, e.g. '1-8-64'."""
        return f"{self.min[0]}-{self.opt[0]}-{self.max[0]}"

    def contains(self, shape: tuple[int, ...]) -> bool:
        return len(shape) == len(self.min) and all(lo <= d <= hi for lo, d, hi in zip(self.min, shape, self.max))


def profile_shapes(input_shape: tuple[int, ...], mode: str = "range", max_batch: int = DEFAULT_MAX_BATCH) -> ProfileShapes:
    """min 1 / opt = this batch / max = max_batch ("range"), or exactly this batch ("per-batch").

    A batch above max_batch (allow_large_batch suites) raises the max to that batch.
    """
    shape = tuple(int(d) for d in input_shape)
    if mode not in PROFILE_MODES:
        raise ValueError(f"profile '{mode}': use one of {', '.join(PROFILE_MODES)}")
    if int(max_batch) < 1:
        raise ValueError(f"profile_max_batch {max_batch}: must be at least 1")
    if mode == "per-batch":
        return ProfileShapes(shape, shape, shape)
    batch = shape[0]
    top = max(int(max_batch), batch)
    return ProfileShapes((1, *shape[1:]), shape, (top, *shape[1:]))


@functools.lru_cache(maxsize=32)
def declared_input_dims(model_path: str, input_name: str) -> tuple[int, ...] | None:
    """The input's dimensions as the ONNX declares them, -1 where symbolic; None if unreadable."""
    try:
        import onnx

        graph = onnx.load(model_path, load_external_data=False).graph
    except Exception:  # not an ONNX file here (a test's stand-in): keep the requested profile
        return None
    for value in graph.input:
        if value.name == input_name:
            return tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1
                         for d in value.type.tensor_type.shape.dim)
    return None


def fit_profile(profile: ProfileShapes, declared: tuple[int, ...] | None) -> ProfileShapes | None:
    """The profile TensorRT accepts for an input the model declares as `declared`.

    TensorRT rejects a profile whose range covers a dimension the network fixes (a batch-1
    export at min 1 / max 64), so fixed dimensions are pinned to their value; a fully static
    input needs no profile at all (None).
    """
    if declared is None or len(declared) != len(profile.opt):
        return profile
    if all(d > 0 for d in declared):
        return None

    def pin(shape: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(fixed if fixed > 0 else d for fixed, d in zip(declared, shape))

    return ProfileShapes(pin(profile.min), pin(profile.opt), pin(profile.max))


def request_profile(request, options: TrtBuildOptions | None = None) -> ProfileShapes | None:
    """A LoadRequest's profile (its runtime's `profile`, `profile_max_batch`), fitted to the model's input."""
    options = options if options is not None else TrtBuildOptions()
    shapes = profile_shapes(request.input_shape, options.profile, options.profile_max_batch)
    return fit_profile(shapes, declared_input_dims(str(request.model_path), request.input_name))


def key_profile(profile: ProfileShapes | None, request) -> ProfileShapes:
    """The profile a cache key records: a static input's engine is built for exactly its shape."""
    shape = tuple(int(d) for d in request.input_shape)
    return profile if profile is not None else ProfileShapes(shape, shape, shape)


def dims_text(shape: tuple[int, ...]) -> str:
    return "x".join(str(int(d)) for d in shape)


def ort_profile_options(input_name: str, profile: ProfileShapes) -> dict[str, str]:
    """The TensorRT EP's explicit profile options ("name:1x3x112x112"); every dynamic input listed."""
    return {
        "trt_profile_min_shapes": f"{input_name}:{dims_text(profile.min)}",
        "trt_profile_opt_shapes": f"{input_name}:{dims_text(profile.opt)}",
        "trt_profile_max_shapes": f"{input_name}:{dims_text(profile.max)}",
    }


@dataclass(frozen=True)
class CacheKey:
    """Everything an engine / timing cache depends on."""

    runtime: str  # "ort-trt" or "trt"
    model_sha256: str
    precision: str
    profile: ProfileShapes
    gpu: str  # device name + compute capability
    trt_version: str
    ort_version: str | None = None
    cuda_runtime: str | None = None
    build: tuple[tuple[str, str], ...] = field(default_factory=tuple)  # build options that change the engine

    def fields(self) -> dict[str, Any]:
        data = asdict(self)
        data["profile"] = {"min": list(self.profile.min), "opt": list(self.profile.opt), "max": list(self.profile.max)}
        data["build"] = dict(self.build)
        return data

    def digest(self) -> str:
        text = json.dumps(self.fields(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def folder_name(self) -> str:
        return f"{self.model_sha256[:12]}-{self.precision}-b{self.profile.label}-{self.digest()}"


def build_options(options: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """Canonical (name, value) pairs for a key; None values are left out."""
    return tuple(sorted((k, str(v)) for k, v in options.items() if v is not None))


def cache_root(cache_dir: str | os.PathLike | None) -> Path:
    if cache_dir is None:
        cache_dir = default_cache_dir()
    return Path(cache_dir) / "gpu-engines"


def cache_folder(root: str | os.PathLike, key: CacheKey) -> Path:
    """The key's folder (created), with key.json saying what it holds."""
    folder = Path(root) / key.runtime / key.folder_name()
    folder.mkdir(parents=True, exist_ok=True)
    key_file = folder / KEY_FILE
    if not key_file.exists():
        write_atomically(key_file, json.dumps(key.fields(), indent=2, sort_keys=True).encode())
    return folder


def cached_files(folder: str | os.PathLike) -> list[Path]:
    """Cache payload in a folder (everything but key.json and temporaries)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name != KEY_FILE and not p.name.startswith("."))


def replace_payload(folder: str | os.PathLike, source: str | os.PathLike) -> list[str]:
    """Move every cache file from `source` into `folder`, replacing files of the same name."""
    folder, source = Path(folder), Path(source)
    moved = []
    for item in cached_files(source):
        os.replace(item, folder / item.name)
        moved.append(item.name)
    return moved
