"""Metrics of synthetic quality, each reported next to its reference point computed the same way.

Each metric registers in ``models.quality.registry`` (``register``); importing this module fills
the registry with all of them (FID and KID come from ``models.quality.inception``), and it
re-exports the registry's names, so ``from models.quality.metrics import METRICS, compute`` is
the one import a caller needs.

The reference of a metric is the same computation on two real sets: the held-out split against
the training split, or, when no training images are given (``drawai evaluate`` on a model whose
dataset is gone), two seeded halves of the real images.

- ``intensity_w1``: Wasserstein-1 distance between pixel-intensity distributions (scaled to
  [0, 1]), synthetic vs held-out real, next to the real reference. Exact for uint8: W1 is the
  area between the two CDFs over the 256 levels.
- ``diversity_msssim``: mean pairwise MS-SSIM among synthetic images and among held-out real
  ones (at most ``MAX_PAIRS`` random pairs each). Mode collapse shows as the synthetic value far
  above the real one. Scales are as many as the image size allows (3 at 64 px, 4 at 128 px).
- ``memorization``: distance (RMS over pixels in [0, 1]) of each synthetic image to its nearest
  training image, against the same for each held-out real image. ``likely_copies_fraction`` is
  the fraction of synthetic images strictly closer than the 1st percentile of the real ones;
  its reference (``reference_fraction``, ``copies_reference``) is what a generator whose slices
  are exactly as far from the training slices as held-out real ones gets by chance (about
  ``(1 + h) / (n + 1)`` for ``n`` real slices, 0.11 for 9), with the bound ``reference_upper``
  that such a generator exceeds 1 time in 20. Held-out slices are never neighbours of training
  slices (``models.data.split``), so the reference is the distance to unseen anatomy.
- ``c2st_auc``: classifier two-sample test. A small CNN learns held-out real vs synthetic on one
  half and is scored (ROC AUC) on the other half, both ways round (2 folds), on ``c2st_repeats``
  balanced subsamples (more for small sets), averaged; 0.5 means indistinguishable. The reference
  is the same test run on the two real sets: about 0.5, as the split keeps neighbouring slices of
  a volume out of the held-out side's comparison.
- ``fid`` and ``kid``: Fréchet and kernel Inception distances (torchmetrics) on the features of
  the Inception network at ``fid_weights`` (``DRAWAI_FID_WEIGHTS``); not computed without it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import beta
from sklearn.metrics import roc_auc_score
from torch import nn
from torchmetrics.functional.image import multiscale_structural_similarity_index_measure

from models.quality.inception import frechet_distance, kernel_distance
from models.quality.registry import MEANINGS, METRICS, EvalInputs, MetricSkipped, Values, compute, register

__all__ = [
    "MEANINGS",
    "METRICS",
    "EvalInputs",
    "MetricSkipped",
    "Values",
    "c2st_repeats",
    "compute",
    "copies_reference",
    "nearest",
    "nearest_training",
    "two_sample_auc",
]

MAX_PAIRS = 200  # MS-SSIM pairs sampled per image set
C2ST_SIZE = 64  # the classifier sees images at most this large
C2ST_EPOCHS = 12
C2ST_BATCH = 32
C2ST_REPEATS = 16  # at most this many balanced subsamples, each scored with 2 folds (the mean of 2 per repeat)
C2ST_SMALL = 64  # images per side below which one 2-fold estimate is averaged over several subsamples
MEMORIZATION_PERCENTILE = 1  # likely copies: closer than this percentile of the held-out real slices' distances
MEMORIZATION_CONFIDENCE = 0.95  # the reference's upper bound: a generator as novel as real slices exceeds it 1 in 20
MSSSIM_BETAS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)  # Wang et al. 2003, as in torchmetrics
MSSSIM_KERNEL = 11


def _unit(images: np.ndarray) -> torch.Tensor:
    """uint8 ``[N, H, W]`` -> float32 ``[N, 1, H, W]`` in [0, 1]."""
    return torch.from_numpy(images.astype(np.float32) / 255.0)[:, None]


# --- intensity_w1 -------------------------------------------------------------------------------


def _w1_uint8(a: np.ndarray, b: np.ndarray) -> float:
    """Exact W1 between the pixel-intensity distributions of two uint8 arrays, intensities scaled to [0, 1]."""
    cdf_a = np.cumsum(np.bincount(a.ravel(), minlength=256)) / a.size
    cdf_b = np.cumsum(np.bincount(b.ravel(), minlength=256)) / b.size
    return float(np.abs(cdf_a - cdf_b)[:-1].sum() / 255.0)


@register
def intensity_w1(inputs: EvalInputs) -> Values:
    a, b, reference = inputs.reference()
    return {
        "synthetic_vs_real": _w1_uint8(inputs.synthetic, inputs.real_heldout),
        "real_vs_real": _w1_uint8(a, b),
        "reference": reference,
    }


# --- diversity_msssim ---------------------------------------------------------------------------


def msssim_betas(size: int) -> tuple[float, ...]:
    """The most scales torchmetrics accepts at this size with an 11 px kernel, weights renormalised."""
    for count in range(len(MSSSIM_BETAS), 0, -1):
        if size >= 2**count and size // max(1, count - 1) ** 2 > MSSSIM_KERNEL - 1:
            betas = MSSSIM_BETAS[:count]
            return tuple(beta / sum(betas) for beta in betas)
    raise MetricSkipped(f"images of {size} px are too small for MS-SSIM")


def mean_pairwise_msssim(images: np.ndarray, rng: np.random.Generator, betas: tuple[float, ...]) -> float:
    n = len(images)
    first, second = np.triu_indices(n, k=1)
    if len(first) > MAX_PAIRS:
        pick = rng.choice(len(first), size=MAX_PAIRS, replace=False)
        first, second = first[pick], second[pick]
    x = _unit(images)
    scores = multiscale_structural_similarity_index_measure(
        x[first], x[second], data_range=1.0, kernel_size=MSSSIM_KERNEL, betas=betas, reduction="none"
    )
    return float(torch.as_tensor(scores).mean())


@register
def diversity_msssim(inputs: EvalInputs) -> Values:
    betas = msssim_betas(min(inputs.synthetic.shape[1:]))
    rng = np.random.default_rng(inputs.seed)
    return {
        "synthetic": mean_pairwise_msssim(inputs.synthetic, rng, betas),
        "real": mean_pairwise_msssim(inputs.real_heldout, rng, betas),
        "scales": float(len(betas)),
    }


# --- memorization -------------------------------------------------------------------------------


NEAREST_CHUNK = 256  # reference images compared at a time: bounded memory for large training sets


def nearest(queries: np.ndarray, references: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each query image, the RMS pixel distance (intensities in [0, 1]) to its nearest reference, and its index.

    Exact (no matrix-product shortcut), so a verbatim copy is at distance 0.
    """
    q = torch.from_numpy(queries.reshape(len(queries), -1).astype(np.float64) / 255.0)
    best = torch.full((len(q),), float("inf"), dtype=torch.float64)
    best_index = torch.zeros(len(q), dtype=torch.int64)
    for start in range(0, len(references), NEAREST_CHUNK):
        chunk = references[start : start + NEAREST_CHUNK]
        r = torch.from_numpy(chunk.reshape(len(chunk), -1).astype(np.float64) / 255.0)
        d, i = torch.cdist(q, r, compute_mode="donot_use_mm_for_euclid_dist").min(dim=1)
        closer = d < best
        best = torch.where(closer, d, best)
        best_index = torch.where(closer, i + start, best_index)
    return (best / np.sqrt(q.shape[1])).numpy(), best_index.numpy()


def nearest_training(inputs: EvalInputs, side: str) -> tuple[np.ndarray, np.ndarray]:
    """``nearest`` of the ``"synthetic"`` or ``"real_heldout"`` images among the training images (cached)."""
    if inputs.real_train is None:
        raise MetricSkipped("the training images are not available, so nothing can be compared with them")
    key = f"nearest:{side}"
    if key not in inputs.cache:
        inputs.cache[key] = nearest(getattr(inputs, side), inputs.real_train)
    return inputs.cache[key]


def copies_reference(real_count: int, synthetic_count: int) -> tuple[float, float]:
    """The share of synthetic slices below the threshold expected when they are exactly as far from the
    training slices as held-out real slices are, and the upper bound it stays under 19 times in 20.

    The threshold is the ``MEMORIZATION_PERCENTILE`` of ``real_count`` distances (linear interpolation at
    rank ``h``): a new draw of the same distribution falls below it with probability ``Beta(1 + h, n - h)``,
    mean ``(1 + h) / (n + 1)``: 0.11 for 9 held-out slices, 0.015 for 200, never 0.01 exactly. The bound adds
    the binomial spread of ``synthetic_count`` draws.
    """
    n = real_count
    h = (n - 1) * MEMORIZATION_PERCENTILE / 100
    expected = (1 + h) / (n + 1)
    spread = float(beta.ppf(MEMORIZATION_CONFIDENCE, 1 + h, n - h))
    binomial = 1.645 * np.sqrt(expected * (1 - expected) / max(1, synthetic_count))
    return float(expected), float(min(1.0, spread + binomial))


@register
def memorization(inputs: EvalInputs) -> Values:
    synthetic, _ = nearest_training(inputs, "synthetic")
    real, _ = nearest_training(inputs, "real_heldout")
    threshold = float(np.percentile(real, MEMORIZATION_PERCENTILE))
    reference, upper = copies_reference(len(real), len(synthetic))
    values: Values = {
        "likely_copies_fraction": float(np.mean(synthetic < threshold)),
        "threshold": threshold,
        "reference_fraction": reference,  # what a generator as novel as the held-out real slices gets
        "reference_upper": upper,
    }
    for q in (1, 5, 50):
        values[f"synthetic_p{q}"] = float(np.percentile(synthetic, q))
        values[f"real_p{q}"] = float(np.percentile(real, q))
    return values


# --- c2st_auc -----------------------------------------------------------------------------------


def _classifier() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 4, stride=2, padding=1),
        nn.LeakyReLU(0.2),
        nn.Conv2d(16, 32, 4, stride=2, padding=1),
        nn.LeakyReLU(0.2),
        nn.Conv2d(32, 64, 4, stride=2, padding=1),
        nn.LeakyReLU(0.2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(64, 1),
    )


def _c2st_input(images: np.ndarray) -> torch.Tensor:
    x = _unit(images)
    if max(x.shape[-2:]) > C2ST_SIZE:
        scale = C2ST_SIZE / max(x.shape[-2:])
        size = (max(1, round(x.shape[-2] * scale)), max(1, round(x.shape[-1] * scale)))
        x = F.interpolate(x, size=size, mode="area")
    return x * 2.0 - 1.0


def _fit_and_score(
    x_fit: torch.Tensor, y_fit: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor, seed: int, device: str
) -> float:
    """Train a fresh classifier on one part (on ``device``) and return its ROC AUC on the other."""
    x_fit, y_fit, x_test = x_fit.to(device), y_fit.to(device), x_test.to(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _classifier().to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
        order = torch.Generator().manual_seed(seed)
        model.train()
        for _ in range(C2ST_EPOCHS):
            for batch in torch.randperm(len(x_fit), generator=order).to(device).split(C2ST_BATCH):
                loss = F.binary_cross_entropy_with_logits(model(x_fit[batch]).squeeze(1), y_fit[batch])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        model.eval()
        with torch.no_grad():
            scores = model(x_test).squeeze(1).float().cpu()
    return float(roc_auc_score(y_test.numpy(), scores.numpy()))


def c2st_repeats(n: int) -> int:
    """Subsamples for ``n`` images per side, ``(C2ST_SMALL / n) ** 2`` rounded up, 1 to ``C2ST_REPEATS``.

    One 2-fold estimate on a few held-out slices is too noisy to read: on the demo (real vs real) its
    spread across classifier seeds is about 0.2 with 9 images per side (readings from 0.1 to 0.8) and
    0.06 with 28, about as 1 / n; averaging ``r`` subsamples narrows it about as 1 / sqrt(r). On the
    ``kaggle_like`` benchmark set (33 held-out slices against 186 training ones, real vs real) one estimate
    read 0.34 to 0.57 across six seeds, four averaged 0.38 to 0.48. So: 16 repeats up to 16 images, 4 for
    33, 2 from 46, one from 64 up; the work, repeats x images, is at most that of one test on about 260
    images per side.
    """
    return max(1, min(C2ST_REPEATS, math.ceil((C2ST_SMALL / max(1, n)) ** 2)))


def two_sample_auc(
    negatives: np.ndarray, positives: np.ndarray, seed: int, device: str = "cpu", repeats: int | None = None
) -> float:
    """Mean ROC AUC of a CNN telling ``positives`` from ``negatives``: 2 folds on each of ``repeats``
    balanced subsamples (default ``c2st_repeats``), each drawn and folded afresh."""
    n = min(len(negatives), len(positives))
    if n < 4:
        raise MetricSkipped(f"the classifier two-sample test needs at least 4 images per side, got {n}")
    repeats = c2st_repeats(n) if repeats is None else repeats
    aucs = []
    with one_thread(device == "cpu" and n < C2ST_SMALL):
        for r in range(repeats):
            rng = np.random.default_rng([seed, r])
            neg = _c2st_input(negatives[rng.permutation(len(negatives))[:n]])
            pos = _c2st_input(positives[rng.permutation(len(positives))[:n]])
            fit = torch.zeros(n, dtype=torch.bool)
            fit[: n // 2] = True
            for k, mask in enumerate((fit, ~fit)):
                x_fit, x_test = torch.cat([neg[mask], pos[mask]]), torch.cat([neg[~mask], pos[~mask]])
                y_fit = torch.cat([torch.zeros(int(mask.sum())), torch.ones(int(mask.sum()))])
                y_test = torch.cat([torch.zeros(int((~mask).sum())), torch.ones(int((~mask).sum()))])
                aucs.append(_fit_and_score(x_fit, y_fit, x_test, y_test, seed + 2 * r + k, device))
    return float(np.mean(aucs))


@contextmanager
def one_thread(active: bool) -> Iterator[None]:
    """The many tiny fits of a small set on one CPU thread: on batches of a few 64 px images intra-op
    threads cost more than they save, and on a busy machine they wait for each other (the demo's
    evaluation: 40 s with 2 threads on 2 shared cores, 8 s with one). Restored afterwards."""
    saved = torch.get_num_threads()
    if not active or saved == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


@register
def c2st_auc(inputs: EvalInputs) -> Values:
    a, b, reference = inputs.reference()
    n = min(len(inputs.real_heldout), len(inputs.synthetic))
    return {
        "synthetic_vs_real": two_sample_auc(inputs.real_heldout, inputs.synthetic, inputs.seed, inputs.device),
        "real_vs_real": two_sample_auc(a, b, inputs.seed, inputs.device),
        "reference": reference,
        "images_per_side": n,
        "repeats": c2st_repeats(n),
    }


# --- fid, kid -----------------------------------------------------------------------------------


@register
def fid(inputs: EvalInputs) -> Values:
    return frechet_distance(inputs)


@register
def kid(inputs: EvalInputs) -> Values:
    return kernel_distance(inputs)
