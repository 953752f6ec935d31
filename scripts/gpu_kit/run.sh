#!/usr/bin/env bash
# The whole GPU check as one command, within 12 minutes, everything under one folder.
#
#   scripts/gpu_kit/run.sh OUT_DIR            on the GPU machine, after the parts were received
#   scripts/gpu_kit/run.sh OUT_DIR --dry-run  on a CPU machine: every step but the GPU calls
#
# Steps, each under its own time limit (seconds), so a hung step costs its limit, not the session:
#   install   60  unpack the carried wheels into /tmp/facebench-site (PYTHONPATH)
#   env       60  nvidia-smi, facebench runtimes, facebench probe (GEMM/conv/copy peaks)
#   tests    120  the gpu-marked tests (CUDA events, pinned copies, graphs, NVML, ort-cuda)
#   sweep    300  suites/gpu-kit.toml: IResNet-50 and SCRFD-10G@320, fp32/fp16, batches 1/8/32/64,
#                 default and tuned ort-cuda options side by side
#   bare      90  harness vs bare run_with_iobinding loop on IResNet-50
# Sum of limits: 630 s (10.5 min), leaving the machine start inside 12 minutes.
# The parquet, logs and a summary land in OUT_DIR; the step that failed is named, the others still run.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:?usage: run.sh OUT_DIR [--dry-run]}
DRY=0; [ "${2:-}" = "--dry-run" ] && DRY=1
KIT=${KIT:-.gpu-kit}
PY=${PY:-python3}
SITE=/tmp/facebench-site
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 FACEBENCH_CACHE=${FACEBENCH_CACHE:-/tmp/facebench-cache}
export SUMMARY="$OUT/summary.txt" STEP_LOGS="$OUT"
: > "$SUMMARY"

source scripts/gpu_kit/steps.sh

if [ "$DRY" = 1 ]; then
  # CPU stand-ins: the same commands, on ort-cpu, with the GPU-only parts skipped or planned.
  step install 60 bash -c "bash scripts/gpu_kit/prepare.sh --dry-run"
  step env 60 "$PY" -m bench runtimes
  step tests 120 "$PY" -m pytest -q -rs -m gpu tests/test_gpu_runtimes.py  # every test skips with its reason
  step sweep 300 "$PY" -m bench run suites/gpu-kit.toml --runtimes ort-cpu --precisions fp32 --batches 1 \
      --models arcface_mbf --out "$OUT/gpu-kit.parquet"
  step bare 90 bash -c "$PY scripts/bench_gpu_vs_bare.py --runtime ort-cuda --model arcface_mbf --batches 1; \
      [ \$? -eq 2 ]"  # 2: ort-cuda unavailable, said in one line
else
  step install 60 bash scripts/gpu_kit/install.sh "$KIT" "$SITE"
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
  step env 60 bash -c "nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv && \
      $PY -m bench runtimes && $PY -m bench probe --runtimes ort-cuda --precisions fp32,fp16"
  step tests 120 "$PY" -m pytest -q -rs -m gpu tests/test_gpu_runtimes.py -k "not trt"
  step sweep 300 "$PY" -m bench run suites/gpu-kit.toml --out "$OUT/gpu-kit.parquet"
  step bare 90 "$PY" scripts/bench_gpu_vs_bare.py --runtime ort-cuda --model arcface_r50 --batches 8,64
fi
echo; echo "summary ($OUT/summary.txt):"; cat "$SUMMARY"
grep -qv " ok " "$SUMMARY" && exit 1 || exit 0
