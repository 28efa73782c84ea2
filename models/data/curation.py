"""What every stored dataset gets besides its pixels: duplicate removal, a held-out split, statistics.

Ingestion appends each decoded slice to a ``RowWriter`` (one raw ``uint8 [S, S]`` row in a file of
the staging folder). The writer hashes every row as it arrives (sha256 of its bytes): a row whose
pixels are already stored is dropped, and ingestion reports it as ``"duplicate of <first file>"``.
It also counts the gray levels of the stored rows and keeps each row's class and original size.

``RowWriter.finish`` then writes the dataset folder's arrays, chunk by chunk:

- ``images.npy`` (uint8 ``[N, S, S]``) and ``labels.npy`` (int64 ``[N]``, class ids in sorted
  class-name order), the training rows first, then the held-out rows, each in upload order, so
  that ``Store.load_dataset(id, split="train")`` is a slice of the memory map, never a copy;
- ``split.npy`` (bool ``[N]``, True = held out): a stratified split (``stratified_split``) that
  keeps ``round(fraction * n)`` images of each class of ``n`` out of training, but never the
  last training image of a class.

Memory stays bounded: one row, one chunk, and a digest, class and size per row. Torch-free.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import numpy as np

from models.platform.grids import class_sheet, png_bytes
from models.platform.schemas import DatasetStats, SizeBucket, SizeSummary, SplitInfo
from models.platform.store import Store

_ROWS_PER_CHUNK = 256
_INTENSITY_BIN_WIDTH = 8  # 32 bins over 0..255
_LONGER_SIDE_EDGES = (0, 64, 128, 256, 512, 1024, 2048, 4096)  # buckets of the original longer side
_COMMON_SIZES = 8  # how many of the most common original sizes the statistics list


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A held-out mask (bool ``[N]``): ``round(fraction * n)`` random images of each class of ``n``.

    Every class keeps at least one training image (a class of one image holds none out). The same
    labels, fraction and seed always give the same mask.
    """
    rng = np.random.default_rng(seed)
    held = np.zeros(len(labels), dtype=bool)
    for class_id in np.unique(labels):  # sorted: the draws do not depend on row order across classes
        rows = np.flatnonzero(labels == class_id)
        count = min(len(rows) - 1, int(np.floor(len(rows) * fraction + 0.5)))
        if count > 0:
            held[rng.permutation(rows)[:count]] = True
    return held


@dataclass(frozen=True)
class Curated:
    """What ``RowWriter.finish`` wrote, for the dataset's ``DatasetInfo``."""

    images: int
    classes: dict[str, int]
    sha256: str
    split: SplitInfo
    stats: DatasetStats


class RowWriter:
    """Appends stored slices to ``path`` (raw rows), dropping exact duplicates and gathering statistics."""

    def __init__(self, path: Path, size: int) -> None:
        self.path = path
        self.size = size
        self._file = path.open("wb")
        self._first_file: dict[bytes, str] = {}  # sha256 of a stored row -> the file it came from
        self._classes: list[str] = []
        self._widths: list[int] = []
        self._heights: list[int] = []
        self._levels = np.zeros(256, dtype=np.int64)  # gray level counts of the stored pixels
        self.duplicates = 0

    def __enter__(self) -> RowWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._file.close()

    @property
    def count(self) -> int:
        return len(self._classes)

    def add(self, pixels: np.ndarray, class_name: str, file: str, original_size: tuple[int, int]) -> str | None:
        """Store one ``uint8 [S, S]`` slice; ``None``, or the skip reason when the same pixels are stored already.

        ``file`` names the row in duplicate reports (an archive member, or a volume's slice);
        ``original_size`` is ``(width, height)`` before padding and resizing.
        """
        if pixels.dtype != np.uint8 or pixels.shape != (self.size, self.size):
            raise ValueError(f"a stored row is uint8 [{self.size}, {self.size}], not {pixels.dtype} {pixels.shape}")
        data = np.ascontiguousarray(pixels).tobytes()
        digest = hashlib.sha256(data).digest()
        first = self._first_file.get(digest)
        if first is not None:
            self.duplicates += 1
            return f"duplicate of {first}"
        self._first_file[digest] = file
        self._file.write(data)
        self._classes.append(class_name)
        self._widths.append(int(original_size[0]))
        self._heights.append(int(original_size[1]))
        self._levels += np.bincount(pixels.ravel(), minlength=256)
        return None

    def finish(self, staged: Path, fraction: float, seed: int) -> Curated:
        """Write ``images.npy``, ``labels.npy`` and ``split.npy`` into ``staged``; remove the raw rows."""
        self._file.close()
        names = sorted(set(self._classes))
        ids = {name: i for i, name in enumerate(names)}
        labels = np.fromiter((ids[c] for c in self._classes), dtype=np.int64, count=self.count)
        held = stratified_split(labels, fraction, seed)
        sha256 = self._write_arrays(staged, labels, held)
        self.path.unlink()
        per_class = {
            name: {
                "train": int(np.count_nonzero((labels == i) & ~held)),
                "heldout": int(np.count_nonzero((labels == i) & held)),
            }
            for i, name in enumerate(names)
        }
        heldout = int(held.sum())
        split = SplitInfo(train=self.count - heldout, heldout=heldout, fraction=fraction, seed=seed, classes=per_class)
        classes = {name: c["train"] + c["heldout"] for name, c in per_class.items()}
        return Curated(images=self.count, classes=classes, sha256=sha256, split=split, stats=self._stats())

    def _write_arrays(self, staged: Path, labels: np.ndarray, held: np.ndarray) -> str:
        """Rows in stored order (training rows, then held-out rows); returns the sha256 of pixels and labels."""
        n, size = self.count, self.size
        row_bytes = size * size
        digest = hashlib.sha256()
        held_path = staged / "heldout.u8"
        # Plain sequential writes, not a memory map: written pages of a map count in the process's
        # resident memory (one 64 KiB row per image), plain writes go to the page cache only.
        header = {"descr": "|u1", "fortran_order": False, "shape": (n, size, size)}
        try:
            with (
                (staged / "images.npy").open("wb") as images,
                self.path.open("rb") as rows,
                held_path.open("wb") as held_rows,
            ):
                np.lib.format.write_array_header_1_0(images, header)
                for start in range(0, n, _ROWS_PER_CHUNK):
                    count = min(_ROWS_PER_CHUNK, n - start)
                    chunk = np.frombuffer(rows.read(count * row_bytes), dtype=np.uint8).reshape(count, size, size)
                    out = held[start : start + count]
                    train = np.ascontiguousarray(chunk[~out])
                    images.write(train.data)
                    digest.update(train.data)
                    held_rows.write(np.ascontiguousarray(chunk[out]).data)
                held_rows.close()
                with held_path.open("rb") as held_in:
                    while chunk_bytes := held_in.read(_ROWS_PER_CHUNK * row_bytes):
                        images.write(chunk_bytes)
                        digest.update(chunk_bytes)
        finally:
            held_path.unlink(missing_ok=True)
        order = np.concatenate([np.flatnonzero(~held), np.flatnonzero(held)])
        stored_labels = labels[order]
        np.save(staged / "labels.npy", stored_labels)
        np.save(staged / "split.npy", held[order])
        digest.update(stored_labels.tobytes())
        return digest.hexdigest()

    def _stats(self) -> DatasetStats:
        widths, heights = np.asarray(self._widths), np.asarray(self._heights)
        longer = np.maximum(widths, heights)
        buckets = []
        for i, lo in enumerate(_LONGER_SIDE_EDGES):
            hi = _LONGER_SIDE_EDGES[i + 1] - 1 if i + 1 < len(_LONGER_SIDE_EDGES) else None
            inside = (longer >= lo) if hi is None else (longer >= lo) & (longer <= hi)
            count = int(np.count_nonzero(inside))
            if count:
                buckets.append(SizeBucket(min=lo, max=hi, count=count))
        common = Counter(f"{w}x{h}" for w, h in zip(self._widths, self._heights, strict=True))
        levels = self._levels
        total = int(levels.sum())
        return DatasetStats(
            duplicates=self.duplicates,
            width=_summary(widths),
            height=_summary(heights),
            longer_side=buckets,
            common_sizes=dict(common.most_common(_COMMON_SIZES)),
            intensity_bin_width=_INTENSITY_BIN_WIDTH,
            intensity_histogram=levels.reshape(-1, _INTENSITY_BIN_WIDTH).sum(axis=1).tolist(),
            intensity_mean=float(levels @ np.arange(256)) / total if total else 0.0,
        )


def _summary(values: np.ndarray) -> SizeSummary:
    return SizeSummary(min=int(values.min()), median=float(np.median(values)), max=int(values.max()))


def preview_png(store: Store, dataset_id: str, per_class: int) -> bytes:
    """A contact sheet of up to ``per_class`` samples of each class, spread over the class, one row per class."""
    info = store.get_dataset(dataset_id)
    images, labels = store.load_dataset(dataset_id, split="all")
    rows = []
    for class_id, name in enumerate(sorted(info.classes)):
        members = np.flatnonzero(labels == class_id)
        if not len(members):
            continue
        picks = np.unique(np.linspace(0, len(members) - 1, min(per_class, len(members))).round().astype(np.int64))
        rows.append((name, np.asarray(images[members[picks]])))
    return png_bytes(class_sheet(rows))
