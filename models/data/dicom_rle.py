"""RLE Lossless frames decoded with a cap: no segment grows past the bytes its frame has.

pydicom's own RLE decoder (``pydicom.pixels.decoders.rle``) decodes each PackBits segment whole
and only then checks its length, and a segment can expand 64 times (2 bytes make a run of 128):
a 16 MB fragment of a frame that declares 4096 x 4096 pixels would become 1 GiB in memory. This
decoder, a pydicom decoding plugin (``register``, then ``iter_pixels(...,
decoding_plugin=PLUGIN)``), reads the same data the same way (PS3.5 Annex G: a 64-byte header,
one segment per byte of a sample, most significant first, each PackBits), but stops a segment
at Rows x Columns bytes: a frame takes at most its own size, plus one run, whatever it holds.
Torch-free.
"""

from __future__ import annotations

import struct
from typing import Any

RLE_LOSSLESS = "1.2.840.10008.1.2.5"  # its transfer syntax (pydicom is imported only when a file is read)
PLUGIN = "drawai-capped"
DECODER_DEPENDENCIES: dict[str, tuple[str, ...]] = {RLE_LOSSLESS: ()}  # what pydicom asks of a plugin module
_HEADER = 64  # bytes of the RLE header: the number of segments, then 15 offsets
_RUN = 128  # the longest PackBits run


def is_available(uid: str) -> bool:
    """Whether this plugin decodes ``uid`` (a pydicom plugin's required function)."""
    return uid in DECODER_DEPENDENCIES


def register() -> None:
    """Add this plugin to pydicom's RLE Lossless decoder (once)."""
    from pydicom.pixels import get_decoder

    decoder = get_decoder(RLE_LOSSLESS)
    if PLUGIN not in decoder.available_plugins:
        decoder.add_plugin(PLUGIN, (__name__, "decode_frame"))


def decode_segment(src: bytes, length: int) -> bytearray:
    """The first ``length`` bytes of a PackBits segment; ValueError when it holds fewer."""
    out = bytearray()
    extend = out.extend
    pos, end, size = 0, len(src), 0
    while pos < end and size < length:  # at most one run (128 bytes) past ``length``
        header = src[pos]
        if header > _RUN:  # -127..-1 as a signed byte: the next byte 257 - header times
            run = 257 - header
            extend(src[pos + 1 : pos + 2] * run)
            pos += 2
        elif header < _RUN:  # 0..127: the next header + 1 bytes as they are
            run = header + 1
            extend(src[pos + 1 : pos + 1 + run])
            pos += run + 1
        else:  # -128: no operation
            run = 0
            pos += 1
        size += run
    if len(out) < length:
        raise ValueError("RLE segment shorter than its frame")
    return out[:length] if len(out) > length else out


def decode_frame(src: bytes, runner: Any) -> bytearray:
    """One RLE frame as pydicom's own decoder returns it (little endian, planar configuration 1)."""
    rows, columns, samples, bits = runner.rows, runner.columns, runner.samples_per_pixel, runner.bits_allocated
    if bits % 8:
        raise NotImplementedError(f"RLE with {bits} bits allocated")
    per_sample = bits // 8
    count = int.from_bytes(src[:4], "little")
    if count != samples * per_sample or len(src) < _HEADER:
        raise ValueError("wrong number of RLE segments")
    offsets = [*struct.unpack("<15I", src[4:_HEADER])[:count], len(src)]
    pixels = rows * columns
    stride = per_sample * pixels
    decoded = bytearray(stride * samples)
    little = runner.get_option("rle_segment_order", ">") == "<"
    for sample in range(samples):
        for byte in range(per_sample):  # segment ``byte`` of the sample: most significant first
            index = sample * per_sample + byte
            segment = decode_segment(src[offsets[index] : offsets[index + 1]], pixels)
            position = byte if little else per_sample - byte - 1
            start = sample * stride + position
            decoded[start : start + stride : per_sample] = segment
    runner.set_option("planar_configuration", 1)
    return decoded
