"""What every stored dataset gets besides its pixels: duplicate removal, a held-out split, statistics.

Ingestion appends each decoded slice to a ``RowWriter`` (one raw ``uint8 [S, S]`` row in a file of
the staging folder). The writer hashes every row as it arrives (sha256 of its bytes): a row whose
pixels are already stored is dropped, and ingestion reports it as ``"duplicate of <first file>"``.
It keeps each row's class, file name, original size and source (its volume or series and position
there; image files are grouped into numbered series when the split is drawn).

``RowWriter.finish`` then writes the dataset folder's arrays, chunk by chunk:

- ``images.npy`` (uint8 ``[N, S, S]``) and ``labels.npy`` (int64 ``[N]``, class ids in sorted
  class-name order), the training rows first, then the held-out rows, each in upload order, so
  that ``Store.load_dataset(id, split="train")`` is a slice of the memory map, never a copy;
- ``split.npy`` (bool ``[N]``, True = held out): a split grouped by source (``models.data.split``):
  about ``fraction`` of each class held out, whole volumes, series or files at a time, or slabs
  of one volume with the slices next to them dropped (reported as skipped), never the last
  training image of a class. Dropped rows are not written; the statistics (sizes, gray levels,
  counted while the arrays are written) describe the rows kept.

Memory stays bounded: one row, one chunk, and a digest, class, file name, size and source per row.
Torch-free.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import numpy as np

from models.data.split import Source, grouped_split, image_sources
from models.platform.grids import class_sheet, png_bytes
from models.platform.schemas import DatasetStats, SizeBucket, SizeSummary, SplitInfo
from models.platform.store import Store

_ROWS_PER_CHUNK = 256
_INTENSITY_BIN_WIDTH = 8  # 32 bins over 0..255
_LONGER_SIDE_EDGES = (0, 64, 128, 256, 512, 1024, 2048, 4096)  # buckets of the original longer side
_COMMON_SIZES = 8  # how many of the most common original sizes the statistics list
GAP_REASON = "next to a held-out slab of its volume: kept out of both training and held-out (grouped split)"


@dataclass(frozen=True)
class Curated:
    """What ``RowWriter.finish`` wrote, for the dataset's ``DatasetInfo``."""

    images: int
    classes: dict[str, int]
    sha256: str
    split: SplitInfo
    stats: DatasetStats
    dropped: list[str]  # the files of rows kept on neither side of the split (next to a held-out slab)


class RowWriter:
    """Appends stored slices to ``path`` (raw rows), dropping exact duplicates and gathering statistics."""

    def __init__(self, path: Path, size: int) -> None:
        self.path = path
        self.size = size
        self._file = path.open("wb")
        self._first_row: dict[bytes, int] = {}  # sha256 of a stored row -> the row
        self._classes: list[str] = []
        self._files: list[str] = []  # the file each row came from (duplicate and split reports)
        self._sources: list[Source | None] = []  # None: an image file, grouped when the split is drawn
        self._groups: dict[str, str] = {}  # one string per group, shared by its rows
        self._widths: list[int] = []
        self._heights: list[int] = []
        self._levels = np.zeros(256, dtype=np.int64)  # gray level counts of the kept rows (counted in finish)
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

    def add(
        self,
        pixels: np.ndarray,
        class_name: str,
        file: str,
        original_size: tuple[int, int],
        source: Source | None = None,
    ) -> str | None:
        """Store one ``uint8 [S, S]`` slice; ``None``, or the skip reason when the same pixels are stored already.

        ``file`` names the row in duplicate reports (an archive member, or a volume's slice);
        ``original_size`` is ``(width, height)`` before padding and resizing; ``source`` its volume or series.
        """
        if pixels.dtype != np.uint8 or pixels.shape != (self.size, self.size):
            raise ValueError(f"a stored row is uint8 [{self.size}, {self.size}], not {pixels.dtype} {pixels.shape}")
        data = np.ascontiguousarray(pixels).tobytes()
        digest = hashlib.sha256(data).digest()
        first = self._first_row.get(digest)
        if first is not None:
            self.duplicates += 1
            return f"duplicate of {self._files[first]}"
        self._first_row[digest] = self.count
        self._file.write(data)
        self._classes.append(class_name)
        self._files.append(file)
        if source is not None:
            source = Source(self._groups.setdefault(source.group, source.group), source.position)
        self._sources.append(source)
        self._widths.append(int(original_size[0]))
        self._heights.append(int(original_size[1]))
        return None

    def finish(self, staged: Path, fraction: float, seed: int) -> Curated:
        """Write ``images.npy``, ``labels.npy`` and ``split.npy`` into ``staged``; remove the raw rows."""
        self._file.close()
        names = sorted(set(self._classes))
        ids = {name: i for i, name in enumerate(names)}
        labels = np.fromiter((ids[c] for c in self._classes), dtype=np.int64, count=self.count)
        sources = self._grouped_sources()
        held, dropped = grouped_split(labels, sources, fraction, seed)
        kept = ~dropped
        sha256 = self._write_arrays(staged, labels, held, kept)
        self.path.unlink()
        per_class = {
            name: {
                "train": int(np.count_nonzero((labels == i) & ~held & kept)),
                "heldout": int(np.count_nonzero((labels == i) & held)),
            }
            for i, name in enumerate(names)
        }
        heldout, stored = int(held.sum()), int(kept.sum())
        split = SplitInfo(
            train=stored - heldout,
            heldout=heldout,
            fraction=fraction,
            seed=seed,
            classes=per_class,
            groups=len({(label, s.group) for label, s in zip(labels.tolist(), sources, strict=True)}),
            dropped=int(dropped.sum()),
        )
        classes = {name: c["train"] + c["heldout"] for name, c in per_class.items()}
        files = [self._files[i] for i in np.flatnonzero(dropped)]
        stats = self._stats(kept)
        return Curated(images=stored, classes=classes, sha256=sha256, split=split, stats=stats, dropped=files)

    def _grouped_sources(self) -> list[Source]:
        """Every row's group: its volume or series, or (image files) its numbered series or the file itself."""
        images = [i for i, s in enumerate(self._sources) if s is None]
        grouped = image_sources(
            [self._files[i] for i in images],
            [(self._widths[i], self._heights[i]) for i in images],
            [self._classes[i] for i in images],
        )
        sources = list(self._sources)
        for i, source in zip(images, grouped, strict=True):
            sources[i] = source
        return [s for s in sources if s is not None]  # all of them: every None was filled

    def _write_arrays(self, staged: Path, labels: np.ndarray, held: np.ndarray, kept: np.ndarray) -> str:
        """Kept rows in stored order (training rows, then held-out rows); returns the sha256 of pixels and labels."""
        size = self.size
        row_bytes = size * size
        digest = hashlib.sha256()
        held_path = staged / "heldout.u8"
        # Plain sequential writes, not a memory map: written pages of a map count in the process's
        # resident memory (one 64 KiB row per image), plain writes go to the page cache only.
        header = {"descr": "|u1", "fortran_order": False, "shape": (int(kept.sum()), size, size)}
        try:
            with (
                (staged / "images.npy").open("wb") as images,
                self.path.open("rb") as rows,
                held_path.open("wb") as held_rows,
            ):
                np.lib.format.write_array_header_1_0(images, header)
                for start in range(0, self.count, _ROWS_PER_CHUNK):
                    count = min(_ROWS_PER_CHUNK, self.count - start)
                    chunk = np.frombuffer(rows.read(count * row_bytes), dtype=np.uint8).reshape(count, size, size)
                    out, keep = held[start : start + count], kept[start : start + count]
                    train = np.ascontiguousarray(chunk[~out & keep])
                    images.write(train.data)
                    digest.update(train.data)
                    held_rows.write(np.ascontiguousarray(chunk[out & keep]).data)
                    self._levels += np.bincount((chunk if keep.all() else chunk[keep]).ravel(), minlength=256)
                held_rows.close()
                with held_path.open("rb") as held_in:
                    while chunk_bytes := held_in.read(_ROWS_PER_CHUNK * row_bytes):
                        images.write(chunk_bytes)
                        digest.update(chunk_bytes)
        finally:
            held_path.unlink(missing_ok=True)
        order = np.concatenate([np.flatnonzero(~held & kept), np.flatnonzero(held & kept)])
        stored_labels = labels[order]
        np.save(staged / "labels.npy", stored_labels)
        np.save(staged / "split.npy", held[order])
        digest.update(stored_labels.tobytes())
        return digest.hexdigest()

    def _stats(self, kept: np.ndarray) -> DatasetStats:
        """Statistics of the kept rows (rows dropped by the split are not stored)."""
        widths, heights = np.asarray(self._widths)[kept], np.asarray(self._heights)[kept]
        longer = np.maximum(widths, heights)
        buckets = []
        for i, lo in enumerate(_LONGER_SIDE_EDGES):
            hi = _LONGER_SIDE_EDGES[i + 1] - 1 if i + 1 < len(_LONGER_SIDE_EDGES) else None
            inside = (longer >= lo) if hi is None else (longer >= lo) & (longer <= hi)
            count = int(np.count_nonzero(inside))
            if count:
                buckets.append(SizeBucket(min=lo, max=hi, count=count))
        common = Counter(f"{w}x{h}" for w, h in zip(widths.tolist(), heights.tolist(), strict=True))
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
