"""Quality metrics on real computations: the bundled MNI152 slices (64 px) against fakes whose verdict is known."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from models.quality.metrics import METRICS, EvalInputs, compute
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
