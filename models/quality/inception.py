"""FID and KID on Inception features, from a local TorchScript file only (``DRAWAI_FID_WEIGHTS``).

The detector is the TorchScript Inception-v3 that StyleGAN2-ADA and clean-fid use
(``inception-2015-12-05.pt``): ``detector(x, return_features=True)`` maps float images
``[N, 3, H, W]`` with values 0..255 to 2048 pool features. Nothing is ever downloaded: without
the file, ``fid`` and ``kid`` are reported as not computed, with the reason.

Features are computed once per image set and shared by both metrics (``EvalInputs.cache``); the
statistics themselves are torchmetrics' ``FrechetInceptionDistance`` and
``KernelInceptionDistance``, fed the precomputed features through an identity extractor. The
reference pair is held-out real against training real; both distances are taken on samples of
one size (``_sets``), since FID and KID depend on it.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.quality.registry import EvalInputs, MetricSkipped, Values

log = logging.getLogger(__name__)

INPUT_SIZE = 299  # Inception-v3's input side
BATCH = 32  # images per detector call
KID_SUBSETS = 100
KID_MAX_SUBSET = 1000
MAX_PER_SIDE = 1000  # images per side for FID and KID (about 140 ms each through Inception on one CPU core pair)
NOT_SET = (
    "DRAWAI_FID_WEIGHTS is not set: FID and KID need the TorchScript Inception network "
    "(inception-2015-12-05.pt, as used by StyleGAN2-ADA and clean-fid) on local disk, and Draw.AI never downloads it"
)


class _Precomputed(nn.Module):
    """An identity "feature extractor": torchmetrics is handed features that were computed once."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _optimized(detector: Any, device: str) -> Any:
    """The detector frozen and optimized for inference (batch norm folded into convolutions: about 1.25x faster
    on a CPU), when TorchScript can; the detector as loaded otherwise."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            frozen = torch.jit.optimize_for_inference(torch.jit.freeze(detector))
            with torch.no_grad():
                frozen(torch.zeros(1, 3, INPUT_SIZE, INPUT_SIZE, device=device), return_features=True)
        return frozen
    except Exception as exc:  # a detector TorchScript cannot freeze still works as it is
        log.info("inception detector kept unfrozen: %s", exc)
        return detector


def load_detector(inputs: EvalInputs) -> Any:
    """The TorchScript detector at ``inputs.fid_weights`` (cached), or ``MetricSkipped`` saying why not."""
    if "inception_error" in inputs.cache:
        raise MetricSkipped(inputs.cache["inception_error"])
    if "inception" in inputs.cache:
        return inputs.cache["inception"]
    path = inputs.fid_weights
    try:
        if path is None:
            raise MetricSkipped(NOT_SET)
        if not path.is_file():
            raise MetricSkipped(f"DRAWAI_FID_WEIGHTS names {path}, which is not a file")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # the reference detector is TorchScript
                detector = torch.jit.load(str(path), map_location=inputs.device).eval()
            with torch.no_grad():
                probe = detector(torch.zeros(2, 3, INPUT_SIZE, INPUT_SIZE, device=inputs.device), return_features=True)
        except Exception as exc:  # TorchScript raises many types for a wrong or damaged file
            raise MetricSkipped(f"{path.name} is not a usable TorchScript Inception network: {exc}") from None
        if probe.ndim != 2 or probe.shape[0] != 2:
            raise MetricSkipped(f"{path.name} returns features of shape {tuple(probe.shape)}, not [N, D]")
        detector = _optimized(detector, inputs.device)
    except MetricSkipped as exc:
        inputs.cache["inception_error"] = str(exc)
        raise
    log.info("inception detector loaded from %s (%d features)", path, probe.shape[1])
    inputs.cache["inception"] = detector
    return detector


def features(inputs: EvalInputs, key: str, images: np.ndarray) -> torch.Tensor:
    """float64 ``[N, D]`` detector features of uint8 ``[N, H, W]`` images (cached under ``key``)."""
    cache_key = f"features:{key}"
    if cache_key in inputs.cache:
        return inputs.cache[cache_key]
    detector = load_detector(inputs)
    out = []
    with torch.no_grad():
        for start in range(0, len(images), BATCH):
            x = torch.from_numpy(np.asarray(images[start : start + BATCH], dtype=np.float32))[:, None]
            x = x.to(inputs.device).expand(-1, 3, -1, -1)  # grayscale to the three channels Inception expects
            if x.shape[-1] != INPUT_SIZE or x.shape[-2] != INPUT_SIZE:
                x = F.interpolate(
                    x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", antialias=True, align_corners=False
                )
            out.append(detector(x, return_features=True).double().cpu())
    result = torch.cat(out)
    inputs.cache[cache_key] = result
    return result


def _sets(inputs: EvalInputs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, str]:
    """Features of (real, synthetic, second real): ``n`` images each, the same ``n`` on every side.

    FID and KID shrink as samples grow, so the synthetic comparison (real vs synthetic) and its
    reference (real vs second real) are taken on samples of one size, ``n`` = the smallest set
    (at most ``MAX_PER_SIDE``), drawn with the evaluation's seed.
    """
    a, b, label = inputs.reference()
    n = min(len(a), len(b), len(inputs.synthetic), MAX_PER_SIDE)

    def pick(images: np.ndarray) -> np.ndarray:  # the same seeded draw for every set
        return images[np.sort(np.random.default_rng(inputs.seed).permutation(len(images))[:n])]

    real = features(inputs, "real", pick(a))
    second = features(inputs, "second_real", pick(b))
    synthetic = features(inputs, "synthetic", pick(inputs.synthetic))
    return real, synthetic, second, label


def _fid(real: torch.Tensor, other: torch.Tensor) -> float:
    from torchmetrics.image.fid import FrechetInceptionDistance

    metric = FrechetInceptionDistance(feature=_Precomputed(real.shape[1]))
    metric.update(real, real=True)
    metric.update(other, real=False)
    return float(metric.compute())


def _kid(real: torch.Tensor, other: torch.Tensor, seed: int) -> tuple[float, float]:
    from torchmetrics.image.kid import KernelInceptionDistance

    subset = min(len(real), len(other), KID_MAX_SUBSET)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "will save all extracted features": they are few, and held anyway
        metric = KernelInceptionDistance(feature=_Precomputed(real.shape[1]), subsets=KID_SUBSETS, subset_size=subset)
    metric.update(real, real=True)
    metric.update(other, real=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # the subsets are drawn with torch's global generator
        mean, std = metric.compute()
    return float(mean), float(std)


def frechet_distance(inputs: EvalInputs) -> Values:
    real, synthetic, second, label = _sets(inputs)
    return {
        "synthetic_vs_real": _fid(real, synthetic),
        "real_vs_real": _fid(real, second),
        "reference": label,
        "images_per_side": len(real),
        "features": int(real.shape[1]),
    }


def kernel_distance(inputs: EvalInputs) -> Values:
    real, synthetic, second, label = _sets(inputs)
    mean, std = _kid(real, synthetic, inputs.seed)
    ref_mean, ref_std = _kid(real, second, inputs.seed)
    return {
        "synthetic_vs_real": mean,
        "synthetic_vs_real_std": std,
        "real_vs_real": ref_mean,
        "real_vs_real_std": ref_std,
        "reference": label,
        "images_per_side": len(real),
        "subset_size": min(len(real), KID_MAX_SUBSET),
    }
