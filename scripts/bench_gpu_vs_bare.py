"""Side by side: facebench's GPU loop against a bare loop on the same session and buffers.

For `trt` the bare compute call is `context.execute_async_v3(stream)`; for `ort-cuda` it is
`session.run_with_iobinding(io, run_options)`. Same model, same device and pinned buffers,
same stream. For each batch the two loops alternate (harness, bare, harness, bare, ...)
and the median frames/s of each is compared:

- compute-only: the CUDA loop's compute-only pass vs `for _: launch()`;
- end-to-end: the CUDA loop's window (CUDA events around H2D, compute, D2H) vs a bare
  `memcpyAsync H2D; launch; memcpyAsync D2H` loop without events.

The gate (issue 5): harness frames/s within --tolerance (3%) of the bare loop, for both.
Exit status 1 when a batch misses it, 2 when the runtime is unavailable.

    python scripts/bench_gpu_vs_bare.py --runtime trt --model arcface_mbf --batches 1,8,32
    python scripts/bench_gpu_vs_bare.py --runtime ort-cuda --model arcface_r50 --batches 1,8,64
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.measure.loops import CudaEventLoop  # noqa: E402
from bench.measure.protocol import make_inputs, steady_window  # noqa: E402
from bench.models import zoo  # noqa: E402
from bench.models.precision import make_artifact  # noqa: E402
from bench.session import LoadRequest  # noqa: E402
from bench.runtimes.cuda import copy_d2h_async, copy_h2d_async, import_cudart  # noqa: E402
from bench.runtimes.registry import get_runtime  # noqa: E402
from bench.suite import parse_model_arg  # noqa: E402

# Like for like: both loops make the same compute call (no CUDA graph replay, warm caches).
OPTIONS = {"trt": {"cuda_graph": False, "cold_start": "warm"}, "ort-cuda": {"cuda_graph": False}}


def bare_compute_fps(parts, iterations: int, batch: int) -> float:
    launch, stream = parts.launch, parts.stream
    t0 = time.perf_counter_ns()
    for _ in range(iterations):
        launch()
    stream.synchronize()
    return batch * iterations / ((time.perf_counter_ns() - t0) / 1e9)


def bare_end_to_end_fps(parts, host_ptr: int, iterations: int, batch: int) -> float:
    cudart = import_cudart()
    launch, stream = parts.launch, parts.stream
    t0 = time.perf_counter_ns()
    for _ in range(iterations):
        copy_h2d_async(parts.input_device_ptr, host_ptr, parts.input_nbytes, stream, cudart)
        if parts.sync_after_h2d:
            stream.synchronize()
        launch()
        for device_ptr, out_host_ptr, nbytes in parts.outputs:
            copy_d2h_async(out_host_ptr, device_ptr, nbytes, stream, cudart)
    stream.synchronize()
    return batch * iterations / ((time.perf_counter_ns() - t0) / 1e9)


def iterations_for(loop: CudaEventLoop, seconds: float) -> int:
    window = loop.window(20)  # the timed loop alone: no compute-only pass
    per_iteration_s = window.wall_ns / 1e9 / window.iterations
    return max(20, int(seconds / max(per_iteration_s, 1e-7)))


def model_file(runtime, info, precision: str) -> str:
    """The file the sweep would give this runtime: fp16 comes from an FP16 artifact, not a flag."""
    artifact = runtime.artifact_for(precision)
    if artifact == "fp32":
        return info.path
    return str(make_artifact(info.path, artifact, zoo.cache_dir() / "artifacts"))


def compare_batch(runtime, model: str, batch: int, precision: str, repeats: int, seconds: float) -> dict:
    info = zoo.resolve(parse_model_arg(model))
    shape = info.input_shape(batch)
    request = LoadRequest(model_path=model_file(runtime, info, precision), input_name=info.input_name, input_shape=shape,
                          precision=precision, options=OPTIONS[runtime.name], cache_dir=str(zoo.cache_dir()))
    session = runtime.load(request)
    loop = None
    try:
        inputs = make_inputs(shape, 4, 0, info.mean, info.std)
        loop = CudaEventLoop(session, inputs)  # the loop measure() drives a CUDA session with
        n = iterations_for(loop, seconds)
        parts = session.parts()
        host_ptr = session.stage(inputs[0]).ptr  # a pinned input like the ones the harness uses
        harness_e2e, harness_compute, bare_e2e, bare_compute = [], [], [], []
        for _ in range(repeats):
            window = steady_window(loop, n)
            harness_e2e.append(batch * n / (window.wall_ns / 1e9))
            harness_compute.append(batch * n / (window.compute_only_wall_ns / 1e9))
            bare_e2e.append(bare_end_to_end_fps(parts, host_ptr, n, batch))
            bare_compute.append(bare_compute_fps(parts, n, batch))
        med = statistics.median
        return {"batch": batch, "iterations": n,
                "harness_compute": med(harness_compute), "bare_compute": med(bare_compute),
                "harness_e2e": med(harness_e2e), "bare_e2e": med(bare_e2e)}
    finally:
        if loop is not None:
            loop.close()
        session.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runtime", default="trt", choices=sorted(OPTIONS))
    parser.add_argument("--model", default="arcface_mbf", help="built-in name (scrfd_10g@320) or .onnx path")
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "fp16"))
    parser.add_argument("--repeats", type=int, default=7, help="alternating harness/bare rounds per batch")
    parser.add_argument("--seconds", type=float, default=1.0, help="length of each loop")
    parser.add_argument("--tolerance", type=float, default=3.0, help="allowed shortfall in percent")
    args = parser.parse_args()
    runtime = get_runtime(args.runtime)
    ok, reason = runtime.available()
    if not ok:
        print(f"{args.runtime} unavailable: {reason}", file=sys.stderr)
        return 2
    failed = False
    print(f"{args.runtime} {args.model} {args.precision}")
    print(f"{'batch':>5} {'iters':>7} {'compute fps':>12} {'bare':>12} {'ratio':>7} "
          f"{'e2e fps':>12} {'bare e2e':>12} {'ratio':>7}")
    for batch in (int(b) for b in args.batches.split(",")):
        r = compare_batch(runtime, args.model, batch, args.precision, args.repeats, args.seconds)
        compute_ratio = r["harness_compute"] / r["bare_compute"]
        e2e_ratio = r["harness_e2e"] / r["bare_e2e"]
        limit = 1 - args.tolerance / 100
        miss = compute_ratio < limit or e2e_ratio < limit
        failed |= miss
        print(f"{batch:>5} {r['iterations']:>7} {r['harness_compute']:>12.1f} {r['bare_compute']:>12.1f} "
              f"{compute_ratio:>7.3f} {r['harness_e2e']:>12.1f} {r['bare_e2e']:>12.1f} {e2e_ratio:>7.3f}"
              f"{'  MISS' if miss else ''}")
    print(f"gate: harness within {args.tolerance:g}% of the bare loop: {'FAILED' if failed else 'passed'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
