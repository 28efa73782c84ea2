"""The utility test of a quality report: does adding synthetic slices help a detector trained on few real ones?

One small fixed CNN is trained three ways, and each is scored on the held-out REAL slices: ``real`` (the
real training split), ``real+synthetic`` (every class topped up with synthetic slices to the size of the
largest: augmentation utility, as in Frid-Adar et al. 2018, GAN-made lesions added to a small labelled set
for liver-lesion classification) and ``synthetic`` (synthetic slices only, as many per class as the largest
real class: train on synthetic, test on real, "TSTR", Esteban et al. 2017).

Metrics (scikit-learn): AUROC (two classes: the minority one, with the fewest real training slices, ties to
the larger index, is positive; more: macro one-vs-rest), balanced accuracy, F1 of the minority class; mean
± sd over seeds. Seed ``k`` is paired across arms: the same initialisation and order generator, and class
position ``j`` draws ``synthesize(index, n, synthetic_seed + SEED_STRIDE * (k * classes + j))`` (``real+
synthetic`` takes the first ones). The effect is the paired difference ``real+synthetic`` − ``real`` with a
95 % t-interval (clipped to [−1, 1]); the verdict reads the minority-class F1's: "helped" (above 0), "hurt"
(below 0) or "no clear effect", with a ``caution`` when AUROC moved clearly the other way.

Two seeds always run (an interval needs two); each further one only when it would end within
``budget_s`` at the mean seed time so far. Untestable inputs (fewer than 2 classes, a class without real
training or held-out slices, unknown labels) raise ``UtilitySkipped``, a ``ValueError``; a report stores
``skipped_section(str(error))`` instead. Deterministic on the CPU (RNG state restored; torch threads as set).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import t as student_t
from sklearn.metrics import balanced_accuracy_score, f1_score, roc_auc_score
from torch import nn

from models.gan.training import TrainingAborted, prepare_images

SynthesizeFn = Callable[[int, int, int], np.ndarray]  # (class index, count, seed) -> uint8 [count, H, W]
AbortFn = Callable[[], bool]
ProgressFn = Callable[[str, int, int], None]  # (what is being done, fits done, fits in all)
Labels = tuple[np.ndarray, np.ndarray]  # class positions of the training and the held-out slices
Scores = dict[str, dict[str, float]]  # arm -> metric -> value, of one seed
ArmData = dict[str, tuple[torch.Tensor, torch.Tensor]]  # arm -> (images, class positions) it trains on

ARMS = {
    "real": "(a) real training slices only",
    "real+synthetic": "(b) real + synthetic slices balancing the classes",
    "synthetic": "(c) synthetic slices only",
}
METRICS = ("auroc", "balanced_accuracy", "f1_minority")
CONFIDENCE = 0.95
MIN_SEEDS = 2  # always run: a paired t-interval needs two
SEED_STRIDE = 100_000  # synthesize's seeds of two draws never meet when it uses seed + i for image i
PREDICT_CHUNK = 256
PROGRESS = "utility test"


class UtilitySkipped(ValueError):
    """The inputs cannot be tested; ``str`` says why (``skipped_section`` turns it into the report's section)."""


@dataclass
class UtilityConfig:
    seeds: int = 5  # classifier seeds per arm (paired across arms)
    budget_s: float = 120.0  # no new seed past this (the first two always run)
    size: int = 64  # the classifier's input side (area resize down, bilinear up)
    # Measured on the demo slices with a painted lesion (60 real training slices, 15 of them lesions, 19 held-out,
    # 64 px, 3 seeds): held-out AUROC of the synthetic-only arm 0.69 / 0.75 / 0.80 / 0.92 / 0.94 after 10 / 30 /
    # 40 / 60 / 100 epochs, of the real+synthetic arm 0.70 / 0.78 / 0.79 / 0.83 / 0.90: most of the gain by 60,
    # at about 14 s per seed (three fits) on one busy CPU core, 100 epochs would cost 60 % more.
    epochs: int = 60
    batch_size: int = 32
    learning_rate: float = 2e-3
    flips: bool = True  # random horizontal flips while training
    # Random translations of up to this share of the side while training (0: none). Off by default: on the
    # painted-disc test set at 32 px it cost AUROC (0.98 -> 0.70 in 60 epochs); on the labelled demo (one
    # volume, 13 held-out slices) it moved arm (a)'s AUROC from 0.36 to 0.56, within that set's noise.
    shift: float = 0.0
    seed: int = 0  # classifier seed k is seed + k
    synthetic_seed: int = 1_000_000  # away from the seeds 0... that the report's synthetic side uses
    device: str = "cpu"  # deterministic on the CPU only


def skipped_section(why: str) -> dict[str, Any]:
    """The section of a report whose utility test did not run."""
    return {"skipped": True, "why": why}


def _network(classes: int) -> nn.Module:
    """The classifier of ``models.quality.metrics`` (its two-sample test) with one output per class."""
    layers: list[nn.Module] = []
    for c_in, c_out in ((1, 16), (16, 32), (32, 64)):
        layers += [nn.Conv2d(c_in, c_out, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, classes))


def describe(config: UtilityConfig, classes: int) -> str:
    return (
        f"CNN of 3 strided 4x4 convolutions (16, 32, 64 channels) + global average pooling + linear to {classes} "
        f"classes; Adam lr {config.learning_rate:g}, {config.epochs} epochs, batch {config.batch_size}"
        f"{', random horizontal flips' if config.flips else ''}"
        f"{f', random shifts up to {round(config.shift * config.size)} px' if config.shift else ''}; "
        f"{config.size} x {config.size} px input"
    )


def _fit_predict(
    x: torch.Tensor, y: torch.Tensor, x_test: torch.Tensor, classes: int, seed: int, config: UtilityConfig
) -> np.ndarray:
    """Train a fresh classifier (initialisation and order from ``seed``); class probabilities of ``x_test``."""
    device = torch.device(config.device)
    x, y = x.to(device), y.to(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _network(classes).to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
        order = torch.Generator().manual_seed(seed)
        model.train()
        for _ in range(config.epochs):
            for batch in torch.randperm(len(x), generator=order).split(config.batch_size):
                xb = x[batch.to(device)]
                if config.flips:
                    flip = (torch.rand(len(batch), generator=order) < 0.5).to(device)
                    xb = torch.where(flip[:, None, None, None], xb.flip(-1), xb)
                if most := round(config.shift * config.size):
                    xb = _shifted(xb, most, order)
                loss = F.cross_entropy(model(xb), y[batch.to(device)])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        model.eval()
        with torch.no_grad():
            logits = torch.cat([model(chunk.to(device)).cpu() for chunk in x_test.split(PREDICT_CHUNK)])
    probs = torch.softmax(logits.double(), dim=1).numpy()
    return probs / probs.sum(axis=1, keepdims=True)


def _shifted(x: torch.Tensor, most: int, gen: torch.Generator) -> torch.Tensor:
    """Each image moved by a random whole-pixel offset of up to ``most`` px on each axis (zeros come in): the
    classifier must find what tells the classes apart wherever it is, not remember where anatomy sits."""
    dy, dx = (torch.randint(-most, most + 1, (2, len(x)), generator=gen)).tolist()
    padded = F.pad(x, (most, most, most, most))
    size = x.shape[-1]
    return torch.stack([padded[i, :, most + a : most + a + size, most + b : most + b + size]
                        for i, (a, b) in enumerate(zip(dy, dx, strict=True))])  # fmt: skip


def _scores(y: np.ndarray, probs: np.ndarray, minority: int) -> dict[str, float]:
    """The metrics of one fit; ``y`` and ``minority`` are class positions (0..C-1)."""
    classes = probs.shape[1]
    pred = probs.argmax(axis=1)
    if classes == 2:
        auroc = roc_auc_score(y == minority, probs[:, minority])
    else:
        auroc = roc_auc_score(y, probs, multi_class="ovr", average="macro", labels=list(range(classes)))
    return {
        "auroc": float(auroc),
        "balanced_accuracy": float(balanced_accuracy_score(y, pred)),
        "f1_minority": float(f1_score(y == minority, pred == minority, zero_division=0)),
    }


def _classes(classes: dict[str, int], train: np.ndarray, heldout: np.ndarray) -> tuple[list[str], list[int], Labels]:
    """Names and indices in index order, and both label sets as positions 0..C-1; raises when untestable."""
    names, indices = [n for n, _ in sorted(classes.items(), key=lambda c: c[1])], sorted(classes.values())
    if len(names) < 2:
        raise UtilitySkipped(f"a classifier needs at least 2 classes, the dataset has {len(names)}")
    lookup, positions = {index: j for j, index in enumerate(indices)}, []
    for labels, what in ((train, "real training slices"), (heldout, "held-out slices to test on")):
        labels = np.asarray(labels).astype(np.int64).ravel()
        if unknown := sorted({int(v) for v in np.unique(labels)} - set(lookup)):
            raise UtilitySkipped(f"labels {unknown} are not among the classes' indices {indices}")
        positions.append(np.array([lookup[int(v)] for v in labels], dtype=np.int64))
        if missing := [name for j, name in enumerate(names) if not (positions[-1] == j).any()]:
            raise UtilitySkipped(f"class {missing[0]!r} has no {what}")
    return names, indices, (positions[0], positions[1])


def _draw(synthesize: SynthesizeFn, indices: list[int], count: int, k: int, config: UtilityConfig) -> list[np.ndarray]:
    """``count`` synthetic slices of every class for seed ``k``."""
    draws = []
    for position, index in enumerate(indices):
        seed = config.synthetic_seed + SEED_STRIDE * (k * len(indices) + position)
        images = np.asarray(synthesize(index, count, seed))
        if images.dtype != np.uint8 or images.ndim != 3 or len(images) != count:
            raise ValueError(
                f"synthesize({index}, {count}, {seed}) gave {images.dtype} {images.shape}, not uint8 [count, H, W]"
            )
        draws.append(images)
    return draws


def _arm_data(
    x_real: torch.Tensor, y_real: np.ndarray, synthetic: list[np.ndarray], counts: list[int], size: int
) -> ArmData:
    """The training set of each arm for one seed (the synthetic slices of class position j: ``synthetic[j]``)."""
    top, cpu = max(counts), torch.device("cpu")
    alone = [prepare_images(images, size, cpu) for images in synthetic]
    added = [x[: top - n] for x, n in zip(alone, counts, strict=True)]
    y = torch.from_numpy(y_real)
    return {
        "real": (x_real, y),
        "real+synthetic": (
            torch.cat([x_real, *added]),
            torch.cat([y, *(torch.full((len(x),), j, dtype=torch.int64) for j, x in enumerate(added))]),
        ),
        "synthetic": (torch.cat(alone), torch.arange(len(counts)).repeat_interleave(top)),
    }


def _interval(values: list[float]) -> dict[str, Any]:
    """Mean and the 95 % t-interval of paired differences, clipped to [−1, 1]."""
    d = np.asarray(values, dtype=np.float64)
    mean, half = float(d.mean()), 0.0
    if len(d) > 1:
        half = float(student_t.ppf(0.5 + CONFIDENCE / 2, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d)))
    low, high = max(-1.0, mean - half), min(1.0, mean + half)  # a difference of two scores in [0, 1]
    return {"mean": mean, "low": low, "high": high, "per_seed": [float(v) for v in d]}


def _spread(values: list[float]) -> dict[str, Any]:
    return {"mean": float(np.mean(values)), "sd": float(np.std(values, ddof=1)), "per_seed": list(values)}


def _signed(value: float) -> str:
    return f"{value:+.2f}".replace("-", "−")


def _summary(added: dict[str, int], minority: str, f1: dict[str, Any], seeds: int, verdict: str) -> str:
    parts = [f"{n} synthetic {name!r}" for name, n in added.items() if n > 0]
    what = (
        f"Adding {', '.join(parts[:-1]) + ' and ' + parts[-1] if len(parts) > 1 else parts[0]} slices"
        if parts
        else "The real classes are already balanced, so nothing was added: the real+synthetic arm"
    )
    return (
        f"{what} changed minority-class ({minority!r}) F1 by {_signed(f1['mean'])} ({CONFIDENCE * 100:.0f} % "
        f"interval {_signed(f1['low'])} to {_signed(f1['high'])}) over {seeds} seeds: {verdict}."
    )


def _verdict(f1: dict[str, Any]) -> str:
    return "helped" if f1["low"] > 0 else "hurt" if f1["high"] < 0 else "no clear effect"


def _caution(difference: dict[str, dict[str, Any]], real_auroc: float) -> str | None:
    """When the real-only classifier ranks below chance (the held-out slices cannot judge it), or AUROC moved
    clearly the other way from the verdict (the F1 change is then mostly a moved decision threshold)."""
    f1, auroc = difference["f1_minority"], difference["auroc"]
    if real_auroc < 0.5:
        return (
            f"Caution: trained on the real slices alone, the classifier ranks the held-out slices below chance "
            f"(AUROC {real_auroc:.2f}): the held-out set is too small, or its slices resemble training slices of "
            "the other class (neighbouring slices of one volume); read every difference here as noise."
        )
    if (f1["low"] > 0 and auroc["high"] < 0) or (f1["high"] < 0 and auroc["low"] > 0):
        return (
            f"Caution: AUROC changed by {_signed(auroc['mean'])} ({_signed(auroc['low'])} to {_signed(auroc['high'])})"
            ", the other way: the classifier ranks the slices "
            f"{'worse' if auroc['high'] < 0 else 'better'}, and the F1 change comes from how often it predicts "
            "the minority class (check that the synthetic slices show their class)."
        )
    return None


def _run(
    arm_data: Callable[[int], ArmData],
    test: tuple[torch.Tensor, np.ndarray],
    minority: int,
    config: UtilityConfig,
    total: int,
    abort_fn: AbortFn | None,
    progress_fn: ProgressFn | None,
) -> list[Scores]:
    """Every arm's metrics per seed while the budget allows (``total``: the fits planned). The real+synthetic arm
    is the real one again when nothing was added (same data, same seed)."""
    started, per_seed, done = time.perf_counter(), list[Scores](), 0
    for k in range(config.seeds):
        if k >= MIN_SEEDS and (time.perf_counter() - started) * (k + 1) / k > config.budget_s:
            break  # the next seed would end past the budget
        data, scores = arm_data(k), Scores()
        for arm, (x, y) in data.items():
            if arm == "real+synthetic" and len(x) == len(data["real"][0]):
                scores[arm] = dict(scores["real"])
                continue
            if abort_fn is not None and abort_fn():
                raise TrainingAborted(f"{PROGRESS} aborted after {done} of {total} classifier fits")
            classes = int(test[1].max()) + 1  # every class has held-out slices (checked)
            probs = _fit_predict(x, y, test[0], classes, config.seed + k, config)
            scores[arm], done = _scores(test[1], probs, minority), done + 1
            if progress_fn is not None:
                progress_fn(PROGRESS, done, total)
        per_seed.append(scores)
    if done < total and progress_fn is not None:
        progress_fn(PROGRESS, done, done)  # stopped by the budget: complete
    return per_seed


def utility_test(
    train_images: np.ndarray,
    train_labels: np.ndarray,
    heldout_images: np.ndarray,
    heldout_labels: np.ndarray,
    classes: dict[str, int],
    synthesize: SynthesizeFn,
    config: UtilityConfig | None = None,
    abort_fn: AbortFn | None = None,
    progress_fn: ProgressFn | None = None,
) -> dict[str, Any]:
    """The utility section of a report (see the module docstring); raises ``UtilitySkipped`` on untestable input
    and ``TrainingAborted`` when ``abort_fn`` returns True (checked before every classifier fit)."""
    config, started = config or UtilityConfig(), time.perf_counter()
    if config.seeds < MIN_SEEDS:
        raise ValueError(f"the utility test needs at least {MIN_SEEDS} seeds for an interval, got {config.seeds}")
    names, indices, (y_train, y_test) = _classes(classes, train_labels, heldout_labels)
    counts = [int((y_train == j).sum()) for j in range(len(names))]
    minority, top = max(range(len(names)), key=lambda j: (-counts[j], j)), max(counts)
    x_real = prepare_images(train_images, config.size, torch.device("cpu"))
    x_test = prepare_images(heldout_images, config.size, torch.device("cpu"))

    def arm_data(k: int) -> ArmData:
        return _arm_data(x_real, y_train, _draw(synthesize, indices, top, k, config), counts, config.size)

    total = config.seeds * (3 if min(counts) < top else 2)
    per_seed = _run(arm_data, (x_test, y_test), minority, config, total, abort_fn, progress_fn)
    heldout = [int((y_test == j).sum()) for j in range(len(names))]
    return {**_result(per_seed, names, (counts, heldout), minority, config), "seconds": time.perf_counter() - started}


def _result(
    per_seed: list[Scores], names: list[str], counts: tuple[list[int], list[int]], minority: int, config: UtilityConfig
) -> dict[str, Any]:
    top, n = max(counts[0]), len(per_seed)
    arms = {
        arm: {"label": label, **{m: _spread([s[arm][m] for s in per_seed]) for m in METRICS}}
        for arm, label in ARMS.items()
    }
    difference = {m: _interval([s["real+synthetic"][m] - s["real"][m] for s in per_seed]) for m in METRICS}
    added = {name: top - c for name, c in zip(names, counts[0], strict=True)}
    verdict = _verdict(difference["f1_minority"])
    return {
        "skipped": False,
        "verdict": verdict,
        "summary": _summary(added, names[minority], difference["f1_minority"], n, verdict),
        "caution": _caution(difference, float(np.mean([s["real"]["auroc"] for s in per_seed]))),
        "minority": names[minority],
        "auroc": "minority class as positive" if len(names) == 2 else "macro one-vs-rest",
        "counts": {
            "train": dict(zip(names, counts[0], strict=True)),
            "heldout": dict(zip(names, counts[1], strict=True)),
        },
        "synthetic_added": added,
        "synthetic_only": dict.fromkeys(names, top),
        "arms": arms,
        "difference": difference,
        "confidence": CONFIDENCE,
        "seeds_run": n,
        "seeds_planned": config.seeds,
        "stopped_by_budget": n < config.seeds,
        "classifier": describe(config, len(names)),
        "config": asdict(config),
    }
