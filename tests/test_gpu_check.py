"""The GPU check (benchmarks/gpu_check.sh) where there is no GPU: a clear refusal at once, never a hang."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_gpu_check_without_nvidia_smi_exits_2_and_says_why(tmp_path: Path) -> None:
    """No nvidia-smi on PATH (a folder holding only what the script needs before its GPU test)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "dirname", "timeout"):
        found = shutil.which(tool)
        assert found, tool
        (bin_dir / tool).symlink_to(found)
    env = {**os.environ, "PATH": str(bin_dir)}
    out = subprocess.run([str(bin_dir / "bash"), "benchmarks/gpu_check.sh"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=60)  # fmt: skip
    assert out.returncode == 2 and "no NVIDIA GPU" in out.stderr, out
    assert not (ROOT / ".venv-gpu").exists()  # refused before any set-up


def test_gpu_check_python_part_refuses_without_cuda() -> None:
    """The Python half alone (as DRAWAI_GPU_CHECK_PYTHON runs it) exits 2 with a reason under a CPU build of torch."""
    import torch

    assert not torch.cuda.is_available()  # the project's test environment: the CPU wheel
    out = subprocess.run([sys.executable, "benchmarks/gpu_check.py"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)  # fmt: skip
    assert out.returncode == 2 and "no CUDA device" in out.stderr, out
