"""Cross-frame contamination: does a frame's output depend on the other frames in its batch?

A known frame goes at a random position in a batch of other frames; its outputs there
must equal its outputs alone. Old SCRFD exports fail this at batch > 1 (their rows
interleave frames, reference/models.md §2) while still running without an error.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

# Largest allowed relative difference, by precision. Batch size changes kernel blocking and
# accumulation order, so even a correct model differs a little from its batch-1 outputs.
TOLERANCES = {"fp32": 1e-4, "tf32": 5e-3, "fp16": 1e-2, "bf16": 5e-2, "int8": 5e-2}
_EPS = 1e-6

Infer = Callable[[np.ndarray], list[np.ndarray]]


@dataclass
class ContaminationResult:
    batch: int
    position: int  # where the known frame sat in the batch
    max_abs_diff: float
    max_rel_diff: float  # max|a-b| / max(max|b|, eps), worst output
    tolerance: float
    passed: bool
    note: str = ""


def check_contamination(
    infer: Infer,
    frame_shape: tuple[int, int, int],
    batch: int,
    precision: str = "fp32",
    seed: int = 0,
    infer_alone: Infer | None = None,
) -> ContaminationResult:
    """Compare a known frame's outputs inside a mixed batch with its outputs alone.

    `infer` takes a float32 NCHW batch of exactly `batch` frames. "Alone" is `infer_alone`
    on a batch of 1 when given, else `infer` on a batch of copies of the known frame:
    for a model that keeps frames apart every copy equals the batch-1 result.
    Outputs whose dim 0 is not the batch (flattened 2-D detector rows) are split evenly
    per frame, as a naive consumer would. Runtime errors propagate to the caller.
    """
    tolerance = tolerance_for(precision)
    if batch <= 1:
        return ContaminationResult(batch, 0, 0.0, 0.0, tolerance, True, "batch 1: no other frame to contaminate it")
    rng = np.random.default_rng(seed)
    known = random_frames(rng, 1, frame_shape)
    position = int(rng.integers(batch))
    mixed = random_frames(rng, batch, frame_shape)
    mixed[position] = known[0]

    in_batch = infer(mixed)
    if infer_alone is not None:
        alone, alone_position = infer_alone(known), 0
        alone_batch = 1
    else:
        alone, alone_position = infer(np.repeat(known, batch, axis=0)), position
        alone_batch = batch

    worst_abs, worst_rel, notes = 0.0, 0.0, []
    for index, (got_all, want_all) in enumerate(zip(in_batch, alone)):
        got = frame_rows(got_all, batch, position)
        want = frame_rows(want_all, alone_batch, alone_position)
        if got is None or want is None or got.shape != want.shape:
            notes.append(f"output {index}: shape {np.shape(got_all)} cannot be split into {batch} frames")
            worst_abs = worst_rel = float("inf")
            continue
        abs_diff, rel_diff = differences(got, want)
        worst_abs, worst_rel = max(worst_abs, abs_diff), max(worst_rel, rel_diff)
    passed = worst_rel <= tolerance
    if not passed and not notes:
        notes.append(f"frame at position {position} differs from the same frame alone: the batch mixes frames")
    return ContaminationResult(batch, position, worst_abs, worst_rel, tolerance, passed, "; ".join(notes))


# Artifacts that keep FP32 arithmetic get the FP32 tolerance.
_FP32_ARTIFACTS = ("simplified", "ir", "openvino_ir")


def tolerance_for(precision: str) -> float:
    key = "fp32" if precision.lower() in _FP32_ARTIFACTS else precision.lower()
    if key not in TOLERANCES:
        raise ValueError(f"no contamination tolerance for precision {precision!r}; known: {', '.join(TOLERANCES)}")
    return TOLERANCES[key]


def random_frames(rng: np.random.Generator, count: int, frame_shape: tuple[int, int, int]) -> np.ndarray:
    """Frames in the normalised image range that preprocessing produces, about [-1, 1]."""
    return rng.uniform(-1.0, 1.0, size=(count, *frame_shape)).astype(np.float32)


def frame_rows(output: np.ndarray, batch: int, position: int) -> np.ndarray | None:
    """The part of one output that belongs to the frame at `position`."""
    output = np.asarray(output)
    while output.ndim > 1 and output.shape[0] == 1:  # [1, N*rows, K]: frames concatenated
        output = output[0]
    if output.ndim == 0:
        return None
    if output.shape[0] == batch:
        return output[position]
    if output.shape[0] % batch:
        return None
    return output.reshape(batch, output.shape[0] // batch, *output.shape[1:])[position]


def differences(got: np.ndarray, want: np.ndarray) -> tuple[float, float]:
    got = got.astype(np.float64)
    want = want.astype(np.float64)
    if got.size == 0:
        return 0.0, 0.0
    abs_diff = float(np.max(np.abs(got - want)))
    scale = max(float(np.max(np.abs(want))), _EPS)
    return abs_diff, abs_diff / scale
