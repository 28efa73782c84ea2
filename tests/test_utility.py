"""The utility test (models.quality.utility) on the bundled real MRI slices with a painted lesion, and its page.

Class "yes" is a slice with a dark disc painted into the brain (the minority of the training split), "no" an
untouched slice. A *good* synthesizer paints fresh discs (other random draws) into the training slices, every
class over the same anatomy (a small draw whose anatomy differs by class teaches the classifier the anatomy);
a *wrong* one returns the other class. The classifier runs at 32 px, on one thread (the tiny fits are faster
so on a shared machine), with few seeds and epochs: the whole file takes seconds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from models.gan.training import TrainingAborted
from models.quality.utility import ARMS, METRICS, UtilityConfig, UtilitySkipped, skipped_section, utility_test
from models.report.utility_page import HEADING, render_utility

DEMO_SLICES = Path(__file__).resolve().parent.parent / "data" / "demo" / "mni152_axial"
CLASSES = {"no": 0, "yes": 1}
FAST = UtilityConfig(seeds=3, size=32, epochs=40, batch_size=16)


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def _paint(image: np.ndarray, rng: np.random.Generator, value: int = 0) -> np.ndarray:
    """A disc of radius 5 to 8 px (of 64) centred inside the brain."""
    out = image.copy()
    ys, xs = np.nonzero(image > 60)
    i = rng.integers(len(ys))
    r = rng.uniform(5.0, 8.0)
    yy, xx = np.ogrid[: image.shape[0], : image.shape[1]]
    out[(yy - ys[i]) ** 2 + (xx - xs[i]) ** 2 <= r * r] = value
    return out


@pytest.fixture(scope="module")
def demo() -> dict[str, np.ndarray]:
    """57 real slices at 64 px: every third held out (9 of 19 painted), the rest for training (10 of 38)."""
    paths = sorted(DEMO_SLICES.glob("*.png"))
    base = np.stack([np.asarray(Image.open(p).convert("L").resize((64, 64), Image.Resampling.BOX)) for p in paths])
    rng = np.random.default_rng(0)
    held = np.arange(len(base)) % 3 == 1
    train, heldout = base[~held], base[held]
    y_train = np.zeros(len(train), np.int64)
    y_train[rng.choice(len(train), 10, replace=False)] = 1
    y_heldout = np.zeros(len(heldout), np.int64)
    y_heldout[rng.choice(len(heldout), 9, replace=False)] = 1
    return {
        "pool": train,
        "train": np.stack([_paint(x, rng) if y else x for x, y in zip(train, y_train, strict=True)]),
        "y_train": y_train,
        "heldout": np.stack([_paint(x, rng) if y else x for x, y in zip(heldout, y_heldout, strict=True)]),
        "y_heldout": y_heldout,
    }


def _synthesizer(pool: np.ndarray, swap: bool = False, side: int = 48) -> Callable[[int, int, int], np.ndarray]:
    """Slices of the asked class (the other one with ``swap``), at ``side`` px: smaller than the real ones."""

    def synthesize(cls: int, count: int, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        painted = cls != swap
        images = [_paint(x, rng) if painted else x for x in pool[np.arange(count) % len(pool)]]
        return np.stack([np.asarray(Image.fromarray(x).resize((side, side), Image.Resampling.BOX)) for x in images])

    return synthesize


def _run(demo: dict[str, np.ndarray], config: UtilityConfig, swap: bool = False, **kwargs: Any) -> dict[str, Any]:
    return utility_test(
        demo["train"], demo["y_train"], demo["heldout"], demo["y_heldout"], CLASSES,
        _synthesizer(demo["pool"], swap), config, **kwargs,
    )  # fmt: skip


@pytest.fixture(scope="module")
def good(demo: dict[str, np.ndarray]) -> tuple[dict[str, Any], list[tuple[str, int, int]]]:
    calls: list[tuple[str, int, int]] = []
    return _run(demo, FAST, progress_fn=lambda *a: calls.append(a)), calls


def test_good_synthetic_data_trains_a_detector(good: tuple[dict[str, Any], list[tuple[str, int, int]]]) -> None:
    result, calls = good
    assert result["skipped"] is False
    assert result["arms"]["synthetic"]["auroc"]["mean"] > 0.8, result["arms"]["synthetic"]
    assert result["minority"] == "yes"
    assert result["counts"] == {"train": {"no": 28, "yes": 10}, "heldout": {"no": 10, "yes": 9}}
    assert result["synthetic_added"] == {"no": 0, "yes": 18}
    assert result["synthetic_only"] == {"no": 28, "yes": 28}
    assert result["seeds_run"] == 3 and result["stopped_by_budget"] is False
    assert result["verdict"] in ("helped", "hurt", "no clear effect")
    assert result["summary"].startswith("Adding 18 synthetic 'yes' slices") and result["verdict"] in result["summary"]
    assert result["seconds"] > 0 and "CNN" in result["classifier"] and result["config"]["epochs"] == 40
    assert result["caution"] is None or result["caution"].startswith("Caution")
    assert set(result["arms"]) == set(ARMS)
    for arm in ARMS:
        for metric in METRICS:
            value = result["arms"][arm][metric]
            assert 0.0 <= value["mean"] <= 1.0 and value["sd"] >= 0.0 and len(value["per_seed"]) == 3
            assert value["mean"] == pytest.approx(np.mean(value["per_seed"]))
    for metric in METRICS:
        d = result["difference"][metric]
        assert d["low"] <= d["mean"] <= d["high"] and len(d["per_seed"]) == 3
        paired = np.subtract(
            result["arms"]["real+synthetic"][metric]["per_seed"], result["arms"]["real"][metric]["per_seed"]
        )
        assert d["per_seed"] == pytest.approx(paired)
    assert calls == [("utility test", i, 9) for i in range(1, 10)]


def test_wrong_class_synthetic_data_is_found_out(demo: dict[str, np.ndarray]) -> None:
    result = _run(demo, UtilityConfig(seeds=2, size=32, epochs=40, batch_size=16), swap=True)
    assert result["arms"]["synthetic"]["auroc"]["mean"] < 0.5, result["arms"]["synthetic"]
    assert result["verdict"] != "helped", result["summary"]
    assert result["difference"]["auroc"]["mean"] < 0, result["difference"]["auroc"]  # mislabelled slices hurt


def test_same_inputs_same_result(demo: dict[str, np.ndarray]) -> None:
    config = UtilityConfig(seeds=2, size=32, epochs=4, batch_size=16)
    first, second = _run(demo, config), _run(demo, config)
    first.pop("seconds"), second.pop("seconds")
    assert first == second
    per_seed = [v["per_seed"] for arm in first["arms"].values() for k, v in arm.items() if k != "label"]
    assert any(values[0] != values[1] for values in per_seed)  # the seeds differ (AUROCs of 9 slices can tie)


def test_three_classes_use_macro_auroc(demo: dict[str, np.ndarray]) -> None:
    """A third class (a bright disc) and class indices that are not 0..C-1."""
    rng = np.random.default_rng(1)
    bright_train = np.stack([_paint(x, rng, 255) for x in demo["pool"][:6]])
    bright_heldout = np.stack([_paint(x, rng, 255) for x in demo["heldout"][:4]])
    remap = np.array([0, 5])
    classes = {"no": 0, "dark": 5, "bright": 9}
    good = _synthesizer(demo["pool"])

    def synthesize(cls: int, count: int, seed: int) -> np.ndarray:
        if cls == 9:
            picks = demo["pool"][np.arange(count) % len(demo["pool"])]
            return np.stack([_paint(x, np.random.default_rng([seed, i]), 255) for i, x in enumerate(picks)])
        return good(int(cls == 5), count, seed)

    result = utility_test(
        np.concatenate([demo["train"], bright_train]), np.concatenate([remap[demo["y_train"]], np.full(6, 9)]),
        np.concatenate([demo["heldout"], bright_heldout]), np.concatenate([remap[demo["y_heldout"]], np.full(4, 9)]),
        classes, synthesize, UtilityConfig(seeds=2, size=32, epochs=4, batch_size=16),
    )  # fmt: skip
    assert result["minority"] == "bright" and result["auroc"] == "macro one-vs-rest"
    assert result["synthetic_added"] == {"no": 0, "dark": 18, "bright": 22}
    assert "22 synthetic 'bright'" in result["summary"]
    assert all(0.0 <= result["arms"][a]["auroc"]["mean"] <= 1.0 for a in ARMS)


def test_untestable_inputs_raise_a_value_error(demo: dict[str, np.ndarray]) -> None:
    synthesize = _synthesizer(demo["pool"])
    zeros = np.zeros(len(demo["train"]), np.int64)
    with pytest.raises(UtilitySkipped, match="at least 2 classes"):
        utility_test(demo["train"], zeros, demo["heldout"], zeros[:19], {"no": 0}, synthesize, FAST)
    with pytest.raises(ValueError, match="'yes' has no held-out slices"):
        utility_test(demo["train"], demo["y_train"], demo["heldout"], zeros[:19], CLASSES, synthesize, FAST)
    with pytest.raises(ValueError, match=r"labels \[7\]"):
        utility_test(demo["train"], demo["y_train"] * 7, demo["heldout"], demo["y_heldout"], CLASSES, synthesize, FAST)
    with pytest.raises(ValueError, match="at least 2 seeds"):
        _run(demo, UtilityConfig(seeds=1))
    assert issubclass(UtilitySkipped, ValueError)


def test_abort_stops_before_the_next_fit(demo: dict[str, np.ndarray]) -> None:
    with pytest.raises(TrainingAborted):
        _run(demo, FAST, abort_fn=lambda: True)


def test_budget_stops_after_two_seeds(demo: dict[str, np.ndarray]) -> None:
    result = _run(demo, UtilityConfig(seeds=4, budget_s=0.0, size=32, epochs=2, batch_size=16))
    assert result["seeds_run"] == 2 and result["stopped_by_budget"] is True
    assert len(result["difference"]["f1_minority"]["per_seed"]) == 2


def test_page_shows_the_verdict_and_escapes_class_names(good: tuple[dict[str, Any], list[Any]]) -> None:
    result = dict(good[0])
    page = render_utility(result)
    assert HEADING in page and result["summary"].replace("'", "&#39;") in page
    assert "held-out slices are real" in page and "±" in page and "(b) − (a)" in page
    evil = {**result, "counts": {"train": {"<script>x</script>": 3}, "heldout": {}}, "minority": "<b>m</b>"}
    page = render_utility(evil)
    assert "<script>" not in page and "&lt;script&gt;x&lt;/script&gt;" in page and "<b>m</b>" not in page
    assert "Caution" not in page and "Caution: AUROC" in render_utility({**result, "caution": "Caution: AUROC fell"})
    skipped = render_utility(skipped_section("class 'yes' has <no> held-out slices"))
    assert HEADING in skipped and "Not tested" in skipped and "&lt;no&gt;" in skipped and "<table>" not in skipped


def test_interval_is_a_t_interval(good: tuple[dict[str, Any], list[Any]]) -> None:
    d = good[0]["difference"]["auroc"]
    values = np.asarray(d["per_seed"])
    half = 4.302652729911275 * values.std(ddof=1) / math.sqrt(3)  # scipy.stats.t.ppf(0.975, 2)
    expected = np.clip([values.mean() - half, values.mean() + half], -1, 1)
    assert (d["low"], d["high"]) == pytest.approx(tuple(expected))


def test_shift_moves_images_by_whole_pixels_and_keeps_their_size() -> None:
    from models.quality.utility import _shifted

    x = torch.zeros(3, 1, 16, 16)
    x[:, :, 8, 8] = 1.0
    moved = _shifted(x, 3, torch.Generator().manual_seed(0))
    assert moved.shape == x.shape
    for image in moved:
        (ys, xs) = torch.nonzero(image[0], as_tuple=True)
        assert len(ys) == 1 and abs(int(ys[0]) - 8) <= 3 and abs(int(xs[0]) - 8) <= 3  # one pixel, moved a little
    assert any(not torch.equal(m, x[0]) for m in moved)


def test_a_real_only_classifier_below_chance_casts_doubt_on_the_verdict(demo: dict[str, np.ndarray]) -> None:
    """Held-out labels swapped: trained on real slices, the classifier ranks them below chance; the result says
    that the held-out set cannot judge the difference."""
    swapped = 1 - demo["y_heldout"]
    result = utility_test(demo["train"], demo["y_train"], demo["heldout"], swapped, CLASSES,
                          _synthesizer(demo["pool"]), FAST)  # fmt: skip
    assert result["arms"]["real"]["auroc"]["mean"] < 0.5
    assert result["caution"] is not None and "below chance" in result["caution"]
