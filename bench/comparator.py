"""The one output comparator: candidate outputs against reference outputs, matched by name.

Modelled on Polygraphy's CompareFunc.simple: a tolerance per output (a default, overrides
by name), outputs matched by name and never by position, and a result that names the
output that failed and by how much. Used by contamination (a frame in a batch vs alone),
fix-batch verification (the rewritten model vs the original) and parity (per-output errors).

An output passes when max|candidate - reference| <= max(atol, rtol * max|reference|): the
relative part is taken against the output's peak magnitude, not element by element,
because SCRFD score rows sit near 0 where an elementwise relative error explodes for any
change of accumulation order. The elementwise figure (Polygraphy's max_rel) is reported.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

# Polygraphy adds a tiny epsilon where the reference is exactly 0 to keep rtol finite.
_REL_EPS = 2e-16
_PEAK_EPS = 1e-6  # an all-zero reference still has a scale for peak_rel


@dataclass(frozen=True)
class Tolerance:
    atol: float = 1e-5  # Polygraphy's defaults
    rtol: float = 1e-5  # of the reference output's peak magnitude

    def allowed(self, peak: float) -> float:
        return max(self.atol, self.rtol * peak)


# Figures only: every value passes (parity gates its own metrics); shapes, NaN and missing outputs still fail.
UNGATED = Tolerance(atol=float("inf"), rtol=0.0)


@dataclass
class OutputDiff:
    """One output's difference from the reference."""

    name: str
    max_abs: float = 0.0
    max_rel: float = 0.0  # elementwise |c - r| / |r|, worst element (Polygraphy's figure)
    peak_rel: float = 0.0  # max_abs / max|reference|
    rel_l2: float = 0.0  # ||candidate - reference|| / ||reference||
    allowed_abs: float = 0.0  # what the tolerance allowed for max_abs
    passed: bool = True
    problem: str = ""  # missing, shape or non-finite: why no figure could be trusted

    @property
    def min_atol(self) -> float:
        """The smallest atol that passes every element with rtol = 0 (Polygraphy)."""
        return self.max_abs

    @property
    def min_rtol(self) -> float:
        """The smallest elementwise rtol that passes every element with atol = 0 (Polygraphy)."""
        return self.max_rel

    def describe(self) -> str:
        if self.problem:
            return f"output {self.name!r}: {self.problem}"
        return f"output {self.name!r}: max |diff| {self.max_abs:.3g} > allowed {self.allowed_abs:.3g}"


@dataclass
class Comparison:
    outputs: list[OutputDiff] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(o.passed for o in self.outputs)

    @property
    def failed(self) -> list[OutputDiff]:
        return [o for o in self.outputs if not o.passed]

    @property
    def max_abs(self) -> float:
        return max((o.max_abs for o in self.outputs), default=0.0)

    @property
    def peak_rel(self) -> float:
        return max((o.peak_rel for o in self.outputs), default=0.0)

    def summary(self) -> str:
        """The outputs that failed and by how much ("" when all passed)."""
        return "; ".join(o.describe() for o in self.failed)


def compare_outputs(reference: Mapping[str, np.ndarray], candidate: Mapping[str, np.ndarray],
                    tolerance: Tolerance = Tolerance(), per_output: Mapping[str, Tolerance] | None = None,
                    ) -> Comparison:
    """Every reference output against the candidate's output of the same name.

    `per_output` overrides `tolerance` for the outputs it names. A candidate output the
    reference lacks is ignored; a reference output the candidate lacks fails.
    """
    per_output = per_output or {}
    return Comparison([
        compare_output(name, ref, candidate.get(name), per_output.get(name, tolerance))
        for name, ref in reference.items()
    ])


def compare_output(name: str, reference: np.ndarray, candidate: np.ndarray | None,
                   tolerance: Tolerance = Tolerance()) -> OutputDiff:
    if candidate is None:
        return OutputDiff(name, passed=False, problem="missing from the candidate")
    if np.shape(candidate) != np.shape(reference):
        return OutputDiff(name, passed=False, problem=f"shape {np.shape(candidate)}, reference {np.shape(reference)}")
    cand = np.asarray(candidate, dtype=np.float64)
    if not np.all(np.isfinite(cand)):
        return OutputDiff(name, passed=False, problem="holds NaN or Inf (FP16 overflow?)")
    ref = np.asarray(reference, dtype=np.float64)
    absdiff = np.abs(cand - ref)
    max_abs = float(absdiff.max(initial=0.0))
    peak = float(np.abs(ref).max(initial=0.0))
    allowed = tolerance.allowed(peak)
    return OutputDiff(
        name, max_abs=max_abs,
        max_rel=float((absdiff / np.where(ref == 0, _REL_EPS, np.abs(ref))).max(initial=0.0)),
        peak_rel=max_abs / max(peak, _PEAK_EPS), rel_l2=_rel_l2(absdiff, ref),
        allowed_abs=allowed, passed=max_abs <= allowed,
    )


def _rel_l2(absdiff: np.ndarray, ref: np.ndarray) -> float:
    ref_norm, diff_norm = float(np.linalg.norm(ref)), float(np.linalg.norm(absdiff))
    if ref_norm > 0:
        return diff_norm / ref_norm
    return 0.0 if diff_norm == 0 else float("inf")
