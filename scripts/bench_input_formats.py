"""uint8 frames (preprocessing inside the graph) against normalised float input, side by side in one run.

Every (model, runtime, input format) point is measured through the sweep's own worker code
(artifact, fresh session, protocol), round after round (A, B, C, D, then again) so a drift of a
shared machine spreads over every point; the first round also runs the parity and
contamination checks. Prints each round and the medians; paste the table into docs/journal.md.

Usage: python scripts/bench_input_formats.py [--models arcface_r50,scrfd_10g@320] [--runtimes ort-cpu,openvino-cpu]
       [--formats float-nchw,uint8-nhwc-bgr] [--batch 8] [--rounds 3] [--window-s 1.0]
"""
from __future__ import annotations

import argparse
import statistics
from dataclasses import replace

from bench import store
from bench.measure.protocol import MeasureSettings
from bench.models import zoo
from bench.suite import Checks, parse_model_arg
from bench.worker import Job, run_job


def measure_point(job: Job) -> dict:
    results = []
    run_job(job, lambda kind, payload: results.append(payload) if kind == "result" else None)
    return store.flatten(results[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="arcface_r50,scrfd_10g@320")
    parser.add_argument("--runtimes", default="ort-cpu,openvino-cpu")
    parser.add_argument("--formats", default="float-nchw,uint8-nhwc-bgr")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--window-s", type=float, default=1.0)
    args = parser.parse_args()

    settings = MeasureSettings(warmup_s=1.0, window_s=args.window_s, window_min_iterations=3)
    jobs = []
    for text in args.models.split(","):
        info = zoo.resolve(parse_model_arg(text))
        for runtime in args.runtimes.split(","):
            for fmt in args.formats.split(","):
                jobs.append(Job(model=info, runtime=runtime, precision="fp32", batches=[args.batch],
                                settings=settings, checks=Checks(peak_probes=False), input_format=fmt,
                                cache_dir=str(zoo.cache_dir())))
    fps: dict[tuple, list[float]] = {}
    checks: dict[tuple, str] = {}
    for round_no in range(args.rounds):
        for job in jobs:
            key = (job.model.name, job.runtime, job.input_format)
            row = measure_point(job if round_no == 0 else replace(job, checks=Checks(False, False, False)))
            if row["status"] != "ok":
                raise SystemExit(f"{key}: {row['status']}: {row.get('reason')}")
            if round_no == 0:
                checks[key] = f"{row.get('parity_summary')}, clean={row.get('contamination_passed')}"
            fps.setdefault(key, []).append(row["fps"])
            print(f"round {round_no + 1} {' '.join(key)} batch {args.batch}: {row['fps']:.1f} frames/s "
                  f"{row['verdict']} ({row['input_bytes_per_frame']} B/frame)", flush=True)

    formats = args.formats.split(",")
    print(f"\n| model | runtime | {' | '.join(formats)} | ratio {formats[-1]} / {formats[0]} | checks ({formats[-1]}) |")
    print(f"| --- | --- | {' | '.join('---:' for _ in formats)} | ---: | --- |")
    for name, runtime in dict.fromkeys((k[0], k[1]) for k in fps):
        medians = [statistics.median(fps[(name, runtime, f)]) for f in formats]
        cells = " | ".join(f"{m:.1f}" for m in medians)
        print(f"| {name} | {runtime} | {cells} | {medians[-1] / medians[0]:.3f} | {checks[(name, runtime, formats[-1])]} |")


if __name__ == "__main__":
    main()
