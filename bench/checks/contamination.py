"""Cross-frame contamination: does a frame's output depend on the other frames in its batch?

A known frame goes at a random position in a batch of other frames; its outputs there
must equal its outputs alone. Old SCRFD exports fail this at batch > 1 (their rows
interleave frames, reference/models.md §2) while still running without an error.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Callable

import numpy as np

from bench.comparator import Comparison, OutputDiff, Tolerance, compare_outputs
from bench.domain import arithmetic, random_frames

# Largest allowed relative difference, by precision. Batch size changes kernel blocking and
# accumulation order, so even a correct model differs a little from its batch-1 outputs.
TOLERANCES = {"fp32": 1e-4, "tf32": 5e-3, "fp16": 1e-2, "bf16": 5e-2, "int8": 5e-2}
_EPS = 1e-6  # the scale of an all-zero output

Infer = Callable[[np.ndarray], Mapping[str, np.ndarray]]  # a Session's infer: outputs by name


@dataclass
class ContaminationResult:
    batch: int
    position: int  # where the known frame sat in the batch
    max_abs_diff: float
    max_rel_diff: float  # max|a-b| / max(max|b|, eps), worst output
    tolerance: float
    passed: bool
    note: str = ""  # which output differs and by how much, when one does


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
    per frame, as a naive consumer would. Outputs are compared by name. Runtime errors
    propagate to the caller.
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

    comparison = _compare_frame(in_batch, alone, (batch, position), (alone_batch, alone_position),
                                Tolerance(atol=tolerance * _EPS, rtol=tolerance))
    unsplit = [o for o in comparison.outputs if o.problem]
    if unsplit:
        note = "; ".join(o.describe() for o in unsplit)
        return ContaminationResult(batch, position, float("inf"), float("inf"), tolerance, False, note)
    note = "" if comparison.passed else (f"frame at position {position} differs from the same frame alone: "
                                         f"the batch mixes frames ({comparison.summary()})")
    return ContaminationResult(batch, position, comparison.max_abs, comparison.peak_rel, tolerance,
                               comparison.passed, note)


def _compare_frame(in_batch: Mapping[str, np.ndarray], alone: Mapping[str, np.ndarray],
                   where: tuple[int, int], where_alone: tuple[int, int], tolerance: Tolerance) -> Comparison:
    """The known frame's rows of every output, in the batch against alone, by output name."""
    got, want = named_rows(in_batch, *where), named_rows(alone, *where_alone)
    unsplit = [OutputDiff(name, passed=False, problem=f"shape {np.shape(array)} cannot be split into {where[0]} frames")
               for name, array in {**got, **want}.items() if array is None]
    if unsplit:
        return Comparison(unsplit)
    return compare_outputs(want, got, tolerance)


def named_rows(outputs: Mapping[str, np.ndarray], batch: int, position: int) -> dict[str, np.ndarray | None]:
    """Each output's rows for the frame at `position`, by output name (None: cannot be split)."""
    return {name: frame_rows(array, batch, position) for name, array in outputs.items()}


def tolerance_for(precision: str) -> float:
    """Artifacts that keep FP32 arithmetic (simplified, IR) get the FP32 tolerance."""
    key = arithmetic(precision)
    if key not in TOLERANCES:
        raise ValueError(f"no contamination tolerance for precision {precision!r}; known: {', '.join(TOLERANCES)}")
    return TOLERANCES[key]


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

