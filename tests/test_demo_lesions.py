"""The labelled demo set ``data/demo/mni152_lesions``: reproducible, counted as NOTICE.md says, and each
``yes/`` slice is its template slice with a lesion inside the brain only (``scripts/make_demo_lesions.py``)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "make_demo_lesions.py"
SRC = REPO / "data" / "demo" / "mni152_axial"
OUT = REPO / "data" / "demo" / "mni152_lesions"
NOTICE = REPO / "data" / "demo" / "NOTICE.md"
# The script's brain mask: pixels above 12. The background's resampling ringing stays at or below it.
BRAIN_THRESHOLD = 12


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("L"))


def names(klass: str) -> list[str]:
    return sorted(p.name for p in (OUT / klass).iterdir())


def notice_count(klass: str) -> int:
    section = NOTICE.read_text(encoding="utf-8").split("## mni152_lesions/", 1)[1]
    match = re.search(rf"^- `{klass}/`: (\d+) slices", section, flags=re.MULTILINE)
    assert match, f"NOTICE.md does not give the number of {klass}/ slices"
    return int(match.group(1))


def test_check_reproduces_the_committed_files() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--check"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_classes_hold_the_counts_notice_gives_paired() -> None:
    assert sorted(p.name for p in OUT.iterdir()) == ["no", "yes"]
    no, yes = names("no"), names("yes")
    assert len(no) == notice_count("no") == 57
    assert len(yes) == notice_count("yes") == 29
    source = sorted(p.name for p in SRC.glob("slice_*.png"))
    assert no == source  # every template slice, unchanged (below)
    assert yes == source[::2]  # paired: every other slice, with a lesion
    assert all(re.fullmatch(r"slice_\d{3}\.png", n) for n in no + yes)


def test_no_slices_are_the_unchanged_template_slices() -> None:
    for name in names("no"):
        assert np.array_equal(pixels(OUT / "no" / name), pixels(SRC / name)), name


@pytest.mark.parametrize("name", sorted(p.name for p in (OUT / "yes").glob("*.png")))
def test_yes_slice_differs_from_its_original_inside_the_brain_only(name: str) -> None:
    original, lesioned = pixels(SRC / name).astype(int), pixels(OUT / "yes" / name).astype(int)
    assert original.shape == lesioned.shape
    outside = original <= BRAIN_THRESHOLD
    assert np.array_equal(lesioned[outside], original[outside]), "pixels outside the brain changed"
    changed = np.abs(lesioned - original) > 30
    assert changed.sum() >= 40, f"only {changed.sum()} pixels changed by more than 30 gray levels"
    # One lesion: the strongly changed pixels are close together (within a brain's fraction of the frame).
    rows, cols = np.nonzero(changed)
    assert rows.max() - rows.min() < 48 and cols.max() - cols.min() < 48
