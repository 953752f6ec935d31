"""Frame preprocessing: letterbox into the detector square and the models' input batches.

Matches insightface (models.md 1.7, 3.4): aspect-preserving resize pasted
top-left on a zero canvas, then (RGB - mean) * (1 / std) like
cv2.dnn.blobFromImage (both in bench.face.images). Frames are RGB uint8 throughout; for a uint8 input
format the batch stays 8-bit (only laid out as the format says) and the model's
artifact normalises it (bench.models.input_artifact).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from bench.domain import InputFormat
from bench.face.images import resize_bilinear, to_blob

# mean and std per family: bench.domain.DETECTOR / EMBEDDER


def letterbox_shape(h: int, w: int, size: int) -> tuple[int, int, float]:
    """(new_h, new_w, scale) exactly as insightface's SCRFD.detect computes them."""
    im_ratio = h / w
    if im_ratio > 1.0:  # square detector input: model_ratio == 1
        new_h = size
        new_w = int(new_h / im_ratio)
    else:
        new_w = size
        new_h = int(new_w * im_ratio)
    return new_h, new_w, new_h / h


def letterbox(img_rgb_uint8: np.ndarray, size: int) -> tuple[np.ndarray, float]:
    """Resize keeping aspect into a size x size zero canvas, top-left; return (canvas, scale).

    Detections in canvas pixels map back to the frame by dividing by scale.
    """
    h, w = img_rgb_uint8.shape[:2]
    new_h, new_w, scale = letterbox_shape(h, w, size)
    canvas = np.zeros((size, size, 3), dtype=np.uint8)
    canvas[:new_h, :new_w] = resize_bilinear(img_rgb_uint8, new_h, new_w)
    return canvas, scale


def model_batch(images: np.ndarray, fmt: InputFormat, mean: float, std: float) -> np.ndarray:
    """(N,H,W,3) uint8 RGB -> the batch a model taking `fmt` is fed: the normalised float blob,
    or the same 8-bit pixels in the format's layout and channel order (no copy for NHWC RGB)."""
    if not fmt.carries_pixels:  # float-nchw, or fp16-nchw (FP16 I/O: normalised here, then halved)
        blob = to_blob(images, mean, std)
        return blob if fmt.is_float else blob.astype(fmt.dtype)
    pixels = images[..., ::-1] if fmt.channels == "bgr" else images
    if fmt.layout == "nchw":
        pixels = pixels.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(pixels, dtype=np.uint8)


def letterbox_batch(frames: Sequence[np.ndarray], size: int,
                    rows: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Letterbox every frame into one (rows,size,size,3) uint8 array; return (canvases, scales).

    rows defaults to len(frames); extra rows stay zero (padding for a fixed-batch model).
    """
    canvases = np.zeros((max(rows or 0, len(frames)), size, size, 3), dtype=np.uint8)
    scales = np.empty(len(frames), dtype=np.float64)
    for i, frame in enumerate(frames):
        h, w = frame.shape[:2]
        new_h, new_w, scales[i] = letterbox_shape(h, w, size)
        canvases[i, :new_h, :new_w] = resize_bilinear(frame, new_h, new_w)
    return canvases, scales
