"""How far a reduced precision's outputs sit from FP32: the figures the parity gates judge.

Runs each model (zoo replicas by name, real files by path) on one runtime at one precision,
batch 1, through the same parity check as a sweep (ONNX Runtime CPU FP32 on the source
model, same frames), and prints the gated figures beside the current gate. Use it to set a
precision's gates with a stated margin (docs/models-and-precision.md, Precision and parity).

Usage: python scripts/parity_margins.py --runtime openvino-cpu --precision bf16 \
           ../shared/fixtures/det_500m.onnx ../shared/fixtures/embedders/fr_feature.onnx arcface_r50 scrfd_10g
`--onnx-artifact` runs the ONNX artifact make_artifact builds for the precision (e.g. the BF16
file TensorRT consumes) instead of the runtime's own artifact.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from bench.checks import point_checks
from bench.checks.parity import ParityGates
from bench.models import zoo
from bench.models.info import inspect_model
from bench.models.precision import images_in_folder, make_artifact
from bench.session import LoadRequest
from bench.runtimes.registry import get_runtime
from bench.models.artifacts import build_artifact


def model_info(ref: str):
    return inspect_model(ref) if Path(ref).is_file() else zoo.build_cached(ref)


def parity_figures(runtime_name: str, precision: str, ref: str, onnx_artifact: bool, cache: Path,
                   images: tuple[str, ...] = ()) -> str:
    runtime, info = get_runtime(runtime_name), model_info(ref)
    path = (str(make_artifact(info.path, precision, cache)) if onnx_artifact
            else build_artifact(runtime, info.path, precision, cache))
    session = runtime.load(LoadRequest(path, info.input_name, info.input_shape(1), precision))
    try:
        frames, faces = point_checks.parity_frames(info, images)
        result = point_checks.parity_check(session.infer, info, 1, precision, frames, identity_faces=faces)
        ran = session.effective_precision()
    finally:
        session.close()
    gates = ParityGates()
    figures = [f"{check.metric} {check.value:.6g} (gate {check.gate})" for check in [result.deciding] if check]
    if result.det_recall is not None:
        figures += [f"recall {result.det_recall:.3f}", f"precision {_or_none(result.det_precision)}",
                    f"landmarks {_or_none(result.landmark_err_px)} px (gate {gates.limit('landmark_err_max_px', precision)})"]
    if result.cosine_min is not None:
        figures.append(f"cosine min {result.cosine_min:.5f} (gate {gates.limit('cosine_min', precision)})")
    if result.identity_margin_min is not None:
        figures.append(f"identities: rank-1 {result.identity_rank1:.3f}, smallest margin "
                       f"{result.identity_margin_min:.3f}, lost {result.identity_lost}")
    figures.append(f"worst output rel L2 {max(o.rel_l2 for o in result.outputs):.3g} "
                   f"(gate {gates.limit('output_rel_l2_max', precision)})")
    verdict = "passes" if result.passed else f"FAILS: {result.reason}"
    return f"{info.name} ({info.family}, ran {ran}, {result.ref_detections} reference faces): {'; '.join(figures)}; {verdict}"


def _or_none(value: float | None) -> str:
    return "none" if value is None else f"{value:.3f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="zoo names or ONNX paths")
    parser.add_argument("--runtime", default="openvino-cpu")
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--onnx-artifact", action="store_true", help="run make_artifact's ONNX file for the precision")
    parser.add_argument("--cache", default=str(zoo.cache_dir() / "artifacts"))
    parser.add_argument("--images", help="a folder of pictures (aligned crops: identity figures for embedders)")
    args = parser.parse_args()
    for ref in args.models:
        images = tuple(str(p) for p in images_in_folder(args.images)) if args.images else ()
        print(parity_figures(args.runtime, args.precision, ref, args.onnx_artifact, Path(args.cache), images), flush=True)
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
