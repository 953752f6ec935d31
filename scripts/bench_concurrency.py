"""Concurrency against the runtimes' own tools, alternating in one run.

1. openvino-cpu with explicit streams (facebench concurrency N: NUM_STREAMS = N, N infer requests,
   no hint) against `benchmark_app -hint none -nstreams N -nireq N` on the same file and shape;
   the ratio facebench / benchmark_app should be >= 0.97.
2. ort-cpu concurrency N against concurrency 1 (N sessions, intra-op threads divided).

Each round measures every point once (A, B, C, then again), through the sweep's worker code,
so a shared machine's drift spreads over all of them. Prints each round and the medians.

Usage: python scripts/bench_concurrency.py [--model arcface_r50] [--batch 8] [--streams 2] [--rounds 3] [--time-s 5]
"""
from __future__ import annotations

import argparse
import statistics
import sys

from bench import store
from bench.measure.protocol import MeasureSettings
from bench.models import zoo
from bench.suite import Checks, parse_model_arg
from bench.worker import Job, run_job
from benchmark_app import benchmark_app_fps


def facebench_fps(info, runtime: str, batch: int, concurrency: int, settings: MeasureSettings) -> float:
    job = Job(model=info, runtime=runtime, precision="fp32", batches=[batch], settings=settings,
              checks=Checks(contamination=False, parity=False, peak_probes=False), concurrency=concurrency,
              cache_dir=str(zoo.cache_dir()))
    results = []
    run_job(job, lambda kind, payload: results.append(payload) if kind == "result" else None)
    row = store.flatten(results[0])
    if row["status"] != "ok":
        sys.exit(f"{runtime} concurrency {concurrency}: {row['status']}: {row.get('reason')}")
    return row["fps"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="arcface_r50")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--streams", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--time-s", type=float, default=5.0)
    args = parser.parse_args()
    info = zoo.resolve(parse_model_arg(args.model))
    settings = MeasureSettings(warmup_s=1.0, window_s=args.time_s / 3, window_min_iterations=3)
    shape = list(info.input_shape(args.batch))
    points = {
        f"openvino-cpu streams {args.streams} (facebench)":
            lambda: facebench_fps(info, "openvino-cpu", args.batch, args.streams, settings),
        f"benchmark_app -hint none -nstreams {args.streams} -nireq {args.streams}":
            lambda: benchmark_app_fps(info.path, info.input_name, shape, args.time_s, "-hint", "none",
                                      "-nstreams", str(args.streams), "-nireq", str(args.streams)),
        "ort-cpu concurrency 1": lambda: facebench_fps(info, "ort-cpu", args.batch, 1, settings),
        f"ort-cpu concurrency {args.streams}": lambda: facebench_fps(info, "ort-cpu", args.batch, args.streams, settings),
    }
    results: dict[str, list[float]] = {name: [] for name in points}
    for round_ in range(args.rounds):
        for name, measure in points.items():
            results[name].append(measure())
            print(f"round {round_ + 1} {name}: {results[name][-1]:.1f} frames/s", flush=True)
    medians = {name: statistics.median(values) for name, values in results.items()}
    names = list(points)
    print(f"\n{args.model} batch {args.batch}, medians of {args.rounds} rounds:")
    for name in names:
        print(f"  {name}: {medians[name]:.1f} frames/s")
    print(f"  openvino streams / benchmark_app: {medians[names[0]] / medians[names[1]]:.3f}")
    print(f"  ort-cpu concurrency {args.streams} / 1: {medians[names[3]] / medians[names[2]]:.3f}")


if __name__ == "__main__":
    main()
