"""SCRFD output decoding and NMS, as insightface's scrfd.py does it (models.md 1.7).

Anchor centres are (x, y) * stride with no +0.5 offset, every centre repeated
for each anchor; predictions are distances in stride units. Only the rows that
pass the score threshold are decoded, so the anchor grid is never materialised.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

# Output count -> (strides, anchors per location, has keypoints).
_LAYOUTS = {
    6: ((8, 16, 32), 2, False),
    9: ((8, 16, 32), 2, True),
    10: ((8, 16, 32, 64, 128), 1, False),
    15: ((8, 16, 32, 64, 128), 1, True),
}
# Below this many candidates a full IoU matrix is cheaper than shrinking the order each step.
_NMS_MATRIX_MAX = 400  # measured crossover on a 2-core CPU


@dataclass
class Detections:
    boxes: np.ndarray  # (M,4) float32 x1,y1,x2,y2
    scores: np.ndarray  # (M,) float32, descending
    kps: np.ndarray | None  # (M,5,2) float32, or None for detectors without keypoints

    def __len__(self) -> int:
        return len(self.scores)

    def scaled(self, factor: float) -> Detections:
        """Coordinates divided by factor (insightface's det_scale): input pixels -> frame pixels."""
        factor = np.float32(factor)
        kps = None if self.kps is None else self.kps / factor
        return Detections(self.boxes / factor, self.scores, kps)

    @classmethod
    def empty(cls, with_kps: bool = True) -> Detections:
        kps = np.zeros((0, 5, 2), np.float32) if with_kps else None
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), kps)


def _frame_rows(output: np.ndarray, frame: int) -> np.ndarray:
    """One frame's (HWA, K) rows from a batched 3-D or a flattened 2-D output."""
    if output.ndim == 3:
        if not 0 <= frame < output.shape[0]:
            raise ValueError(f"frame {frame} out of range for a batch of {output.shape[0]}")
        return output[frame]
    if output.ndim == 2:
        # The old flattened export interleaves frames per cell when N > 1 (models.md 2).
        if frame != 0:
            raise ValueError("2-D (flattened) SCRFD outputs hold a single frame; use frame=0")
        return output
    raise ValueError(f"SCRFD output of rank {output.ndim}; expected [N,HWA,K] or [HWA,K]")


def _grid_hw(input_hw: tuple[int, int], stride: int) -> tuple[int, int]:
    # Stride-2 convs with padding round up; equal to insightface's floor for multiples of 32.
    return -(-input_hw[0] // stride), -(-input_hw[1] // stride)


def _decode_level(scores, bboxes, kps, stride, anchors, grid_w, threshold):
    """Decode the rows of one stride level whose score passes threshold."""
    idx = np.flatnonzero(scores.reshape(-1) >= threshold)
    cell = idx // anchors
    centres = np.stack([cell % grid_w, cell // grid_w], axis=1).astype(np.float32) * np.float32(stride)
    dist = bboxes[idx] * np.float32(stride)
    boxes = np.concatenate([centres - dist[:, :2], centres + dist[:, 2:]], axis=1)
    points = None
    if kps is not None:
        points = centres[:, None, :] + kps[idx].reshape(-1, 5, 2) * np.float32(stride)
    return scores.reshape(-1)[idx], boxes, points


def decode_scrfd(
    outputs: Mapping[str, np.ndarray] | Sequence[np.ndarray],
    input_hw: tuple[int, int],
    frame: int = 0,
    score_threshold: float = 0.5,
    nms_threshold: float = 0.4,
) -> Detections:
    """Decode one frame's SCRFD outputs into NMS-ed detections, input pixels.

    SCRFD's outputs are read by position, as InsightFace does (scores, boxes, landmarks per stride;
    exports number them): a Session's {name: array} in model order, or a list in model order.
    """
    if isinstance(outputs, Mapping):
        outputs = list(outputs.values())
    if len(outputs) not in _LAYOUTS:
        raise ValueError(f"{len(outputs)} SCRFD outputs; expected 6 or 9 (or 10/15)")
    strides, anchors, has_kps = _LAYOUTS[len(outputs)]
    n_levels = len(strides)
    parts = []
    for level, stride in enumerate(strides):
        grid_h, grid_w = _grid_hw(input_hw, stride)
        scores = _frame_rows(outputs[level], frame)
        if scores.shape[0] != grid_h * grid_w * anchors:
            raise ValueError(
                f"stride {stride}: {scores.shape[0]} rows, expected {grid_h * grid_w * anchors} "
                f"for a {input_hw[0]}x{input_hw[1]} input"
            )
        bboxes = _frame_rows(outputs[n_levels + level], frame)
        kps = _frame_rows(outputs[2 * n_levels + level], frame) if has_kps else None
        parts.append(_decode_level(scores, bboxes, kps, stride, anchors, grid_w, score_threshold))

    scores = np.concatenate([p[0] for p in parts]).astype(np.float32, copy=False)
    boxes = np.concatenate([p[1] for p in parts]).astype(np.float32, copy=False)
    keep = nms(boxes, scores, nms_threshold)
    kps = np.concatenate([p[2] for p in parts])[keep].astype(np.float32, copy=False) if has_kps else None
    return Detections(boxes[keep], scores[keep], kps)


def _iou_with(boxes: np.ndarray, areas: np.ndarray, i, others: np.ndarray) -> np.ndarray:
    """IoU of box i with boxes[others], +1 pixel convention."""
    w = np.maximum(0.0, np.minimum(boxes[i, 2], boxes[others, 2]) - np.maximum(boxes[i, 0], boxes[others, 0]) + 1)
    h = np.maximum(0.0, np.minimum(boxes[i, 3], boxes[others, 3]) - np.maximum(boxes[i, 1], boxes[others, 1]) + 1)
    inter = w * h
    return inter / (areas[i] + areas[others] - inter)


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """Greedy NMS (insightface): indices kept, best score first; drops IoU > threshold."""
    order = np.argsort(-scores, kind="stable")
    if len(order) == 0:
        return order
    boxes = boxes[order]
    areas = (boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)
    if len(order) <= _NMS_MATRIX_MAX:
        return order[_greedy_on_matrix(boxes, areas, threshold)]
    return order[_greedy_shrinking(boxes, areas, threshold)]


def _greedy_on_matrix(boxes, areas, threshold) -> np.ndarray:
    # All pairs at once, then a cheap boolean sweep; boxes are sorted by score.
    overlaps = _pairwise(boxes, areas)
    suppressed = np.zeros(len(boxes), dtype=bool)
    keep = []
    for i in range(len(boxes)):
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= overlaps[i] > threshold
    return np.asarray(keep, dtype=np.intp)


def _pairwise(boxes, areas) -> np.ndarray:
    x1, y1, x2, y2 = (boxes[:, k] for k in range(4))
    w = np.maximum(0.0, np.minimum(x2[:, None], x2[None]) - np.maximum(x1[:, None], x1[None]) + 1)
    h = np.maximum(0.0, np.minimum(y2[:, None], y2[None]) - np.maximum(y1[:, None], y1[None]) + 1)
    inter = w * h
    return inter / (areas[:, None] + areas[None] - inter)


def _greedy_shrinking(boxes, areas, threshold) -> np.ndarray:
    # insightface's loop: O(kept * remaining) memory-light for many candidates.
    remaining = np.arange(len(boxes))
    keep = []
    while remaining.size:
        i = remaining[0]
        keep.append(i)
        rest = remaining[1:]
        remaining = rest[_iou_with(boxes, areas, i, rest) <= threshold]
    return np.asarray(keep, dtype=np.intp)
