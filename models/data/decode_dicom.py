"""DICOM files and series as stored slices, with pydicom, keeping pixels only.

``DicomSeries.add`` reads one file (single- or multi-frame, any transfer syntax that an installed
pydicom decoder handles; Pillow covers JPEG baseline/extended 8-bit and JPEG 2000, pydicom itself
RLE and deflate), applies the modality LUT (RescaleSlope/Intercept), turns color frames to gray
and spools every frame as float32 to a file in the staging folder, with only the numbers needed
later: series (SeriesInstanceUID, held in memory only), position along the slice normal
(ImagePositionPatient, ImageOrientationPatient), InstanceNumber, window, MONOCHROME1, pixel spacing.

Before any frame is decoded, ``models.data.dicom_budget`` checks the header against the upload's limits
(``max_dicom_frames``; decoded bytes in the upload's ``max_unpacked_bytes``; a frame count the
data cannot hold: ``Refused``), and RLE frames are decoded by ``models.data.dicom_rle``, which never lets a
segment grow past its frame.

``DicomSeries.slices`` then yields each series' frames ordered by position (then instance number,
file path and frame), scaled to 0..1 by the file's WindowCenter/WindowWidth when it has them, else
by robust percentiles of the whole series (``intensity_low_pct``/``intensity_high_pct``);
MONOCHROME1 is inverted so that bright is always dense. Memory: one file, one frame and a small
sample of each frame for the percentiles.

Privacy: no header value (names, IDs, dates, UIDs, descriptions) is stored, put in a skip reason
or logged: reasons name the member path and a fixed text (or the transfer syntax's standard name),
never an exception's message, and pydicom's reading validation is silenced (its warnings quote
header values). Torch-free.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from models.data import dicom_rle
from models.data.decode_image import PixelBombError, SkipImage, square_slice
from models.data.dicom_budget import FrameBudget, charge_inflated, geometry
from models.data.members import Budget, Member, Slice
from models.data.split import Source
from models.platform.settings import Settings

log = logging.getLogger(__name__)

_SAMPLE_PER_FRAME = 4096  # values of each frame kept for the series' percentiles
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601, as images are converted


@dataclass(frozen=True)
class _Frame:
    series: str
    order: tuple[int, float, int, str, int]
    offset: int
    shape: tuple[int, int]
    window: tuple[float, float] | None
    invert: bool
    aspect: float
    path: str
    class_name: str


def _configure_pydicom() -> None:
    from pydicom import config

    config.settings.reading_validation_mode = config.IGNORE  # its warnings would quote header values
    dicom_rle.register()


def _number(ds: object, keyword: str) -> float | None:
    """A numeric header value (the first of a multi-value), or None when absent or not a number."""
    value = getattr(ds, keyword, None)
    if value is None:
        return None
    if not isinstance(value, str | bytes) and hasattr(value, "__len__"):
        value = value[0] if len(value) else None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) else None


def _window(ds: object) -> tuple[float, float] | None:
    """The (low, high) modality values the file's VOI window maps to black and white (PS3.3 C.11.2.1.2)."""
    center, width = _number(ds, "WindowCenter"), _number(ds, "WindowWidth")
    if center is None or width is None or width <= 0:
        return None
    if str(getattr(ds, "VOILUTFunction", "LINEAR")).upper() == "LINEAR_EXACT":
        return center - width / 2, center + width / 2
    return center - 0.5 - (width - 1) / 2, center - 0.5 + max(width - 1, 1) / 2


def _position(ds: object) -> float | None:
    """The slice's position along its normal (the series' sort key), from the patient geometry."""
    try:
        ipp = np.asarray([float(v) for v in ds.ImagePositionPatient], dtype=np.float64)  # type: ignore[attr-defined]
        iop = np.asarray([float(v) for v in ds.ImageOrientationPatient], dtype=np.float64)  # type: ignore[attr-defined]
        normal = np.cross(iop[:3], iop[3:6])
        return float(ipp[:3] @ normal) if np.isfinite(normal).all() and normal.any() else float(ipp[2])
    except (AttributeError, TypeError, ValueError, IndexError):
        return None


def _aspect(ds: object) -> float:
    """Height over width of one pixel, from PixelSpacing (row spacing, column spacing)."""
    try:
        row, col = (float(v) for v in ds.PixelSpacing)  # type: ignore[attr-defined]
    except (AttributeError, TypeError, ValueError):
        return 1.0
    return row / col if row > 0 and col > 0 and 0.1 <= row / col <= 10 else 1.0


def _read(member: Member, skipped: list[dict[str, str]], budget: Budget) -> Any:
    """The parsed file with a known transfer syntax, or None (reported in ``skipped``) without pixel data.

    A deflated file's inflated bytes are taken from ``budget`` first (``charge_inflated``).
    """
    import pydicom
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    charge_inflated(member.data, budget)
    try:
        ds = pydicom.dcmread(io.BytesIO(member.data), force=True)
    except Exception:  # pydicom raises many kinds on junk; their messages may quote header values
        skipped.append({"file": member.path, "reason": "not a valid DICOM file"})
        return None
    if "PixelData" not in ds:
        skipped.append({"file": member.path, "reason": "DICOM file without an image"})
        return None
    if "TransferSyntaxUID" not in ds.file_meta:  # no file meta: the encoding it was read with
        implicit, little = ds.original_encoding
        syntax = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian if little else ExplicitVRBigEndian
        ds.file_meta.TransferSyntaxUID = syntax
    return ds


def _unreadable(syntax: Any) -> str | None:
    """Why no installed decoder reads pixel data of ``syntax`` (None: one does)."""
    from pydicom.pixels import get_decoder

    if not syntax.is_transfer_syntax:
        return "unsupported DICOM transfer syntax"
    if not syntax.is_compressed:
        return None
    try:
        available = get_decoder(syntax).is_available
    except NotImplementedError:
        available = False
    return None if available else f"unsupported DICOM compression {syntax.name}"


class DicomSeries:
    """Collects DICOM frames (spooled to ``spool``) and yields them as slices, series by series.

    ``budget`` is the upload's unpacked-bytes budget, which decoded frames take from too
    (``models.data.dicom_budget``); default: one of ``max_unpacked_bytes`` for these files alone.
    """

    def __init__(self, spool: Path, settings: Settings, budget: Budget | None = None) -> None:
        _configure_pydicom()
        self.settings = settings
        self.spool = spool
        self.budget = FrameBudget(settings, budget or Budget(settings.max_unpacked_bytes))
        self._file = spool.open("w+b")
        self._frames: list[_Frame] = []
        self._samples: dict[str, list[np.ndarray]] = {}

    def __enter__(self) -> DicomSeries:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._file.close()
        self.spool.unlink(missing_ok=True)

    def add(self, member: Member, skipped: list[dict[str, str]]) -> None:
        """Read one DICOM file's frames; a file that cannot be used is reported in ``skipped``.

        Raises ``Refused`` before decoding when the header declares a pixel bomb, more
        frames or decoded bytes than the upload may have, or more frames than the data holds.
        """
        from pydicom.uid import UID

        ds = _read(member, skipped, self.budget.budget)
        if ds is None:
            return
        syntax = UID(str(ds.file_meta.TransferSyntaxUID))
        g = geometry(ds)
        if g is None:
            skipped.append({"file": member.path, "reason": "DICOM file without image dimensions"})
            return
        if g.rows * g.columns > self.settings.max_image_pixels:
            limit = self.settings.max_image_pixels
            raise PixelBombError(f"DICOM frame of {g.columns}x{g.rows} pixels is over the limit of {limit} pixels")
        reason = _unreadable(syntax)
        if reason is not None:
            skipped.append({"file": member.path, "reason": reason})
            return
        self.budget.admit(member.path, ds, g, compressed=syntax.is_compressed)
        try:
            added = list(self._spool_frames(member, ds, g.frames))
        except Exception:  # a decoder's failure; never quote its message (it may hold header values)
            reason = (
                f"unsupported DICOM compression {syntax.name}" if syntax.is_compressed else "corrupt DICOM pixel data"
            )
            skipped.append({"file": member.path, "reason": reason})
            return
        self._frames.extend(added)

    def _spool_frames(self, member: Member, ds: Any, frames: int) -> Iterator[_Frame]:
        """Decode the file's frames one at a time to the spool; each one's ``_Frame``."""
        from pydicom.pixels import apply_color_lut, apply_modality_lut, iter_pixels

        rle = ds.file_meta.TransferSyntaxUID == dicom_rle.RLE_LOSSLESS
        photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).upper()
        series = str(getattr(ds, "SeriesInstanceUID", "") or "") or f"file:{member.path}"
        position, window, aspect = _position(ds), _window(ds), _aspect(ds)
        instance = _number(ds, "InstanceNumber")
        for index, frame in enumerate(iter_pixels(ds, decoding_plugin=dicom_rle.PLUGIN if rle else "")):
            if photometric == "PALETTE COLOR":
                frame = apply_color_lut(frame, ds)
            if frame.ndim == 3:  # color (YBR is converted to RGB by pydicom): luma, no modality LUT
                values = (frame[..., :3].astype(np.float32) @ _LUMA).astype(np.float32)
            else:
                values = np.asarray(apply_modality_lut(frame, ds), dtype=np.float32)
            offset = self._file.seek(0, io.SEEK_END)
            self._file.write(np.ascontiguousarray(values).tobytes())
            step = max(1, values.size // _SAMPLE_PER_FRAME)
            sample = values.ravel()[::step].copy()  # a copy, not a view that would keep the frame
            self._samples.setdefault(series, []).append(sample)
            path = member.path if frames == 1 else f"{member.path} [frame {index + 1}]"
            order = (0 if position is not None else 1, position or 0.0, int(instance or 0), member.path, index)
            shape = (values.shape[0], values.shape[1])
            invert = photometric == "MONOCHROME1"
            yield _Frame(series, order, offset, shape, window, invert, aspect, path, member.class_name)

    def _range(self, series: str) -> tuple[float, float]:
        """Robust (low, high) of a series' values, from the samples of its frames."""
        sample = np.concatenate(self._samples[series])
        lo, hi = np.percentile(sample, [self.settings.intensity_low_pct, self.settings.intensity_high_pct])
        if hi <= lo:
            lo, hi = sample.min(), sample.max()
        return float(lo), float(hi)

    def slices(self, skipped: list[dict[str, str]]) -> Iterator[Slice]:
        """Every collected frame as a stored slice, series by series (in the order first seen), sorted."""
        by_series: dict[str, list[_Frame]] = {}
        for frame in self._frames:
            by_series.setdefault(frame.series, []).append(frame)
        self._file.flush()
        for index, (series, frames) in enumerate(by_series.items()):
            robust = self._range(series) if any(f.window is None for f in frames) else None
            group = f"dicom:series {index}"  # an index, never the UID: no header value reaches the store
            for position, f in enumerate(sorted(frames, key=lambda f: f.order)):
                count = f.shape[0] * f.shape[1]
                self._file.seek(f.offset)
                values = np.frombuffer(self._file.read(count * 4), dtype=np.float32).reshape(f.shape)
                lo, hi = f.window or robust or (0.0, 1.0)
                if hi <= lo:
                    skipped.append({"file": f.path, "reason": "blank image"})
                    continue
                scaled = np.clip((values - lo) / (hi - lo), 0.0, 1.0)
                if f.invert:
                    scaled = 1.0 - scaled
                try:
                    pixels = square_slice(scaled, self.settings, value_range=(0.0, 1.0), pixel_aspect=f.aspect)
                except SkipImage as exc:
                    skipped.append({"file": f.path, "reason": exc.reason})
                    continue
                yield Slice(f.path, f.class_name, pixels, (f.shape[1], f.shape[0]), Source(group, position))
