"""Frame preprocessing: letterbox into the detector square and the models' input batches.

Matches insightface (models.md 1.7, 3.4): aspect-preserving resize pasted
top-left on a zero canvas, then (RGB - mean) * (1 / std) like
cv2.dnn.blobFromImage. Frames are RGB uint8 throughout; for a uint8 input
format the batch stays 8-bit (only laid out as the format says) and the model's
artifact normalises it (bench.models.input_artifact).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from bench.domain import InputFormat

try:  # OpenCV's resize is several times faster than the numpy fallback.
    import cv2
except ImportError:  # pragma: no cover - depends on the environment
    cv2 = None

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


def resize_bilinear(img: np.ndarray, new_h: int, new_w: int) -> np.ndarray:
    """Bilinear resize with half-pixel centres (cv2.INTER_LINEAR semantics)."""
    if img.shape[:2] == (new_h, new_w):
        return img
    if cv2 is not None:
        return cv2.resize(img, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    return resize_bilinear_numpy(img, new_h, new_w)


def _linear_taps(src: int, dst: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pos = (np.arange(dst, dtype=np.float32) + 0.5) * np.float32(src / dst) - 0.5
    pos = np.clip(pos, 0, src - 1)
    lo = np.floor(pos).astype(np.intp)
    hi = np.minimum(lo + 1, src - 1)
    return lo, hi, (pos - lo).astype(np.float32)


def resize_bilinear_numpy(img: np.ndarray, new_h: int, new_w: int) -> np.ndarray:
    """Separable bilinear resize in numpy; rows first, then columns."""
    h, w = img.shape[:2]
    y0, y1, wy = _linear_taps(h, new_h)
    x0, x1, wx = _linear_taps(w, new_w)
    src = img.astype(np.float32)
    rows = src[y0] + (src[y1] - src[y0]) * wy[:, None, None]
    out = rows[:, x0] + (rows[:, x1] - rows[:, x0]) * wx[None, :, None]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def to_blob(images: np.ndarray | Sequence[np.ndarray], mean: float, std: float) -> np.ndarray:
    """(N,H,W,3) uint8 RGB (array or list of equal-sized images) -> (N,3,H,W) float32."""
    batch = images if isinstance(images, np.ndarray) else np.stack(images)
    if batch.ndim == 3:
        batch = batch[None]
    n, h, w, _ = batch.shape
    blob = np.empty((n, 3, h, w), dtype=np.float32)
    # One fused pass over a transposed view beats astype() then a transpose copy.
    np.subtract(batch.transpose(0, 3, 1, 2), np.float32(mean), out=blob, dtype=np.float32)
    blob *= np.float32(1.0 / std)
    return blob


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
