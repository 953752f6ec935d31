"""Parity on trained weights and real faces, per runtime and precision (docs/models-and-precision.md: Precision and parity).

Embedder: the aligned faces in FACES (`facebench pipeline --save-crops FACES`) and their variants;
cosine to FP32 (min, median), identity rank-1 and smallest margin, matches lost. INT8 in both
recipes. Then the same FP32 model with 10% weight noise, which the identity gate must fail.
Detector: the pictures in PHOTOS letterboxed at 640; recall, precision, mean and worst landmark
error and worst box error against FP32 on ONNX Runtime CPU.

    python scripts/real_face_parity.py EMBEDDER.onnx FACES DETECTOR.onnx PHOTOS [--cache DIR]

Nothing is timed. Prints one Markdown table per model.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.checks import point_checks  # noqa: E402
from bench.models import zoo  # noqa: E402
from bench.models.precision import INT8_RECIPES, calibration_frames, images_in_folder  # noqa: E402
from bench.session import LoadRequest  # noqa: E402
from bench.runtimes.registry import get_runtime  # noqa: E402
from bench.suite import parse_model_arg  # noqa: E402
from bench.worker import build_artifact  # noqa: E402

RUNTIMES = ("ort-cpu", "openvino-cpu")
WEIGHT_NOISE = 0.10  # of each weight tensor's standard deviation


def variants(runtime) -> list[tuple[str, str | None]]:
    """(precision, INT8 recipe) pairs this runtime runs, INT8 in every recipe."""
    pairs = []
    for precision in runtime.precisions:
        if precision in ("simplified", "ir"):
            continue
        recipes = list(INT8_RECIPES) if precision == "int8" else [None]
        pairs += [(precision, recipe) for recipe in recipes]
    return pairs


def parity_row(runtime_name: str, info, precision: str, recipe: str | None, images: list[str], cache: Path,
               source: str | None = None):
    """The point's parity against FP32 on `info.path`; the candidate is built from `source` (default: the same file)."""
    runtime = get_runtime(runtime_name)
    frames, faces = point_checks.parity_frames(info, tuple(images))
    if recipe:
        os.environ["FACEBENCH_INT8_RECIPE"] = recipe
    calibration = calibration_frames(info.input_shape(1), info.family, 64, images=images) if precision == "int8" else None
    artifact = build_artifact(runtime, source or info.path, precision, cache, calibration)
    os.environ.pop("FACEBENCH_INT8_RECIPE", None)
    session = runtime.load(LoadRequest(model_path=artifact, input_name=info.input_name,
                                       input_shape=info.input_shape(1), precision=precision))
    try:
        return point_checks.parity_check(session.infer, info, 1, precision, frames, identity_faces=faces)
    finally:
        session.close()


def damaged_copy(path: str, out: Path) -> str:
    """`path` with Gaussian noise of WEIGHT_NOISE x each conv weight's spread (seed 0), as the tests damage models."""
    model = onnx.load(path)
    rng = np.random.default_rng(0)
    for init in model.graph.initializer:
        weights = numpy_helper.to_array(init)
        if weights.dtype == np.float32 and weights.ndim == 4:
            noisy = weights + rng.normal(0, WEIGHT_NOISE * weights.std(), weights.shape).astype(np.float32)
            init.CopyFrom(numpy_helper.from_array(noisy, init.name))
    onnx.save(model, out)
    return str(out)


def embedder_table(path: str, faces: list[str], cache: Path) -> None:
    print("| runtime | precision | recipe | cos min | cos median | rank-1 | smallest margin | lost | gate |")
    print("|---|---|---|---|---|---|---|---|---|")
    info = zoo.resolve(parse_model_arg(path))
    for name in RUNTIMES:
        for precision, recipe in variants(get_runtime(name)):
            print(embedder_line(name, precision, recipe, parity_row(name, info, precision, recipe, faces, cache)),
                  flush=True)
    damaged = damaged_copy(path, cache / "damaged.onnx")
    result = parity_row("ort-cpu", info, "fp32", None, faces, cache, source=damaged)
    print(embedder_line("ort-cpu", f"fp32 + {WEIGHT_NOISE:.0%} weight noise", None, result))


def embedder_line(runtime: str, precision: str, recipe: str | None, r) -> str:
    return (f"| {runtime} | {precision} | {recipe or '-'} | {r.cosine_min:.5f} | {r.cosine_median:.5f} | "
            f"{r.identity_rank1:.3f} | {r.identity_margin_min:.3f} | {r.identity_lost} | "
            f"{'pass' if r.passed else 'FAIL: ' + r.reason} |")


def detector_table(path: str, photos: list[str], cache: Path) -> None:
    print("| runtime | precision | recipe | faces (FP32) | recall | precision | landmark mean px | landmark worst px "
          "| box worst px | gate |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    info = zoo.resolve(parse_model_arg(path))
    for name in RUNTIMES:
        for precision, recipe in variants(get_runtime(name)):
            r = parity_row(name, info, precision, recipe, photos, cache)
            print(f"| {name} | {precision} | {recipe or '-'} | {r.ref_detections} | {_f(r.det_recall)} | "
                  f"{_f(r.det_precision)} | {_f(r.landmark_err_px, 2)} | {_f(r.landmark_err_worst_px, 2)} | "
                  f"{_f(r.box_err_max_px, 2)} | {'pass' if r.passed else 'FAIL: ' + r.reason} |", flush=True)


def _f(value, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("embedder")
    parser.add_argument("faces")
    parser.add_argument("detector")
    parser.add_argument("photos")
    parser.add_argument("--cache", default=None)
    args = parser.parse_args()
    cache = Path(args.cache or tempfile.mkdtemp(prefix="real-face-parity-"))
    embedder_table(args.embedder, [str(p) for p in images_in_folder(args.faces)], cache)
    print()
    detector_table(args.detector, [str(p) for p in images_in_folder(args.photos)], cache)


if __name__ == "__main__":
    main()
