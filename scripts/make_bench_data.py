#!/usr/bin/env python3
"""Build the ``kaggle_like`` benchmark dataset: brain MRI slices that differ from the demo set
the way real uploads do.

This is a maintainer-only script, like ``scripts/make_demo_data.py``. Draw.AI itself, its tests
and its benchmarks never import it and never need nilearn or scipy; they only read the files it
writes.

Why
---
The bundled demo set (``data/demo/mni152_axial``) is 57 skull-stripped axial slices of one
volume, all 128 x 128, all with the same contrast. Real uploads (for example the Kaggle "brain
MRI images for brain tumour detection" archive: ``yes/`` and ``no/`` folders of a few hundred
JPEG/PNG files) differ from it in four ways, and this dataset has all four:

* **image size and padding**: non-square and mixed sizes (180 x 218 to 512 x 512), the head
  filling 58-94 % of the frame, off centre, sometimes slightly stretched or rotated;
* **contrast**: T1-, T2- and FLAIR-like weighting, different windowing and gamma, a smooth
  multiplicative bias field, Rician noise, some images with a noisy background;
* **skull**: a head with scalp, subcutaneous fat, skull (inner table, marrow, outer table);
* **a minority class**: ``yes/`` (about 30 %) slices carry *simulated* lesions, ``no/`` do not.

Source
------
No wheel on PyPI ships a real head *with skull* at a usable resolution (see
``data/bench/NOTICE.md`` for what was checked), so everything is derived from the same real MRI
data as the demo set: the **MNI ICBM152 2009a nonlinear symmetric templates** (T1, and the grey
and white matter probability maps) that nilearn's wheel carries, read with
``nilearn.datasets.load_mni152_template``, ``load_mni152_gm_template`` and
``load_mni152_wm_template`` (``resolution=1``). As a guard, this script disables socket
connections before it loads anything: if nilearn ever tried the network, the script would fail
instead of downloading.

Processing (all of it simulated on top of the template, and documented in NOTICE.md)
-----------------------------------------------------------------------------------
1. The T1 volume (RAS, 1 mm) is scaled with robust percentiles (0.5, 99.5) to [0, 1]. The GM and
   WM maps give the median T1 value of CSF, grey and white matter, the knots of the contrast maps.
2. **Head**: the brain mask is smoothed (Gaussian, sigma 4 mm) and thresholded into an
   intracranial envelope; the distance from it (mm) defines concentric layers of simulated tissue
   of anatomically plausible thickness: subarachnoid CSF and dura (~2 mm), inner table (~1.5 mm),
   diploic marrow (~2.5 mm), outer table (~1.5 mm), galea/muscle (~1.5 mm), subcutaneous fat
   (~4 mm) and skin (~1.5 mm). Thicknesses vary per pseudo-subject (x0.8-1.25) and smoothly in
   space (each of the CSF, skull and scalp groups by up to about +-35 %); marrow and fat get a
   smooth texture.
3. **Pseudo-subjects** (the "volumes" of ``kaggle_like_sources.csv``): each is the template head
   under its own anisotropic scaling (0.92-1.08 per axis), a small 3-D rotation (head tilt, about
   4 degrees SD per axis) and a smooth non-linear displacement field (a few mm), with its own
   weighting (T1, T2 or FLAIR, see ``CONTRASTS``) and scalp/skull thickness. ``no`` subjects are
   healthy; each ``yes`` subject has one or two lesions.
4. **Lesions** (``yes`` only; simulated, NOT real pathology): irregular blobs inside the brain
   (radius 7-22 mm, a sphere whose radius is modulated by random low-frequency 3-D sinusoids),
   placed at least radius + 4 mm deep in the brain mask, with mass effect (the surrounding tissue
   is pushed outward, sulci near it are effaced) and one of three appearances: ``ring`` (an
   enhancing rim around a necrotic core, with perilesional oedema), ``solid`` (a bright, mottled
   mass with a thin oedema) or ``dark`` (a dark, cyst-like blob on T1/FLAIR). Values depend on
   the weighting (see ``LESION_VALUES``). Their slices are taken through the lesion.
5. **Slices**: axial (most), coronal and sagittal planes through the pseudo-subject, sampled
   with trilinear interpolation directly onto the output canvas (W x H from ``SIZES``), so the
   slice plane is oblique to the template grid. Radiological display (patient's right on the
   image's left) except about one in four images, shown in neurological convention (flipped);
   a small in-plane rotation. Coronal/sagittal views run off the bottom of the frame (neck).
6. **Acquisition look**: a smooth multiplicative bias field (+-10-25 %), Rician noise generated
   on a 1.0-1.4 mm grid and interpolated to the canvas, windowing from per-image percentiles and
   a gamma of 0.7-1.45; 70 % of the images have the background zeroed below a threshold (like many
   exported images), 20 % keep the noisy background, 10 % have a grey floor.
7. 8-bit grayscale; PNG or JPEG (quality 76-92): 45 % of images, and every 512 x 512 one, are
   JPEG, which keeps the archive under about 3 MB (all PNG would be about 5 MB; the real Kaggle
   archive is all JPEG). File names mimic
   the Kaggle archive (``Y12.jpg``, ``no 92.png``, ``N17.JPG``, ``3 no.png``...), numbers
   shuffled, so they cannot be grouped by name; ``kaggle_like_sources.csv`` says which
   pseudo-subject, plane and template slice each file came from.

Everything is drawn from ``numpy.random.default_rng`` seeded with ``--seed`` (default 20240611),
so a re-run writes the same files (given the same numpy/scipy/Pillow/libjpeg).

Output
------
``data/bench/kaggle_like.zip`` -- ``kaggle_like/no/*`` and ``kaggle_like/yes/*`` image files.
``data/bench/kaggle_like_sources.csv`` -- one row per file: file, volume, slice, plane, class, ...
``data/bench/NOTICE.md`` -- the template's copyright notice and how the images were made.

Usage (from the repository root, in a throwaway virtual environment outside the repository)::

    python3 -m venv /tmp/benchdata-venv
    /tmp/benchdata-venv/bin/pip install nilearn nibabel pillow numpy scipy
    /tmp/benchdata-venv/bin/python scripts/make_bench_data.py [--sheet /tmp/kaggle_like_sheet.png]

``--sheet PATH`` also writes a contact sheet of 24 images of each class, to look at. About a
minute on one CPU core.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import socket
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import make_demo_data  # scripts/ is on sys.path when this script runs: the MNI notice is written once
import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "data" / "bench"
ARCHIVE_DIR = "kaggle_like"
DEFAULT_SEED = 20240611
PAD = 16  # voxels of zeros around the template, so the scalp's distance map is right at the edges

# Canvas sizes (width, height) and how often each is drawn: mostly 180-300 px, a few 512 px.
SIZES = [
    ((180, 218), 5),
    ((240, 240), 5),
    ((256, 200), 3),
    ((225, 225), 4),
    ((201, 251), 3),
    ((236, 236), 3),
    ((256, 256), 3),
    ((173, 201), 2),
    ((300, 240), 2),
    ((194, 259), 2),
    ((200, 200), 3),
    ((512, 512), 1),
]

# Pseudo-subjects: (class, weighting, number of slices). 8 healthy + 14 with lesions.
NO_SUBJECTS = [("T1", 19), ("T2", 19), ("FLAIR", 18), ("T1", 18), ("T2", 19), ("T1", 18), ("FLAIR", 19), ("T1", 18)]
YES_SUBJECTS = [
    ("T1", 5), ("T2", 5), ("FLAIR", 5), ("T1", 5), ("T1", 5), ("T2", 5), ("T1", 5),
    ("FLAIR", 5), ("T2", 5), ("T1", 5), ("T1", 5), ("T2", 5), ("FLAIR", 5), ("T1", 6),
]  # fmt: skip

# Brain intensity maps: output value at the T1 knots [0 (outside mask), CSF, GM, WM, 1].
CONTRASTS = {
    "T1": [0.10, 0.13, 0.46, 0.72, 0.80],
    "T2": [0.86, 0.90, 0.52, 0.33, 0.30],
    "FLAIR": [0.07, 0.08, 0.56, 0.40, 0.38],
}
# Head layers outside the intracranial envelope: (name, base thickness mm, value per weighting).
LAYERS = [
    ("csf_dura", 2.0, {"T1": 0.10, "T2": 0.85, "FLAIR": 0.07}),
    ("inner_table", 1.5, {"T1": 0.03, "T2": 0.03, "FLAIR": 0.03}),
    ("diploe", 2.5, {"T1": 0.55, "T2": 0.45, "FLAIR": 0.42}),
    ("outer_table", 1.5, {"T1": 0.03, "T2": 0.03, "FLAIR": 0.03}),
    ("galea_muscle", 1.5, {"T1": 0.30, "T2": 0.22, "FLAIR": 0.25}),
    ("fat", 4.0, {"T1": 0.92, "T2": 0.78, "FLAIR": 0.70}),
    ("skin", 1.5, {"T1": 0.45, "T2": 0.42, "FLAIR": 0.38}),
]
LAYER_LABELS = {
    "csf_dura": "subarachnoid CSF and dura",
    "inner_table": "inner table",
    "diploe": "diploic marrow",
    "outer_table": "outer table",
    "galea_muscle": "galea and muscle",
    "fat": "subcutaneous fat",
    "skin": "skin",
}
SKULL_LAYERS = {"inner_table", "diploe", "outer_table"}
TEXTURED_LAYERS = {"diploe": 0.15, "fat": 0.06}
# Lesion appearance per weighting: core, rim, oedema target (None: no oedema).
LESION_VALUES: dict[str, dict[str, tuple[float, float, float | None]]] = {
    "ring": {"T1": (0.12, 0.97, 0.30), "T2": (0.88, 0.55, 0.78), "FLAIR": (0.45, 0.78, 0.86)},
    "solid": {"T1": (0.88, 0.92, 0.36), "T2": (0.70, 0.66, 0.72), "FLAIR": (0.84, 0.80, 0.80)},
    "dark": {"T1": (0.07, 0.20, None), "T2": (0.10, 0.30, None), "FLAIR": (0.06, 0.22, None)},
}
JPEG_SHARE = 0.45  # the rest PNG (an all-PNG set would be about 5 MB); Kaggle's archive is all JPEG
NOISE_SIGMA = (0.004, 0.017)  # Rician noise sigma, on the scale where T1 white matter is 0.72
NOISE_GRID_MM = (1.0, 1.4)  # the noise is drawn on this grid and interpolated (acquisition resolution)
JPEG_QUALITY = (76, 93)  # drawn from [lo, hi)
GREY_FLOOR, NOISY_BACKGROUND = 0.1, 0.2  # shares of images; the rest have a zeroed background
LESION_KINDS = [("ring", 0.45), ("solid", 0.35), ("dark", 0.20)]

NAME_PATTERNS = {
    "no": ["no {n}", "N{n}", "{n} no", "No{n}", "no{n}"],
    "yes": ["Y{n}", "Y{n}", "y{n}", "Yes{n}", "Y {n}"],
}

MNI_NOTICE = make_demo_data.MNI_NOTICE  # the template's notice, as scripts/make_demo_data.py writes it


def block_network() -> None:
    """Make any attempt to open a network connection fail loudly."""

    def _refuse(*_args, **_kwargs):
        raise RuntimeError("make_bench_data.py must not use the network")

    socket.socket.connect = _refuse  # type: ignore[method-assign]
    socket.socket.connect_ex = _refuse  # type: ignore[method-assign]
    socket.create_connection = _refuse
    socket.getaddrinfo = _refuse


# ----------------------------------------------------------------------------------- the head


@dataclass
class Head:
    t1: np.ndarray  # padded, scaled T1 in [0, 1]
    dist: np.ndarray  # mm from the intracranial envelope (0 inside)
    depth: np.ndarray  # mm from the outside of the brain mask (0 outside)
    knots: list[float]  # T1 value of [outside, CSF, GM, WM, max]
    centre: np.ndarray  # brain centroid, padded voxel coordinates
    affine: np.ndarray  # template voxel -> MNI mm (unpadded indices)
    source_file: str


def load_head() -> Head:
    import nibabel as nib
    from nilearn import datasets
    from nilearn.datasets import struct
    from scipy import ndimage

    imgs = [
        nib.as_closest_canonical(load(resolution=1))
        for load in (
            datasets.load_mni152_template,
            datasets.load_mni152_gm_template,
            datasets.load_mni152_wm_template,
        )
    ]
    for img in imgs:
        if nib.aff2axcodes(img.affine) != ("R", "A", "S") or img.shape != (197, 233, 189):
            raise RuntimeError(f"unexpected template geometry {img.shape} {nib.aff2axcodes(img.affine)}")
        if not np.allclose(img.affine, imgs[0].affine):
            raise RuntimeError("templates are not on the same grid")
    t1, gm, wm = (np.asarray(img.get_fdata(), dtype=np.float32) for img in imgs)
    brain = t1 > 0.05 * t1.max()
    lo, hi = np.percentile(t1, [0.5, 99.5])
    t1 = np.clip((t1 - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)
    csf = float(np.median(t1[brain & (gm < 0.1) & (wm < 0.1)]))
    gmv = float(np.median(t1[gm > 0.8]))
    wmv = float(np.median(t1[wm > 0.9]))
    if not 0.0 < csf < gmv < wmv <= 1.0:
        raise RuntimeError(f"unexpected tissue intensities csf={csf} gm={gmv} wm={wmv}")

    t1 = np.pad(t1, PAD)
    brain = np.pad(brain, PAD)
    envelope = ndimage.gaussian_filter(brain.astype(np.float32), sigma=4.0) > 0.3
    envelope = ndimage.binary_fill_holes(envelope | brain)
    dist = ndimage.distance_transform_edt(~envelope).astype(np.float32)
    depth = ndimage.distance_transform_edt(ndimage.binary_fill_holes(brain)).astype(np.float32)
    centre = np.argwhere(brain).mean(axis=0)
    return Head(
        t1=t1,
        dist=dist,
        depth=depth,
        knots=[0.0, csf, gmv, wmv, 1.0],
        centre=centre,
        affine=imgs[0].affine,
        source_file=Path(struct.MNI152_FILE_PATH).name,
    )


def sample(vol: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Trilinear samples of ``vol`` at padded voxel coordinates ``pts`` ([3, ...])."""
    from scipy import ndimage

    shape = pts.shape[1:]
    flat = pts.reshape(3, -1)
    out = ndimage.map_coordinates(vol, flat, order=1, mode="constant", cval=0.0)
    return out.reshape(shape)


def sample_dist(head: Head, pts: np.ndarray) -> np.ndarray:
    """Distance from the envelope; far outside the padded box it keeps growing (air)."""
    from scipy import ndimage

    shape = pts.shape[1:]
    flat = pts.reshape(3, -1)
    out = ndimage.map_coordinates(head.dist, flat, order=1, mode="nearest")
    return out.reshape(shape)


# ------------------------------------------------------------------------ random smooth fields


@dataclass
class Waves:
    """A smooth random field in 3-D: a sum of a few sinusoids."""

    k: np.ndarray  # [n, 3] wave vectors (radians per mm)
    phase: np.ndarray  # [n]
    amp: np.ndarray  # [n] or [n, 3] for a vector field

    @classmethod
    def draw(cls, rng, n, wavelength, amp, vector=False):
        d = rng.normal(size=(n, 3))
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        lam = rng.uniform(*wavelength, size=n)
        k = d * (2 * np.pi / lam)[:, None]
        a = rng.uniform(-amp, amp, size=(n, 3) if vector else n)
        return cls(k=k, phase=rng.uniform(0, 2 * np.pi, size=n), amp=a)

    def __call__(self, pts: np.ndarray) -> np.ndarray:
        """pts [3, ...] in mm -> scalar field [...] or vector field [3, ...]."""
        arg = np.tensordot(self.k, pts, axes=(1, 0)) + self.phase.reshape((-1,) + (1,) * (pts.ndim - 1))
        s = np.sin(arg)
        if self.amp.ndim == 2:
            return np.tensordot(self.amp.T, s, axes=(1, 0))
        return np.tensordot(self.amp, s, axes=(0, 0))


def smooth_noise_2d(rng, shape, scale_px: float) -> np.ndarray:
    """Zero-mean, unit-std smooth 2-D noise with features about ``scale_px`` pixels wide."""
    from scipy import ndimage

    n = ndimage.gaussian_filter(rng.normal(size=shape), sigma=max(scale_px, 0.5), mode="wrap")
    return (n - n.mean()) / (n.std() + 1e-9)


# --------------------------------------------------------------------------------- subjects


@dataclass
class Lesion:
    kind: str
    centre: np.ndarray  # padded voxel coordinates (template space)
    radius: float
    shape: Waves  # radial modulation
    rim: Waves  # modulation of the rim's inner edge
    mass: float


@dataclass
class Subject:
    ident: str
    klass: str
    contrast: str
    n_slices: int
    scale: np.ndarray
    rot: np.ndarray  # 3x3, subject -> template
    warp: Waves
    skull: float
    scalp: float
    thickness_mod: dict[str, Waves]  # per layer group: csf, skull, scalp
    lesions: list[Lesion] = field(default_factory=list)

    def to_template(self, head: Head, y: np.ndarray) -> np.ndarray:
        """Subject-space points (mm, [3, ...], centred on the brain) -> padded template voxels."""
        rel = y / self.scale.reshape((3,) + (1,) * (y.ndim - 1))
        x = np.tensordot(self.rot, rel, axes=(1, 0)) + self.warp(y)
        return x + head.centre.reshape((3,) + (1,) * (y.ndim - 1))

    def to_subject(self, head: Head, x: np.ndarray) -> np.ndarray:
        """Approximate inverse of ``to_template`` (ignores the small warp), for one point."""
        return self.scale * (self.rot.T @ (x - head.centre))


def rotation(rng, sd_deg: float) -> np.ndarray:
    ax, ay, az = np.deg2rad(rng.normal(0, sd_deg, size=3))
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def make_subjects(head: Head, rng) -> list[Subject]:
    subjects = []
    plan = [("no", c, n) for c, n in NO_SUBJECTS] + [("yes", c, n) for c, n in YES_SUBJECTS]
    counters = {"no": 0, "yes": 0}
    # Lesion centres: deep enough in the brain, in the cerebrum (MNI z >= -20 mm).
    z_min = PAD + round(-20 - head.affine[2, 3])
    for klass, contrast, n in plan:
        counters[klass] += 1
        s = Subject(
            ident=f"sim-{klass}-{counters[klass]:02d}",
            klass=klass,
            contrast=contrast,
            n_slices=n,
            scale=rng.uniform(0.92, 1.08, size=3),
            rot=rotation(rng, 4.0),
            warp=Waves.draw(rng, 4, (70.0, 160.0), 1.5, vector=True),
            skull=float(rng.uniform(0.8, 1.25)),
            scalp=float(rng.uniform(0.8, 1.25)),
            thickness_mod={
                "csf": Waves.draw(rng, 3, (50.0, 120.0), 0.12),
                "skull": Waves.draw(rng, 3, (50.0, 120.0), 0.12),
                "scalp": Waves.draw(rng, 4, (40.0, 120.0), 0.13),
            },
        )
        if klass == "yes":
            n_les = 2 if rng.random() < 0.2 else 1
            for _ in range(n_les):
                kind = LESION_KINDS[rng.choice(len(LESION_KINDS), p=[p for _, p in LESION_KINDS])][0]
                radius = float(rng.uniform(7.0, 22.0) if n_les == 1 else rng.uniform(6.0, 13.0))
                cand = np.argwhere((head.depth >= radius + 4.0)[:, :, z_min:]) + np.array([0, 0, z_min])
                centre = cand[rng.integers(len(cand))].astype(np.float64) + rng.uniform(-0.5, 0.5, size=3)
                s.lesions.append(
                    Lesion(
                        kind=kind,
                        centre=centre,
                        radius=radius,
                        shape=Waves.draw(rng, 6, (2 * np.pi * radius / 4.5, 2 * np.pi * radius / 1.2), 0.14),
                        rim=Waves.draw(rng, 4, (2 * np.pi * radius / 4.0, 2 * np.pi * radius / 1.5), 0.12),
                        mass=float(rng.uniform(0.15, 0.4)),
                    )
                )
        subjects.append(s)
    return subjects


# --------------------------------------------------------------------------------- rendering

PLANES = {
    # normal, image-right axis u, image-down axis v (template RAS, radiological display)
    "axial": (np.array([0.0, 0, 1]), np.array([-1.0, 0, 0]), np.array([0.0, -1, 0])),
    "coronal": (np.array([0.0, 1, 0]), np.array([-1.0, 0, 0]), np.array([0.0, 0, -1])),
    "sagittal": (np.array([1.0, 0, 0]), np.array([0.0, -1, 0]), np.array([0.0, 0, -1])),
}


@dataclass
class View:
    plane: str
    offset: float  # mm along the normal from the brain centre (subject space)
    flip: bool
    angle: float  # in-plane rotation, degrees
    size: tuple[int, int]  # (W, H)
    fill: float  # fraction of the frame the head fills
    stretch: float  # pixel aspect (v spacing / u spacing)
    shift: tuple[float, float]  # where in the free margin the head sits, each in [0, 1]


def axes_of(view: View) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n, u, v = PLANES[view.plane]
    if view.flip:
        u = -u
    a = np.deg2rad(view.angle)
    u2 = math.cos(a) * u + math.sin(a) * v
    v2 = -math.sin(a) * u + math.cos(a) * v
    return n, u2, v2


def layer_group(name: str) -> str:
    return "csf" if name == "csf_dura" else ("skull" if name in SKULL_LAYERS else "scalp")


def layer_bounds(subject: Subject, x: np.ndarray) -> list[np.ndarray]:
    """Per pixel, the outer boundary (mm from the envelope) of each layer of ``LAYERS``."""
    factor = {"csf": 1.0, "skull": subject.skull, "scalp": subject.scalp}
    mods = {g: np.clip(1.0 + w(x), 0.4, 1.8) * factor[g] for g, w in subject.thickness_mod.items()}
    bounds: list[np.ndarray] = []
    d = np.zeros(x.shape[1:])
    for name, thick, _ in LAYERS:
        d = d + thick * mods[layer_group(name)]
        bounds.append(d)
    return bounds


def plane_points(subject, head, view, origin, su, sv, w, h):
    """Subject-space points of a w x h grid centred at ``origin`` with spacings su, sv (mm)."""
    _, u, v = axes_of(view)
    cols = (np.arange(w) - (w - 1) / 2.0) * su
    rows = (np.arange(h) - (h - 1) / 2.0) * sv
    return origin[:, None, None] + u[:, None, None] * cols[None, None, :] + v[:, None, None] * rows[None, :, None]


def head_box(subject: Subject, head: Head, view: View, offset: float) -> tuple[float, float, float, float]:
    """The head's extent in the plane at ``offset`` (mm along u: c0, c1; along v: r0, r1)."""
    n = axes_of(view)[0]
    step, half = 2.0, 160.0
    y = plane_points(subject, head, view, n * offset, step, step, int(2 * half / step), int(2 * half / step))
    x = subject.to_template(head, y)
    inside = sample_dist(head, x) < layer_bounds(subject, x)[-1]
    if view.plane != "axial":
        inside &= x[2] >= PAD + 12  # the neck: the frame's bottom cuts through it
    rr, cc = np.nonzero(inside)
    if rr.size == 0:
        raise RuntimeError("empty slice")
    mid_r, mid_c = (inside.shape[0] - 1) / 2.0, (inside.shape[1] - 1) / 2.0
    return (cc.min() - mid_c) * step, (cc.max() - mid_c) * step, (rr.min() - mid_r) * step, (rr.max() - mid_r) * step


def frame(subject: Subject, head: Head, view: View, ref_offset: float) -> tuple[np.ndarray, float, float]:
    """Canvas centre and pixel spacings: the field of view is set so the head's section at
    ``ref_offset`` (its largest, as a scanner's FOV is set once per series) fills ``view.fill`` of
    the frame; the slice's own section is placed at ``view.shift`` within the free margin."""
    n, u, v = axes_of(view)
    W, H = view.size
    a0, a1, b0, b1 = head_box(subject, head, view, ref_offset)
    c0, c1, r0, r1 = head_box(subject, head, view, view.offset)
    width, height = max(a1 - a0, c1 - c0) + 2.0, max(b1 - b0, r1 - r0) + 2.0
    su = max(width / (view.fill * W), height / (view.fill * H) / view.stretch)
    sv = su * view.stretch
    free_u = max(W * su - (c1 - c0), 0.0)
    free_v = max(H * sv - (r1 - r0), 0.0)
    cu = c0 - free_u * view.shift[0] + W * su / 2.0
    # Coronal and sagittal: the bottom of the head's box at the bottom edge (the neck runs off the frame).
    cv = r0 - free_v * view.shift[1] + H * sv / 2.0 if view.plane == "axial" else r1 - H * sv / 2.0 + 1.0
    return n * view.offset + cu * u + cv * v, su, sv


def lesion_field(les: Lesion, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(normalised radius f: <1 inside; the rim's inner edge in units of f; template points
    displaced by the mass effect)."""
    rel = x - les.centre.reshape(3, 1, 1)
    r = np.sqrt((rel**2).sum(axis=0)) + 1e-6
    f = r / (les.radius * np.clip(1.0 + les.shape(rel), 0.45, 1.8))
    push = 1.0 - les.mass * np.exp(-((r / (1.8 * les.radius)) ** 2))
    return f, les.rim(rel), les.centre.reshape(3, 1, 1) + rel * push


def smoothstep(e0, e1, x):
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def render(subject: Subject, head: Head, view: View, rng) -> tuple[np.ndarray, np.ndarray, float]:
    """One image (uint8 [H, W]), the template point of its plane nearest the brain centre, and the
    plane's tilt from the template's axis (degrees)."""
    W, H = view.size
    ref = 0.0 if view.plane != "axial" else (10.0 + 72.0 + PAD - head.centre[2]) * subject.scale[2]
    origin, su, sv = frame(subject, head, view, ref)
    y = plane_points(subject, head, view, origin, su, sv, W, H)
    x = subject.to_template(head, y)
    n, _, _ = axes_of(view)
    # The point of the plane nearest the brain centre, and the plane's normal, in the template.
    centre_pt = subject.to_template(head, (n * view.offset).reshape(3, 1, 1)).reshape(3)
    n_tpl = subject.rot @ (n / subject.scale)
    cos_tilt = abs(float(n_tpl @ PLANES[view.plane][0])) / float(np.linalg.norm(n_tpl))
    tilt = math.degrees(math.acos(min(1.0, cos_tilt)))

    # Tissue inside the envelope (with each lesion's mass effect), layers outside it.
    xt = x
    fields = []
    for les in subject.lesions:
        f, rim, xt = lesion_field(les, xt)
        fields.append((f, rim))
    t1 = sample(head.t1, xt)
    brain = np.interp(t1, head.knots, CONTRASTS[subject.contrast])
    d = sample_dist(head, x)
    bounds = layer_bounds(subject, x)
    shell = np.zeros_like(d)
    inner, ramp = np.zeros_like(d), 0.35
    for (name, _, vals), outer in zip(LAYERS, bounds, strict=True):
        weight = smoothstep(inner - ramp, inner + ramp, d) - smoothstep(outer - ramp, outer + ramp, d)
        value: float | np.ndarray = vals[subject.contrast]
        if name in TEXTURED_LAYERS:
            value = value * (1.0 + TEXTURED_LAYERS[name] * smooth_noise_2d(rng, (H, W), 2.5 / su))
        shell = shell + weight * value
        inner = outer
    w_in = 1.0 - smoothstep(0.0, 0.8, d)
    img = w_in * brain + (1.0 - w_in) * shell

    tissue = smoothstep(head.knots[1] + 0.15 * (head.knots[2] - head.knots[1]), head.knots[2], t1) * w_in
    for les, (f, rim) in zip(subject.lesions, fields, strict=True):
        core_v, rim_v, edema_v = LESION_VALUES[les.kind][subject.contrast]
        tex = 1.0 + 0.07 * smooth_noise_2d(rng, (H, W), 1.2 / su)
        if les.kind == "solid":
            tex = tex + 0.06 * smooth_noise_2d(rng, (H, W), 3.0 / su)
        if edema_v is not None:
            e = (1.0 - smoothstep(1.0, 1.7 if les.kind == "ring" else 1.3, f)) * tissue
            img = img * (1 - 0.85 * e) + 0.85 * e * edema_v
        inner = (0.55 if les.kind == "ring" else (0.85 if les.kind == "dark" else 0.9)) + rim
        les_v = core_v + (rim_v - core_v) * smoothstep(inner - 0.08, inner + 0.04, f)
        m = 1.0 - smoothstep(0.94, 1.04, f)
        img = img * (1 - m) + m * les_v * tex

    # Acquisition: bias field, Rician noise at the acquisition resolution, windowing, gamma.
    uu, vv = np.meshgrid(np.linspace(-1, 1, W), np.linspace(-1, 1, H))
    coef = rng.normal(0, 1, size=5)
    bias = coef[0] * uu + coef[1] * vv + 0.5 * (coef[2] * uu * uu + coef[3] * vv * vv + coef[4] * uu * vv)
    bias = np.exp(rng.uniform(0.10, 0.25) * bias / (np.abs(bias).max() + 1e-9))
    img = img * bias
    acq = rng.uniform(*NOISE_GRID_MM)
    sigma = rng.uniform(*NOISE_SIGMA)
    noisy = np.hypot(img + sigma * acq_noise(rng, W, H, su, sv, acq), sigma * acq_noise(rng, W, H, su, sv, acq))
    head_px = noisy[d < bounds[-1]]
    lo = np.percentile(head_px, rng.uniform(0.0, 3.0)) * rng.uniform(0.0, 1.0)
    hi = np.percentile(head_px, rng.uniform(98.5, 99.95)) * rng.uniform(0.95, 1.1)
    style = rng.random()
    if style < GREY_FLOOR:  # a grey floor: the window starts below zero
        lo = -rng.uniform(0.03, 0.08) * hi
    out = np.clip((noisy - lo) / (hi - lo), 0.0, 1.0) ** rng.uniform(0.7, 1.45)
    if style >= GREY_FLOOR + NOISY_BACKGROUND:  # background zeroed, as many exported images are
        out = np.where(out < rng.uniform(0.04, 0.09), 0.0, out)
    return np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8), centre_pt, tilt


def acq_noise(rng, W, H, su, sv, acq) -> np.ndarray:
    """Unit-std white noise drawn on an ``acq``-mm grid and interpolated onto the W x H canvas."""
    from PIL import Image

    w = max(8, round(W * su / acq))
    h = max(8, round(H * sv / acq))
    n = rng.normal(size=(h, w)).astype(np.float32)
    big = np.asarray(Image.fromarray(n, mode="F").resize((W, H), resample=Image.Resampling.BILINEAR))
    return big / (big.std() + 1e-9)


# --------------------------------------------------------------------------------- the plan


@dataclass
class Item:
    subject: Subject
    view: View
    fmt: str  # "png" or "jpeg"
    quality: int
    name: str = ""


def draw_size(rng) -> tuple[int, int]:
    weights = np.array([w for _, w in SIZES], dtype=np.float64)
    return SIZES[rng.choice(len(SIZES), p=weights / weights.sum())][0]


def draw_view(rng, plane: str, offset: float) -> View:
    return View(
        plane=plane,
        offset=offset,
        flip=bool(rng.random() < 0.25),
        angle=float(rng.normal(0, 4.0)),
        size=draw_size(rng),
        fill=float(rng.uniform(0.58, 0.94)),
        stretch=float(rng.uniform(0.88, 1.12)) if rng.random() < 0.2 else 1.0,
        shift=(float(rng.uniform(0.15, 0.85)), float(rng.uniform(0.15, 0.85))),
    )


def plan_items(subjects: list[Subject], head: Head, rng) -> list[Item]:
    # MNI z of the brain centroid, to place axial slices between MNI z -30 and +66 mm.
    cz_mni = head.centre[2] - PAD + head.affine[2, 3]
    items = []
    for s in subjects:
        views = []
        if s.klass == "no":
            n_ax = s.n_slices - 4
            zs = np.sort(rng.uniform(-30.0, 66.0, size=n_ax)) - cz_mni
            views += [draw_view(rng, "axial", float(z) * s.scale[2]) for z in zs]
            views += [draw_view(rng, "coronal", float(rng.uniform(-55, 45))) for _ in range(3)]
            views += [draw_view(rng, "sagittal", float(rng.uniform(-45, 45)))]
        else:
            les = max(s.lesions, key=lambda les_: les_.radius)
            ys = s.to_subject(head, les.centre)
            planes = ["axial"] * (s.n_slices - 1) + [("coronal", "sagittal")[int(rng.random() < 0.3)]]
            for plane in planes:
                normal = PLANES[plane][0]
                along = float(normal @ ys) + float(rng.uniform(-0.6, 0.6)) * les.radius
                views.append(draw_view(rng, plane, along))
        for view in views:
            jpeg = bool(rng.random() < JPEG_SHARE) or max(view.size) >= 500  # big ones: JPEG, as on the web
            items.append(Item(s, view, "jpeg" if jpeg else "png", int(rng.integers(*JPEG_QUALITY))))
    # Kaggle-like names: shuffled numbers, a few naming habits per class.
    for klass in ("no", "yes"):
        mine = [it for it in items if it.subject.klass == klass]
        numbers = rng.permutation(np.arange(1, 2 * len(mine) + 40))[: len(mine)]
        used = set()
        for it, num in zip(mine, numbers, strict=True):
            pat = NAME_PATTERNS[klass][rng.integers(len(NAME_PATTERNS[klass]))]
            if it.fmt == "jpeg":
                ext = [".jpg", ".jpg", ".JPG", ".jpeg"][rng.integers(4)]
            else:
                ext = ".png" if rng.random() < 0.9 else ".PNG"
            name = pat.format(n=int(num)) + ext
            while name.lower() in used:
                name = pat.format(n=int(num)) + f"({int(rng.integers(1, 9))})" + ext
            used.add(name.lower())
            it.name = name
    return items


def encode(img: np.ndarray, item: Item) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    pil = Image.fromarray(img, mode="L")
    if item.fmt == "jpeg":
        pil.save(buf, format="JPEG", quality=item.quality, optimize=True)
    else:
        pil.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def write_zip(path: Path, files: list[tuple[str, bytes]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".zip.tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for name, data in sorted(files):
            info = zipfile.ZipInfo(name, date_time=(2024, 6, 11, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, data)
    tmp.replace(path)


def contact_sheet(path: Path, rows: list[tuple[str, np.ndarray]], per_class: int = 24) -> None:
    from PIL import Image, ImageDraw

    cell, cols = 150, 8
    picked = {}
    for klass in ("no", "yes"):
        mine = [r for r in rows if r[0].split("/")[1] == klass]
        idx = np.linspace(0, len(mine) - 1, min(per_class, len(mine))).round().astype(int)
        picked[klass] = [mine[i] for i in idx]
    n_rows = sum(math.ceil(len(v) / cols) for v in picked.values())
    sheet = Image.new("L", (cols * cell, n_rows * cell + 2 * 16), 60)
    draw = ImageDraw.Draw(sheet)
    y0 = 0
    for klass, mine in picked.items():
        draw.text((4, y0 + 2), f"{klass}/ ({len(mine)} shown)", fill=255)
        y0 += 16
        for i, (name, img) in enumerate(mine):
            pil = Image.fromarray(img, mode="L")
            pil.thumbnail((cell - 6, cell - 18))
            x, y = (i % cols) * cell, y0 + (i // cols) * cell
            sheet.paste(pil, (x + 3, y + 3))
            label = f"{name.split('/')[-1]} {img.shape[1]}x{img.shape[0]}"
            draw.text((x + 3, y + cell - 14), label[:24], fill=230)
        y0 += math.ceil(len(mine) / cols) * cell
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)


# --------------------------------------------------------------------------------- NOTICE


def write_notice(path: Path, head: Head, rows: list[dict], zip_path: Path, seed: int) -> None:
    n = {k: sum(r["class"] == k for r in rows) for k in ("no", "yes")}
    total = len(rows)
    sizes = sorted({(r["width"], r["height"]) for r in rows})
    fmts = {k: sum(r["format"] == k for r in rows) for k in ("png", "jpeg")}
    planes = {k: sum(r["plane"] == k for r in rows) for k in PLANES}
    contrasts = {k: sum(r["contrast"] == k for r in rows) for k in CONTRASTS}
    subjects = sorted({r["volume"] for r in rows})
    lesion_lines = []
    seen = set()
    for r in rows:
        if r["class"] == "yes" and r["volume"] not in seen:
            seen.add(r["volume"])
            lesion_lines.append(f"| {r['volume']} | {r['contrast']} | {r['lesions']} |")
    layer_text = ", ".join(f"{LAYER_LABELS[name]} {thick:g} mm" for name, thick, _ in LAYERS)
    lesion_table = "\n".join("   " + line for line in sorted(lesion_lines))
    size_text = ", ".join(f"{w}x{h}" for w, h in sizes)

    def counts(d: dict[str, int]) -> str:
        return ", ".join(f"{k} {v}" for k, v in d.items())

    text = f"""# Benchmark data: `kaggle_like` (simulated variations of real brain MRI)

`kaggle_like.zip` holds {total} 8-bit grayscale brain MRI slices in two class folders,
`kaggle_like/no/` ({n["no"]} images, {n["no"] / total:.0%}) and `kaggle_like/yes/`
({n["yes"]} images, {n["yes"] / total:.0%}), laid out like the Kaggle "brain MRI images for
brain tumour detection" download. It exists to test GAN recipes and the ingest path on data that
differs from the demo set (`data/demo/`) the way real uploads do: mixed, non-square image sizes
and padding, different contrasts, a head with scalp and skull, and a minority class.

**Everything here is derived from one real MRI template, and most of what makes it look like a
real upload is simulated.** The brain anatomy is the MNI ICBM152 2009a template (an average of
many healthy adults, not patient data, not any one person). The scalp and skull, the T2- and
FLAIR-like contrasts, the subject-to-subject shape differences, the bias field, the noise and
**all lesions in `yes/` are simulated** by `scripts/make_bench_data.py`. The lesions are
irregular synthetic blobs, not real tumours: do not use this set for anything medical.

## Copyright notice of the source template

{MNI_NOTICE}

Source: ICBM 2009a Nonlinear Symmetric template, McConnell Brain Imaging
Centre, Montreal Neurological Institute, McGill University
(https://nist.mni.mcgill.ca/icbm-152-nonlinear-atlases-2009/).
The files used are the 1 mm templates that the nilearn wheel carries:
`{head.source_file}` (T1), `mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz` and
`mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz` (grey/white matter probability maps, used
only to measure the T1 value of CSF, grey and white matter). The nilearn wheel does not include
the template archive's `COPYING` file; the notice above is the MNI/McGill notice published with
the ICBM152 nonlinear 2009 templates (some copies give the years as 1993-2004).

{make_demo_data.MNI_REFERENCES}

## Why not a real head with skull

No package on PyPI that installs offline ships one at a usable resolution. Checked: nilearn's
wheel (the skull-stripped MNI152 T1, GM and WM templates at 1 mm, a 3 mm statistical map, an
fsaverage5 surface); nibabel's test data (`anatomical.nii`, 33 x 41 x 25 voxels of 2 mm,
skull-stripped; small EPI/fMRI volumes and phantoms; `philips_mprage.dcm.gz` has its pixels
zeroed; two 256 x 256 DTI mosaics of 64 x 64 EPI tiles); pydicom's test files (`MR_small.dcm`,
64 x 64; 16 x 16 DICOMDIR stand-ins; CT); dipy's bundled files (one skull-stripped 256 x 256
coronal T1 slice, low-resolution diffusion b0 volumes); scikit-image's bundled images (its
`brain` image is fetched on demand, not in the wheel). Packages that fetch data at run time
(nilearn's fetchers, templateflow, ANTsPy's `get_data`, brainweb, TorchIO) are not allowed here.

## How the images were made

Made offline (no download; sockets are disabled while the script runs) by
`scripts/make_bench_data.py` with seed {seed}, run from the repository root in a throwaway
virtual environment:

```
python3 -m venv /tmp/benchdata-venv
/tmp/benchdata-venv/bin/pip install nilearn nibabel pillow numpy scipy
/tmp/benchdata-venv/bin/python scripts/make_bench_data.py
```

1. Template: T1 reoriented to RAS, scaled from its 0.5 and 99.5 percentiles to [0, 1].
2. Simulated head: the brain mask (T1 above 5 % of its maximum) is smoothed (sigma 4 mm) and
   thresholded into an intracranial envelope; outside it, by distance from it, concentric layers:
   {layer_text} (base thicknesses).
   Skull and scalp thicknesses vary per
   pseudo-subject (x0.8-1.25), and the CSF, skull and scalp groups each vary smoothly over the
   head (up to about +-35 %); marrow and fat are given a smooth texture. There are no eyes, sinuses, face
   or neck structures: coronal and sagittal views are framed so the bottom edge cuts the "neck".
3. Pseudo-subjects ({len(subjects)}: `sim-no-01`...`sim-no-{len(NO_SUBJECTS):02d}` healthy,
   `sim-yes-01`...`sim-yes-{len(YES_SUBJECTS):02d}` with lesions): the template head under its
   own anisotropic scaling (0.92-1.08 per axis), 3-D rotation (4 degrees SD per axis) and smooth
   displacement field (a few mm), with one simulated weighting: T1 (the template's contrast),
   T2-like (CSF bright, white matter darker than grey) or FLAIR-like (CSF dark, grey brighter than
   white), made by a piecewise-linear map of the T1 value with knots at the measured CSF, GM and
   WM values. These are not real T2 or FLAIR images.
4. Simulated lesions (`yes` only): irregular blobs of radius 6-22 mm inside the brain (at least
   radius + 4 mm deep, MNI z >= -20 mm), with mass effect (surrounding tissue pushed outward) and
   one of three appearances: `ring` (bright rim, dark or bright necrotic core depending on the
   weighting, perilesional oedema), `solid` (a mottled mass, thin oedema), `dark` (a dark,
   cyst-like or haemorrhage-like blob). `yes` slices are taken through the largest lesion.

   | pseudo-subject | weighting | lesions (kind, radius mm, centre in MNI mm) |
   | --- | --- | --- |
{lesion_table}

5. Slices: {counts(planes)} (tilted by the subject's rotation, so oblique to the
   template grid), sampled trilinearly straight onto the output canvas; `no` axial slices between MNI z -30 and
   +66 mm at random positions. Radiological display, about one image in four flipped
   (neurological), in-plane rotation of 4 degrees SD, about one in five stretched by up to 12 %.
   The head fills 58-94 % of the frame, off centre.
6. Acquisition look: multiplicative bias field (+-10-25 %), Rician noise (sigma
   {NOISE_SIGMA[0]:g}-{NOISE_SIGMA[1]:g} on the scale where T1 white matter is 0.72, drawn on a
   {NOISE_GRID_MM[0]:g}-{NOISE_GRID_MM[1]:g} mm grid and interpolated), windowing from per-image
   percentiles, gamma 0.7-1.45; the background below a small threshold is set to black in about
   {1 - GREY_FLOOR - NOISY_BACKGROUND:.0%} of the images, stays noisy in {NOISY_BACKGROUND:.0%}, and
   sits on a grey floor in {GREY_FLOOR:.0%}.
7. Files: sizes (W x H) {size_text};
   {fmts["png"]} PNG and {fmts["jpeg"]} JPEG (quality {JPEG_QUALITY[0]}-{JPEG_QUALITY[1] - 1}; every 512 x 512 image
   is JPEG).
   Weightings: {counts(contrasts)}. Names mimic the Kaggle archive
   (`Y12.jpg`, `no 92.png`, `N17.JPG`, `3 no.png`) with shuffled numbers: they do not reveal the
   pseudo-subject, so a split by name groups each file alone.

## Which slice each file came from

`kaggle_like_sources.csv` has one row per file: `file` (its path in the zip), `volume` (the
pseudo-subject), `slice` (the index, in the 197 x 233 x 189 RAS template grid, along the plane's
main axis, of the point of the plane nearest the brain centre; for axial slices MNI z =
slice - 72), `plane`, `class`, then `contrast`, `centre_mni_mm` (that point in MNI mm),
`tilt_deg` (the plane's tilt from the template's axial/coronal/sagittal plane), `width`,
`height`, `format` and `lesions` (kind, radius and MNI centre of each simulated lesion).
All slices of one pseudo-subject come from the same simulated head, so a held-out split that
should not leak anatomy has to group by `volume`, which only this CSV tells (a real Kaggle
download tells nothing of the kind). Grouping by file name instead puts each file in a group of
its own, or, where a few files happen to share a name stem, suffix and size (`N*.png` at
240 x 240), joins unrelated files.
"""
    path.write_text(text, encoding="utf-8")


# --------------------------------------------------------------------------------- main


def mni(head: Head, padded: np.ndarray) -> np.ndarray:
    return head.affine[:3, :3] @ (padded - PAD) + head.affine[:3, 3]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default: data/bench)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--sheet", type=Path, help="also write a contact sheet PNG here")
    args = parser.parse_args(argv)

    block_network()
    head = load_head()
    rng = np.random.default_rng(args.seed)
    subjects = make_subjects(head, rng)
    items = plan_items(subjects, head, rng)

    files, rows, shown = [], [], []
    for i, it in enumerate(items):
        img_rng = np.random.default_rng([args.seed, i])
        img, centre, tilt = render(it.subject, head, it.view, img_rng)
        arcname = f"{ARCHIVE_DIR}/{it.subject.klass}/{it.name}"
        data = encode(img, it)
        files.append((arcname, data))
        shown.append((arcname, img if it.fmt == "png" else _decoded(data)))
        normal_axis = int(np.argmax(np.abs(PLANES[it.view.plane][0])))
        les = "; ".join(
            f"{les_.kind} r={les_.radius:.0f} at ({', '.join(str(round(v)) for v in mni(head, les_.centre))})"
            for les_ in it.subject.lesions
        )
        rows.append(
            {
                "file": arcname,
                "volume": it.subject.ident,
                "slice": round(centre[normal_axis] - PAD),
                "plane": it.view.plane,
                "class": it.subject.klass,
                "contrast": it.subject.contrast,
                "centre_mni_mm": " ".join(str(round(v)) for v in mni(head, centre)),
                "tilt_deg": f"{tilt:.1f}",
                "width": img.shape[1],
                "height": img.shape[0],
                "format": it.fmt,
                "lesions": les,
            }
        )

    out = args.out
    zip_path = out / f"{ARCHIVE_DIR}.zip"
    write_zip(zip_path, files)
    rows.sort(key=lambda r: r["file"])
    with (out / f"{ARCHIVE_DIR}_sources.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    write_notice(out / "NOTICE.md", head, rows, zip_path, args.seed)
    if args.sheet is not None:
        shown.sort(key=lambda r: r[0])
        contact_sheet(args.sheet, shown)
    n_yes = sum(r["class"] == "yes" for r in rows)
    print(
        f"wrote {len(rows)} images ({len(rows) - n_yes} no, {n_yes} yes) to {zip_path} "
        f"({zip_path.stat().st_size / 1024:.0f} KiB)"
    )
    return 0


def _decoded(data: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("L"))


if __name__ == "__main__":
    sys.exit(main())
