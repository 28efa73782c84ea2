#!/usr/bin/env python3
"""What the memorization test says about real slices of the demo's volume that were never trained on.

A maintainer script, like ``scripts/make_demo_data.py``, and it needs what that one needs (nilearn, in a
throwaway virtual environment; nothing is downloaded: the template is in nilearn's wheel). Draw.AI never imports
it.

The bundled demo (``data/demo/mni152_axial``) is every other axial slice of one volume, the MNI152 template at
1 mm. Its grouped split holds out slabs of 3 stored slices with 2 dropped on each side (``models.data.split``), so
a held-out slice lies at least 3 stored slices (6 mm) from a training slice. The slices in between the stored ones
(the odd 1 mm slices) are real slices of the same brain that no model ever saw. This script makes them exactly as
the demo's files were made, reads them the way an upload is read, and runs the memorization metric's distance on
them at the model size: how many of them would the report call likely copies of a training slice?

    python3 -m venv /tmp/nilearn-venv && /tmp/nilearn-venv/bin/pip install nilearn && \\
        /tmp/nilearn-venv/bin/pip install -e .   # then, from the repository root:
    /tmp/nilearn-venv/bin/python scripts/one_volume_memorization.py [--size 64]

Printed on 2026-12-03 (64 px): 33 of 33 unseen slices between two training slices read as likely copies
(distances 0.02-0.04 against a threshold of 0.094; reference 0.108). On one volume the test cannot tell a new
slice of that brain from a copy: see docs/quality.md.
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO = REPO_ROOT / "data" / "demo" / "mni152_axial"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=64, help="the model size the metric compares at")
    args = parser.parse_args(argv)
    sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "scripts")]
    import make_demo_data as demo

    from models.data.decode_image import decode_image
    from models.data.ingest import ingest
    from models.platform.settings import Settings
    from models.platform.store import Store
    from models.quality.evaluation import at_model_size
    from models.quality.metrics import MEMORIZATION_PERCENTILE, copies_reference, nearest

    demo.block_network()
    home = Path(tempfile.mkdtemp(prefix="drawai-one-volume-")) / "home"
    settings = Settings(home=home)
    store = Store(home).ensure()
    info = ingest(DEMO, store, settings, "demo")
    train = at_model_size(np.asarray(store.load_dataset(info.id, "train")[0]), args.size)
    heldout = at_model_size(np.asarray(store.load_dataset(info.id, "heldout")[0]), args.size)
    assert train is not None and heldout is not None

    volume, _ = demo.load_volume()
    volume01 = demo.scale_intensities(volume, 0.5, 99.5)

    def as_uploaded(k: int) -> np.ndarray:
        """Axial slice ``k`` made as the demo's files were, then decoded as an uploaded PNG is."""
        png = io.BytesIO()
        demo.render(volume01[:, :, k], 128).save(png, format="PNG")
        return decode_image(png.getvalue(), settings)

    stored = sorted(int(p.stem.split("_")[1]) for p in DEMO.glob("slice_*.png"))
    for k in stored[:3]:  # the same pixels as the bundled files
        bundled = np.asarray(Image.open(DEMO / f"slice_{k:03d}.png"))
        assert np.array_equal(np.asarray(demo.render(volume01[:, :, k], 128)), bundled)
    stored_at_size = at_model_size(np.stack([as_uploaded(k) for k in stored]), args.size)
    assert stored_at_size is not None
    trained = dict(zip(stored, nearest(stored_at_size, train)[0] == 0.0, strict=True))
    between = [k + 1 for k in stored[:-1] if trained[k] and trained.get(k + 2, False)]
    unseen = at_model_size(np.stack([as_uploaded(k) for k in between]), args.size)
    assert unseen is not None

    held_d, _ = nearest(heldout, train)
    unseen_d, _ = nearest(unseen, train)
    threshold = float(np.percentile(held_d, MEMORIZATION_PERCENTILE))
    reference, upper = copies_reference(len(held_d), len(unseen_d))
    copies = int(np.sum(unseen_d < threshold))
    print(f"demo: {len(stored)} stored slices, {sum(trained.values())} training, {len(heldout)} held out")
    print(f"held-out slices' distance to the nearest training slice: min {held_d.min():.3f}, "
          f"median {np.median(held_d):.3f}; threshold (percentile {MEMORIZATION_PERCENTILE}) "
          f"{threshold:.3f}")  # fmt: skip
    print(f"unseen real slices between two training slices: {len(unseen_d)}, distances "
          f"{unseen_d.min():.3f}-{unseen_d.max():.3f} (median {np.median(unseen_d):.3f})")  # fmt: skip
    print(f"read as likely copies: {copies} of {len(unseen_d)} = {copies / len(unseen_d):.3f} "
          f"(reference {reference:.3f}, 'as expected' up to {upper:.3f})")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
