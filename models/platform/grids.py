"""Image grids (sample sheets). Torch-free: works on numpy arrays, writes PNG with Pillow."""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image, ImageDraw

LABEL_HEIGHT = 14  # px of the band above each row of ``class_sheet``, where the class name is written


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


def class_sheet(rows: list[tuple[str, np.ndarray]], thumb: int = 96, pad: int = 2) -> Image.Image:
    """One row per class: its name on a band, then ``grid`` of its uint8 ``[k, S, S]`` samples at ``thumb`` px.

    Row ``r`` starts at ``y = r * (LABEL_HEIGHT + thumb + pad)``; the sheet is ``pad`` px taller than its rows.
    """
    ncols = max((len(images) for _, images in rows), default=1)
    block = LABEL_HEIGHT + thumb + pad
    sheet = Image.new("L", (ncols * (thumb + pad) + pad, len(rows) * block + pad))
    draw = ImageDraw.Draw(sheet)
    for r, (name, images) in enumerate(rows):
        thumbs = [Image.fromarray(img).resize((thumb, thumb), Image.Resampling.BOX) for img in images]
        small = np.stack([np.asarray(t) for t in thumbs])
        sheet.paste(grid(small, ncols=len(small), pad=pad), (0, r * block + LABEL_HEIGHT))
        try:
            draw.text((pad + 2, r * block + 1), name, fill=255)
        except UnicodeEncodeError:  # Pillow's bitmap fallback font is Latin-1 only
            draw.text((pad + 2, r * block + 1), name.encode("ascii", "replace").decode(), fill=255)
    return sheet


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()
