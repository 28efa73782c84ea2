"""FID and KID on Inception features, from a local TorchScript file only (``DRAWAI_FID_WEIGHTS``).

The detector is the TorchScript Inception-v3 that StyleGAN2-ADA and clean-fid use
(``inception-2015-12-05.pt``): ``detector(x, return_features=True)`` maps float images
``[N, 3, H, W]`` with values 0..255 to 2048 pool features. Nothing is ever downloaded: without
the file, ``fid`` and ``kid`` are reported as not computed, with the reason.

Features are computed once per image set and shared by both metrics (``EvalInputs.cache``); the
statistics themselves are torchmetrics' ``FrechetInceptionDistance`` and
``KernelInceptionDistance``, fed the precomputed features through an identity extractor. The
reference pair is held-out real against training real, with the training side subsampled to the
synthetic count so both distances are taken on samples of the same size.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.quality import EvalInputs, MetricSkipped, Values

log = logging.getLogger(__name__)

INPUT_SIZE = 299  # Inception-v3's input side
BATCH = 32  # images per detector call
KID_SUBSETS = 100
KID_MAX_SUBSET = 1000
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


def _pairs(inputs: EvalInputs) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor], str]:
    """(real, synthetic) and the reference (real, real) feature pairs."""
    real = features(inputs, "real_heldout", inputs.real_heldout)
    synthetic = features(inputs, "synthetic", inputs.synthetic)
    a, b, label = inputs.reference()
    if inputs.real_train is not None:  # the second real side at the synthetic count, seeded
        pick = np.sort(np.random.default_rng(inputs.seed).permutation(len(b))[: len(inputs.synthetic)])
        reference = (real, features(inputs, "real_train_subset", b[pick]))
    else:
        reference = (features(inputs, "real_half_a", a), features(inputs, "real_half_b", b))
    return (real, synthetic), reference, label


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
    (real, synthetic), (ref_a, ref_b), label = _pairs(inputs)
    return {
        "synthetic_vs_real": _fid(real, synthetic),
        "real_vs_real": _fid(ref_a, ref_b),
        "reference": label,
        "features": int(real.shape[1]),
    }


def kernel_distance(inputs: EvalInputs) -> Values:
    (real, synthetic), (ref_a, ref_b), label = _pairs(inputs)
    mean, std = _kid(real, synthetic, inputs.seed)
    ref_mean, ref_std = _kid(ref_a, ref_b, inputs.seed)
    return {
        "synthetic_vs_real": mean,
        "synthetic_vs_real_std": std,
        "real_vs_real": ref_mean,
        "real_vs_real_std": ref_std,
        "reference": label,
        "subset_size": min(len(real), len(synthetic), KID_MAX_SUBSET),
    }
