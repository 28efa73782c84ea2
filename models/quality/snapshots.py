"""Score generator snapshots during training, cheaply, to publish the best one rather than the last.

GAN training on a few dozen slices does not improve monotonically: late snapshots can be worse
(D overfits, G drifts or collapses). ``SnapshotScorer`` is the training loop's ``score_fn``
(``models.gan.training.ScoreFn``). Each snapshot is scored with two signals of the quality report,
made small enough to run a few times during a job (a second or two each on two CPU cores):

- the classifier two-sample test (``c2st_auc``'s classifier, 2 subsamples x 2 folds) between
  ``SNAPSHOT_SAMPLES`` samples at a fixed noise and as many **training** slices: the held-out
  split is left untouched for the report, so choosing a snapshot never biases the report's tests;
- the diversity check (mean pairwise MS-SSIM of the samples against that of the training slices).

``score = |auc - 0.5| + max(0, diversity_ratio - 1 - DIVERSITY_TOLERANCE)``: lower is better.
A snapshot whose samples are far more alike than the real slices (MS-SSIM above the real value
plus ``COLLAPSE_MARGIN`` of the way to 1, i.e. to identical images) is flagged ``collapsed``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from models.gan.training import generate, prepare_images
from models.platform.grids import to_uint8
from models.quality.metrics import mean_pairwise_msssim, msssim_betas, two_sample_auc

SNAPSHOT_SAMPLES = 64  # samples per snapshot (and at most as many training slices)
SNAPSHOT_REPEATS = 2  # balanced subsamples, each scored with 2 folds
DIVERSITY_TOLERANCE = 0.15  # samples up to 15 % more alike than the real slices cost nothing
COLLAPSE_MARGIN = 0.5  # collapsed: MS-SSIM above real + 0.5 * (1 - real)


def collapsed(synthetic_msssim: float, real_msssim: float) -> bool:
    """Mode collapse by the diversity check: the samples are far more alike than the real slices are."""
    return synthetic_msssim > real_msssim + COLLAPSE_MARGIN * (1.0 - real_msssim)


def collapse_flag(metrics: dict[str, Any]) -> bool | None:
    """Mode collapse by a report's diversity check (``collapsed``); None when it was not computed."""
    div = metrics.get("diversity_msssim") or {}
    if not div.get("computed"):
        return None
    return collapsed(float(div["synthetic"]), float(div["real"]))


class SnapshotScorer:
    """``score_fn`` for ``models.gan.training.train``: scores a generator against a fixed set of training slices."""

    def __init__(self, train_images: np.ndarray, image_size: int, latent_dim: int, seed: int = 0,
                 labels: np.ndarray | None = None) -> None:  # fmt: skip
        """``labels``: the training images' class indices, for a conditional generator: its samples are drawn for
        the labels of the picked training slices, so both sides hold the classes in the same proportions."""
        rng = np.random.default_rng(seed)
        pick = np.sort(rng.permutation(len(train_images))[:SNAPSHOT_SAMPLES])
        picked = None if labels is None else np.resize(np.asarray(labels)[pick], SNAPSHOT_SAMPLES)  # repeated if short
        self.labels = None if picked is None else torch.as_tensor(picked, dtype=torch.int64)
        self.real = to_uint8(prepare_images(train_images[pick], image_size, torch.device("cpu")).numpy()[:, 0])
        self.z = torch.randn(SNAPSHOT_SAMPLES, latent_dim, generator=torch.Generator().manual_seed(seed + 7))
        self.seed = seed
        self.betas = msssim_betas(image_size)
        self.real_msssim = mean_pairwise_msssim(self.real, np.random.default_rng(seed), self.betas)

    def samples(self, G: nn.Module) -> np.ndarray:
        device = next(G.parameters()).device
        with torch.no_grad():
            fake = generate(G, self.z.to(device), None if self.labels is None else self.labels.to(device))
        return to_uint8(fake.float().cpu().numpy()[:, 0])

    def __call__(self, G: nn.Module) -> dict[str, Any]:
        fake = self.samples(G)
        auc = two_sample_auc(self.real, fake, self.seed, "cpu", repeats=SNAPSHOT_REPEATS)
        msssim = mean_pairwise_msssim(fake, np.random.default_rng(self.seed), self.betas)
        ratio = msssim / max(self.real_msssim, 1e-6)
        score = abs(auc - 0.5) + max(0.0, ratio - 1.0 - DIVERSITY_TOLERANCE)
        return {
            "score": round(score, 4),
            "c2st_auc": round(auc, 4),
            "diversity_msssim": round(msssim, 4),
            "real_msssim": round(self.real_msssim, 4),
            "diversity_ratio": round(ratio, 4),
            "collapsed": collapsed(msssim, self.real_msssim),
        }
