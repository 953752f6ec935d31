#!/usr/bin/env bash
# Verify the GPU runtimes on a machine with an NVIDIA GPU, one layer at a time; each layer
# builds on the one before, so the first failure says where to look:
#   0 environment   nvidia-smi, the gpu extra, `facebench runtimes`
#   1 primitives    CUDA events, pinned/device copies, CUDA-graph capture, NVML matched by UUID
#   2 ort-cuda      IOBinding session vs CPU outputs, stage split, CUDA graphs; a quick sweep
#   3 TensorRT      ort-trt (profiles, caches, cold start twice) and native trt; a quick sweep;
#                   the 3% side-by-side check against a bare execute_async_v3 loop
#                   (layer 2 makes the same check for ort-cuda against bare run_with_iobinding)
#   4 reference     facebench run suites/gpu.toml --out results/reference/<gpu>.parquet
#
#   scripts/gpu_verify.sh            all layers
#   scripts/gpu_verify.sh 2          up to layer 2
#   SKIP_REFERENCE=1 scripts/gpu_verify.sh   layers 0-3 (the reference sweep takes hours)
set -euo pipefail
cd "$(dirname "$0")/.."
LAST=${1:-4}
PY=${PY:-.venv/bin/python}
OUT=${OUT:-results/gpu-verify}
mkdir -p "$OUT"

layer() { echo; echo "=== layer $1: $2 ==="; }
stop_after() { [ "$LAST" -le "$1" ] && { echo; echo "done (layers 0-$1)"; exit 0; } || true; }

layer 0 "environment"
nvidia-smi --query-gpu=name,driver_version,uuid,pci.bus_id,clocks.sm,clocks.max.sm --format=csv
[ -n "${NO_INSTALL:-}" ] || make .venv/.installed-gpu EXTRA=gpu  # the gpu extra; a no-op when installed
"$PY" -m pip list 2>/dev/null | grep -iE '^(onnxruntime|tensorrt|cuda-|nvidia-ml-py|pynvml)' || true
"$PY" scripts/ensure_one_onnxruntime.py --after gpu
"$PY" -m bench runtimes
stop_after 0

layer 1 "CUDA events, pinned copies, CUDA graphs, NVML"
"$PY" -m pytest -q -rs tests/test_gpu_runtimes.py -m gpu -k "cuda_pinned or cuda_graph_capture or nvml"
stop_after 1

layer 2 "ONNX Runtime CUDA EP"
"$PY" -m pytest -q -rs tests/test_gpu_runtimes.py -m gpu -k "ort_cuda"
"$PY" -m bench run suites/quick.toml --runtimes ort-cuda --batches 1,8 --out "$OUT/ort-cuda-quick.parquet"
"$PY" scripts/bench_gpu_vs_bare.py --runtime ort-cuda --model arcface_mbf --batches 1,8,64
stop_after 2

layer 3 "TensorRT: ORT TensorRT EP and native TensorRT"
"$PY" -m pytest -q -rs tests/test_gpu_runtimes.py -m gpu -k "ort_trt or gpu_trt"
"$PY" -m bench run suites/quick.toml --runtimes ort-trt,trt --precisions fp32,fp16 --batches 1,8 \
    --out "$OUT/trt-quick.parquet"
"$PY" scripts/bench_gpu_vs_bare.py --runtime trt --model arcface_mbf --batches 1,8,32
"$PY" scripts/bench_gpu_vs_bare.py --runtime trt --model scrfd_10g@640 --batches 1,8
stop_after 3

if [ "${SKIP_REFERENCE:-0}" = "1" ]; then echo "SKIP_REFERENCE=1: reference sweep skipped"; exit 0; fi
layer 4 "reference sweep"
GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | tr '[:upper:]' '[:lower:]' | tr -cs 'a-z0-9' '-' | sed 's/-$//')
mkdir -p results/reference
"$PY" -m bench run suites/gpu.toml --out "results/reference/${GPU}.parquet"
echo "reference results: results/reference/${GPU}.parquet"
