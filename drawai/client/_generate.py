"""``generate``: the request for PIL images (``format=json``) or a numpy array (``format=npy``), and its answer
read back with each image's seed and class."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import unquote

import httpx
import numpy as np

from drawai.client._base import Call

Labels = str | Mapping[str, int] | None  # "yes:48,no:16" or {"yes": 48, "no": 16}
As = Literal["pil", "numpy"]


def labels_param(labels: Labels) -> str | None:
    if labels is None or isinstance(labels, str):
        return labels
    return ",".join(f"{name}:{n}" for name, n in labels.items())


def classes_of(header: str | None) -> list[str] | None:
    """``X-DrawAI-Classes`` (``yes:48,no:16``, names percent-encoded) as one class name per image."""
    if not header:
        return None
    out: list[str] = []
    for item in header.split(","):
        name, _, n = item.rpartition(":")
        out.extend([unquote(name)] * int(n))
    return out


@dataclass
class Generated:
    """``generate``'s answer: the images (PIL images, or a float32 ``[N, 1, H, W]`` array in ``[-1, 1]``), each
    image's seed and class (None for an unconditional model), and what drew them. With ``as_="pil"``, ``pngs``
    holds the server's PNG files (with their provenance text chunks) and ``files`` their names."""

    images: Any
    seeds: list[int]
    labels: list[str] | None
    model_version: str
    engine: str | None = None
    precision: str | None = None
    pngs: list[bytes] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.seeds)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.images)


def generate_call(
    count: int | None, seed: int | None, label: str | None, labels: Labels, model_: str | None, as_: As
) -> Call[Generated]:
    if as_ not in ("pil", "numpy"):
        raise ValueError(f"as_ must be 'pil' or 'numpy', not {as_!r}")
    params = {
        "count": count,
        "seed": seed,
        "label": label,
        "labels": labels_param(labels),
        "model": model_,
        "format": "json" if as_ == "pil" else "npy",
    }
    return Call("POST", "/generate", _from_json if as_ == "pil" else _from_npy, params=params)


def _from_json(r: httpx.Response) -> Generated:
    from PIL import Image

    body = r.json()
    entries = body["images"]
    pngs = [base64.b64decode(e["png_base64"]) for e in entries]
    images = [Image.open(io.BytesIO(b)) for b in pngs]
    for image in images:
        image.load()
    labels = [e["class"] for e in entries] if entries and "class" in entries[0] else None
    return Generated(
        images,
        [int(e["seed"]) for e in entries],
        labels,
        body["model_version"],
        body.get("engine"),
        body.get("precision"),
        pngs,
        [e["file"] for e in entries],
    )


def _from_npy(r: httpx.Response) -> Generated:
    array = np.load(io.BytesIO(r.content), allow_pickle=False)
    first = int(r.headers["x-drawai-seed"])
    seeds = list(range(first, first + len(array)))
    return Generated(
        array,
        seeds,
        classes_of(r.headers.get("x-drawai-classes")),
        r.headers["x-drawai-model-version"],
        r.headers.get("x-drawai-engine"),
        r.headers.get("x-drawai-precision"),
    )
