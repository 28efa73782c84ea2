"""Image grids (sample sheets). Torch-free: works on numpy arrays, writes PNG with Pillow."""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image


def to_uint8(images: np.ndarray) -> np.ndarray:
    """``[-1, 1]`` floats (generator output) to uint8; uint8 input passes through."""
    if images.dtype == np.uint8:
        return images
    return np.clip(np.rint((images.astype(np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def grid(images: np.ndarray, ncols: int | None = None, pad: int = 2) -> Image.Image:
    """A contact sheet of ``[N, H, W]`` (or ``[N, 1, H, W]``) grayscale images, black gutters."""
    imgs = to_uint8(np.asarray(images))
    if imgs.ndim == 4:
        imgs = imgs[:, 0]
    n, h, w = imgs.shape
    ncols = ncols or math.ceil(math.sqrt(n))
    nrows = math.ceil(n / ncols)
    sheet = np.zeros((nrows * (h + pad) + pad, ncols * (w + pad) + pad), np.uint8)
    for i in range(n):
        r, c = divmod(i, ncols)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        sheet[y : y + h, x : x + w] = imgs[i]
    return Image.fromarray(sheet, mode="L")


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()
