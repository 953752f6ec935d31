"""Pixel operations shared by the pipeline and the model artifacts: InsightFace's bilinear
resize and its blob (cv2.dnn.blobFromImage: (RGB - mean) * (1 / std), NCHW float32).

Both the staged pipeline (letterbox, embedder crops) and INT8 calibration (pictures fitted
to a model's input) feed models this way, so it lives below both (models never import the
pipeline). Frames are RGB uint8 throughout.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

try:  # OpenCV's resize is several times faster than the numpy fallback.
    import cv2
except ImportError:  # pragma: no cover - depends on the environment
    cv2 = None


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
