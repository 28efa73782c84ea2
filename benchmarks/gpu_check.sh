#!/usr/bin/env bash
# The GPU check (issue 14): CUDA training of a 128 px job in mixed precision, a SIGKILL and a resume on the GPU,
# ONNX Runtime's CUDA provider (fp32 and an fp16 graph) against PyTorch on the same GPU, POST /generate through
# the API on the GPU, and the worker's GPU memory metrics; one table. Under 8 minutes on a GPU.
#
# Without an NVIDIA GPU it stops at once with exit status 2 and says why (it never hangs). Set-up on a bare
# machine: a virtual environment in .venv-gpu with a CUDA build of PyTorch and onnxruntime-gpu (the only
# downloads; from the package registry, before anything runs). DRAWAI_GPU_CHECK_PYTHON: use that Python instead.
#
#     bash benchmarks/gpu_check.sh            # prints the table; exit 0 when every check passed
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v nvidia-smi >/dev/null 2>&1 || ! timeout 20 nvidia-smi -L >/dev/null 2>&1; then
    echo "gpu_check: no NVIDIA GPU here (nvidia-smi is missing or lists no device): nothing to check" >&2
    exit 2
fi
timeout 20 nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

PY="${DRAWAI_GPU_CHECK_PYTHON:-}"
if [ -z "$PY" ]; then
    if [ ! -x .venv-gpu/bin/python ]; then
        python3 -m venv .venv-gpu
        # torch==2.13.0 from the index is the CUDA build on Linux x86_64 (the local CPU wheel is only a CI shortcut).
        timeout 900 .venv-gpu/bin/pip install -q "torch==2.13.0" "onnxruntime-gpu[cuda,cudnn]"
        timeout 600 .venv-gpu/bin/pip install -q -e ".[train]"
        timeout 300 .venv-gpu/bin/pip uninstall -q -y onnxruntime || true  # one onnxruntime module: the GPU one
        timeout 600 .venv-gpu/bin/pip install -q --force-reinstall --no-deps "onnxruntime-gpu[cuda,cudnn]"
    fi
    PY=.venv-gpu/bin/python
fi
exec timeout 480 "$PY" benchmarks/gpu_check.py "$@"
