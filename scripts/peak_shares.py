"""How close the default models come to this machine: probe peaks and the best points' shares.

Measures the peak probes again (`facebench probe`) for the CPU runtimes, then sweeps the default
suite's models (IResNet-50, SCRFD-10G@320) on them and prints a Markdown table of each
runtime's and precision's best point as a share of its own probes.

    python scripts/peak_shares.py --out results/peak-shares.parquet [--batches 1,8,16]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import store  # noqa: E402


def facebench(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "bench", *args], cwd=REPO, check=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="results/peak-shares.parquet")
    parser.add_argument("--runtimes", default="ort-cpu,openvino-cpu")
    parser.add_argument("--precisions", default="fp32,int8")
    parser.add_argument("--batches", default="1,8,16")
    args = parser.parse_args()
    facebench("probe", "--runtimes", args.runtimes, "--precisions", args.precisions)
    facebench("run", "suites/default.toml", "--runtimes", args.runtimes, "--precisions", args.precisions,
              "--batches", args.batches, "--out", args.out)
    rows = [r for r in store.read_rows(args.out) if r["status"] == "ok" and r.get("verdict") == "VALID"]
    best: dict[tuple, dict] = {}
    for r in rows:
        key = (r["model"], r["runtime"], r["precision"])
        if key not in best or r["fps"] > best[key]["fps"]:
            best[key] = r
    print("| model | runtime | precision | best batch | frames/s | GFLOP/s | GEMM probe | conv probe | % GEMM | % conv |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for (model, runtime, precision), r in sorted(best.items()):
        cells = [r["batch"], f"{r['fps']:.1f}", f"{r['gflops_achieved']:.0f}", f"{r['peak_gemm_gflops']:.0f}",
                 f"{r['peak_conv_gflops']:.0f}", f"{r['pct_gemm_peak']:.0f}%", f"{r['pct_conv_peak']:.0f}%"]
        print(f"| {model} | {runtime} | {precision} | " + " | ".join(map(str, cells)) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
