"""Turning an uploaded archive into a stored dataset, in bounded memory.

``ingest_zip`` streams the image members of a ``.zip`` (``models.archives``) through the image
decoder (``models.images``), appends each stored slice as one raw row to a file inside a
staging folder of the store, then builds ``images.npy`` (uint8 ``[N, S, S]``) from those rows
chunk by chunk through a memory map, writes ``labels.npy`` (int64 ``[N]``, class ids in sorted
class-name order) and publishes the folder with ``Store.commit_dataset``. Only one image and one
chunk are in memory at a time.

A refused upload (``UploadRefused`` and its subclasses, carrying the HTTP status) leaves nothing
in the store: the staging folder is removed, and nothing is written outside ``DRAWAI_HOME``.
Torch-free.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from models.archives import ArchiveRefused, iter_zip
from models.images import SkipImage, UploadRefused, decode_image
from models.schemas import DatasetInfo
from models.settings import Settings
from models.store import Store

__all__ = ["ArchiveRefused", "UploadRefused", "ingest_zip"]

log = logging.getLogger(__name__)

_ROWS_PER_CHUNK = 256
_REPORTED_SKIPS = 5  # how many skip reasons the "no usable images" message quotes


def _no_usable_images(skipped: list[dict[str, str]]) -> UploadRefused:
    if not skipped:
        return UploadRefused(422, "no usable images: the archive holds no image files")
    shown = "; ".join(f"{s['file']}: {s['reason']}" for s in skipped[:_REPORTED_SKIPS])
    more = f"; and {len(skipped) - _REPORTED_SKIPS} more" if len(skipped) > _REPORTED_SKIPS else ""
    return UploadRefused(422, f"no usable images: {len(skipped)} files skipped ({shown}{more})")


def _build_arrays(rows_path: Path, staged: Path, class_of_row: list[str], size: int) -> tuple[dict[str, int], str]:
    """Write ``images.npy`` and ``labels.npy`` into ``staged``; return the class counts and the sha256."""
    names = sorted(set(class_of_row))
    ids = {name: i for i, name in enumerate(names)}
    labels = np.fromiter((ids[c] for c in class_of_row), dtype=np.int64, count=len(class_of_row))
    n = len(class_of_row)
    digest = hashlib.sha256()
    row_bytes = size * size
    images = np.lib.format.open_memmap(staged / "images.npy", mode="w+", dtype=np.uint8, shape=(n, size, size))
    try:
        with rows_path.open("rb") as rows:
            for start in range(0, n, _ROWS_PER_CHUNK):
                count = min(_ROWS_PER_CHUNK, n - start)
                chunk = np.frombuffer(rows.read(count * row_bytes), dtype=np.uint8).reshape(count, size, size)
                images[start : start + count] = chunk
                digest.update(chunk.tobytes())
        images.flush()
    finally:
        del images
    np.save(staged / "labels.npy", labels)
    digest.update(labels.tobytes())
    counts = {name: int(np.count_nonzero(labels == i)) for i, name in enumerate(names)}
    return counts, digest.hexdigest()


def ingest_zip(path: Path, store: Store, settings: Settings, name: str) -> DatasetInfo:
    """Store the images of the zip at ``path`` as a new dataset called ``name``.

    Raises ``UploadRefused`` (``ArchiveRefused``, ``PixelBombError``) when the upload is refused
    as a whole: 413 for limits, 422 for hostile or unusable content ("no usable images").
    """
    size = settings.storage_size
    skipped: list[dict[str, str]] = []
    class_of_row: list[str] = []
    with store.staging("dataset") as staged:
        rows_path = staged / "rows.u8"
        with rows_path.open("wb") as rows:
            for member in iter_zip(path, settings, skipped):
                try:
                    pixels = decode_image(member.data, settings)
                except SkipImage as exc:
                    skipped.append({"file": member.path, "reason": exc.reason})
                    continue
                rows.write(pixels.tobytes())
                class_of_row.append(member.class_name)
        if not class_of_row:
            raise _no_usable_images(skipped)
        classes, sha256 = _build_arrays(rows_path, staged, class_of_row, size)
        rows_path.unlink()
        info = DatasetInfo(
            id=store.new_dataset_id(),
            name=name,
            images=len(class_of_row),
            classes=classes,
            image_size=size,
            sha256=sha256,
            created=datetime.now(UTC).isoformat(),
            skipped=skipped,
        )
        store.commit_dataset(staged, info)
    log.info(
        "dataset stored id=%s name=%s images=%d classes=%s skipped=%d",
        info.id,
        info.name,
        info.images,
        classes,
        len(skipped),
    )
    return info
