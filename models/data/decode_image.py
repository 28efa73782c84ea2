"""Decoding one uploaded image into a stored slice: grayscale, padded to square, resized, normalized.

``decode_image`` turns the bytes of one file (PNG, JPEG, BMP, TIFF, GIF, WebP, PGM...) into a
``uint8 [S, S]`` array, ``S = settings.storage_size``:

1. the header is read and the pixel count checked *before* anything is decoded: a file that
   declares more than ``max_image_pixels`` pixels (a pixel bomb) refuses the whole upload (``TooLarge``);
2. the image is fully decoded (``load()``), so truncated files are caught here and skipped;
3. it is converted to one gray channel: RGB(A)/palette by ITU-R 601 luma (transparent parts
   composited onto black), 16- and 32-bit gray kept at full depth until normalization;
4. it is resized so that its longer side is ``S`` (Lanczos, with box pre-reduction for large
   images), min-max normalized to 0..255 and padded, centred, with black to ``S x S``: never
   stretched.

``square_slice`` does step 4 for a 2-D array (NIfTI slices, DICOM frames: ``models.data.decode_nifti``,
``models.data.decode_dicom``), optionally with a fixed intensity range and non-square pixels.

Problems with one file raise ``SkipImage(reason)``: the file is skipped and reported, the rest
of the upload goes on. Torch-free.
"""

from __future__ import annotations

import io
import logging

import numpy as np
from PIL import Image, ImageOps

from models.platform.errors import TooLarge
from models.platform.settings import Settings

log = logging.getLogger(__name__)

# Gray modes that carry more than 8 bits: converted to float without going through 8-bit "L".
_DEEP_GRAY = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
# Modes that can carry transparency, composited onto black before conversion to gray.
_ALPHA = {"RGBA", "LA", "PA", "RGBa", "La"}


class PixelBombError(TooLarge):
    """An image declares more pixels than ``max_image_pixels``: the whole upload is refused."""


class SkipImage(Exception):
    """One file cannot be used; ``reason`` is a short human explanation for the upload report."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def open_checked(data: bytes, max_pixels: int) -> Image.Image:
    """Open an image from its header only, refusing pixel bombs before any decoding."""
    try:
        img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:  # PIL's own limit, when ours is set higher
        raise PixelBombError(f"image declares too many pixels: {exc}") from None
    except Exception:  # UnidentifiedImageError, and PIL plugins raise a zoo of errors on junk headers
        raise SkipImage("not an image") from None
    width, height = img.size
    if width * height > max_pixels:
        img.close()
        raise PixelBombError(f"image of {width}x{height} pixels is over the limit of {max_pixels} pixels")
    return img


def _gray(img: Image.Image) -> Image.Image:
    """One gray channel: mode ``L`` for 8-bit sources, ``F`` for deeper ones."""
    if img.mode in _DEEP_GRAY:
        return img if img.mode in {"I", "F"} else img.convert("I")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in _ALPHA:
        rgba = img.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(black, rgba).convert("L")
    if img.mode == "L":
        return img
    return img.convert("RGB").convert("L")  # CMYK, YCbCr, LAB, HSV, 1 and friends


def _fit(gray: Image.Image, size: int, pixel_aspect: float = 1.0) -> np.ndarray:
    """Resize so the longer side is ``size`` (aspect ratio kept); float32 array of the result.

    ``pixel_aspect`` is the height of one pixel over its width (DICOM pixel spacing, NIfTI voxel
    sizes): 2.0 makes every row count as two, so anisotropic pixels come out with their true shape.
    """
    width, height = gray.size
    scale = size / max(width, height * pixel_aspect)
    target = (max(1, round(width * scale)), max(1, round(height * pixel_aspect * scale)))
    factor = max(width, height) // (2 * size)
    if factor >= 2:  # box-average huge images first: bounded memory, no aliasing
        gray = gray.reduce(factor)
    if gray.mode != "F":
        gray = gray.convert("F")
    if gray.size != target:
        gray = gray.resize(target, Image.Resampling.LANCZOS)
    return np.asarray(gray, dtype=np.float32)


def _finish(fitted: np.ndarray, size: int, value_range: tuple[float, float] | None) -> np.ndarray:
    """Map ``fitted`` to 0..255 (its own min-max, or the fixed ``value_range``) and pad it, centred, to a square."""
    if value_range is None:
        lo, hi = float(fitted.min()), float(fitted.max())
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise SkipImage("corrupt or truncated image")
        if hi - lo <= 1e-6 * max(1.0, abs(hi)):
            raise SkipImage("blank image")
    else:
        lo, hi = value_range
    normalized = np.rint((fitted - lo) * (255.0 / (hi - lo)))
    out = np.zeros((size, size), dtype=np.uint8)
    h, w = normalized.shape
    top, left = (size - h) // 2, (size - w) // 2
    out[top : top + h, left : left + w] = np.clip(normalized, 0, 255).astype(np.uint8)
    return out


def square_slice(
    pixels: np.ndarray,
    settings: Settings,
    *,
    value_range: tuple[float, float] | None = None,
    pixel_aspect: float = 1.0,
) -> np.ndarray:
    """A 2-D array (a volume slice, a DICOM frame; any real dtype) as a stored ``uint8 [S, S]`` slice.

    The same resize, normalization and padding as ``decode_image``. ``value_range`` None: the
    slice's own min-max becomes 0..255, as for images; else that fixed range does (volumes scaled
    once per volume keep their slices' relative brightness). Raises ``PixelBombError`` over
    ``max_image_pixels`` and ``SkipImage`` for too small, blank or non-finite slices.
    """
    if pixels.ndim != 2:
        raise SkipImage(f"not a 2-D image (shape {pixels.shape})")
    height, width = pixels.shape
    if width * height > settings.max_image_pixels:
        limit = settings.max_image_pixels
        raise PixelBombError(f"slice of {width}x{height} pixels is over the limit of {limit} pixels")
    if min(width, height) < settings.min_image_side:
        raise SkipImage(f"too small ({width}x{height} < min side {settings.min_image_side})")
    arr = np.ascontiguousarray(pixels, dtype=np.float32)
    lo, hi = float(arr.min()), float(arr.max())
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise SkipImage("corrupt pixel data (not finite)")
    if lo == hi:
        raise SkipImage("blank image")
    fitted = _fit(Image.fromarray(arr), settings.storage_size, pixel_aspect)
    return _finish(fitted, settings.storage_size, value_range)


def decode_image(data: bytes, settings: Settings) -> np.ndarray:
    """Decode one image file into a normalized, square ``uint8 [S, S]`` slice.

    Raises ``PixelBombError`` (refuses the whole upload) or ``SkipImage`` (skips this file).
    """
    size = settings.storage_size
    img = open_checked(data, settings.max_image_pixels)
    with img:
        width, height = img.size
        if min(width, height) < settings.min_image_side:
            raise SkipImage(f"too small ({width}x{height} < min side {settings.min_image_side})")
        try:
            img.load()
            ImageOps.exif_transpose(img, in_place=True)
            gray = _gray(img)
            lo, hi = gray.getextrema()
        except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, struct.error... on bad data
            log.debug("image decode failed: %s", exc)
            raise SkipImage("corrupt or truncated image") from None
        if lo == hi:
            raise SkipImage("blank image")
        fitted = _fit(gray, size)  # PIL's box reduction first: huge images never become float arrays whole
    return _finish(fitted, size, None)


_EXIF_ORIENTATION = 0x0112
_SIDES_SWAPPED = {5, 6, 7, 8}  # EXIF orientations that rotate by 90 degrees


def decode_image_with_size(data: bytes, settings: Settings) -> tuple[np.ndarray, tuple[int, int]]:
    """``decode_image``, and the file's original ``(width, height)`` as displayed (EXIF rotation applied).

    The size is read from the header again (cheap: nothing is decoded twice), so ``decode_image``
    stays the one decoder.
    """
    pixels = decode_image(data, settings)
    with Image.open(io.BytesIO(data)) as img:
        width, height = img.size
        if img.getexif().get(_EXIF_ORIENTATION) in _SIDES_SWAPPED:
            width, height = height, width
    return pixels, (width, height)
