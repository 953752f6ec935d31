"""The vocabulary shared by suites, artifacts, measurement, checks and the store.

Precisions: the names a suite may list, their aliases, and the arithmetic each keeps.
Model families: detector (SCRFD) and embedder (ArcFace), each with InsightFace's
preprocessing. The batch rule: which batch sizes a suite may ask for. Frames: the one
generator of seeded random input frames (timed buffers and checks alike).

Input formats: how frames reach the model. `float-nchw` is the normalised FP32 tensor the
ONNX file takes; the uint8 formats are frames as cameras and decoders deliver them, with the
model's preprocessing (cast, layout, channel order, mean and std) moved into the graph
(bench.models.input_artifact), so every runtime runs it on its own device.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bench.errors import UserError

# --------------------------------------------------------------------------- precisions

# What a suite may list: fp32 is the source; the rest are artifacts built from it ("ir": OpenVINO IR)
# or precision hints over it (OpenVINO's fp16 and bf16).
PRECISIONS = ("fp32", "fp16", "bf16", "int8", "simplified", "ir")
PRECISION_ALIASES = {"openvino_ir": "ir"}  # parity gate tables once named IR so
# Variants that keep the model's numbers in FP32: they get FP32 tolerances and gates.
FP32_ARITHMETIC = ("fp32", "simplified", "ir")


def canonical_precision(name: str) -> str:
    """A precision's suite name, aliases resolved (unknown names pass through)."""
    return PRECISION_ALIASES.get(name, name)


def arithmetic(precision: str) -> str:
    """The arithmetic a precision runs in, lower case: "fp32" for the FP32-keeping variants."""
    name = canonical_precision(precision.lower())
    return "fp32" if name in FP32_ARITHMETIC else name


# --------------------------------------------------------------------------- model families

@dataclass(frozen=True)
class Family:
    """An InsightFace model family: preprocessing is RGB, (pixel - mean) / std (models.md 1.7, 3.4)."""

    name: str
    mean: float
    std: float
    default_size: int  # square input side where the file leaves H and W symbolic


DETECTOR = Family("detector", 127.5, 128.0, 640)
EMBEDDER = Family("embedder", 127.5, 127.5, 112)
FAMILIES = {f.name: f for f in (DETECTOR, EMBEDDER)}
_FAMILY_ALIASES = {"scrfd": DETECTOR, "arcface": EMBEDDER, "recognizer": EMBEDDER, "recognition": EMBEDDER}


def family(name: str) -> Family:
    """The family called `name` (or an alias such as scrfd / arcface); anything else is the user's error."""
    folded = name.lower()
    found = FAMILIES.get(folded) or _FAMILY_ALIASES.get(folded)
    if found is None:
        raise UserError(f"unknown model family {name!r}; expected detector or embedder")
    return found


# --------------------------------------------------------------------------- the batch rule

MAX_BATCH = 64  # larger batches only with the suite's allow_large_batch = true


def batch_problem(batch: int, allow_large: bool = False) -> str | None:
    """Why a suite may not ask for `batch`, or None."""
    if batch <= 0:
        return f"batch {batch} is not a positive size; use 1..{MAX_BATCH}"
    if batch > MAX_BATCH and not allow_large:
        return f"batch {batch} exceeds {MAX_BATCH}; set allow_large_batch = true to opt in"
    return None


# --------------------------------------------------------------------------- frames

def random_frames(rng: np.random.Generator, count: int, frame_shape: tuple[int, ...],
                  mean: float = DETECTOR.mean, std: float = DETECTOR.std, dtype: str = "float32") -> np.ndarray:
    """`count` frames of random uint8 pixels, normalised as (pixel - mean) / std unless `dtype` is uint8
    (the raw pixels, for models that normalise inside the graph). Never made inside a timed loop."""
    pixels = rng.integers(0, 256, size=(count, *frame_shape), dtype=np.uint8)
    if dtype == "uint8":
        return pixels
    return np.ascontiguousarray((pixels.astype(np.float32) - mean) / std, dtype=dtype)  # float32 or float16


# --------------------------------------------------------------------------- input formats


@dataclass(frozen=True)
class InputFormat:
    name: str
    dtype: str  # numpy dtype of the graph input
    layout: str  # "nchw" or "nhwc"
    channels: str  # channel order of the frames; the InsightFace models take RGB

    @property
    def is_float(self) -> bool:
        """The ONNX file's own input: no artifact."""
        return self.dtype == "float32"

    @property
    def carries_pixels(self) -> bool:
        """8-bit frames, normalised inside the artifact (FP16 I/O frames arrive normalised)."""
        return self.dtype == "uint8"

    def shape(self, batch: int, hw: tuple[int, int]) -> tuple[int, int, int, int]:
        return (batch, 3, *hw) if self.layout == "nchw" else (batch, *hw, 3)

    def bytes_per_frame(self, hw: tuple[int, int]) -> int:
        """What one frame costs to hand over (on a GPU runtime: host-to-device bytes)."""
        return 3 * hw[0] * hw[1] * np.dtype(self.dtype).itemsize

    def from_normalised(self, frames: np.ndarray, mean: float, std: float) -> np.ndarray:
        """Normalised float NCHW RGB frames in this format: the pixels they came from, laid out
        as this format carries them (exact for frames made from uint8 pictures)."""
        if self.is_float:
            return frames
        if not self.carries_pixels:  # fp16-nchw: the same normalised tensor, in float16
            return np.ascontiguousarray(frames, dtype=self.dtype)
        pixels = np.clip(np.rint(frames.astype(np.float64) * std + mean), 0, 255).astype(np.uint8)
        if self.channels == "bgr":
            pixels = pixels[:, ::-1]
        if self.layout == "nhwc":
            pixels = pixels.transpose(0, 2, 3, 1)
        return np.ascontiguousarray(pixels)


FLOAT_NCHW = InputFormat("float-nchw", "float32", "nchw", "rgb")
INPUT_FORMATS = {f.name: f for f in (
    FLOAT_NCHW,
    InputFormat("uint8-nchw", "uint8", "nchw", "rgb"),
    InputFormat("uint8-nhwc-bgr", "uint8", "nhwc", "bgr"),  # OpenCV's decode
    InputFormat("uint8-nhwc-rgb", "uint8", "nhwc", "rgb"),
    InputFormat("fp16-nchw", "float16", "nchw", "rgb"),  # FP16 I/O: float16 inputs and outputs, FP16 compute
)}
DEFAULT_INPUT_FORMAT = FLOAT_NCHW.name
# The options_variant of a point measured with the suite's runtime options as they are (no [sweep_options]).
DEFAULT_OPTIONS_VARIANT = "default"


def input_format(name: str, where: str = "input") -> InputFormat:
    """The format called `name`; an unknown name is the user's error, with the known ones."""
    try:
        return INPUT_FORMATS[name]
    except (KeyError, TypeError):
        raise UserError(f"{where}: unknown input format {name!r}; use one of {', '.join(INPUT_FORMATS)}") from None
