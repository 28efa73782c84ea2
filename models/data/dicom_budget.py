"""What a DICOM file's pixel data will cost, told from its header before any frame is decoded.

A small file can declare a lot: RLE turns 2 bytes into 128 (uniform frames of 4096 x 4096 x
16 bits take 512 KiB each, and a zip of them a few KB), and ``NumberOfFrames`` is only a number.
``FrameBudget.admit`` is called for every DICOM file of an upload, after its transfer syntax is
known to be readable and before ``pydicom`` decodes anything, and refuses the whole upload:

- ``TooLarge`` past ``max_dicom_frames`` frames in the upload (all files together);
- ``TooLarge`` when the decoded frames (Rows x Columns x SamplesPerPixel x BitsAllocated / 8 x
  NumberOfFrames) take the upload past ``max_unpacked_bytes``, counted in the one
  ``models.data.members.Budget`` that the archive's own unpacked bytes come from. Only frames that
  decoding creates count: compressed (encapsulated) pixel data. Uncompressed frames are the
  file's own bytes, already counted when the file was read (or inflated, see below);
- ``Refused`` when the header declares more frames than the pixel data holds (a lie: pydicom would
  silently yield fewer), without reading or decoding the fragments.

A file in Deflated Explicit VR Little Endian is inflated whole by ``pydicom.dcmread`` (about
1000:1 for zeros): ``charge_inflated`` first counts, in bounded memory, the bytes it inflates to
against the same budget (``TooLarge`` past it), so its pixel data count as unpacked bytes once, there.

Messages quote no header value but image sizes and frame counts. Torch-free.
"""

from __future__ import annotations

import io
import zlib
from dataclasses import dataclass
from typing import Any

from models.data.members import Budget
from models.platform.errors import Refused, TooLarge
from models.platform.settings import Settings

_FRAGMENT = 0xFFFEE000  # (FFFE,E000): an item of encapsulated pixel data
_DEFLATED = "1.2.840.10008.1.2.1.99"  # Deflated Explicit VR Little Endian
_IN_CHUNK = 64 << 10  # compressed bytes inflated at a time
_OUT_CHUNK = 1 << 20  # the most inflated bytes held at a time


@dataclass(frozen=True)
class Geometry:
    """The pixel data a DICOM header declares."""

    rows: int
    columns: int
    samples: int  # SamplesPerPixel
    bits: int  # BitsAllocated
    frames: int  # NumberOfFrames (1 when absent)

    @property
    def frame_bytes(self) -> int:
        """Bytes of one decoded frame (bit-packed 1-bit frames rounded up to whole bytes)."""
        return -(-self.rows * self.columns * self.samples * self.bits // 8)

    @property
    def decoded_bytes(self) -> int:
        return self.frame_bytes * self.frames


def _whole(ds: Any, keyword: str, default: int | None = None) -> int | None:
    """A header value as a whole number (the first of a multi-value), ``default`` when absent, None when invalid."""
    value = getattr(ds, keyword, None)
    if value is None or value == "":
        return default
    if not isinstance(value, str | bytes) and hasattr(value, "__len__"):
        value = value[0] if len(value) else default
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return None
    return int(number) if number.is_integer() else None


def geometry(ds: Any) -> Geometry | None:
    """The declared pixel data of ``ds``; None when Rows, Columns or BitsAllocated are missing or invalid."""
    rows, columns, bits = _whole(ds, "Rows"), _whole(ds, "Columns"), _whole(ds, "BitsAllocated")
    samples, frames = _whole(ds, "SamplesPerPixel", 1), _whole(ds, "NumberOfFrames", 1)
    if rows is None or columns is None or bits is None or samples is None or frames is None:
        return None
    if min(rows, columns) < 1 or not 1 <= bits <= 64 or not 1 <= samples <= 4:
        return None
    return Geometry(rows, columns, samples, bits, max(frames, 1))  # 0 frames: pydicom reads it as one


def _fragments(data: bytes) -> int:
    """How many fragments encapsulated pixel data holds after its offset table (each frame needs one at least)."""
    buffer = io.BytesIO(data)
    count = 0
    while len(head := buffer.read(8)) == 8:
        tag = int.from_bytes(head[:2], "little") << 16 | int.from_bytes(head[2:4], "little")
        if tag != _FRAGMENT:
            break  # the sequence end, or junk that the decoder will report
        buffer.seek(int.from_bytes(head[4:], "little"), io.SEEK_CUR)
        count += 1
    return max(0, count - 1)  # the first item is the basic offset table


def held_frames(ds: Any, g: Geometry, encapsulated: bool) -> int:
    """At most how many frames the pixel data can hold (fragments when encapsulated, else whole frames)."""
    data = ds.PixelData
    if encapsulated:
        return _fragments(data)
    samples = 2 if str(getattr(ds, "PhotometricInterpretation", "")).upper() == "YBR_FULL_422" else g.samples
    bits_per_frame = g.rows * g.columns * samples * g.bits
    return len(data) * 8 // bits_per_frame


def _deflated_start(data: bytes) -> int | None:
    """Where the deflated dataset of a Deflated Explicit VR Little Endian file starts (None: another file)."""
    from pydicom.filereader import read_dataset, read_preamble

    fp = io.BytesIO(data)
    try:
        read_preamble(fp, False)  # the file meta group (0002) is never deflated: read it as pydicom does
        meta = read_dataset(fp, is_implicit_VR=False, is_little_endian=True, stop_when=lambda tag, *_: tag.group != 2)
        syntax = str(meta.get("TransferSyntaxUID", "")).rstrip("\x00 ")
    except Exception:  # no preamble or a damaged file meta: dcmread decides (it never inflates those)
        return None
    return fp.tell() if syntax == _DEFLATED else None


def charge_inflated(data: bytes, budget: Budget) -> None:
    """Take what a deflated DICOM file inflates to from ``budget`` (``TooLarge`` past it), before pydicom does."""
    start = _deflated_start(data)
    if start is None:
        return
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    view = memoryview(data)
    try:
        for offset in range(start, len(data), _IN_CHUNK):
            pending: bytes | memoryview = view[offset : offset + _IN_CHUNK]
            while pending:
                budget.take(len(inflater.decompress(pending, _OUT_CHUNK)), "a deflated DICOM file inflates")
                pending = inflater.unconsumed_tail
            if inflater.eof:
                return
    except zlib.error:
        return  # corrupt: dcmread fails on it too, and the file is skipped


class FrameBudget:
    """The DICOM frames of one upload, counted against ``max_dicom_frames`` and the upload's ``Budget``."""

    def __init__(self, settings: Settings, budget: Budget) -> None:
        self.settings = settings
        self.budget = budget
        self.frames = 0

    def admit(self, path: str, ds: Any, g: Geometry, *, compressed: bool) -> None:
        """Count the frames of one file, or refuse the upload; ``compressed``: encapsulated pixel data."""
        self.frames += g.frames
        if self.frames > self.settings.max_dicom_frames:
            raise TooLarge(
                f"the upload holds more than the limit of {self.settings.max_dicom_frames} DICOM frames "
                "(DRAWAI_MAX_DICOM_FRAMES)",
            )
        if compressed:
            self.budget.take(g.decoded_bytes, "DICOM frames decode")
        held = held_frames(ds, g, compressed)
        if held < g.frames:
            raise Refused(
                f"DICOM file {path} declares {g.frames} frames but its pixel data holds {held} (corrupt or hostile)",
            )
