"""The correctness checks a sweep runs on every loaded session, outside the timing loop.

Contamination: a frame alone vs the same frame inside a batch of others.
Parity: the session's outputs vs ONNX Runtime CPU on the FP32 source model, same frames.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from bench.checks import identities
from bench.checks.contamination import check_contamination
from bench.checks.parity import ParityGates, check_parity
from bench.domain import EMBEDDER, FP32_ARITHMETIC, InputFormat
from bench.face.images import to_blob
from bench.models.info import ModelInfo
from bench.models.precision import calibration_frames
from bench.runtimes.onnxruntime import OrtSession
from bench.session import Outputs

PARITY_FRAMES = 4
# The identity check's faces, at most (each comes with 4 variants): a folder of a thousand crops would
# hold gigabytes of frames for no better an answer. The first ones in name order.
IDENTITY_FACES_MAX = 16
# A uint8 artifact at FP32 runs the float model's own arithmetic behind the normalisation, so it
# must agree far tighter than a precision change; a wrong mean, std or channel order falls below.
UINT8_FP32_COSINE_MIN = 0.99999


def parity_frames(info: ModelInfo, images: tuple[str, ...] = ()) -> tuple[np.ndarray, int | None]:
    """(frames, faces): for an embedder whose `images` hold two or more aligned crops of its input size,
    those faces and their variants (bench.checks.identities) and the number of faces; otherwise real
    pictures where we have them (user images, else scikit-image's astronaut), else face-like synthetic
    ones, and None."""
    if info.family == EMBEDDER.name and images:
        faces = identities.load_faces(images, info.input_hw)[:IDENTITY_FACES_MAX]
        if len(faces) >= 2:  # a match needs a wrong face to beat
            found = identities.face_set(faces)
            return to_blob(found.crops, info.mean, info.std), found.faces
    pictures = list(images) or _astronaut()
    return calibration_frames(info.input_shape(1), info.family, PARITY_FRAMES, images=pictures or None), None


def infer_in_format(infer, fmt: InputFormat, info: ModelInfo):
    """`infer` taking normalised float NCHW frames, fed to a session that takes `fmt` frames."""
    if fmt.is_float:
        return infer
    return lambda frames: infer(fmt.from_normalised(frames, info.mean, info.std))


def gates_for_input(fmt: InputFormat, overrides: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """The suite's gate overrides, with the tighter FP32 cosine gate of uint8 inputs beneath them."""
    if not fmt.carries_pixels:  # float inputs, and FP16 I/O (FP16 arithmetic, its own gates)
        return overrides
    strict = {precision: UINT8_FP32_COSINE_MIN for precision in FP32_ARITHMETIC}
    return {**overrides, "cosine_min": {**strict, **overrides.get("cosine_min", {})}}


def _astronaut() -> list[np.ndarray]:
    try:
        from skimage import data
    except ImportError:
        return []
    return [data.astronaut()]


@lru_cache(maxsize=4)
def _reference_outputs_cached(model_path: str, frames_key: bytes, shape: tuple) -> Outputs:
    import onnxruntime as ort

    frames = np.frombuffer(frames_key, dtype=np.float32).reshape(shape)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    ort_session = ort.InferenceSession(model_path, options, providers=["CPUExecutionProvider"])
    session = OrtSession(ort_session, ort_session.get_inputs()[0].name, {})
    return stack_frames([session.infer(frames[i:i + 1]) for i in range(len(frames))])


def reference_outputs(info: ModelInfo, frames: np.ndarray) -> Outputs:
    """ORT CPU FP32 on the source model, one frame at a time (valid for every layout)."""
    return _reference_outputs_cached(info.path, frames.tobytes(), frames.shape)


def stack_frames(per_chunk: list[Outputs], valid: list[int] | None = None) -> Outputs:
    """Outputs of several runs -> one array per output name with frames on axis 0.

    A flattened 2-D detector output ([HWA, K], batch 1) gets its frame axis added.
    """
    stacked = {}
    for name in per_chunk[0]:
        parts = []
        for chunk_no, outputs in enumerate(per_chunk):
            array = np.asarray(outputs[name])
            if array.ndim == 2 and array.shape[0] != 1 and (valid is None or valid[chunk_no] == 1):
                array = array[None]
            parts.append(array if valid is None else array[:valid[chunk_no]])
        stacked[name] = np.concatenate(parts, axis=0)
    return stacked


def candidate_outputs(infer, frames: np.ndarray, batch: int) -> Outputs:
    """Run `frames` through a session compiled for `batch`, padding the last chunk."""
    chunks, valid = [], []
    for start in range(0, len(frames), batch):
        chunk = frames[start:start + batch]
        valid.append(len(chunk))
        if len(chunk) < batch:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - len(chunk), axis=0)])
        chunks.append(infer(np.ascontiguousarray(chunk)))
    return stack_frames(chunks, valid)


def contamination_check(infer, info: ModelInfo, batch: int, precision: str, seed: int):
    """bench.checks.contamination.ContaminationResult for the point (outputs paired by name)."""
    return check_contamination(infer, (3, *info.input_hw), batch, precision, seed=seed)


def parity_check(infer, info: ModelInfo, batch: int, precision: str, frames: np.ndarray,
                 gate_overrides: dict[str, dict[str, float]] | None = None, failure_hint: str = "",
                 identity_faces: int | None = None):
    """bench.checks.parity.ParityResult for the point; `failure_hint` (the likely cause) joins a failed gate's
    summary; `identity_faces` as parity_frames returns it."""
    reference = reference_outputs(info, frames)
    candidate = candidate_outputs(infer, frames, batch)
    gates = ParityGates.with_overrides(gate_overrides or {})
    result = check_parity(reference, candidate, info.family, precision, info.input_hw, gates,
                          identity_faces=identity_faces)
    result.hint = "" if result.passed else failure_hint
    return result
