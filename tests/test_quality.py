"""Quality metrics on real computations: the bundled MNI152 slices (64 px) against fakes whose verdict is known."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from models.data.ingest import ingest
from models.platform.settings import Settings
from models.platform.store import Store
from models.quality.evaluation import at_model_size
from models.quality.metrics import METRICS, EvalInputs, c2st_repeats, compute, copies_reference, nearest, two_sample_auc
from models.report.page import render
from models.report.summary import summarize
from tests.conftest import DEMO_SLICES

SIZE = 64


@pytest.fixture(scope="module")
def slices() -> tuple[np.ndarray, np.ndarray]:
    """The 57 demo slices at 64 px, split interleaved: (train, held-out)."""
    paths = sorted(DEMO_SLICES.glob("*.png"))
    assert len(paths) == 57
    images = np.stack(
        [np.asarray(Image.open(p).convert("L").resize((SIZE, SIZE), Image.Resampling.BOX)) for p in paths]
    )
    return images[0::2], images[1::2]


def test_registry_lists_every_metric_and_refuses_unknown(slices: tuple[np.ndarray, np.ndarray]) -> None:
    assert {"intensity_w1", "diversity_msssim", "memorization", "c2st_auc"} <= set(METRICS)
    train, held = slices
    with pytest.raises(ValueError, match="unknown metrics"):
        compute(["fid_typo"], EvalInputs(train, held, held))
    with pytest.raises(ValueError, match="one size"):
        EvalInputs(train, held, held[:, :32, :32])
    with pytest.raises(ValueError, match="uint8"):
        EvalInputs(train, held, held.astype(np.float32))


def test_w1_is_exact_on_known_distributions(slices: tuple[np.ndarray, np.ndarray]) -> None:
    black = np.zeros((4, 8, 8), np.uint8)
    white = np.full((4, 8, 8), 255, np.uint8)
    grey = np.full((4, 8, 8), 51, np.uint8)  # 0.2
    assert compute(["intensity_w1"], EvalInputs(black, white, black))["intensity_w1"]["real_vs_real"] == pytest.approx(
        1
    )
    assert compute(["intensity_w1"], EvalInputs(black, grey, black))["intensity_w1"]["synthetic_vs_real"] == (
        pytest.approx(0.2)
    )


def test_real_against_real_is_indistinguishable(slices: tuple[np.ndarray, np.ndarray]) -> None:
    train, held = slices
    r = compute(list(METRICS), EvalInputs(train, held, train, seed=1))
    assert 0.25 < r["c2st_auc"]["real_vs_real"] < 0.75
    assert 0.25 < r["c2st_auc"]["synthetic_vs_real"] < 0.75
    assert r["intensity_w1"]["synthetic_vs_real"] < 0.02
    assert r["intensity_w1"]["real_vs_real"] < 0.02
    assert abs(float(r["diversity_msssim"]["synthetic"]) - float(r["diversity_msssim"]["real"])) < 0.1
    assert all(float(v["seconds"]) >= 0 for v in r.values())


def test_noise_is_told_apart(slices: tuple[np.ndarray, np.ndarray]) -> None:
    train, held = slices
    noise = np.random.default_rng(0).integers(0, 256, size=(60, SIZE, SIZE), dtype=np.uint8)
    r = compute(["c2st_auc", "intensity_w1", "memorization"], EvalInputs(train, held, noise, seed=2))
    assert r["c2st_auc"]["synthetic_vs_real"] > 0.9
    assert r["intensity_w1"]["synthetic_vs_real"] > 0.15
    assert r["intensity_w1"]["synthetic_vs_real"] > 10 * float(r["intensity_w1"]["real_vs_real"])
    assert r["memorization"]["likely_copies_fraction"] == 0


def test_verbatim_generator_is_flagged_as_copying(slices: tuple[np.ndarray, np.ndarray]) -> None:
    train, held = slices
    copies = train[np.random.default_rng(3).integers(0, len(train), size=64)]
    r = compute(["memorization"], EvalInputs(train, held, copies))["memorization"]
    assert r["likely_copies_fraction"] > 0.9
    assert r["synthetic_p50"] < r["real_p1"]


def test_collapsed_generator_shows_no_diversity(slices: tuple[np.ndarray, np.ndarray]) -> None:
    train, held = slices
    collapsed = np.repeat(held[5:6], 40, axis=0)
    r = compute(["diversity_msssim"], EvalInputs(train, held, collapsed))["diversity_msssim"]
    assert r["synthetic"] > 0.99
    assert float(r["synthetic"]) > float(r["real"]) + 0.3


def test_c2st_is_seeded(slices: tuple[np.ndarray, np.ndarray]) -> None:
    train, held = slices
    noisy = np.clip(train.astype(int) + np.random.default_rng(4).integers(-40, 41, train.shape), 0, 255).astype(
        np.uint8
    )
    a = compute(["c2st_auc"], EvalInputs(train, held, noisy, seed=7))["c2st_auc"]
    b = compute(["c2st_auc"], EvalInputs(train, held, noisy, seed=7))["c2st_auc"]
    assert a["synthetic_vs_real"] == b["synthetic_vs_real"]


# -- the real-vs-real reference on the demo set as a user uploads it -------------------------------------------
def uploaded_demo(home: Path, split_seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The demo set ingested as an upload is (one volume: held out in slabs with a gap), then brought to the
    report's 64 px as the evaluation does: (training, held-out)."""
    settings = Settings(home=home, split_seed=split_seed, _env_file=None)  # type: ignore[call-arg]
    store = Store(home).ensure()
    info = ingest(DEMO_SLICES, store, settings, "demo")
    train = at_model_size(np.asarray(store.load_dataset(info.id)[0]), SIZE)
    held = at_model_size(np.asarray(store.load_dataset(info.id, split="heldout")[0]), SIZE)
    assert train is not None and held is not None
    return train, held


@pytest.fixture(scope="module")
def demo_split(tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, np.ndarray]:
    return uploaded_demo(tmp_path_factory.mktemp("home"))


def test_real_vs_real_reference_reads_chance_on_the_grouped_split(demo_split: tuple[np.ndarray, np.ndarray]) -> None:
    """The report's c2st reference on the demo upload (9 held-out slices): about 0.5.

    It read 0.27 before the split was grouped and the test repeated (one 2-fold estimate on a random split
    of neighbouring slices); the same computation now reads 0.57 (docs/quality.md).
    """
    train, held = demo_split
    assert (len(train), len(held)) == (36, 9)
    a, b, how = EvalInputs(train, held, held).reference()
    assert how == "real vs training real" and c2st_repeats(len(a)) == 16
    assert 0.35 < two_sample_auc(a, b, seed=0) < 0.65


def test_heldout_slices_are_no_near_copies_of_training_slices(demo_split: tuple[np.ndarray, np.ndarray]) -> None:
    """The memorization reference measures the distance to unseen anatomy, not to the next slice."""
    paths = sorted(DEMO_SLICES.glob("*.png"))
    volume = at_model_size(np.stack([np.asarray(Image.open(p).convert("L").resize((256, 256))) for p in paths]), SIZE)
    assert volume is not None
    flat = volume.reshape(len(volume), -1).astype(np.float64) / 255
    neighbours = float(np.median(np.sqrt(((flat[1:] - flat[:-1]) ** 2).mean(axis=1))))  # stored slices 2 mm apart
    train, held = demo_split
    assert float(np.median(nearest(held, train)[0])) > 1.5 * neighbours
    # Interleaved, as a random split of one volume mostly is: every held-out slice has a training neighbour.
    assert float(np.median(nearest(volume[1::2], volume[0::2])[0])) < 1.5 * neighbours


@pytest.mark.slow
def test_real_vs_real_reference_reads_chance_for_other_seeds(tmp_path: Path) -> None:
    """Other split and classifier seeds: every reading near 0.5, their mean closer still."""
    readings = []
    for split_seed in (0, 1, 3):
        train, held = uploaded_demo(tmp_path / f"home{split_seed}", split_seed)
        readings += [two_sample_auc(held, train, seed) for seed in range(3)]
    assert all(0.35 < r < 0.65 for r in readings), readings
    assert 0.42 < float(np.mean(readings)) < 0.58, readings


# -- memorization, read against its reference ----------------------------------------------------------------
def test_copies_reference_is_what_real_slices_show_by_chance() -> None:
    assert copies_reference(9, 500)[0] == pytest.approx(0.108)
    assert copies_reference(200, 500)[0] == pytest.approx(2.99 / 201)
    rng = np.random.default_rng(0)
    for n, m in ((9, 500), (40, 60), (200, 500)):
        expected, upper = copies_reference(n, m)
        shares = []
        for _ in range(2000):  # synthetic distances from the same distribution as the real ones
            real, synthetic = rng.gamma(4.0, 1.0, n), rng.gamma(4.0, 1.0, m)
            shares.append(float(np.mean(synthetic < np.percentile(real, 1))))
        assert np.mean(shares) == pytest.approx(expected, rel=0.15)  # exact at whole ranks, close between them
        assert 0.005 < np.mean(np.asarray(shares) > upper) < 0.07  # exceeded at most about 1 time in 20


def test_memorization_at_its_reference_reads_as_expected(
    demo_split: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    """A "generator" whose slices are as far from the training slices as held-out real ones (they are real
    held-out slices): its likely-copies share is the reference, and reads as expected, not as near-copies."""
    train, held = demo_split
    r = compute(["memorization"], EvalInputs(train, held, held))
    memo = r["memorization"]
    assert memo["likely_copies_fraction"] == pytest.approx(1 / 9)  # the nearest one, below the interpolated p1
    assert memo["reference_fraction"] == pytest.approx(0.108) and memo["reference_upper"] > 0.3
    reading = summarize(r)["memorization"]
    assert reading["reference"] == memo["reference_fraction"]
    assert reading["reading"].startswith("as expected") and "near-cop" not in reading["reading"]
    data = {
        "real": {"source": "held-out split", "count": 9},
        "training": {"source": "training split", "count": 36},
        "synthetic": {"count": 9, "first_seed": 0, "last_seed": 8, "provider": "none"},
    }
    assert reading["reading"] in render({"metrics": r, "data": data}, tmp_path)

    copies = compute(["memorization"], EvalInputs(train, held, train[np.arange(40) % len(train)]))
    assert copies["memorization"]["likely_copies_fraction"] == 1.0
    assert "near-copies of training slices: a privacy risk" in summarize(copies)["memorization"]["reading"]


def test_memorization_wording_against_the_reference() -> None:
    def reading(value: float, **extra: float) -> str:
        values = {"computed": True, "likely_copies_fraction": value, **extra}
        return str(summarize({"memorization": values})["memorization"]["reading"])

    small = {"reference_fraction": 0.108, "reference_upper": 0.32}  # 9 held-out slices
    large = {"reference_fraction": 0.015, "reference_upper": 0.04}  # 200
    assert reading(0.0, **small).startswith("no synthetic slice is closer")
    for value in (0.05, 0.108, 0.3):
        assert reading(value, **small).startswith("as expected"), value
    assert "some may be near-copies" in reading(0.4, **small)
    assert "privacy risk" in reading(0.6, **small)
    assert reading(0.015, **large).startswith("as expected")
    assert "some may be near-copies" in reading(0.06, **large)
    assert "privacy risk" in reading(0.2, **large)
    # Reports written before the reference was computed: about 1% expected, up to 5% as expected.
    assert reading(0.01).startswith("as expected") and "some may be" in reading(0.08)
    assert summarize({"memorization": {"likely_copies_fraction": 0.01}})["memorization"]["reference"] == 0.01
