"""The vocabulary shared by suites, artifacts, measurement, checks and the store.

Input formats: how frames reach the model. `float-nchw` is the normalised FP32 tensor the
ONNX file takes; the uint8 formats are frames as cameras and decoders deliver them, with the
model's preprocessing (cast, layout, channel order, mean and std) moved into the graph
(bench.models.input_artifact), so every runtime runs it on its own device.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bench.errors import UserError


@dataclass(frozen=True)
class InputFormat:
    name: str
    dtype: str  # numpy dtype of the graph input
    layout: str  # "nchw" or "nhwc"
    channels: str  # channel order of the frames; the InsightFace models take RGB

    @property
    def is_float(self) -> bool:
        return self.dtype == "float32"

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
