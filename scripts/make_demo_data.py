#!/usr/bin/env python3
"""Build the bundled demo dataset of real brain MRI slices.

This is a maintainer-only script. Draw.AI itself and its tests never import it
and never need nilearn; they only read the files it writes (the demo PNGs, and
the tests' small NIfTI volume).

Source
------
The MNI ICBM152 2009a nonlinear symmetric T1 template
(``mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz``), a skull-stripped
population average of adult T1-weighted MRI scans at 1 mm isotropic
resolution (197 x 233 x 189 voxels). nilearn ships this file inside its wheel
and ``nilearn.datasets.load_mni152_template(resolution=1)`` reads it from
there, so nothing is downloaded. As a guard, this script disables socket
connections before it loads anything: if nilearn ever tried the network, the
script would fail instead of downloading.

Output
------
``data/demo/mni152_axial/slice_ZZZ.png`` -- 8-bit grayscale, 128 x 128 PNGs,
one per kept axial slice, where ZZZ is the slice index along the
inferior->superior axis of the RAS-oriented volume (MNI z in mm is
ZZZ - 72 for this template).
``data/demo/NOTICE.md`` -- the template's copyright notice and a description
of how the slices were made.

Processing
----------
1. Reorient the volume to RAS (``nibabel.as_closest_canonical``).
2. Scale intensities with robust percentiles (0.5 and 99.5) computed over the
   whole volume, clipped to [0, 1].
3. Take AXIAL slices; keep a slice only if the brain (voxels above 5 % of the
   volume maximum) covers at least 15 % of the slice, which drops the nearly
   empty slices at the top and bottom of the head; keep every other one of
   those (2 mm apart).
4. Orient each slice like a conventional axial MRI image in radiological
   display: anterior (nose) at the top, the patient's right on the image's
   left.
5. Pad to a square with black (the image is never stretched), resize to
   128 x 128 with Lanczos filtering and quantize to 8 bits.

Usage (from the repository root, in a throwaway virtual environment outside
the repository)::

    python3 -m venv /tmp/nilearn-venv
    /tmp/nilearn-venv/bin/pip install nilearn nibabel pillow numpy
    /tmp/nilearn-venv/bin/python scripts/make_demo_data.py

Re-running replaces the ``slice_*.png`` files in the output folder and
rewrites ``NOTICE.md``; the result is deterministic.

``--test-volume tests/data/mni152_small.nii.gz`` writes only the small NIfTI
volume the tests read (see ``tests/data/NOTICE.md``).
"""

from __future__ import annotations

import argparse
import socket
import sys
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "data" / "demo"
SUBDIR = "mni152_axial"

# The papers that describe the MNI ICBM152 nonlinear 2009 templates (cited in every NOTICE.md written here).
MNI_REFERENCES = """\
References: V. Fonov, A. C. Evans, K. Botteron, C. R. Almli, R. C. McKinstry,
D. L. Collins, "Unbiased average age-appropriate atlases for pediatric
studies", NeuroImage 54(1):313-327, 2011; V. S. Fonov, A. C. Evans,
R. C. McKinstry, C. R. Almli, D. L. Collins, "Unbiased nonlinear average
age-appropriate brain templates from birth to adulthood", NeuroImage 47
(Suppl. 1):S102, 2009."""

# Notice of the MNI ICBM152 nonlinear 2009 templates, as published by the
# McConnell Brain Imaging Centre / NIST lab with the template archives.
MNI_NOTICE = """\
Copyright (C) 1993-2009 Louis Collins, McConnell Brain Imaging Centre,
Montreal Neurological Institute, McGill University. Permission to use, copy,
modify, and distribute this software and its documentation for any purpose
and without fee is hereby granted, provided that the above copyright notice
appear in all copies. The authors and McGill University make no
representations about the suitability of this software for any purpose. It
is provided "as is" without express or implied warranty. The authors are not
responsible for any data loss, equipment damage, property loss, or injury to
subjects or patients resulting from the use or misuse of this software
package."""


def block_network() -> None:
    """Make any attempt to open a network connection fail loudly."""

    def _refuse(*_args, **_kwargs):
        raise RuntimeError("make_demo_data.py must not use the network")

    socket.socket.connect = _refuse  # type: ignore[method-assign]
    socket.socket.connect_ex = _refuse  # type: ignore[method-assign]
    socket.create_connection = _refuse  # type: ignore[assignment]
    socket.getaddrinfo = _refuse  # type: ignore[assignment]


def load_volume():
    """Return the RAS-oriented 1 mm MNI152 T1 template and its source path."""
    import nibabel as nib
    from nilearn import datasets
    from nilearn.datasets import struct

    img = datasets.load_mni152_template(resolution=1)
    img = nib.as_closest_canonical(img)
    axcodes = nib.aff2axcodes(img.affine)
    if axcodes != ("R", "A", "S"):
        raise RuntimeError(f"expected RAS after reorientation, got {axcodes}")
    data = np.asarray(img.get_fdata(), dtype=np.float64)
    if data.shape != (197, 233, 189):
        raise RuntimeError(f"unexpected template shape {data.shape}")
    return data, Path(struct.MNI152_FILE_PATH).name


def scale_intensities(vol: np.ndarray, lo_pct: float, hi_pct: float) -> np.ndarray:
    """Map the [lo_pct, hi_pct] percentile range of the volume to [0, 1]."""
    lo, hi = np.percentile(vol, [lo_pct, hi_pct])
    if hi <= lo:
        raise RuntimeError("degenerate intensity range")
    return np.clip((vol - lo) / (hi - lo), 0.0, 1.0)


def select_slices(vol: np.ndarray, min_fraction: float, step: int) -> list[int]:
    """Axial slice indices whose brain coverage is at least ``min_fraction``."""
    brain = vol > 0.05 * vol.max()
    fraction = brain.mean(axis=(0, 1))  # per axial slice (last axis is S)
    keep = np.flatnonzero(fraction >= min_fraction)
    if keep.size == 0:
        raise RuntimeError("no slice passes the brain-coverage filter")
    # Every ``step``-th slice, starting at the first qualifying one.
    return [int(k) for k in keep[::step]]


def to_display(axial: np.ndarray) -> np.ndarray:
    """RAS axial slice (x: L->R, y: P->A) -> image rows/cols, radiological.

    Rows run anterior (top, nose up) to posterior; columns run from the
    patient's right (image left) to the patient's left (image right).
    """
    return axial.T[::-1, ::-1]


def pad_to_square(img: np.ndarray) -> np.ndarray:
    """Centre ``img`` on a black square canvas; never stretches."""
    h, w = img.shape
    side = max(h, w)
    out = np.zeros((side, side), dtype=img.dtype)
    top = (side - h) // 2
    left = (side - w) // 2
    out[top : top + h, left : left + w] = img
    return out


def render(slice01: np.ndarray, size: int):
    """[0, 1] float slice -> ``size`` x ``size`` 8-bit grayscale PIL image."""
    from PIL import Image

    square = pad_to_square(to_display(slice01)).astype(np.float32)
    resized = Image.fromarray(square, mode="F").resize((size, size), resample=Image.Resampling.LANCZOS)
    arr = np.clip(np.rint(np.asarray(resized) * 255.0), 0, 255).astype(np.uint8)
    return Image.fromarray(arr, mode="L")


def write_test_volume(path: Path) -> None:
    """A small real NIfTI volume for the tests: the 2 mm template, cropped to the brain, as uint8.

    Written deterministically (gzip without a timestamp), RAS, with the cropped affine and the
    MNI sform/qform codes, so that reading it back gives MNI millimetres.
    """
    import gzip

    import nibabel as nib
    from nilearn import datasets

    img = nib.as_closest_canonical(datasets.load_mni152_template(resolution=2))
    data = np.asarray(img.get_fdata(), dtype=np.float64)
    idx = np.argwhere(data > 0.05 * data.max())
    lo = np.maximum(idx.min(axis=0) - 2, 0)
    hi = np.minimum(idx.max(axis=0) + 3, data.shape)
    crop = data[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
    u8 = np.clip(np.rint(crop / crop.max() * 255.0), 0, 255).astype(np.uint8)
    affine = img.affine.copy()
    affine[:3, 3] = img.affine[:3, :3] @ lo + img.affine[:3, 3]
    out = nib.Nifti1Image(u8, affine)
    out.header.set_xyzt_units("mm")
    out.set_sform(affine, code=4)
    out.set_qform(affine, code=4)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(out.to_bytes(), compresslevel=9, mtime=0))
    print(f"wrote {path}: {u8.shape} voxels of 2 mm, {path.stat().st_size / 1024:.0f} KiB")


LESIONS_HEADING = "## mni152_lesions/"


def write_notice(path: Path, *, source_file: str, count: int, first: int, last: int, args: argparse.Namespace) -> None:
    every = _every(args.step)
    text = f"""# Demo data: real brain MRI slices (MNI ICBM152 2009a template)

`mni152_axial/` holds {count} axial slices of real T1-weighted brain MRI. They
are derived from the **MNI ICBM152 2009a nonlinear symmetric T1 template**, a
population average of many healthy adults' MRI scans registered together. It
is real MRI data, but an average template: **not patient data** and not any
single person's scan. The template is skull-stripped, so the slices show brain
only.

## Copyright notice of the source template

{MNI_NOTICE}

Source: ICBM 2009a Nonlinear Symmetric template, McConnell Brain Imaging
Centre, Montreal Neurological Institute, McGill University
(https://nist.mni.mcgill.ca/icbm-152-nonlinear-atlases-2009/).
The file used is the 1 mm T1 template that the nilearn wheel carries:
`{source_file}`.
The nilearn wheel does not include the template archive's `COPYING` file;
the notice above is the MNI/McGill notice published with the ICBM152
nonlinear 2009 templates (some copies give the years as 1993-2004).

{MNI_REFERENCES}

## How the slices were made

Made offline (no download) by `scripts/make_demo_data.py`, run from the
repository root in a throwaway virtual environment:

```
python3 -m venv /tmp/nilearn-venv
/tmp/nilearn-venv/bin/pip install nilearn nibabel pillow numpy
/tmp/nilearn-venv/bin/python scripts/make_demo_data.py
```

- Volume: `nilearn.datasets.load_mni152_template(resolution=1)`,
  197 x 233 x 189 voxels at 1 mm, reoriented to RAS with
  `nibabel.as_closest_canonical`.
- Plane: axial.
- Filter: a slice is kept when the brain (voxels above 5 % of the volume
  maximum) covers at least {args.min_brain_fraction:.0%} of the
  197 x 233 slice; of those, {every} is kept ({args.step} mm apart):
  slice indices {first}-{last}, MNI z = {first - 72} mm to {last - 72} mm.
- Scaling: intensities mapped linearly from the {args.lo_pct} and {args.hi_pct}
  percentiles of the whole volume to 0-255, clipped.
- Orientation: radiological display, nose (anterior) up, the patient's right
  on the image's left.
- Size: padded to a square with black (never stretched), resized to
  {args.size} x {args.size} with Lanczos filtering.
- Format: 8-bit grayscale PNG, `slice_ZZZ.png`, where ZZZ is the axial slice
  index in the RAS volume (MNI z in mm = ZZZ - 72).
- Count: {count} images.
"""
    # The labelled demo's section (written by scripts/make_demo_lesions.py's author, about mni152_lesions/) is kept.
    old = path.read_text(encoding="utf-8") if path.is_file() else ""
    if LESIONS_HEADING in old:
        text = text.rstrip("\n") + "\n\n" + old[old.index(LESIONS_HEADING) :]
    path.write_text(text, encoding="utf-8")


def _every(n: int) -> str:
    return {1: "every slice", 2: "every other slice"}.get(n, f"every {n}th slice")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default: data/demo)")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--step", type=int, default=2, help="keep every STEP-th qualifying slice (default 2)")
    parser.add_argument("--min-brain-fraction", type=float, default=0.15)
    parser.add_argument("--lo-pct", type=float, default=0.5)
    parser.add_argument("--hi-pct", type=float, default=99.5)
    parser.add_argument("--test-volume", type=Path, help="write only the tests' small NIfTI volume to this path")
    args = parser.parse_args(argv)

    block_network()
    if args.test_volume is not None:
        write_test_volume(args.test_volume)
        return 0
    vol, source_file = load_volume()
    scaled = scale_intensities(vol, args.lo_pct, args.hi_pct)
    indices = select_slices(vol, args.min_brain_fraction, args.step)

    out_dir = args.out / SUBDIR
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob("slice_*.png"):
        stale.unlink()
    for k in indices:
        render(scaled[:, :, k], args.size).save(out_dir / f"slice_{k:03d}.png", optimize=True)

    write_notice(
        args.out / "NOTICE.md",
        source_file=source_file,
        count=len(indices),
        first=indices[0],
        last=indices[-1],
        args=args,
    )
    total = sum(p.stat().st_size for p in out_dir.glob("slice_*.png"))
    print(f"wrote {len(indices)} slices (z {indices[0]}-{indices[-1]}) to {out_dir} ({total / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
