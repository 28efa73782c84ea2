"""Training precision: fp32, or mixed precision where the hardware runs it natively (detected at run time).

``"auto"`` trains in bf16 autocast on a CPU whose flags include a native bf16 dot product (AVX-512 BF16 or AMX-BF16:
read from ``/proc/cpuinfo``, never from CPU names; elsewhere bf16 would be emulated and slower than fp32); on CUDA
in bf16 where the GPU supports it, else fp16 with a gradient scaler; fp32 otherwise. Weights, optimizer state and
checkpoints stay fp32 in every case: a run resumes in any precision.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any

import torch

from models.platform.cpu import cpu_flags

log = logging.getLogger(__name__)

BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")  # a native bf16 dot product
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def cpu_has_bf16() -> bool:
    return any(flag in cpu_flags() for flag in BF16_CPU_FLAGS)


@dataclass(frozen=True)
class Precision:
    """The precision a run trains in on ``device_type``; ``autocast()`` wraps each forward pass."""

    name: str  # "fp32", "bf16" or "fp16"
    device_type: str

    @property
    def scaled(self) -> bool:
        """fp16 needs a gradient scaler (its range underflows small gradients); bf16 has fp32's range."""
        return self.name == "fp16"

    def autocast(self) -> Any:
        if self.name == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=DTYPES[self.name])


def choose_precision(requested: str, device: torch.device) -> Precision:
    """What ``requested`` ("auto", "fp32", "bf16", "fp16") runs as on ``device``; an unsupported request trains in
    fp32, with a warning."""
    if device.type == "cuda":
        bf16 = torch.cuda.is_bf16_supported()
        if requested == "auto":
            return Precision("bf16" if bf16 else "fp16", "cuda")
        if requested == "bf16" and not bf16:
            log.warning("this GPU has no bf16: training in fp16 with a gradient scaler")
            return Precision("fp16", "cuda")
        return Precision(requested, "cuda")
    if requested == "auto":
        return Precision("bf16" if cpu_has_bf16() else "fp32", device.type)
    if requested == "bf16" and not cpu_has_bf16():
        log.warning("this CPU has no native bf16 (%s): training in fp32", " or ".join(BF16_CPU_FLAGS))
        return Precision("fp32", device.type)
    if requested == "fp16" and device.type == "cpu":
        log.warning("fp16 training runs on CUDA only: training in fp32")
        return Precision("fp32", device.type)
    return Precision(requested, device.type)
