"""The file a runtime consumes for a precision and an input format, built and cached on demand:
precision artifacts (FP16, INT8 in the recipe for the runtime's device, OpenVINO IR), then the
input format's graph on top (frames normalised inside the graph)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from bench.domain import InputFormat
from bench.models import precision as artifacts
from bench.models.info import ModelInfo
from bench.models.input_artifact import make_input_artifact
from bench.models.precision import host_int8_recipe


def build_artifact(runtime, source: str, precision: str, cache: Path, calibration_frames=None,
                   with_input: Callable[[str], str] = lambda path: path) -> str:
    """`source` as the file `runtime` consumes at `precision` (INT8 in the recipe for its device),
    taking frames as `with_input` makes it (precision artifacts first, calibrated on float frames)."""
    artifact = runtime.artifact_for(precision)
    if artifact == "fp32":
        return with_input(source)
    if artifact == "ir":
        return str(artifacts.make_openvino_ir(with_input(source), cache))
    recipe = int8_recipe(runtime) if artifact == "int8" else None
    return with_input(str(artifacts.make_artifact(source, artifact, cache, calibration_frames=calibration_frames,
                                                  int8_recipe=recipe)))


def with_input_format(path: str, fmt: InputFormat, info: ModelInfo, cache_dir: Path) -> str:
    """`path` taking `fmt` frames, normalised inside the graph as the model's inspection says."""
    return str(make_input_artifact(path, fmt, info.mean, info.std, cache_dir / "artifacts"))


def int8_recipe(runtime):
    """The INT8 recipe for this runtime's device on this machine (TensorRT and CPUs with VNNI: symmetric)."""
    return host_int8_recipe(runtime.device)
