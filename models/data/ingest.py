"""Turning an upload or an imported file or folder into a stored dataset, in bounded memory.

``ingest`` takes any source that ``models.data.sources`` reads (a folder, a zip, a tar, a NIfTI
volume, a DICOM file, an image), streams its slices one at a time (``models.data.sources.iter_slices``:
images through ``models.data.decode_image``, volumes through ``models.data.decode_nifti``, DICOM
through ``models.data.decode_dicom``) into a ``models.data.curation.RowWriter``, which appends each stored slice
as one raw row to a file inside a staging folder of the store and drops exact duplicates (reported
as skipped). ``RowWriter.finish`` then builds ``images.npy`` (uint8 ``[N, S, S]``), ``labels.npy``
(int64 ``[N]``, class ids in sorted class-name order) and the held-out ``split.npy`` chunk by chunk,
with the statistics, and the folder is published with ``Store.commit_dataset``. Only one image and
one chunk are in memory at a time.

A refused upload (``Refused`` and its subclasses, carrying the HTTP status) leaves nothing
in the store: the staging folder is removed, and nothing is written outside ``DRAWAI_HOME``.
Torch-free.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

from models.data.curation import GAP_REASON, RowWriter
from models.data.sources import iter_slices
from models.platform.errors import Refused
from models.platform.schemas import DatasetInfo
from models.platform.settings import Settings
from models.platform.store import Store

__all__ = ["Refused", "ingest", "ingest_zip"]

log = logging.getLogger(__name__)

_REPORTED_SKIPS = 5  # how many skip reasons the "no usable images" message quotes


def _no_usable_images(skipped: list[dict[str, str]]) -> Refused:
    if not skipped:
        return Refused("no usable images: the upload holds no image, volume or DICOM files")
    shown = "; ".join(f"{s['file']}: {s['reason']}" for s in skipped[:_REPORTED_SKIPS])
    more = f"; and {len(skipped) - _REPORTED_SKIPS} more" if len(skipped) > _REPORTED_SKIPS else ""
    return Refused(f"no usable images: {len(skipped)} files skipped ({shown}{more})")


def ingest_zip(path: Path, store: Store, settings: Settings, name: str) -> DatasetInfo:
    """``ingest`` of an uploaded file (kept for callers from before other formats were read)."""
    return ingest(path, store, settings, name)


def ingest(
    source: Path,
    store: Store,
    settings: Settings,
    name: str,
    *,
    filename: str | None = None,
    allowed: Path | None = None,
) -> DatasetInfo:
    """Store the slices of ``source`` (a folder, zip, tar, NIfTI, DICOM or image file) as dataset ``name``.

    ``filename`` is the name the file was sent under (its kind when magic bytes do not tell);
    ``allowed`` bounds where symlinks in a folder may lead (default: the folder itself). Raises
    ``Refused`` (``Refused``, ``PixelBombError``) when the upload is refused as a
    whole: ``TooLarge`` for limits, ``Refused`` for hostile or unusable content ("no usable images").
    """
    size = settings.storage_size
    skipped: list[dict[str, str]] = []
    with store.staging("dataset") as staged:
        with RowWriter(staged / "rows.u8", size) as rows:
            for item in iter_slices(source, settings, skipped, staged, filename=filename, allowed=allowed):
                duplicate = rows.add(item.pixels, item.class_name, item.path, item.original_size, item.source)
                if duplicate is not None:
                    skipped.append({"file": item.path, "reason": duplicate})
        if not rows.count:
            raise _no_usable_images(skipped)
        curated = rows.finish(staged, settings.heldout_fraction, settings.split_seed)
        skipped.extend({"file": file, "reason": GAP_REASON} for file in curated.dropped)
        info = DatasetInfo(
            id=store.new_dataset_id(),
            name=name,
            images=curated.images,
            classes=curated.classes,
            image_size=size,
            sha256=curated.sha256,
            created=datetime.now(UTC).isoformat(),
            skipped=skipped,
            split=curated.split,
            stats=curated.stats,
        )
        store.commit_dataset(staged, info)
    log.info(
        "dataset stored id=%s name=%s images=%d classes=%s train=%d heldout=%d duplicates=%d skipped=%d",
        info.id,
        info.name,
        info.images,
        info.classes,
        curated.split.train,
        curated.split.heldout,
        curated.stats.duplicates,
        len(skipped),
    )
    return info
