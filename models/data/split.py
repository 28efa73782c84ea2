"""The held-out split, grouped by source: no slice of a held-out volume, series or file is trained on.

Neighbouring slices of one volume are near-copies. A split that scatters them on both sides of the
line makes every comparison of "held-out" with "training" slices a comparison of near-copies: the
held-out slices stop being new images, and the quality report's real-vs-real references (the
classifier two-sample test, the memorization threshold) measure the distance between neighbours
instead of the distance to unseen anatomy. So the split works on **groups** (``Source``): a NIfTI
volume (one plane of it), a DICOM series, or an image file; image files of one folder named as a
numbered series (``slice_026.png``, ``slice_028.png``...) with one stem, suffix and original size
are one group (a volume exported slice by slice), their number giving the slice order.

Per class (``grouped_split``), about ``fraction`` of the class's images are held out:

- **whole groups** when whole groups can come near the share: groups are visited in a seeded random
  order and one is held out when that brings the held-out count closer to the target
  (``round(fraction * n)``), never the last training group. Kept when it reaches at least half the
  target (so between half and twice the target: a class of single files gets exactly the target,
  a class of 4 equal volumes one volume);
- else (one volume, or a few large ones) **slabs** inside each group of more than one slice:
  ``round(fraction * m)`` slices of a group of ``m`` held out in blocks of about ``slab`` consecutive
  positions (the group's sorted order, not its numbers: a series numbered every other slice still
  counts its neighbours as 1 position apart), spread evenly through the group with a seeded offset,
  so the held-out slices cover every level of the anatomy; the ``gap`` positions on each side of
  every block are dropped from both sides (``dropped``, reported as skipped), so every training
  slice is at least ``gap + 1`` positions from every held-out slice. Fewer, larger blocks when
  evenly spaced blocks would leave no training slice between them; a group too small to keep a
  training slice beyond the gap holds nothing out.

A volume filed by label (``vol/yes/slice_050.png``, ``vol/no/slice_052.png``: one numbered series once the
class's folder is left out) holds rows of several classes; such groups are split together, as one extra
stratum, at their **positions** (rows at one position, e.g. a slice and its labelled copy, always fall on
the same side), so no class trains on a neighbour of another class's held-out slice.

Every class keeps training images (mixed groups: the stratum does). The same inputs and seed always give
the same split (row order inside a class does not matter, class ids are visited in sorted order).
Memory: one ``Source`` per row and two bool masks. Torch-free.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import PurePosixPath

import numpy as np

SLAB = 3  # about this many consecutive slices per held-out block inside a volume
# Positions dropped on each side of a held-out block: "a gap of a few slices". One position is not
# enough: in a 1 mm volume the nearest training slice would be 2 mm from a held-out one (and in the
# demo series, stored every other slice, 4 mm): still a near-copy. Two keep it 3 positions away (the
# demo at 64 px: RMS 0.05 between neighbours, 0.08 two apart, 0.11 three apart). The cost: for one
# volume at the default 0.15, 4 dropped per 3 held out, about a fifth of its slices.
GAP = 2
MIN_SERIES = 3  # numbered image files that make a series (fewer: each file is its own group)
_NUMBERED = re.compile(r"^(?P<stem>.*?)(?P<number>\d+)$")


@dataclass(frozen=True, slots=True)
class Source:
    """Where a stored row came from: its group (volume, series, file) and its position in the group."""

    group: str
    position: int = 0


def image_sources(files: list[str], sizes: list[tuple[int, int]], classes: list[str] | None = None) -> list[Source]:
    """Groups of image files: a numbered series of one folder, stem, suffix and original size (``MIN_SERIES``
    files at least) is one group ordered by its number; any other file is a group of its own.

    With ``classes`` (each file's class), the class's folder is left out of the series' folder: ``vol/yes/
    slice_050.png`` and ``vol/no/slice_052.png`` are slices of one volume sorted by label, so one series (the
    split then holds out the same slabs of it for every class: ``grouped_split``)."""
    keys: list[tuple[str, str, str, tuple[int, int]] | None] = []
    numbers: list[int] = []
    for k, (file, size) in enumerate(zip(files, sizes, strict=True)):
        path = PurePosixPath(file)
        m = _NUMBERED.match(path.stem)
        folder = _series_folder(path, classes[k] if classes is not None else None)
        keys.append((folder, m.group("stem"), path.suffix.lower(), size) if m else None)
        numbers.append(int(m.group("number")) if m else 0)
    members: dict[tuple[str, str, str, tuple[int, int]], int] = defaultdict(int)
    for key in keys:
        if key is not None:
            members[key] += 1
    names: dict[tuple[str, str, str, tuple[int, int]], str] = {}  # one string per series, shared by its rows
    sources = []
    for file, key, number in zip(files, keys, numbers, strict=True):
        if key is not None and members[key] >= MIN_SERIES:
            if key not in names:
                folder, stem, suffix, (width, height) = key
                names[key] = f"series:{folder}/{stem}*{suffix} {width}x{height}"
            sources.append(Source(names[key], number))
        else:
            sources.append(Source(f"file:{file}"))
    return sources


def _series_folder(path: PurePosixPath, class_name: str | None) -> str:
    """The series' folder: the file's, less the class's folder component (``*`` in its place) when it has one."""
    parts = path.parent.parts
    if class_name is not None and class_name in parts:
        at = parts.index(class_name)
        return str(PurePosixPath(*parts[:at], "*", *parts[at + 1 :]))
    return str(path.parent)


def grouped_split(
    labels: np.ndarray, sources: list[Source], fraction: float, seed: int, slab: int = SLAB, gap: int = GAP
) -> tuple[np.ndarray, np.ndarray]:
    """``(held, dropped)``, bool ``[N]`` masks: the held-out rows, and the rows kept on neither side.

    Groups that hold rows of several classes (one volume's slices filed by label) are split once, together:
    their rows form one pseudo-class, split like a class, so a held-out slab holds every class's slices at
    its positions and no class trains on a neighbour of another class's held-out slice."""
    if len(sources) != len(labels):
        raise ValueError(f"{len(labels)} labels but {len(sources)} sources")
    rng = np.random.default_rng(seed)
    held = np.zeros(len(labels), dtype=bool)
    dropped = np.zeros(len(labels), dtype=bool)
    strata = _strata(labels, sources)
    for stratum in np.unique(strata):  # sorted: the draws do not depend on row order across classes
        rows = np.flatnonzero(strata == stratum)
        groups: dict[str, list[int]] = defaultdict(list)
        for row in rows:
            groups[sources[row].group].append(int(row))
        target = min(len(rows) - 1, math.floor(len(rows) * fraction + 0.5))
        if target <= 0:
            continue
        whole = _whole_groups(groups, target, rng)
        if 2 * sum(len(groups[name]) for name in whole) >= target:
            for name in whole:
                held[groups[name]] = True
            continue
        for name in sorted(groups):
            positions = sorted({sources[r].position for r in groups[name]})  # rows at one position go together
            marks = _slab_marks(len(positions), fraction, slab, gap, rng)
            if marks is not None:
                mark_at = dict(zip(positions, marks.tolist(), strict=True))
                index = np.asarray(groups[name])
                row_marks = np.asarray([mark_at[sources[r].position] for r in groups[name]])
                held[index[row_marks == _HELD]] = True
                dropped[index[row_marks == _DROPPED]] = True
    return held, dropped


def _strata(labels: np.ndarray, sources: list[Source]) -> np.ndarray:
    """What the split stratifies on: the class, or ``-1`` for rows of a group that spans several classes."""
    classes_of: dict[str, set[int]] = defaultdict(set)
    for label, source in zip(labels.tolist(), sources, strict=True):
        classes_of[source.group].add(label)
    mixed = {group for group, found in classes_of.items() if len(found) > 1}
    if not mixed:
        return labels
    return np.asarray([-1 if s.group in mixed else int(c) for c, s in zip(labels.tolist(), sources, strict=True)])


def _whole_groups(groups: dict[str, list[int]], target: int, rng: np.random.Generator) -> list[str]:
    """Groups, in a seeded random order, each taken when it brings the count closer to ``target``; never all."""
    names = sorted(groups)
    total = sum(len(g) for g in groups.values())
    count, chosen = 0, []
    for i in rng.permutation(len(names)):
        size = len(groups[names[i]])
        if abs(count + size - target) < abs(count - target) and count + size < total:
            chosen.append(names[i])
            count += size
    return chosen


_TRAIN, _HELD, _DROPPED = 0, 1, 2


def _slab_marks(m: int, fraction: float, slab: int, gap: int, rng: np.random.Generator) -> np.ndarray | None:
    """Per position of a group of ``m``: train, held out (in evenly spread blocks) or dropped (``gap`` around
    each block); None when nothing can be held out with a training slice left beyond the gap."""
    wanted = math.floor(m * fraction + 0.5)
    if wanted <= 0 or m < wanted + gap + 1:
        return None
    blocks = max(1, math.ceil(wanted / slab))
    while blocks > 1 and m // blocks < math.ceil(wanted / blocks) + 2 * gap + 1:
        blocks -= 1  # fewer, larger blocks: evenly spaced small ones would leave no training slice between
    sizes = [wanted // blocks + (1 if j < wanted % blocks else 0) for j in range(blocks)]
    period = m / blocks
    offset = int(rng.integers(0, math.floor(period) - max(sizes) + 1))
    marks = _layout(m, sizes, period, offset, gap)
    if not np.any(marks == _TRAIN) and offset:
        marks = _layout(m, sizes, period, 0, gap)  # a tiny group: the first block at the edge has one gap only
    if not np.any(marks == _TRAIN):
        return None  # nothing would be left to train on: hold nothing out of this group
    return marks


def _layout(m: int, sizes: list[int], period: float, offset: int, gap: int) -> np.ndarray:
    marks = np.full(m, _TRAIN, dtype=np.int8)
    for j, size in enumerate(sizes):
        start = math.floor(j * period) + offset  # + size <= floor((j + 1) * period) <= m: blocks never overlap
        marks[start : start + size] = _HELD
    for i in np.flatnonzero(marks == _HELD):
        near = marks[max(0, i - gap) : i + gap + 1]  # a view: marks the positions around a held-out slice
        near[near == _TRAIN] = _DROPPED
    return marks
