"""The class-aware parts of a quality report: per-class metrics of a conditional model, and the utility test.

- **Per class** (conditional models): the evaluation's synthetic slices are drawn in the classes' training
  proportions (image ``i`` is ``POST /generate?seed=i`` with no label: ``models.platform.sampling.class_draw``).
  Each metric is computed again per class, the class's synthetic slices against that class's held-out (and
  training) slices, next to the pooled values; each class gets its own headline and its own collapse flag, so
  a class that collapsed while the other did not is caught.
- **Utility** (any labelled dataset with a conditional model): ``models.quality.utility`` trains a fixed small
  classifier on real, real + synthetic and synthetic slices and tests it on the held-out real slices.

Both need the real slices' class indices (``RealImages.heldout_labels`` / ``train_labels``); without them the
sections say why they are missing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.platform.sampling import class_draw, synthesize
from models.platform.schemas import LabelInfo, ModelManifest
from models.quality.metrics import one_thread
from models.quality.registry import EvalInputs, compute
from models.quality.snapshots import collapse_flag
from models.report.summary import summarize

PER_CLASS_MIN_REAL = 2  # held-out slices a class needs for its metrics
UTILITY_ONE_THREAD = 2000  # training slices below which the utility test's small CNN fits run on one CPU thread


@dataclass(frozen=True)
class Labelled:
    """Class indices of the evaluation's images (``None`` where unknown)."""

    synthetic: np.ndarray | None
    heldout: np.ndarray | None
    train: np.ndarray | None


def synthetic_labels(manifest: ModelManifest, count: int) -> np.ndarray | None:
    """The class index of each evaluation image of a conditional model (None for an unconditional one)."""
    if not manifest.labels:
        return None
    ordered = sorted(manifest.labels, key=lambda c: c.index)
    return class_draw(count, [c.train_images for c in ordered])


def _subset(images: np.ndarray | None, labels: np.ndarray | None, index: int) -> np.ndarray | None:
    if images is None or labels is None:
        return None
    return images[labels == index]


def class_metrics(
    names: Sequence[str],
    classes: list[LabelInfo],
    synthetic: np.ndarray,
    heldout: np.ndarray | None,
    train: np.ndarray | None,
    labels: Labelled,
    base: EvalInputs,
    on_class: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """``{class: {"metrics", "summary", "collapsed", "counts"}}``, each class against its own real slices."""
    out: dict[str, Any] = {}
    for c in sorted(classes, key=lambda c: c.index):
        if on_class is not None:
            on_class(c.name)
        syn = _subset(synthetic, labels.synthetic, c.index)
        held = _subset(heldout, labels.heldout, c.index)
        tr = _subset(train, labels.train, c.index)
        counts = {"synthetic": _len(syn), "heldout": _len(held), "train": _len(tr)}
        if syn is None or held is None or len(held) < PER_CLASS_MIN_REAL or len(syn) < 2:
            why = f"class {c.name!r} has {counts['heldout']} held-out and {counts['synthetic']} synthetic slices"
            out[c.name] = {"computed": False, "reason": why, "counts": counts}
            continue
        inputs = EvalInputs(tr if tr is not None and len(tr) >= 2 else None, held, syn, base.seed,
                            base.fid_weights, base.device)  # fmt: skip
        metrics = compute(list(names), inputs)
        out[c.name] = {
            "computed": True,
            "metrics": metrics,
            "summary": summarize(metrics),
            "collapsed": collapse_flag(metrics),
            "counts": counts,
        }
    return out


def _len(a: np.ndarray | None) -> int:
    return 0 if a is None else len(a)


def collapsed_classes(per_class: dict[str, Any]) -> list[str]:
    return [name for name, section in per_class.items() if section.get("collapsed")]


def synthesizer(session: Any, manifest: ModelManifest) -> Callable[[int, int, int], np.ndarray]:
    """``(class index, count, seed) -> uint8 [count, S, S]``: a conditional model's slices of one class."""

    def draw(index: int, count: int, seed: int) -> np.ndarray:
        labels = np.full(count, index, dtype=np.int64)
        return synthesize(session, manifest.latent_dim, count, seed, labels=labels)

    return draw


def utility_section(
    manifest: ModelManifest,
    session: Any,
    train: tuple[np.ndarray | None, np.ndarray | None],
    heldout: tuple[np.ndarray | None, np.ndarray | None],
    budget: tuple[float, int],
    abort_fn: Callable[[], bool] | None = None,
    progress_fn: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """The utility test of a conditional model on labelled real slices, or (``skipped``) why it was not run."""
    from models.quality.utility import UtilityConfig, UtilitySkipped, skipped_section, utility_test

    (train_x, train_y), (held_x, held_y) = train, heldout
    if not manifest.labels:
        return skipped_section("the model is not conditional: train it with conditional: true, so that it draws "
                               "slices of a chosen class to add to the real ones")  # fmt: skip
    if train_x is None or train_y is None or held_x is None or held_y is None:
        return skipped_section("the real slices' classes are not known")
    classes = {c.name: c.index for c in manifest.labels}
    seconds, seeds = budget
    try:
        with one_thread(len(train_x) < UTILITY_ONE_THREAD):  # tiny fits: intra-op threads cost more than they save
            return utility_test(train_x, train_y, held_x, held_y, classes, synthesizer(session, manifest),
                                UtilityConfig(seeds=seeds, budget_s=seconds), abort_fn=abort_fn,
                                progress_fn=progress_fn)  # fmt: skip
    except UtilitySkipped as exc:  # too few classes, or a class without held-out slices
        return skipped_section(str(exc))
