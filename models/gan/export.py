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

__all__ = ["OPSET", "ParityError", "check_parity", "export_generator", "onnx_inputs", "ort_session", "sha256_file"]

log = logging.getLogger(__name__)

OPSET = 17
PARITY_TOLERANCE = 1e-4


class ParityError(RuntimeError):
    """The exported ONNX model does not reproduce PyTorch's output."""


def onnx_inputs(G: nn.Module) -> list[str]:
    """The ONNX inputs of ``G``: ``z``, and ``label`` for a conditional generator."""
    return ["z", "label"] if getattr(G, "num_classes", None) else ["z"]


def _inputs(G: nn.Module, z: torch.Tensor, label: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
    if "label" not in onnx_inputs(G):
        return (z,)
    return (z, label if label is not None else torch.zeros(len(z), dtype=torch.int64))


def export_generator(G: nn.Module, latent_dim: int, path: Path) -> None:
    """Write ``G`` (in eval mode, on the CPU) to ``path`` atomically."""
    G = G.to("cpu").eval()
    dummy = _inputs(G, torch.zeros(2, latent_dim))
    names = onnx_inputs(G)
    tmp = path.with_suffix(".onnx.tmp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            G,
            dummy,
            str(tmp),
            input_names=names,
            output_names=["image"],
            dynamic_axes={**{name: {0: "N"} for name in names}, "image": {0: "N"}},
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
    """Max abs difference between PyTorch and ONNX Runtime on ``batch`` random latents (for every class of a
    conditional generator); raises over 1e-4."""
    G = G.to("cpu").eval()
    z = torch.randn(batch, latent_dim, generator=torch.Generator().manual_seed(seed))
    session = ort_session(path)
    names = onnx_inputs(G)
    classes: list[int | None] = list(range(int(getattr(G, "num_classes")))) if "label" in names else [None]  # noqa: B009
    worst = 0.0
    for c in classes:
        label = None if c is None else torch.full((batch,), c, dtype=torch.int64)
        inputs = _inputs(G, z, label)
        with torch.no_grad():
            expected = G(*inputs).numpy()
        feeds = {name: t.numpy() for name, t in zip(names, inputs, strict=True)}
        got = session.run(["image"], feeds)[0]
        if got.shape != expected.shape:
            raise ParityError(f"ONNX output shape {got.shape} != PyTorch {expected.shape}")
        diff = float(np.max(np.abs(got - expected)))
        if not diff <= PARITY_TOLERANCE:
            which = "" if c is None else f" for class index {c}"
            raise ParityError(f"ONNX output differs from PyTorch by {diff:.3g}{which} (> {PARITY_TOLERANCE})")
        worst = max(worst, diff)
    return worst
