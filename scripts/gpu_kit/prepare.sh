#!/usr/bin/env bash
# On a CPU machine with the package registry: gather what the GPU check needs and the GPU
# image lacks, as parts of at most 62 MiB (the device tool carries 64 MiB per call).
#
#   scripts/gpu_kit/prepare.sh            -> .gpu-kit/part-00, part-01, ... and MANIFEST
#   scripts/gpu_kit/prepare.sh --dry-run  -> the download and split plan only
#
# The image (docs/gpu-kit.md) has Python 3.12, CUDA 13, cuda-bindings, nvidia-ml-py, onnx and
# CPU onnxruntime; it lacks onnxruntime-gpu (the CUDA 13 build, ~255 MB), onnxconverter-common
# (the fp16 artifacts) and openvino (not needed on the GPU). Versions come from locks/gpu.txt,
# so the GPU runs what the lock says.
set -euo pipefail
cd "$(dirname "$0")/../.."
KIT=${KIT:-.gpu-kit}
PART_MB=${PART_MB:-62}
PY=${PY:-python3}
DRY=0; [ "${1:-}" = "--dry-run" ] && DRY=1

locked() {  # the version locks/gpu.txt pins for $1
  sed -n "s/^$1==\([^ ;]*\).*/\1/p" locks/gpu.txt | head -1
}
WHEELS=("onnxruntime-gpu==$(locked onnxruntime-gpu)" "onnxconverter-common==$(locked onnxconverter-common)")
for spec in "${WHEELS[@]}"; do
  case "$spec" in *==) echo "prepare: locks/gpu.txt pins no ${spec%==}; run make lock" >&2; exit 2;; esac
done

echo "prepare: ${WHEELS[*]} for cp312 manylinux x86_64 -> $KIT (parts of $PART_MB MiB)"
if [ "$DRY" = 1 ]; then echo "prepare: dry run, nothing downloaded"; exit 0; fi

rm -rf "$KIT" && mkdir -p "$KIT/wheels"
grep -qx "/$KIT/" .git/info/exclude 2>/dev/null || echo "/$KIT/" >> .git/info/exclude
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform any -d "$KIT/wheels" "${WHEELS[@]}"
# One archive, xz-compressed (the CUDA provider library shrinks by about a third), then cut.
tar -C "$KIT" -cf - wheels | xz -T0 -6 > "$KIT/kit.tar.xz"
split -b "${PART_MB}M" -d "$KIT/kit.tar.xz" "$KIT/part-"
(cd "$KIT" && sha256sum kit.tar.xz part-* > MANIFEST)
rm -rf "$KIT/wheels" "$KIT/kit.tar.xz"
ls -l "$KIT"
echo "prepare: carry $KIT/part-NN one per device call (docs/gpu-kit.md)"
