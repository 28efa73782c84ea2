"""Sampling a model version through ONNX Runtime: the latent convention, providers, batched synthesis.

Torch-free: the API (``/generate``) and the evaluation use the same functions, so image ``i`` of
an evaluation is exactly what ``POST /generate?seed=i`` returns for that version.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from models.platform.grids import to_uint8

log = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


def latents(latent_dim: int, seeds: list[int]) -> np.ndarray:
    """One latent vector per seed: an image is reproducible from its own seed alone."""
    return np.stack([np.random.default_rng(s).standard_normal(latent_dim, dtype=np.float32) for s in seeds])


def choose_providers(preference: str = "auto") -> list[str]:
    """CUDA first when ONNX Runtime offers it and it is wanted; the CPU always as the fallback."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if preference in ("auto", "cuda") and CUDA in available:
        return [CUDA, CPU]
    return [CPU]


def open_session(path: Path, providers: list[str] | None = None) -> Any:
    """An ``onnxruntime.InferenceSession`` on ``path``, quiet, with ``providers`` (default: the CPU)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=providers or [CPU])


def onnx_feeds(z: np.ndarray, labels: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """A generator's ONNX inputs (DESIGN.md): ``z`` float32 ``[N, latent]``, and for a conditional model ``label``
    int64 ``[N]``."""
    if labels is None:
        return {"z": z}
    return {"z": z, "label": np.asarray(labels, dtype=np.int64)}


def synthesize(
    session: Any, latent_dim: int, count: int, seed: int = 0, batch: int = 64, labels: np.ndarray | None = None
) -> np.ndarray:
    """uint8 ``[count, H, W]``: image ``i`` from the latent of seed ``seed + i`` (as ``/generate`` draws it), and
    for a conditional model of class index ``labels[i]``."""
    out = []
    for start in range(0, count, batch):
        seeds = list(range(seed + start, seed + min(count, start + batch)))
        part = None if labels is None else labels[start : start + len(seeds)]
        images = session.run(["image"], onnx_feeds(latents(latent_dim, seeds), part))[0]
        out.append(to_uint8(images[:, 0]))  # rounded as the API's PNG encoder does
    return np.concatenate(out) if out else np.zeros((0, 0, 0), np.uint8)


def proportional(count: int, weights: list[int]) -> list[int]:
    """``count`` split in proportion to ``weights`` (largest remainders, ties to the lower index): how a
    conditional model's images are spread over its classes when no class is asked for (``/generate``, reports)."""
    w = np.array([max(x, 0) for x in weights], dtype=float)
    if w.sum() <= 0:
        w = np.ones(len(w))
    exact = count * w / w.sum()
    counts = np.floor(exact).astype(int)
    for k in np.argsort(-(exact - counts), kind="stable")[: count - int(counts.sum())]:
        counts[k] += 1
    return [int(n) for n in counts]


def class_draw(count: int, train_counts: list[int]) -> np.ndarray:
    """int64 ``[count]`` class indices: ``proportional`` runs in index order (0, 0, ..., 1, ...)."""
    return np.repeat(np.arange(len(train_counts), dtype=np.int64), proportional(count, train_counts))
