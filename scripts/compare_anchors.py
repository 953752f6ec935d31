"""facebench against the runtimes' own reference loops, measured alternately in one run.

1. OpenVINO CPU, THROUGHPUT hint: facebench's openvino-cpu session vs OpenVINO's
   benchmark_app (shipped in the openvino wheel) on the same ONNX file and shape.
   fp32: both with INFERENCE_PRECISION_HINT f32; --precision bf16: facebench's bf16 point vs
   benchmark_app's default precision (no -infer_precision: bf16 on CPUs with AMX / AVX512_BF16).
2. ONNX Runtime CPU: facebench's ort-cpu session vs a bare `session.run` loop (fp32 only).

Usage: python scripts/compare_anchors.py [--model arcface_r50] [--batch 8] [--rounds 3] [--seconds 10]
       [--precision fp32|bf16]
Prints each round and the ratio of medians (facebench / anchor); paste into docs/journal.md.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np

from bench.measure.protocol import MeasureSettings, make_inputs, measure
from bench.models import zoo
from bench.session import LoadRequest
from bench.runtimes.registry import get_runtime
from benchmark_app import RUNTIME_DEFAULT, benchmark_app_run


def facebench_fps(runtime_name: str, info, batch: int, seconds: float, precision: str = "fp32") -> float:
    runtime = get_runtime(runtime_name)
    shape = info.input_shape(batch)
    session = runtime.load(LoadRequest(info.path, info.input_name, shape, precision))
    if precision != "fp32" and session.effective_precision() != precision:
        sys.exit(f"{runtime_name} ran {session.effective_precision()} where {precision} was asked")
    try:
        settings = MeasureSettings(warmup_s=1.0, window_s=seconds / 3, window_min_iterations=3, max_windows=3)
        return measure(session, make_inputs(shape, 4, 0, info.mean, info.std), batch, settings).fps
    finally:
        session.close()


def bare_ort_fps(info, batch: int, seconds: float) -> float:
    import onnxruntime as ort

    session = ort.InferenceSession(info.path, providers=["CPUExecutionProvider"])
    inputs = make_inputs(info.input_shape(batch), 4, 0, info.mean, info.std)
    feed = {info.input_name: inputs[0]}
    for _ in range(3):
        session.run(None, feed)
    count, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        session.run(None, {info.input_name: inputs[count % 4]})
        count += 1
    return batch * count / (time.perf_counter() - t0)


def alternate(name: str, ours, anchor, rounds: int) -> None:
    mine, theirs = [], []
    for round_no in range(rounds):
        if round_no % 2:  # ABBA: a load that rises or falls through the sitting favours neither side
            theirs.append(anchor())
            mine.append(ours())
        else:
            mine.append(ours())
            theirs.append(anchor())
        print(f"{name} round {round_no + 1}: facebench {mine[-1]:.1f} frames/s, anchor {theirs[-1]:.1f} frames/s")
    ratio = statistics.median(mine) / statistics.median(theirs)
    # Each round's own ratio: on a shared machine the load drifts less within a round than across them.
    paired = sorted(m / t for m, t in zip(mine, theirs))
    print(f"{name}: median facebench {statistics.median(mine):.1f} / anchor {statistics.median(theirs):.1f} = {ratio:.3f}; "
          f"median of the rounds' ratios {statistics.median(paired):.3f} ({paired[0]:.2f}-{paired[-1]:.2f})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="arcface_r50")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                        help="facebench's openvino-cpu precision; bf16 is compared with benchmark_app's default")
    args = parser.parse_args()
    info = zoo.build_cached(args.model)
    print(f"{info.name} batch {args.batch}, {args.seconds:g} s per measurement, {args.rounds} alternating rounds, "
          f"facebench {args.precision}")
    anchor_precision = "f32" if args.precision == "fp32" else RUNTIME_DEFAULT

    def anchor() -> float:
        fps, ran = benchmark_app_run(info.path, info.input_name, list(info.input_shape(args.batch)), args.seconds,
                                     "-hint", "throughput", infer_precision=anchor_precision)
        print(f"  benchmark_app computed in {ran}")
        return fps

    alternate("openvino-cpu vs benchmark_app",
              lambda: facebench_fps("openvino-cpu", info, args.batch, args.seconds, args.precision), anchor, args.rounds)
    if args.precision == "fp32":  # ONNX Runtime's CPU provider has no BF16 kernels for these models
        alternate("ort-cpu vs bare session.run", lambda: facebench_fps("ort-cpu", info, args.batch, args.seconds),
                  lambda: bare_ort_fps(info, args.batch, args.seconds), args.rounds)
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
