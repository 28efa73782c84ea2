"""The grouped held-out split (``models.data.split``) on its own: slabs, gaps, whole groups, series, seeds."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models.data.split import GAP, MIN_SERIES, SLAB, Source, grouped_split, image_sources
from tests.conftest import DEMO_SLICES


def volume(m: int, name: str = "vol") -> list[Source]:
    return [Source(name, k) for k in range(m)]


def marks(held: np.ndarray, dropped: np.ndarray) -> str:
    """One letter per row: H held out, . dropped, t training."""
    return "".join("H" if h else "." if d else "t" for h, d in zip(held, dropped, strict=True))


def runs(positions: np.ndarray) -> list[int]:
    """Lengths of the runs of consecutive positions."""
    if not len(positions):
        return []
    breaks = np.flatnonzero(np.diff(positions) != 1)
    return np.diff(np.concatenate([[-1], breaks, [len(positions) - 1]])).tolist()


@pytest.mark.parametrize("fraction", [0.1, 0.15, 0.3, 0.5])
def test_one_volume_is_held_out_in_contiguous_slabs_with_a_gap(fraction: float) -> None:
    for m in range(1, 160):
        for seed in range(3):
            held, dropped = grouped_split(np.zeros(m, np.int64), volume(m), fraction, seed)
            h, d = np.flatnonzero(held), np.flatnonzero(dropped)
            t = np.flatnonzero(~held & ~dropped)
            layout = f"m={m} seed={seed}: {marks(held, dropped)}"
            assert len(t) > 0, layout  # the class keeps training slices
            if len(h) == 0:
                assert len(d) == 0, layout
                continue
            assert len(h) == math.floor(m * fraction + 0.5), layout
            assert not (held & dropped).any()
            # No training slice within GAP positions of a held-out one; the dropped ones are exactly those.
            distance = np.abs(t[:, None] - h[None, :]).min(axis=1)
            assert distance.min() > GAP, layout
            near = np.abs(np.arange(m)[:, None] - h[None, :]).min(axis=1)
            assert d.tolist() == np.flatnonzero((near > 0) & (near <= GAP)).tolist(), layout
            # Even blocks of at most SLAB slices, larger only when one more block would leave no training
            # slice between them.
            sizes = runs(h)
            assert max(sizes) - min(sizes) <= 1, layout
            more = len(sizes) + 1
            assert max(sizes) <= SLAB or m // more < math.ceil(len(h) / more) + 2 * GAP + 1, layout


def test_slabs_spread_through_the_volume_and_cover_its_levels() -> None:
    held, dropped = grouped_split(np.zeros(57, np.int64), volume(57), 0.15, seed=0)
    h = np.flatnonzero(held)
    assert runs(h) == [SLAB, SLAB, SLAB] and int(dropped.sum()) == 3 * 2 * GAP
    assert np.diff(h[::SLAB]).tolist() == [19, 19]  # one block per third of the volume
    starts = {int(np.flatnonzero(grouped_split(np.zeros(57, np.int64), volume(57), 0.15, s)[0])[0]) for s in range(20)}
    assert len(starts) > 5  # the seed moves the blocks


def test_the_split_follows_positions_not_row_order() -> None:
    order = np.random.default_rng(1).permutation(40)
    sources = [Source("vol", int(k)) for k in order]  # rows arrive in any order
    held, dropped = grouped_split(np.zeros(40, np.int64), sources, 0.15, seed=2)
    by_position = np.zeros(40, bool), np.zeros(40, bool)
    by_position[0][order] = held
    by_position[1][order] = dropped
    same, same_dropped = grouped_split(np.zeros(40, np.int64), volume(40), 0.15, seed=2)
    assert np.array_equal(by_position[0], same) and np.array_equal(by_position[1], same_dropped)


def test_whole_groups_are_never_split_across_sides() -> None:
    sizes = [30, 12, 25, 40, 8, 19, 33, 22, 27, 15]
    sources = [Source(f"vol{v}", k) for v, size in enumerate(sizes) for k in range(size)]
    labels = np.zeros(len(sources), np.int64)
    target = round(0.15 * len(sources))
    for seed in range(10):
        held, dropped = grouped_split(labels, sources, 0.15, seed)
        assert not dropped.any()  # whole volumes out: no gap needed
        for v in range(len(sizes)):
            rows = np.array([s.group == f"vol{v}" for s in sources])
            assert held[rows].all() or not held[rows].any(), (seed, v)
        assert target / 2 <= held.sum() < 2 * target


def test_few_volumes_are_split_in_slabs_and_many_hold_whole_ones_out() -> None:
    three = [Source(f"v{v}", k) for v in range(3) for k in range(40)]
    held, dropped = grouped_split(np.zeros(120, np.int64), three, 0.15, seed=0)
    for v in range(3):  # one of 3 volumes would be a third: each volume holds out slabs instead
        rows = slice(40 * v, 40 * v + 40)
        assert held[rows].sum() == 6 and dropped[rows].any()
    four = [Source(f"v{v}", k) for v in range(4) for k in range(40)]
    held, dropped = grouped_split(np.zeros(160, np.int64), four, 0.15, seed=0)
    assert held.sum() == 40 and not dropped.any()  # one whole volume of 4


def test_classes_of_single_files_hold_out_round_fraction_and_keep_a_training_image() -> None:
    labels = np.array([0] * 1 + [1] * 2 + [2] * 3 + [3] * 10)
    files = [Source(f"file:{i}.png") for i in range(len(labels))]
    held, dropped = grouped_split(labels, files, 0.5, seed=3)
    assert [int(held[labels == c].sum()) for c in range(4)] == [0, 1, 2, 5]  # round(1.5) = 2 of 3
    assert not dropped.any()
    again = grouped_split(labels, files, 0.5, seed=3)
    assert np.array_equal(held, again[0]) and np.array_equal(dropped, again[1])
    assert not grouped_split(labels, files, 0.0, seed=3)[0].any()
    assert [int(grouped_split(labels, files, 0.99, seed=0)[0][labels == c].sum()) for c in range(4)] == [0, 1, 2, 9]


def test_every_class_keeps_training_images() -> None:
    rng = np.random.default_rng(0)
    for trial in range(200):
        labels, sources = [], []
        for c in range(int(rng.integers(1, 4))):
            for g in range(int(rng.integers(1, 6))):
                size = int(rng.choice([1, 1, 2, 5, 9, 30, 80]))
                labels += [c] * size
                sources += [Source(f"c{c}g{g}", k) for k in range(size)]
        fraction = float(rng.choice([0.1, 0.15, 0.3, 0.6, 0.9]))
        held, dropped = grouped_split(np.asarray(labels), sources, fraction, seed=trial)
        for c in set(labels):
            rows = np.asarray(labels) == c
            assert (rows & ~held & ~dropped).any(), (trial, c)


def test_the_split_is_deterministic_and_seeded() -> None:
    labels = np.array([0] * 57 + [1] * 30 + [2] * 12)
    sources = (
        volume(57, "a") + [Source(f"v{k // 10}", k % 10) for k in range(30)] + [Source(f"f{k}") for k in range(12)]
    )
    first = grouped_split(labels, sources, 0.15, seed=5)
    for _ in range(3):
        again = grouped_split(labels, sources, 0.15, seed=5)
        assert np.array_equal(first[0], again[0]) and np.array_equal(first[1], again[1])
    assert any(not np.array_equal(first[0], grouped_split(labels, sources, 0.15, seed=s)[0]) for s in range(6, 9))
    with pytest.raises(ValueError, match="sources"):
        grouped_split(labels, sources[:-1], 0.15, seed=5)


def test_a_class_of_one_image_holds_nothing_out() -> None:
    held, dropped = grouped_split(np.array([0]), [Source("file:a.png")], 0.15, seed=0)
    assert not held.any() and not dropped.any()
    held, dropped = grouped_split(np.array([0]), [Source("vol", 3)], 0.99, seed=0)
    assert not held.any() and not dropped.any()


# -- numbered image series ------------------------------------------------------------------
def test_numbered_files_of_one_folder_and_size_are_one_series() -> None:
    files = [f"mni/{p.name}" for p in sorted(DEMO_SLICES.glob("*.png"))]
    sources = image_sources(files, [(128, 128)] * len(files))
    assert len({s.group for s in sources}) == 1
    assert [s.position for s in sources] == list(range(26, 139, 2))  # the file numbers: every other slice


def test_series_are_split_by_folder_stem_suffix_and_size() -> None:
    files = [
        "a/slice_1.png", "a/slice_2.png", "a/slice_3.png", "a/slice_4.png",  # a series, one size but slice_3
        "b/slice_1.png", "b/slice_2.png", "b/slice_3.png",  # another folder: another series
        "a/IM1.png", "a/IM2.png", "a/IM3.png",  # another stem
        "a/slice_1.jpg", "a/slice_2.jpg",  # another suffix, and fewer than MIN_SERIES: single files
        "a/notes.png",  # not numbered
    ]  # fmt: skip
    sizes = [(64, 64)] * len(files)
    sizes[2] = (128, 96)  # a/slice_3.png: another size, so another volume (alone: a file of its own)
    sources = dict(zip(files, image_sources(files, sizes), strict=True))
    series_a = {sources[f].group for f in ("a/slice_1.png", "a/slice_2.png", "a/slice_4.png")}
    assert len(series_a) == 1 and series_a.pop().startswith("series:")
    assert sources["a/slice_3.png"].group == "file:a/slice_3.png"
    assert len({sources[f].group for f in ("b/slice_1.png", "b/slice_2.png", "b/slice_3.png")}) == 1
    assert sources["b/slice_1.png"].group != sources["a/slice_1.png"].group
    assert len({sources[f].group for f in ("a/IM1.png", "a/IM2.png", "a/IM3.png")}) == 1
    assert sources["a/IM1.png"].group != sources["a/slice_1.png"].group
    assert MIN_SERIES == 3 and sources["a/slice_1.jpg"].group == "file:a/slice_1.jpg"
    assert sources["a/notes.png"].group == "file:a/notes.png"
    assert [sources[f].position for f in ("a/slice_1.png", "a/slice_2.png", "a/slice_4.png")] == [1, 2, 4]


def test_mixed_sizes_make_different_series() -> None:
    files = [f"scans/img_{i:03d}.png" for i in range(12)]
    sizes = [(256, 256) if i % 2 else (512, 512) for i in range(12)]  # two scanners, numbered in one run
    groups = [s.group for s in image_sources(files, sizes)]
    assert len(set(groups[0::2])) == len(set(groups[1::2])) == 1 and groups[0] != groups[1]


def test_a_series_numbered_every_other_slice_keeps_its_gap_in_positions() -> None:
    """The demo's files step by 2: the gap counts stored neighbours (positions), not file numbers."""
    files = [f"mni/{p.name}" for p in sorted(DEMO_SLICES.glob("*.png"))]
    sources = image_sources(files, [(128, 128)] * len(files))
    held, dropped = grouped_split(np.zeros(len(files), np.int64), sources, 0.15, seed=0)
    numbers = np.array([s.position for s in sources])
    h, t = numbers[held], numbers[~held & ~dropped]
    assert len(h) == 9 and int(dropped.sum()) == 12
    assert np.abs(t[:, None] - h[None, :]).min() == 2 * (GAP + 1)  # 3 stored slices, 6 mm, from any held-out one
    assert runs(h // 2) == [SLAB, SLAB, SLAB]


def test_a_volume_filed_by_label_is_one_series_across_class_folders() -> None:
    """``vol/yes/slice_050.png`` and ``vol/no/slice_052.png``: one volume sorted by label, one group."""
    files = [f"vol/{c}/slice_{k:03d}.png" for c, k in [("no", 0), ("yes", 2), ("no", 4), ("yes", 6), ("no", 8)]]
    classes = [f.split("/")[1] for f in files]
    sources = image_sources(files, [(64, 64)] * len(files), classes)
    assert len({s.group for s in sources}) == 1
    assert [s.position for s in sources] == [0, 2, 4, 6, 8]
    # without the classes, the class folders are different folders: no group spans them (as before)
    apart = image_sources(files, [(64, 64)] * len(files))
    assert not {s.group for s, c in zip(apart, classes, strict=True) if c == "no"} & {
        s.group for s, c in zip(apart, classes, strict=True) if c == "yes"
    }


@pytest.mark.parametrize("paired", [True, False])
def test_a_volume_filed_by_label_holds_out_the_same_slabs_for_every_class(paired: bool) -> None:
    """No class trains on a slice beside another class's held-out slice; a slice and its labelled copy (the
    labelled demo's pairs) fall on one side."""
    m = 57
    if paired:  # every slice in no/, every other one again in yes/ (with a lesion)
        rows = [("no", k) for k in range(m)] + [("yes", k) for k in range(0, m, 2)]
    else:  # every third slice in yes/, the others in no/
        rows = [("yes" if k % 3 == 0 else "no", k) for k in range(m)]
    files = [f"vol/{c}/slice_{k:03d}.png" for c, k in rows]
    labels = np.asarray([c == "yes" for c, _ in rows], dtype=np.int64)
    sources = image_sources(files, [(64, 64)] * len(files), [c for c, _ in rows])
    for seed in range(5):
        held, dropped = grouped_split(labels, sources, 0.15, seed)
        position = np.asarray([k for _, k in rows])
        held_at, train_at = position[held], position[~held & ~dropped]
        assert len(held_at) and all(np.any(held & (labels == c)) for c in (0, 1))  # both classes hold some out
        assert all(np.any(~held & ~dropped & (labels == c)) for c in (0, 1))  # and train on some
        assert np.abs(train_at[:, None] - held_at[None, :]).min() > GAP  # every class's training slices are far
        for k in set(held_at.tolist()):
            assert held[position == k].all()  # a held-out position is held out in every class
