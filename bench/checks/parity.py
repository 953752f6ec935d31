"""Accuracy parity of a (model, runtime, precision) run against the ORT CPU FP32 reference.

Both sides are outputs of the same FP32 model's variants on the same input frames;
this module only compares arrays and never times anything.

- Embedders: cosine similarity per frame (min, mean, median) and the norm ratio; on aligned
  real faces (bench.checks.identities) also whether each face's variants still find their own
  face: rank-1 rate and smallest margin, and how many matches FP32 keeps that the candidate loses.
- Detectors: decoded detections (score 0.5, NMS 0.4) matched by IoU >= 0.5 give
  recall, precision and the mean landmark error in input pixels. A replica with
  random weights detects nothing, so recall is undefined (None) and the gate falls
  back to the raw outputs.
- Every output, matched by name (bench.comparator): max absolute and relative error,
  Polygraphy's "minimum tolerance that would pass" (atol alone, or rtol alone) and the
  relative L2 error.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from bench.checks.identities import identity_figures
from bench.comparator import UNGATED, OutputDiff, compare_outputs
from bench.domain import EMBEDDER, FP32_ARITHMETIC, PRECISIONS, canonical_precision
from bench.domain import family as model_family
from bench.face.decode import Detections, decode_scrfd

# Embedder gates measured on trained weights (fr_feature, 8 real faces and their 32 variants;
# docs/models-and-precision.md, "Parity on trained weights"): INT8 cosine min 0.952-0.962 over
# both recipes, both CPU runtimes and both calibrations (real crops, synthetic faces); its smallest
# identity margin 0.48-0.54 against FP32's 0.585 (a drop of up to 0.106); FP16 0.99999, no drop.
# Gates: the worst figure with a margin (INT8 cosine 0.94, margin drop 0.2, FP16 0.01); 10% conv
# weight noise gives cosine 0.62 and a drop of 0.23 on the trained embedder, 0.933 on the
# random-weight MBF replica.
INT8_COSINE_MIN = 0.94
IDENTITY_MARGIN_DROP = {**dict.fromkeys(FP32_ARITHMETIC, 0.005), "fp16": 0.01, "bf16": 0.02, "int8": 0.2}
SCORE_THRESHOLD = 0.5
NMS_THRESHOLD = 0.4
MATCH_IOU = 0.5



def _per_precision(fp32: float | None, fp16: float | None, bf16: float | None,
                   int8: float | None) -> dict[str, float | None]:
    """Variants that keep FP32 arithmetic (simplified, IR) get the FP32 gate."""
    return {**{p: fp32 for p in FP32_ARITHMETIC}, "fp16": fp16, "bf16": bf16, "int8": int8}


# BF16 keeps 8 mantissa bits to FP16's 11. Measured on openvino-cpu (AMX) at batch 1, astronaut
# frames, against ONNX Runtime FP32 (docs/models-and-precision.md; scripts/parity_margins.py), worst
# of the hint over the FP32 graph and of TensorRT's BF16 ONNX artifact: the trained embedder
# fr_feature cosine min 0.99948, 0.99924 on real faces (gate 0.997: 4x its 1 - cos), the real SCRFD-500M recall and
# precision 1.0 with 0.13 px landmark error (gates 0.95, 0.5 px: 4x) and worst output rel L2 0.087,
# the replicas' rel L2 0.011-0.028 (gate 0.2: 2.3x the real detector, 7x the replicas); on the 8
# real faces and their variants every identity holds, the smallest margin 0.582 against FP32's
# 0.585 (IDENTITY_MARGIN_DROP 0.02: 7x the drop).


@dataclass
class ParityGates:
    """Pass thresholds per precision; a None (or missing precision) leaves that metric ungated."""

    cosine_min: dict[str, float | None] = field(
        default_factory=lambda: _per_precision(0.9999, 0.999, 0.997, INT8_COSINE_MIN))
    det_recall_min: dict[str, float | None] = field(default_factory=lambda: _per_precision(0.99, 0.99, 0.95, 0.9))
    # A candidate that adds faces diverges as much as one that loses them.
    det_precision_min: dict[str, float | None] = field(
        default_factory=lambda: _per_precision(0.99, 0.99, 0.95, 0.9))
    # Mean of the 5 points, input pixels. Measured on the real SCRFD-500M at 640: FP16 0.02 px,
    # INT8 1.0-1.2 px; 5% weight noise gives 3.5 px.
    landmark_err_max_px: dict[str, float | None] = field(
        default_factory=lambda: _per_precision(0.05, 0.5, 0.5, 2.5))
    # Raw-output fallback for detectors whose reference finds no face: ||c - r|| / ||r||
    # per output. INT8's own error is 0.1-0.3 on SCRFD outputs (score rows near 0 weigh most).
    output_rel_l2_max: dict[str, float | None] = field(
        default_factory=lambda: _per_precision(1e-3, 0.03, 0.2, 0.5))
    # Real-face matches FP32 keeps that a precision loses: none, at every precision.
    identity_lost_max: dict[str, float | None] = field(default_factory=lambda: dict.fromkeys(PRECISIONS, 0))
    # How much the smallest real-face margin may shrink against FP32's (cosine). A precision
    # not named here gets INT8's allowance.
    identity_margin_drop_max: dict[str, float | None] = field(
        default_factory=lambda: {**dict.fromkeys(PRECISIONS, IDENTITY_MARGIN_DROP["int8"]), **IDENTITY_MARGIN_DROP})

    @classmethod
    def with_overrides(cls, overrides: dict[str, dict[str, float]]) -> "ParityGates":
        """Defaults with a suite's [parity_gates.METRIC] precision = value tables on top."""
        gates = cls()
        for metric, per_precision in overrides.items():
            getattr(gates, metric).update({canonical_precision(p): v for p, v in per_precision.items()})
        return gates

    def limit(self, metric: str, precision: str) -> float | None:
        return getattr(self, metric).get(canonical_precision(precision))


@dataclass
class ParityResult:
    family: str
    precision: str
    cosine_min: float | None = None
    cosine_mean: float | None = None
    cosine_median: float | None = None
    norm_ratio: float | None = None  # mean over frames of ||candidate|| / ||reference||
    outputs: list[OutputDiff] = field(default_factory=list)  # per output: max_abs, min_atol, min_rtol, rel_l2
    det_recall: float | None = None  # None where the reference has no detection
    det_precision: float | None = None  # None where the candidate has no detection
    landmark_err_px: float | None = None
    landmark_err_worst_px: float | None = None  # the worst matched face's mean landmark error
    box_err_max_px: float | None = None  # the largest box corner offset over the matched faces
    ref_detections: int | None = None
    candidate_detections: int | None = None
    identity_faces: int | None = None  # aligned real faces the identity check used; None: not run
    identity_rank1: float | None = None  # share of variants nearest to their own face
    identity_margin_min: float | None = None  # smallest (own - best wrong) cosine over the variants
    identity_ref_rank1: float | None = None  # the same rate for FP32 on the same faces
    identity_ref_margin_min: float | None = None  # FP32's smallest margin on the same faces
    identity_lost: int | None = None  # variants FP32 matches and the candidate does not
    passed: bool = False
    reason: str = ""  # why it failed; empty when it passed
    deciding: GateCheck | None = None  # None where the interface failed before any figure
    hint: str = ""  # the likely cause of a failed gate (e.g. an INT8 recipe on this CPU)

    def summary(self) -> str:
        """One short line for the tables: the figures that decide each family's gate, and why it failed."""
        if self.cosine_min is not None:
            text = f"cos min {self.cosine_min:.5f}"
            if self.identity_rank1 is not None:
                text += f", rank-1 {self.identity_rank1:.3f}, margin {self.identity_margin_min:.3f}"
        elif self.det_recall is not None:
            text = f"recall {self.det_recall:.3f}, lmk {self.landmark_err_px or 0:.2f}px"
        else:
            worst = max((o.rel_l2 for o in self.outputs), default=0.0)
            text = f"rel L2 {worst:.2e}"
        if self.passed:
            return text
        return "; ".join(filter(None, [f"{text}: {self.reason}", self.hint]))


@dataclass
class GateCheck:
    """One figure against its gate: `metric` is the gate's name (ParityGates, [parity_gates])."""

    metric: str
    value: float
    gate: float | None  # None: the metric is not gated at this precision
    direction: str  # "min": the value must reach the gate; "max": it must not exceed it
    output: str | None = None  # the output a per-output gate measured

    @property
    def passed(self) -> bool:
        if self.gate is None:
            return True
        return self.value >= self.gate if self.direction == "min" else self.value <= self.gate

    @property
    def margin(self) -> float:
        """How far inside its gate the value is, relative to the gate (negative: failed)."""
        if self.gate is None:
            return float("inf")
        inside = self.value - self.gate if self.direction == "min" else self.gate - self.value
        return inside / max(abs(self.gate), 1e-12)


def deciding_check(checks: Sequence[GateCheck]) -> GateCheck | None:
    """The figure nearest its gate, or furthest past it: the one that decided pass or fail."""
    return min(checks, key=lambda c: c.margin, default=None)


def check_parity(reference_outputs: Mapping[str, np.ndarray], candidate_outputs: Mapping[str, np.ndarray],
                 family: str, precision: str, input_hw: tuple[int, int], gates: ParityGates | None = None,
                 identity_faces: int | None = None) -> ParityResult:
    """Compare a candidate run with the reference run on the same frames and gate it.

    Both are {output name: array} (a Session's infer); every output is paired by name, and the
    detector's decode reads the candidate in the reference's output order.
    `identity_faces`: the embedder's frames are that many aligned faces and then their variants
    (bench.checks.identities.FaceSet order), so identities are judged too.
    """
    family = model_family(family).name
    gates = gates or ParityGates()
    if len(reference_outputs) != len(candidate_outputs):
        reason = f"{len(candidate_outputs)} outputs, reference has {len(reference_outputs)}"
        return ParityResult(family, precision, passed=False, reason=reason)
    errors = compare_outputs(reference_outputs, candidate_outputs, UNGATED)
    if errors.failed:  # only an interface problem fails with no tolerance: shape, NaN, a missing output
        return ParityResult(family, precision, passed=False, reason=errors.summary())
    result = ParityResult(family, precision, outputs=errors.outputs)
    reference = list(reference_outputs.values())
    candidate = [candidate_outputs[name] for name in reference_outputs]  # every one is there: compared above
    if family == EMBEDDER.name:
        _measure_embeddings(result, reference[0], candidate[0])
        if identity_faces:
            _measure_identities(result, reference[0], candidate[0], identity_faces)
        checks = _embedder_checks(result, gates)
    else:
        _measure_detections(result, reference, candidate, input_hw)
        checks = _detector_checks(result, gates)
    failures = [_failure(check) for check in checks if not check.passed]
    result.passed = not failures
    result.reason = "; ".join(failures)
    result.deciding = deciding_check(checks)
    return result


# --------------------------------------------------------------------------- embedders

def _measure_embeddings(result: ParityResult, reference: np.ndarray, candidate: np.ndarray) -> None:
    ref = np.asarray(reference, dtype=np.float64).reshape(len(reference), -1)
    cand = np.asarray(candidate, dtype=np.float64).reshape(len(candidate), -1)
    ref_norm, cand_norm = np.linalg.norm(ref, axis=1), np.linalg.norm(cand, axis=1)
    cosine = np.sum(ref * cand, axis=1) / np.maximum(ref_norm * cand_norm, np.finfo(np.float64).tiny)
    result.cosine_min = float(cosine.min())
    result.cosine_mean = float(cosine.mean())
    result.cosine_median = float(np.median(cosine))
    result.norm_ratio = float(np.mean(cand_norm / np.maximum(ref_norm, np.finfo(np.float64).tiny)))


def _measure_identities(result: ParityResult, reference: np.ndarray, candidate: np.ndarray, faces: int) -> None:
    ref, cand = identity_figures(reference, faces), identity_figures(candidate, faces)
    result.identity_faces = faces
    result.identity_rank1, result.identity_margin_min = cand.rank1, cand.margin_min
    result.identity_ref_rank1, result.identity_ref_margin_min = ref.rank1, ref.margin_min
    result.identity_lost = int(np.sum(ref.matched & ~cand.matched))


def _embedder_checks(result: ParityResult, gates: ParityGates) -> list[GateCheck]:
    checks = [GateCheck("cosine_min", result.cosine_min, gates.limit("cosine_min", result.precision), "min")]
    if result.identity_lost is not None:
        drop = result.identity_ref_margin_min - result.identity_margin_min
        checks += [GateCheck("identity_lost_max", result.identity_lost,
                             gates.limit("identity_lost_max", result.precision), "max"),
                   GateCheck("identity_margin_drop_max", drop,
                             gates.limit("identity_margin_drop_max", result.precision), "max")]
    return checks


# --------------------------------------------------------------------------- detectors

def _frames_in(outputs: list[np.ndarray]) -> int:
    return outputs[0].shape[0] if outputs[0].ndim == 3 else 1  # 2-D exports hold one frame


def _decode(outputs: list[np.ndarray], input_hw: tuple[int, int], frame: int) -> Detections:
    return decode_scrfd(outputs, input_hw, frame=frame, score_threshold=SCORE_THRESHOLD,
                        nms_threshold=NMS_THRESHOLD)


def _measure_detections(result: ParityResult, reference: list[np.ndarray], candidate: list[np.ndarray],
                        input_hw: tuple[int, int]) -> None:
    n_ref = n_cand = n_matched = 0
    landmark_errors: list[float] = []
    box_errors: list[float] = []
    for frame in range(_frames_in(reference)):
        ref_dets = _decode(reference, input_hw, frame)
        cand_dets = _decode(candidate, input_hw, frame)
        pairs = match_detections(ref_dets, cand_dets)
        n_ref, n_cand, n_matched = n_ref + len(ref_dets), n_cand + len(cand_dets), n_matched + len(pairs)
        box_errors += [float(np.abs(ref_dets.boxes[r] - cand_dets.boxes[c]).max()) for r, c in pairs]
        if ref_dets.kps is not None and cand_dets.kps is not None:
            landmark_errors += [float(np.linalg.norm(ref_dets.kps[r] - cand_dets.kps[c], axis=1).mean())
                                for r, c in pairs]
    result.ref_detections, result.candidate_detections = n_ref, n_cand
    result.det_recall = n_matched / n_ref if n_ref else None
    result.det_precision = n_matched / n_cand if n_cand else None
    result.landmark_err_px = float(np.mean(landmark_errors)) if landmark_errors else None
    result.landmark_err_worst_px = max(landmark_errors, default=None)
    result.box_err_max_px = max(box_errors, default=None)


def match_detections(reference: Detections, candidate: Detections,
                     iou_min: float = MATCH_IOU) -> list[tuple[int, int]]:
    """Greedy one-to-one matching, best candidate score first: (reference, candidate) index pairs."""
    if not len(reference) or not len(candidate):
        return []
    iou = box_iou(reference.boxes, candidate.boxes)
    taken = np.zeros(len(reference), dtype=bool)
    pairs = []
    for c in np.argsort(-candidate.scores, kind="stable"):
        overlaps = np.where(taken, -1.0, iou[:, c])
        r = int(np.argmax(overlaps))
        if overlaps[r] >= iou_min:
            taken[r] = True
            pairs.append((r, int(c)))
    return pairs


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) IoU of x1,y1,x2,y2 boxes (continuous areas, no +1)."""
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(bottom_right - top_left, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-12)


# Not a suite gate: a reference that saw no face anywhere allows the candidate none.
NO_FACE_DETECTIONS = "candidate_detections_max"


def _detector_checks(result: ParityResult, gates: ParityGates) -> list[GateCheck]:
    if result.ref_detections:
        return _detection_checks(result, gates)
    checks = [GateCheck(NO_FACE_DETECTIONS, result.candidate_detections, 0, "max")] if result.candidate_detections else []
    rel_l2 = gates.limit("output_rel_l2_max", result.precision)
    if rel_l2 is None:
        return checks
    return checks + [GateCheck("output_rel_l2_max", o.rel_l2, rel_l2, "max", o.name) for o in result.outputs]


def _detection_checks(result: ParityResult, gates: ParityGates) -> list[GateCheck]:
    figures = [("det_recall_min", result.det_recall, "min"), ("det_precision_min", result.det_precision, "min"),
               ("landmark_err_max_px", result.landmark_err_px, "max")]
    return [GateCheck(metric, value, gates.limit(metric, result.precision), direction)
            for metric, value, direction in figures if value is not None]


def _failure(check: GateCheck) -> str:
    """Why `check` failed, in the words of the summary."""
    if check.metric == "cosine_min":
        return f"cosine min {check.value:.6f} < {check.gate}"
    if check.metric in ("det_recall_min", "det_precision_min"):
        label = "recall" if check.metric == "det_recall_min" else "precision"
        return f"detection {label} {_fmt(check.value)} < {check.gate}"
    if check.metric == "landmark_err_max_px":
        return f"landmark error {check.value:.3f} px > {check.gate}"
    if check.metric == "identity_lost_max":
        return f"{check.value:g} real-face match(es) that FP32 keeps lost (gate {check.gate:g})"
    if check.metric == "identity_margin_drop_max":
        return f"smallest real-face margin {check.value:.3f} below FP32's > {check.gate}"
    if check.metric == NO_FACE_DETECTIONS:
        return f"{check.value} detections where the reference has none"
    return f"output {check.output!r} relative L2 error {check.value:.3g} > {check.gate}"


def _fmt(value: float | None) -> str:
    return "none" if value is None else f"{value:.3f}"
