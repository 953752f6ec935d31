#!/usr/bin/env bash
# On the GPU machine: check the received parts against MANIFEST, unpack, install into SITE.
set -euo pipefail
KIT=${1:?usage: install.sh KIT_DIR SITE_DIR} SITE=${2:?usage: install.sh KIT_DIR SITE_DIR}
PY=${PY:-python3}
(cd "$KIT" && sha256sum -c --quiet MANIFEST) || { echo "kit parts missing or damaged in $KIT: receive every part first"; exit 2; }
rm -rf /tmp/facebench-kit && mkdir -p /tmp/facebench-kit
cat "$KIT"/part-* | xz -d | tar -C /tmp/facebench-kit -xf -
"$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" /tmp/facebench-kit/wheels/*.whl
PYTHONPATH="$SITE" "$PY" -c "import onnxruntime as ort; print('onnxruntime', ort.__version__, ort.get_available_providers())"
