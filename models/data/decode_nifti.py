"""NIfTI volumes (``.nii``, ``.nii.gz``) as stored slices, with nibabel.

``nifti_slices`` turns the bytes of one NIfTI-1 or NIfTI-2 file into ``Slice`` rows:

1. gzip is undone first, its output taken from the upload's unpacked-bytes budget
   (``models.data.members.Budget``, ``max_unpacked_bytes`` shared with the archive's members and
   DICOM frames: a gzip bomb refuses the upload, ``TooLarge``);
2. the header is checked before any voxel is read: a float32 copy of the volume over
   ``max_unpacked_bytes`` refuses the upload (``TooLarge``), and a file holding fewer bytes than its
   dimensions x bytes per voxel declare is skipped (nibabel would allocate all the declared bytes
   before finding them missing);
3. a 4-D volume gives frame ``nifti_frame``; nibabel applies the header's scaling (scl_slope);
4. the volume is reoriented to RAS with the affine, as ``nibabel.as_closest_canonical`` does
   (``io_orientation`` + ``apply_orientation``), so a file stored in any axis order or direction
   gives the same slices;
5. intensities are scaled once per volume: the ``intensity_low_pct``/``intensity_high_pct``
   percentiles (of a strided sample for large volumes) map to 0 and 1, clipped; non-finite voxels
   count as the lowest value;
6. the volume is cut along ``nifti_plane`` (axial: S, coronal: A, sagittal: R), keeping the slices
   where the body (scaled value above ``BODY_THRESHOLD``) fills at least ``nifti_min_body_fraction``;
7. each slice is turned for display exactly as the bundled demo slices were
   (``scripts/make_demo_data.py``): radiological, nose up in axial slices, the patient's right on
   the image's left, head up in coronal and sagittal ones; then ``models.data.decode_image.square_slice``
   pads it to square and resizes it, with the voxel sizes as pixel aspect (never stretched).

Header fields that may carry text (``descrip``, ``aux_file``, ``intent_name``) are never read
out. Torch-free.
"""

from __future__ import annotations

import gzip
import io
import logging
import math
import zlib
from collections.abc import Iterator
from typing import Any

import numpy as np

from models.data.decode_image import SkipImage, square_slice
from models.data.members import Budget, Slice
from models.data.split import Source
from models.platform.errors import Refused, TooLarge
from models.platform.settings import Settings

log = logging.getLogger(__name__)

BODY_THRESHOLD = 0.05  # of the scaled range: voxels above it are body, below it air or background
PLANE_AXIS = {"sagittal": 0, "coronal": 1, "axial": 2}  # the RAS axis each plane is cut across
_PERCENTILE_SAMPLE = 4_000_000  # voxels the percentiles are computed from (strided)
_CHUNK = 1 << 20


def gunzip_capped(data: bytes, budget: Budget) -> bytes:
    """The gunzipped bytes, taken from ``budget`` as they come (refused past it: ``TooLarge``); skips corrupt data."""
    out = bytearray()
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data), mode="rb") as f:
            while chunk := f.read(_CHUNK):
                budget.take(len(chunk), "a volume unpacks")
                out += chunk
    except (OSError, EOFError, zlib.error):
        raise SkipImage("corrupt or truncated gzip data") from None
    return bytes(out)


def _check_declared(img: Any, size: int, frame: int | None, settings: Settings) -> None:
    """Refuse (``TooLarge``) or skip a volume from its header, before nibabel reads or allocates any voxel.

    ``size`` is the bytes of the (gunzipped) file, ``frame`` the frame read of a 4-D volume.
    """
    voxels = math.prod(int(n) for n in img.shape[:3])  # Python ints: NIfTI-2 dimensions overflow int64
    limit = settings.max_unpacked_bytes
    if voxels * 4 > limit:  # its float32 copy is held to the unpacked-bytes limit
        raise TooLarge(f"a volume of {voxels} voxels is over the limit of {limit} bytes")
    declared = voxels * img.header.get_data_dtype().itemsize * (1 if frame is None else frame + 1)
    if int(img.header.get_data_offset()) + declared > size:
        raise SkipImage("truncated NIfTI volume (its header declares more voxels than the file holds)")


def load_ras(
    data: bytes, settings: Settings, budget: Budget | None = None
) -> tuple[np.ndarray, tuple[float, float, float]]:
    """The volume as float32 ``[R, A, S]`` (one frame of a 4-D one) and its voxel sizes in that order.

    Gunzipped bytes are taken from ``budget`` (the upload's; default: one for this volume alone).
    """
    import nibabel as nib
    from nibabel.orientations import apply_orientation, io_orientation

    if data[:2] == b"\x1f\x8b":
        data = gunzip_capped(data, budget or Budget(settings.max_unpacked_bytes))
    sizeof_hdr = int.from_bytes(data[:4], "little") if len(data) >= 4 else 0
    if sizeof_hdr not in (348, 540):
        sizeof_hdr = int.from_bytes(data[:4], "big")
    klass = {348: nib.Nifti1Image, 540: nib.Nifti2Image}.get(sizeof_hdr)
    if klass is None:
        raise SkipImage("not a NIfTI volume")
    try:
        img = klass.from_bytes(data)
        shape = img.shape
        core = list(shape)
        while len(core) > 3 and core[-1] == 1:  # trailing singleton dimensions do not count
            core.pop()
        if len(core) > 4 or len(shape) < 2:
            raise SkipImage(f"unsupported NIfTI volume of {len(core)} dimensions")
        if len(core) == 4 and settings.nifti_frame >= core[3]:
            raise SkipImage(f"no frame {settings.nifti_frame} in a 4-D volume of {core[3]} frames")
        _check_declared(img, len(data), settings.nifti_frame if len(core) == 4 else None, settings)
        proxy = img.dataobj
        if len(shape) == 2:
            volume = np.asarray(proxy, dtype=np.float32)[:, :, None]
        elif len(core) == 4:
            volume = np.asarray(proxy[:, :, :, settings.nifti_frame], dtype=np.float32).reshape(shape[:3])
        else:
            volume = np.asarray(proxy, dtype=np.float32).reshape(shape[:3])
        zooms = [float(z) if z > 0 else 1.0 for z in (*img.header.get_zooms(), 1.0, 1.0, 1.0)[:3]]
        ornt = io_orientation(img.affine)
    except (SkipImage, Refused):
        raise
    except Exception:  # nibabel raises many kinds on damaged headers and short data
        raise SkipImage("corrupt or truncated NIfTI volume") from None
    ras = apply_orientation(volume, ornt)  # a view: flips and transposes only
    if not ras.flags.writeable:
        ras = ras.copy()
    ras_zooms = [1.0, 1.0, 1.0]
    for axis, (new_axis, _) in enumerate(ornt):
        ras_zooms[int(new_axis)] = zooms[axis]
    return ras, (ras_zooms[0], ras_zooms[1], ras_zooms[2])


def scale_volume(volume: np.ndarray, settings: Settings) -> np.ndarray:
    """The volume scaled in place to 0..1 by its robust percentiles; SkipImage when it is blank."""
    finite = np.isfinite(volume)
    if not finite.any():
        raise SkipImage("blank volume")
    if not finite.all():
        volume[~finite] = volume[finite].min()
    sample = volume.ravel()[:: max(1, volume.size // _PERCENTILE_SAMPLE)]
    lo, hi = (float(v) for v in np.percentile(sample, [settings.intensity_low_pct, settings.intensity_high_pct]))
    if hi <= lo:
        lo, hi = float(volume.min()), float(volume.max())
    if hi <= lo:
        raise SkipImage("blank volume")
    volume -= lo
    volume /= hi - lo
    np.clip(volume, 0.0, 1.0, out=volume)
    return volume


def to_display(ras_slice: np.ndarray) -> np.ndarray:
    """A slice with axes in RAS order (e.g. axial: R, A) as image rows and columns, radiological.

    Rows run from the higher RAS axis's far end (anterior in axial slices, superior in coronal and
    sagittal ones) at the top; columns from the lower axis's far end (the patient's right) on the left.
    """
    return ras_slice.T[::-1, ::-1]


def nifti_slices(
    data: bytes, path: str, class_name: str, settings: Settings, budget: Budget | None = None
) -> Iterator[Slice]:
    """The kept slices of one NIfTI file, as stored slices in slice order (gunzipped bytes from ``budget``).

    Raises ``SkipImage`` (the whole volume is skipped, with the reason) or ``Refused`` (``TooLarge``).
    """
    volume, zooms = load_ras(data, settings, budget)
    del data
    plane = settings.nifti_plane
    axis = PLANE_AXIS[plane]
    cols_axis, rows_axis = (a for a in range(3) if a != axis)
    height, width = volume.shape[rows_axis], volume.shape[cols_axis]
    if min(height, width) < settings.min_image_side:
        raise SkipImage(f"too small ({width}x{height} {plane} slices < min side {settings.min_image_side})")
    scaled = scale_volume(volume, settings)
    fraction = (scaled > BODY_THRESHOLD).mean(axis=tuple(a for a in range(3) if a != axis))
    keep = np.flatnonzero(fraction >= settings.nifti_min_body_fraction)
    if keep.size == 0:
        share = f"{settings.nifti_min_body_fraction:.0%}"
        raise SkipImage(f"no {plane} slice where the body fills at least {share} of the slice")
    aspect = zooms[rows_axis] / zooms[cols_axis]
    for k in keep:
        display = to_display(np.take(scaled, int(k), axis=axis))
        try:
            pixels = square_slice(display, settings, value_range=(0.0, 1.0), pixel_aspect=aspect)
        except SkipImage:  # a slice with body but one value (a solid block): nothing to learn from
            continue
        where = Source(f"nifti:{path} [{plane}]", int(k))  # one group per volume and plane
        yield Slice(f"{path} [{plane} {int(k)}]", class_name, pixels, (display.shape[1], display.shape[0]), where)
