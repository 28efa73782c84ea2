#!/usr/bin/env python3
"""Build ``data/demo/mni152_lesions``: the demo slices in two classes, ``yes/`` with one **simulated** lesion.

This is a maintainer script, like ``scripts/make_demo_data.py`` and ``scripts/make_bench_data.py``. Draw.AI
itself never imports it; the tests run ``--check``. It needs only numpy and Pillow, no network and no
download.

Why
---
A conditional GAN needs labelled classes, and the "does synthetic data help a detector" test needs a
positive class a detector can learn. The bundled demo set (``data/demo/mni152_axial``: 57 axial slices of
the skull-stripped MNI152 T1 template, healthy anatomy) has none, so this script makes one by drawing a
synthetic lesion into copies of every other slice. **The lesions are simulated, not real pathology**: the set
demonstrates conditional training and the utility test, and says nothing about detecting real tumours.

Classes
-------
Every slice goes unchanged (byte for byte) to ``no/`` (57). The slices at an even sorted position
(sorted by name = by position, inferior to superior; 29 of 57: ``slice_026``, ``slice_030``, ...
``slice_138``) also go to ``yes/`` with a lesion drawn in. File names are kept, so the number still tells
the position. The classes are *paired*: each ``yes`` slice's anatomy is also in ``no/``, so the only thing
that tells the classes apart is the lesion (not the axial level), and a detector (the utility test's
classifier) must learn the lesion. Both folders are one volume to the grouped split (``models.data.split``:
the class's folder does not count), so a slice and its twin are held out together.

Lesion (one per ``yes`` slice, 2-D, drawn on the 8-bit slice)
--------------------------------------------------------------
Looks like a ring-enhancing mass on post-gadolinium T1 (compare ``ring`` in ``make_bench_data.py``):

* **Outline**: a disc whose radius is modulated by low-frequency angular noise (harmonics 2-5 of the
  angle, each with a relative amplitude drawn in 0-0.10 and a random phase): a smooth, irregular blob.
* **Size**: a radius drawn in 8-14 % of the brain's extent (the larger side of the bounding box of the
  brain mask: about 5-14 px on these 128 px slices).
* **Placement**: the brain mask is the pixels above ``BRAIN_THRESHOLD`` (12 of 255; the background's
  resampling ringing stays at or below it). The centre is drawn among the pixels at least (largest outline
  radius x 1.05 + ``MARGIN_PX`` = 2 px) from every pixel outside the mask (the mask eroded by that
  distance), preferring those at least one radius from the brain's vertical midline (one hemisphere)
  and, among them, bright surroundings (white matter: weight = local mean intensity^6). Where the brain
  is too small for the drawn radius, the radius is shrunk to fit its deepest pixel (not below 3 px; the
  script prints it); no slice is skipped. (With the default seed no slice needs shrinking.)
* **Intensities**, from the slice's own brain intensities (p90 ~ white matter, p99 ~ the brightest):
  a dark (hypointense) necrotic core at 0.30-0.45 x p90 (CSF is about 0.3 x p90), mottled by smooth
  noise (+-6 % std); a bright enhancing rim, 25-40 % of the radius thick (varying by up to +-45 % around
  the lesion, so the inner margin is irregular), at 0.98-1.04 x p99 with up to +-10 % nodular variation;
  a hypointense oedema halo that darkens the tissue by 22-34 % at the lesion (multiplicatively: white
  matter darkens most and the anatomy shows through) and fades smoothly to nothing 0.6-1.2 radii
  outside the outline (varying +-35 % around it) and within 4 px of the brain's edge. No mass effect
  (nothing is displaced).
* **Edges**: the change is blurred (Gaussian, sigma 0.7 px) so nothing is pixel-sharp, added to the
  slice only inside the brain mask (pixels outside it are never changed), rounded and clipped to 0-255.

Every random draw comes from ``numpy.random.default_rng([seed, slice number])`` (default seed 20240611),
so a slice's lesion depends on nothing else, and re-running writes the same bytes (PNG via Pillow,
``optimize=False``, no metadata).

Usage (from the repository root)::

    python scripts/make_demo_lesions.py                     # (re)write data/demo/mni152_lesions/{no,yes}
    python scripts/make_demo_lesions.py --check             # regenerate to a temp dir, compare; exit 1 if not identical
    python scripts/make_demo_lesions.py --sheet docs/img/demo_lesions.png   # also write the contact sheet

``--sheet`` writes a contact sheet: some ``yes`` slices beside their lesion-free originals, and each at
64 px (the default training size). It takes a second or two.
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SRC = REPO_ROOT / "data" / "demo" / "mni152_axial"
DEFAULT_OUT = REPO_ROOT / "data" / "demo" / "mni152_lesions"
DEFAULT_SEED = 20240611
CLASSES = ("no", "yes")
YES_EVERY, YES_OFFSET = 2, 0  # sorted position i also goes to yes/ (lesioned) when i % YES_EVERY == YES_OFFSET

BRAIN_THRESHOLD = 12  # brain mask: pixels above this (the black background has Lanczos ringing up to ~12)
RADIUS_FRACTION = (0.08, 0.14)  # lesion radius / the brain's extent (larger side of its bounding box)
MIN_RADIUS_PX = 3.0  # a lesion is never smaller than this (shrunk to fit, but not below)
MARGIN_PX = 2.0  # the lesion's outline stays at least this far inside the brain mask
HARMONICS = (2, 3, 4, 5)  # angular frequencies of the outline's modulation
HARMONIC_AMPLITUDE = 0.10  # each harmonic's relative amplitude is drawn in [0, this]
RIM_FRACTION = (0.25, 0.40)  # rim thickness / radius
CORE_LEVEL = (0.30, 0.45)  # core = this x p90 (p90 of the brain ~ white matter; CSF is ~0.3 x p90)
RIM_GAIN = (0.98, 1.04)  # rim = this x p99 (clipped to 255)
RIM_NODULARITY = 0.10  # the rim's brightness varies by up to +-this around the lesion
RIM_WIDTH_VARIATION = 0.45  # the rim's thickness varies by up to +-this around the lesion
OEDEMA_DEPTH = (0.22, 0.34)  # tissue darkened by this fraction next to the lesion
OEDEMA_REACH = (0.6, 1.2)  # the oedema fades out this many radii outside the outline
OEDEMA_VARIATION = 0.35  # that reach varies by up to +-this around the lesion
MIDLINE_CLEARANCE = 1.0  # centres at least this many radii from the midline are preferred (one hemisphere)
BLUR_SIGMA = 0.7  # px, applied to the change


@dataclass(frozen=True)
class Lesion:
    """One simulated lesion: where, how big, and whether it was shrunk to fit."""

    row: float
    col: float
    radius: float
    drawn_radius: float

    @property
    def shrunk(self) -> bool:
        return self.radius < self.drawn_radius


# ------------------------------------------------------------------------------------ image helpers


def brain_mask(img: np.ndarray) -> np.ndarray:
    return img > BRAIN_THRESHOLD


def depth_map(mask: np.ndarray) -> np.ndarray:
    """Euclidean distance (px) from each brain pixel to the nearest pixel outside the mask (0 outside)."""
    padded = np.pad(mask, 1)
    inside = padded[1:-1, 1:-1]
    near = np.zeros_like(inside)  # outside pixels that touch the brain (4-neighbours)
    for dr, dc in ((0, 1), (2, 1), (1, 0), (1, 2)):
        near |= padded[dr : dr + inside.shape[0], dc : dc + inside.shape[1]]
    border = np.argwhere(near & ~inside).astype(np.float64)
    depth = np.zeros(mask.shape, dtype=np.float64)
    pts = np.argwhere(inside).astype(np.float64)
    if len(pts) and len(border):
        d2 = ((pts[:, None, :] - border[None, :, :]) ** 2).sum(axis=2)
        depth[inside] = np.sqrt(d2.min(axis=1))
    return depth


def gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur, zero-padded (numpy only)."""
    half = max(1, int(np.ceil(3 * sigma)))
    x = np.arange(-half, half + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (x / sigma) ** 2)
    kernel /= kernel.sum()
    out = np.apply_along_axis(np.convolve, 0, img, kernel, mode="same")
    return np.apply_along_axis(np.convolve, 1, out, kernel, mode="same")


def smoothstep(e0: float | np.ndarray, e1: float | np.ndarray, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def angular_noise(rng: np.random.Generator, theta: np.ndarray, amplitude: float) -> np.ndarray:
    """A smooth random function of the angle: harmonics 2-5 with amplitudes drawn in [0, amplitude]."""
    amps = rng.uniform(0.0, amplitude, size=len(HARMONICS))
    phases = rng.uniform(0.0, 2 * np.pi, size=len(HARMONICS))
    return sum((a * np.cos(k * theta + p) for k, a, p in zip(HARMONICS, amps, phases, strict=True)), np.zeros(1))


def angular_variation(rng: np.random.Generator, theta: np.ndarray) -> np.ndarray:
    """Like ``angular_noise``, scaled so its largest possible magnitude is 1 (values in [-1, 1])."""
    amps = rng.uniform(0.2, 1.0, size=len(HARMONICS))
    phases = rng.uniform(0.0, 2 * np.pi, size=len(HARMONICS))
    wave = sum((a * np.cos(k * theta + p) for k, a, p in zip(HARMONICS, amps, phases, strict=True)), np.zeros(1))
    return wave / amps.sum()


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Zero-mean, unit-std smooth 2-D noise."""
    n = gaussian_blur(rng.normal(size=shape), sigma)
    return (n - n.mean()) / (n.std() + 1e-9)


def encode_png(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img.astype(np.uint8), mode="L").save(buf, format="PNG", optimize=False)
    return buf.getvalue()


# ------------------------------------------------------------------------------------- the lesion


def place_lesion(img: np.ndarray, rng: np.random.Generator, outline_max: float) -> Lesion:
    """Draw a radius and a centre deep enough in the brain for the outline (``outline_max`` x radius)."""
    mask = brain_mask(img)
    rows, cols = np.nonzero(mask)
    extent = max(rows.max() - rows.min(), cols.max() - cols.min()) + 1
    drawn = float(rng.uniform(*RADIUS_FRACTION) * extent)
    depth = depth_map(mask)
    fit = (float(depth.max()) - MARGIN_PX) / outline_max  # the largest radius that fits anywhere
    radius = max(MIN_RADIUS_PX, min(drawn, fit))
    ok = depth >= radius * outline_max + MARGIN_PX
    if not ok.any():  # only when even MIN_RADIUS_PX does not fit: the deepest pixel
        ok = depth >= depth.max()
    midline = (cols.min() + cols.max()) / 2.0
    lateral = ok & (np.abs(np.arange(img.shape[1]) - midline) >= MIDLINE_CLEARANCE * radius)[None, :]
    if lateral.any():
        ok = lateral
    tissue = gaussian_blur(img.astype(np.float64) / 255.0, max(1.0, radius / 2.0))  # white matter around
    weights = np.where(ok, tissue**6, 0.0).ravel()
    index = int(rng.choice(weights.size, p=weights / weights.sum()))
    row, col = divmod(index, img.shape[1])
    offset = rng.uniform(-0.5, 0.5, size=2)  # sub-pixel centre
    return Lesion(row=row + float(offset[0]), col=col + float(offset[1]), radius=radius, drawn_radius=drawn)


def add_lesion(img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, Lesion]:
    """The slice with one simulated ring-enhancing lesion, and where it is."""
    shape = (img.shape[0], img.shape[1])
    theta_grid = np.linspace(-np.pi, np.pi, 360, endpoint=False)
    outline_mod = angular_noise(rng, theta_grid, HARMONIC_AMPLITUDE)
    outline_max = float(1.0 + outline_mod.max())
    lesion = place_lesion(img, rng, outline_max * 1.05)

    rr, cc = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float64)
    dy, dx = rr - lesion.row, cc - lesion.col
    theta = np.arctan2(dy, dx)
    outline = lesion.radius * (1.0 + np.interp(theta, theta_grid, outline_mod, period=2 * np.pi))
    rho = np.hypot(dy, dx) / outline  # 1 on the lesion's outline

    brain = img[brain_mask(img)].astype(np.float64)
    p90, p99 = np.percentile(brain, [90, 99])
    core = rng.uniform(*CORE_LEVEL) * p90
    core = core * (1.0 + 0.06 * smooth_noise(rng, shape, 1.5))
    rim = min(255.0, rng.uniform(*RIM_GAIN) * p99) * (1.0 + RIM_NODULARITY * angular_variation(rng, theta))
    rim_width = rng.uniform(*RIM_FRACTION) * (1.0 + RIM_WIDTH_VARIATION * angular_variation(rng, theta))
    reach = rng.uniform(*OEDEMA_REACH) * (1.0 + OEDEMA_VARIATION * angular_variation(rng, theta))
    oedema_depth = rng.uniform(*OEDEMA_DEPTH)

    tissue = img.astype(np.float64)
    fade_at_edge = smoothstep(0.0, 4.0, depth_map(brain_mask(img)))
    oedema = (1.0 - smoothstep(0.9, 1.0 + reach, rho)) * fade_at_edge
    tissue = tissue * (1.0 - oedema_depth * oedema)
    inside = 1.0 - smoothstep(0.9, 1.05, rho)  # the mass replaces the tissue
    in_rim = smoothstep(1.0 - rim_width - 0.08, 1.0 - rim_width + 0.08, rho)
    lesion_value = core * (1.0 - in_rim) + rim * in_rim
    target = tissue * (1.0 - inside) + lesion_value * inside

    change = gaussian_blur(target - img, BLUR_SIGMA) * brain_mask(img)
    out = np.clip(np.rint(img + change), 0, 255).astype(np.uint8)
    return out, lesion


# ------------------------------------------------------------------------------------ the dataset


def slice_number(path: Path) -> int:
    return int(path.stem.rsplit("_", 1)[1])


def build(src: Path, seed: int) -> tuple[dict[str, bytes], list[tuple[str, Lesion]]]:
    """Every output file (``no/slice_NNN.png`` -> bytes) and the lesion of each ``yes`` slice."""
    paths = sorted(src.glob("slice_*.png"))
    if not paths:
        raise SystemExit(f"no slice_*.png in {src}")
    files: dict[str, bytes] = {}
    lesions: list[tuple[str, Lesion]] = []
    for i, path in enumerate(paths):
        files[f"no/{path.name}"] = path.read_bytes()
        if i % YES_EVERY != YES_OFFSET:
            continue
        img = np.asarray(Image.open(path).convert("L"))
        out, lesion = add_lesion(img, np.random.default_rng([seed, slice_number(path)]))
        files[f"yes/{path.name}"] = encode_png(out)
        lesions.append((path.name, lesion))
    return files, lesions


def write(out: Path, files: dict[str, bytes]) -> None:
    for klass in CLASSES:
        (out / klass).mkdir(parents=True, exist_ok=True)
        for old in (out / klass).glob("*.png"):
            old.unlink()
    for name, data in sorted(files.items()):
        (out / name).write_bytes(data)


def compare(out: Path, files: dict[str, bytes]) -> list[str]:
    """What differs between the folder and freshly generated files (empty when identical)."""
    problems = []
    present = {f"{p.parent.name}/{p.name}" for klass in CLASSES for p in (out / klass).glob("*") if p.is_file()}
    for name in sorted(present - set(files)):
        problems.append(f"unexpected file {name}")
    for name, data in sorted(files.items()):
        if name not in present:
            problems.append(f"missing {name}")
        elif (out / name).read_bytes() != data:
            same = np.array_equal(np.asarray(Image.open(out / name)), np.asarray(Image.open(io.BytesIO(data))))
            problems.append(f"differs: {name}" + (" (same pixels: another PNG encoder or zlib?)" if same else ""))
    return problems


def check(out: Path, src: Path, seed: int) -> int:
    """Regenerate into a temporary folder and compare it with ``out`` byte for byte."""
    files, _ = build(src, seed)
    with tempfile.TemporaryDirectory() as tmp:
        write(Path(tmp), files)
        regenerated = {name: (Path(tmp) / name).read_bytes() for name in files}
    problems = compare(out, regenerated)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(f"{out} is not what scripts/make_demo_lesions.py writes: re-run it", file=sys.stderr)
        return 1
    print(f"{out}: {len(files)} files, identical to a fresh run")
    return 0


# ---------------------------------------------------------------------------------- contact sheet


def contact_sheet(path: Path, src: Path, out: Path, names: list[str], per_row: int = 2) -> None:
    """Rows of (original, with lesion, with lesion at 64 px) for ``names``, each cell 256 px, labelled."""
    cell, label_h = 256, 22
    font = ImageFont.load_default(size=16)
    cols = 3 * per_row
    n_rows = -(-len(names) // per_row)
    sheet = Image.new("L", (cols * cell, n_rows * (cell + label_h)), 40)
    draw = ImageDraw.Draw(sheet)
    for i, name in enumerate(names):
        orig = Image.open(src / name).convert("L")
        yes = Image.open(out / "yes" / name).convert("L")
        small = yes.resize((64, 64), Image.Resampling.LANCZOS)
        cells = [
            (orig.resize((cell, cell), Image.Resampling.LANCZOS), f"original {name}"),
            (yes.resize((cell, cell), Image.Resampling.LANCZOS), f"yes/{name}"),
            (small.resize((cell, cell), Image.Resampling.NEAREST), "yes/ at 64 px"),
        ]
        y = (i // per_row) * (cell + label_h)
        for j, (im, label) in enumerate(cells):
            x = ((i % per_row) * 3 + j) * cell
            sheet.paste(im, (x, y + label_h))
            draw.text((x + 4, y + 2), label, fill=235, font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path, format="PNG", optimize=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--src", type=Path, default=DEFAULT_SRC, help="the demo slices (data/demo/mni152_axial)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (data/demo/mni152_lesions)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--check", action="store_true", help="verify --out is byte-identical to a fresh run")
    parser.add_argument("--sheet", type=Path, help="also write a contact sheet PNG here")
    args = parser.parse_args(argv)

    if args.check:
        return check(args.out, args.src, args.seed)
    files, lesions = build(args.src, args.seed)
    write(args.out, files)
    for name, les in lesions:
        note = f" (shrunk from {les.drawn_radius:.1f} px to fit)" if les.shrunk else ""
        print(f"yes/{name}: lesion at row {les.row:.1f}, col {les.col:.1f}, radius {les.radius:.1f} px{note}")
    counts = {klass: sum(name.startswith(f"{klass}/") for name in files) for klass in CLASSES}
    print(f"wrote {counts['no']} no/ and {counts['yes']} yes/ slices to {args.out}")
    if args.sheet is not None:
        shown = [name for name, _ in lesions]
        picks = [shown[k] for k in np.linspace(0, len(shown) - 1, 6).round().astype(int)]
        contact_sheet(args.sheet, args.src, args.out, picks)
        print(f"wrote {args.sheet}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
