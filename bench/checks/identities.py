"""Do identities survive a precision? A small real-face check for embedders.

Faces: aligned 112x112 crops (the pictures of `--images` at exactly the embedder's input size;
`facebench pipeline --save-crops DIR` writes them). Each face gets four deterministic variants
(horizontal flip, brightness +25, a 5 degree rotation, JPEG quality 40). A variant is matched
when its embedding is nearer (cosine) to its own face's original than to every other original.
The figures: the rank-1 rate over all variants and the smallest margin (cosine to the own
original minus the best wrong one). The gate: a precision may not lose a match FP32 keeps.

This is a handful of faces, not a recall figure on a benchmark set.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bench.models.precision import as_rgb_uint8

VARIANTS = ("flip", "brighter", "rotated", "jpeg")
BRIGHTNESS_STEP = 25
ROTATION_DEG = 5.0
JPEG_QUALITY = 40


@dataclass
class FaceSet:
    """Originals first, then each face's variants in VARIANTS order: RGB uint8 crops."""

    crops: np.ndarray  # (faces * (1 + len(VARIANTS)), H, W, 3)
    faces: int

    @property
    def owners(self) -> np.ndarray:
        """Index of the original each variant belongs to, variant by variant."""
        return np.repeat(np.arange(self.faces), len(VARIANTS))


@dataclass
class IdentityFigures:
    matched: np.ndarray  # bool per variant: nearest to its own original
    margins: np.ndarray  # per variant: cosine to the own original minus the best wrong one

    @property
    def rank1(self) -> float:
        return float(self.matched.mean())

    @property
    def margin_min(self) -> float:
        return float(self.margins.min())


def face_set(faces: Sequence[np.ndarray]) -> FaceSet:
    """The originals and their variants, in FaceSet order."""
    originals = [np.ascontiguousarray(face, dtype=np.uint8) for face in faces]
    variants = [variant for face in originals for variant in face_variants(face)]
    return FaceSet(np.stack(originals + variants), len(originals))


def face_variants(face: np.ndarray) -> list[np.ndarray]:
    """Flip, brighter, rotated, JPEG-re-encoded: the same person, deterministically."""
    import cv2  # facebench[extras], as for the pipeline's pictures

    h, w = face.shape[:2]
    flipped = np.ascontiguousarray(face[:, ::-1])
    brighter = np.clip(face.astype(np.int16) + BRIGHTNESS_STEP, 0, 255).astype(np.uint8)
    turn = cv2.getRotationMatrix2D((w / 2, h / 2), ROTATION_DEG, 1.0)
    rotated = cv2.warpAffine(face, turn, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    ok, jpeg = cv2.imencode(".jpg", face[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:  # pragma: no cover - OpenCV encodes any uint8 image
        raise OSError("JPEG encoding of a face failed")
    reencoded = cv2.imdecode(jpeg, cv2.IMREAD_COLOR)[..., ::-1]
    return [flipped, brighter, rotated, np.ascontiguousarray(reencoded)]


def identity_figures(embeddings: np.ndarray, faces: int) -> IdentityFigures:
    """Embeddings in FaceSet order -> which variants find their own original, and by how much."""
    vectors = np.asarray(embeddings, dtype=np.float64).reshape(len(embeddings), -1)
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), np.finfo(np.float64).tiny)
    originals, variants = vectors[:faces], vectors[faces:]
    cosine = variants @ originals.T  # (variants, faces)
    owners = np.repeat(np.arange(faces), len(VARIANTS))
    own = cosine[np.arange(len(variants)), owners]
    wrong = np.where(np.eye(faces, dtype=bool)[owners], -np.inf, cosine).max(axis=1) if faces > 1 else own - 2
    return IdentityFigures(matched=own > wrong, margins=own - wrong)


def load_faces(images: Sequence[str], size: tuple[int, int]) -> list[np.ndarray]:
    """The pictures of `images` that are aligned crops: exactly `size` (H, W) pixels."""
    pictures = [as_rgb_uint8(path) for path in images]
    return [picture for picture in pictures if picture.shape[:2] == tuple(size)]
