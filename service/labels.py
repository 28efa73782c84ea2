"""Which class each generated image is drawn as: ``label=``, ``labels=`` or the training proportions.

Torch-free and pure: ``/generate`` calls ``plan_classes`` and answers a ``LabelError`` with a 422.

- An unconditional model takes neither ``label`` nor ``labels``.
- ``label=yes``: every image of class ``yes``.
- ``labels=yes:48,no:16``: that many of each, in that order (``count``, when given, must be their sum).
- Neither: ``count`` spread over the classes in the proportions of the model's training images (largest
  remainders, ties to the lower class index), in class-index order.

Image ``i`` always uses seed ``seed + i``, so the same seed, classes and model give the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

import numpy as np

from models.platform.sampling import proportional
from models.platform.schemas import LabelInfo


class LabelError(ValueError):
    """A label request the model cannot serve (the message is the 422's detail)."""


@dataclass(frozen=True)
class ClassPlan:
    """The classes of a request's images, in order: ``runs`` as (class, count), and one index per image."""

    runs: list[tuple[str, int]]
    indices: np.ndarray  # int64 [count], the ONNX ``label`` input

    @property
    def names(self) -> list[str]:
        return [name for name, n in self.runs for _ in range(n)]

    @property
    def header(self) -> str:
        """``yes:48,no:16``: the X-DrawAI-Classes header (class names percent-encoded: a header is latin-1, and
        ``,`` and ``:`` separate its items)."""
        return ",".join(f"{quote(name, safe='')}:{n}" for name, n in self.runs if n)


def parse_labels(labels: str) -> list[tuple[str, int]]:
    """``yes:48,no:16`` as ``[("yes", 48), ("no", 16)]``: the form only (whole counts from 1, no class twice), read
    before the model is known so admission counts the right rows; ``plan_classes`` checks the names."""
    runs: list[tuple[str, int]] = []
    for item in labels.split(","):
        name, sep, number = item.strip().rpartition(":")
        if not sep or not name:
            raise LabelError(f"labels must look like 'yes:48,no:16' (class:count, comma-separated), not {labels!r}")
        if any(name == seen for seen, _ in runs):
            raise LabelError(f"class {name!r} appears twice in labels")
        if not number.isascii() or not number.isdigit() or int(number) < 1:
            raise LabelError(f"labels: the count of {name!r} must be a whole number from 1")
        runs.append((name, int(number)))
    return runs


def _known(classes: list[LabelInfo]) -> str:
    return ", ".join(repr(c.name) for c in classes)


def _proportional(count: int, classes: list[LabelInfo]) -> list[tuple[str, int]]:
    """``count`` spread over ``classes`` by their training images (``models.platform.sampling.proportional``)."""
    ordered = sorted(classes, key=lambda c: c.index)
    counts = proportional(count, [c.train_images for c in ordered])
    return [(c.name, n) for c, n in zip(ordered, counts, strict=True)]


def plan_classes(
    classes: list[LabelInfo] | None,
    count: int | None,
    label: str | None,
    labels: list[tuple[str, int]] | None,
    max_count: int,
) -> tuple[int, ClassPlan | None]:
    """(number of images, their classes) for a request (``labels`` as ``parse_labels`` read it); ``classes`` is
    None for an unconditional model."""
    if not classes:
        if label is not None or labels is not None:
            raise LabelError("this model is not conditional: it takes no label or labels")
        return count or 1, None
    if label is not None and labels is not None:
        raise LabelError("give label (one class) or labels (class:count list), not both")
    if label is not None:
        if label not in {c.name for c in classes}:
            raise LabelError(f"unknown class {label!r}; this model's classes: {_known(classes)}")
        runs = [(label, count or 1)]
    elif labels is not None:
        if unknown := [name for name, _ in labels if name not in {c.name for c in classes}]:
            raise LabelError(f"unknown class {unknown[0]!r} in labels; this model's classes: {_known(classes)}")
        runs = labels
        total = sum(n for _, n in runs)
        if count is not None and count != total:
            raise LabelError(f"count={count} but labels asks for {total} images: give one of them, or make them agree")
    else:
        runs = _proportional(count or 1, classes)
    total = sum(n for _, n in runs)
    if total > max_count:
        raise LabelError(f"count must be between 1 and {max_count} (labels asks for {total})")
    index = {c.name: c.index for c in classes}
    indices = np.array([index[name] for name, n in runs for _ in range(n)], dtype=np.int64)
    return total, ClassPlan([(name, n) for name, n in runs if n], indices)
