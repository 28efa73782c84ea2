"""DICOM files for the upload-budget tests: pydicom's MR_small.dcm with other pixel data, built here.

``rle_bomb`` writes the encapsulated RLE Lossless data itself (DICOM PS3.5 Annex G): each frame is
one fragment, a 64-byte RLE header and one PackBits segment per byte of a sample (most significant
first), each row encoded on its own as replicate runs of 128 bytes (header byte -127, then the
value). Uniform 16-bit frames of 4096 x 4096 take 512 KiB each and decode to 32 MiB, 64 times more;
a zip of them is a few KB, since every frame is the same bytes.
"""

from __future__ import annotations

import io
import struct
from typing import Any

import numpy as np
import pydicom
from pydicom.data import get_testdata_file
from pydicom.encaps import encapsulate
from pydicom.uid import RLELossless

_RUN = 128  # the longest PackBits run


def mr_small() -> Any:
    path = get_testdata_file("MR_small.dcm")  # ships in the pydicom wheel: never a download
    assert path is not None
    return pydicom.dcmread(path)


def to_bytes(ds: Any) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def packbits_segment(rows: int, columns: int, value: int) -> bytes:
    """A PackBits segment of ``rows`` rows of ``columns`` bytes all ``value``, row by row (PS3.5 G.3.1)."""
    full, rest = divmod(columns, _RUN)
    row = bytes([257 - _RUN, value]) * full  # header -127 as a byte: "repeat the next byte 128 times"
    if rest > 1:
        row += bytes([257 - rest, value])
    elif rest == 1:
        row += bytes([0, value])  # header 0: one literal byte
    return row * rows


def uniform_rle_frame(rows: int, columns: int, value: int) -> bytes:
    """One RLE Lossless frame of 16-bit pixels all ``value``: the RLE header, then MSB and LSB segments."""
    high, low = packbits_segment(rows, columns, value >> 8), packbits_segment(rows, columns, value & 0xFF)
    header = struct.pack("<16I", 2, 64, 64 + len(high), *([0] * 13))
    return header + high + low


def rle_bomb(frames: int, side: int = 4096, declared: int | None = None, value: int = 600) -> bytes:
    """MR_small as ``frames`` uniform RLE frames of ``side`` x ``side`` 16-bit pixels (``declared``: NumberOfFrames)."""
    return rle_file([uniform_rle_frame(side, side, value)] * frames, side, declared)


def rle_file(fragments: list[bytes], side: int, declared: int | None = None) -> bytes:
    """MR_small (16-bit) as ``side`` x ``side`` RLE frames, one fragment each, as they are given."""
    ds = mr_small()
    ds.Rows = ds.Columns = side
    ds.NumberOfFrames = declared if declared is not None else len(fragments)
    ds.PixelData = encapsulate(fragments, has_bot=True)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.file_meta.TransferSyntaxUID = RLELossless
    return to_bytes(ds)


def mr_frames(count: int, first: int = 0, compress: bool = True, **changes: Any) -> bytes:
    """MR_small as ``count`` different frames (RLE Lossless with pydicom's own encoder, or uncompressed).

    Frame ``k`` is MR_small's image rolled by ``7 * (first + k)`` rows: files with other ``first``
    hold other frames, never duplicates.
    """
    ds = mr_small()
    base = ds.pixel_array.astype(np.int16)
    frames = np.stack([np.roll(base, 7 * (first + k), axis=0) for k in range(count)])
    ds.PixelData = np.ascontiguousarray(frames).tobytes()
    ds.NumberOfFrames = count
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    if compress:
        ds.compress(RLELossless, encoding_plugin="pydicom")
    return to_bytes(ds)
