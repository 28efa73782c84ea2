"""Export a generator to ONNX (the contract in DESIGN.md) and check it against PyTorch.

Signature: input ``z`` float32 ``[N, latent]`` (plus ``label`` int64 ``[N]`` for conditional
models), output ``image`` float32 ``[N, 1, H, W]`` in ``[-1, 1]``, dynamic ``N``.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from models.platform.store import sha256_file

__all__ = ["OPSET", "ParityError", "check_parity", "export_generator", "ort_session", "sha256_file"]

log = logging.getLogger(__name__)

OPSET = 17
PARITY_TOLERANCE = 1e-4


class ParityError(RuntimeError):
    """The exported ONNX model does not reproduce PyTorch's output."""


def export_generator(G: nn.Module, latent_dim: int, path: Path) -> None:
    """Write ``G`` (in eval mode, on the CPU) to ``path`` atomically."""
    G = G.to("cpu").eval()
    dummy = torch.zeros(2, latent_dim)
    tmp = path.with_suffix(".onnx.tmp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            G,
            (dummy,),
            str(tmp),
            input_names=["z"],
            output_names=["image"],
            dynamic_axes={"z": {0: "N"}, "image": {0: "N"}},
            opset_version=OPSET,
            dynamo=False,
        )
    os.replace(tmp, path)


def ort_session(path: Path, providers: list[str] | None = None) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=providers or ["CPUExecutionProvider"])


def check_parity(G: nn.Module, latent_dim: int, path: Path, batch: int = 8, seed: int = 0) -> float:
    """Max abs difference between PyTorch and ONNX Runtime on ``batch`` random latents; raises over 1e-4."""
    G = G.to("cpu").eval()
    z = torch.randn(batch, latent_dim, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        expected = G(z).numpy()
    got = ort_session(path).run(["image"], {"z": z.numpy()})[0]
    if got.shape != expected.shape:
        raise ParityError(f"ONNX output shape {got.shape} != PyTorch {expected.shape}")
    diff = float(np.max(np.abs(got - expected)))
    if not diff <= PARITY_TOLERANCE:
        raise ParityError(f"ONNX output differs from PyTorch by {diff:.3g} (> {PARITY_TOLERANCE})")
    return diff
