"""The metric registry of the quality report: a metric is a name bound to a function of ``EvalInputs``.

In the style of StyleGAN2-ADA's ``metric_main``: a metric takes the evaluation inputs (``EvalInputs``:
the training split, the held-out real split and the synthetic images, all uint8 ``[N, H, W]`` of one
size, plus a seed) and returns a flat ``dict`` of values. ``compute(names, inputs)`` runs the named
metrics and times each; a metric that cannot run on these inputs raises ``MetricSkipped`` and is
reported as not computed, with the reason, instead of failing the others. The metrics themselves
register in ``models.quality.metrics`` (pixel statistics, the classifier test) and
``models.quality.inception`` (FID, KID); import ``models.quality.metrics`` to have them all.
Torch-free.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

Values = dict[str, Any]  # flat: numbers, strings, booleans


# One line per metric: what it measures and how to read it (shown in the report next to the values).
MEANINGS: dict[str, str] = {
    "c2st_auc": "ROC AUC of a small CNN telling real from synthetic slices: 0.5 = indistinguishable, 1 = always told "
    "apart (at or below the real reference: it found nothing).",
    "intensity_w1": "Wasserstein-1 distance between the pixel-intensity distributions (0 = identical histograms, "
    "1 = black against white).",
    "diversity_msssim": "Mean MS-SSIM between random pairs of images: higher = more alike. Synthetic far above real "
    "means mode collapse.",
    "memorization": "Share of synthetic slices closer to a training slice than 99% of held-out real slices are: "
    "likely copies of a training patient. The reference is the share real slices as novel as the held-out ones "
    "would show by chance; at or below it reads as expected, clearly above it as copying.",
    "fid": "Fréchet Inception distance between Inception features of real and synthetic slices: 0 = same feature "
    "distribution.",
    "kid": "Kernel Inception distance (unbiased, mean over subsets): 0 = same feature distribution; less biased than "
    "FID on small sets.",
}


class MetricSkipped(Exception):
    """A metric that cannot run on these inputs (too few images, no Inception weights); ``str`` says why."""


@dataclass(frozen=True)
class EvalInputs:
    """The images one evaluation compares: uint8 ``[count, H, W]`` arrays of one size, and a seed.

    ``real_train`` may be ``None`` (the training images are not available): memorization is then
    not computed, and references use two halves of ``real_heldout``.
    """

    real_train: np.ndarray | None
    real_heldout: np.ndarray
    synthetic: np.ndarray
    seed: int = 0
    fid_weights: Path | None = None  # TorchScript Inception (DRAWAI_FID_WEIGHTS); None: no FID/KID
    device: str = "cpu"  # where the classifier and the Inception network run
    # Work shared between metrics and the report: Inception features (fid, kid), nearest neighbours.
    cache: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        shapes = set()
        for name in ("real_train", "real_heldout", "synthetic"):
            array = getattr(self, name)
            if array is None and name == "real_train":
                continue
            if not isinstance(array, np.ndarray) or array.dtype != np.uint8 or array.ndim != 3:
                raise ValueError(f"{name} must be a uint8 array [count, H, W]")
            if len(array) < 2:
                raise ValueError(f"{name} needs at least 2 images, got {len(array)}")
            shapes.add(array.shape[1:])
        if len(shapes) != 1:
            raise ValueError(f"all images must have one size, got {sorted(shapes)}")

    def reference(self) -> tuple[np.ndarray, np.ndarray, str]:
        """Two real sets to compute a metric's reference on, and how they were chosen."""
        if self.real_train is not None:
            return self.real_heldout, self.real_train, "real vs training real"
        order = np.random.default_rng(self.seed).permutation(len(self.real_heldout))
        half = len(order) // 2
        return self.real_heldout[order[:half]], self.real_heldout[order[half:]], "two halves of the real images"


Metric = Callable[[EvalInputs], Values]
METRICS: dict[str, Metric] = {}


def register(fn: Metric) -> Metric:
    METRICS[fn.__name__] = fn
    return fn


def compute(
    names: Sequence[str], inputs: EvalInputs, on_metric: Callable[[str, int], None] | None = None
) -> dict[str, Values]:
    """Run the named metrics; each result carries ``computed``, ``seconds``, and ``reason`` when skipped.

    ``on_metric(name, index)`` is called before each metric (progress, cancellation).
    """
    unknown = [name for name in names if name not in METRICS]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; known: {sorted(METRICS)}")
    results: dict[str, Values] = {}
    for index, name in enumerate(names):
        if on_metric is not None:
            on_metric(name, index)
        start = time.perf_counter()
        try:
            values: Values = {"computed": True, **METRICS[name](inputs)}
        except MetricSkipped as exc:
            values = {"computed": False, "reason": str(exc)}
            logger.info("metric %s not computed: %s", name, exc)
        values["seconds"] = round(time.perf_counter() - start, 3)
        logger.info("metric %s: %s", name, values)
        results[name] = values
    return results
