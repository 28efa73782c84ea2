"""Evaluate a model version: synthesize, compare with real slices, write ``report.json`` and its plots.

``evaluate(model_dir, out_dir, ...)`` reads the version's ``model.json`` and ``generator.onnx``,
draws ``synthetic_count`` images through ONNX Runtime exactly as ``POST /generate?seed=i`` would
(image ``i`` uses seed ``seed + i``), brings the real images to the model's size the way training
did, runs the metrics of ``models.quality.metrics`` and writes into ``out_dir``::

    report.json                       metrics with their references, data sizes, headline summary
    plots/loss_curves.png             D and G loss per step
    plots/epochs/epoch_0001.png ...   fixed-noise sample grids of a few epochs (from the job's run)
    plots/intensity_histograms.png    real and synthetic pixel intensities, overlaid
    plots/closest_pairs.png           the synthetic images nearest to a training image, beside it
    plots/samples_synthetic.png, plots/samples_real.png

The worker runs it on a staged version before publishing (the held-out split of the dataset is
the real side); ``drawai evaluate`` runs it on any folder of real images. ``models.report.page``
turns the result into the page a person reads.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.gan.run import HISTORY
from models.gan.training import TrainingAborted, prepare_images
from models.platform.grids import grid, to_uint8
from models.platform.sampling import open_session, synthesize
from models.platform.schemas import ModelManifest
from models.platform.store import REPORT_JSON, REPORT_PLOTS, atomic_write_json
from models.quality import plots as report_plots
from models.quality.metrics import MEANINGS, METRICS, EvalInputs, compute, nearest_training
from models.quality.per_class import Labelled, class_metrics, collapsed_classes, synthetic_labels, utility_section
from models.quality.snapshots import collapse_flag
from models.report.summary import summarize

log = logging.getLogger(__name__)

REPORT_FORMAT = 1
RECIPE_FIELDS = (
    "preset_used", "loss", "d_norm", "ema", "augment_policy", "ada_target", "r1_gamma", "n_critic", "kimg", "max_epochs"
)  # fmt: skip
COLLAPSE_NOTE = (
    "Mode collapse: the synthetic slices are far more alike than the real slices (diversity check, MS-SSIM). "
    "Do not use them to augment a training set; retrain with more data or another recipe."
)
CLASS_COLLAPSE_NOTE = (
    "Mode collapse in class(es) {classes}: that class's synthetic slices are far more alike than its real slices "
    "(per-class diversity check). Do not use that class's slices for augmentation."
)
SMALL_REAL_SET = 50  # below this many real images, the report warns that the tests have little power
SLAB_NOTE = (
    "The held-out slices are slabs of volumes that training also saw, kept a few slices away from the training "
    "slices (one volume cannot be held out whole). Slices of those volumes between two training slices lie closer "
    "than that, so the memorization test counts even real slices never trained on as likely copies (on the bundled "
    "demo, 33 of 33: scripts/one_volume_memorization.py). Here memorization says how close the synthetic slices "
    "come to the training slices, not whether they copy them; with volumes held out whole it is a copying test."
)

ProgressFn = Callable[[str, int, int], None]  # (what is being done, steps done, steps in all)
AbortFn = Callable[[], bool]


class EvaluationAborted(TrainingAborted):
    """``abort_fn`` asked the evaluation to stop (the job was canceled)."""


@dataclass
class EvalConfig:
    # 500 synthetic images: the size the speed target is set for (500 synthetic and 200 real
    # images at 128 px in under 3 minutes on two CPU cores).
    synthetic_count: int = 500
    seed: int = 0  # synthetic image i is /generate's seed (seed + i); also seeds the classifier and pair picks
    metrics: tuple[str, ...] = ("c2st_auc", "intensity_w1", "diversity_msssim", "memorization", "fid", "kid")
    fid_weights: Path | None = None  # DRAWAI_FID_WEIGHTS
    device: str = "cpu"  # the classifier's and the Inception network's device
    providers: list[str] = field(default_factory=lambda: ["CPUExecutionProvider"])  # ONNX Runtime, for synthesis
    closest_pairs: int = 8  # synthetic/training pairs shown, nearest first
    utility: bool = True  # the utility test (labelled data and a conditional model)
    utility_budget_s: float = 120.0  # no new classifier seed starts past this (DRAWAI_UTILITY_BUDGET_S)
    utility_seeds: int = 5  # classifier seeds per arm
    epoch_grids: int = 10  # per-epoch sample grids shown, evenly spaced, the last one always


@dataclass
class RealImages:
    """The real side of an evaluation: uint8 ``[N, S, S]`` images and where they came from."""

    heldout: np.ndarray
    heldout_source: str
    train: np.ndarray | None = None  # None: not available (memorization is not computed)
    train_source: str | None = None
    label: str = "held-out"  # how plots name the real side
    heldout_labels: np.ndarray | None = None  # class indices (the dataset's sorted class names); None: unlabelled
    train_labels: np.ndarray | None = None
    heldout_slabs: bool = False  # held-out slices are slabs of volumes training saw (the split dropped a gap)


def at_model_size(images: np.ndarray | None, size: int) -> np.ndarray | None:
    """Real images at the model's size, resized the way training resized them (area / bilinear)."""
    if images is None or len(images) == 0:
        return None
    return to_uint8(prepare_images(images, size, torch.device("cpu")).numpy()[:, 0])


def _loss_history(model_dir: Path, manifest: ModelManifest) -> dict[str, Any]:
    """The per-step losses: ``history.json`` of the version, or (a version published before it existed)
    the ``loss_history`` its ``model.json`` carried."""
    path = model_dir / HISTORY
    if path.is_file():
        return dict(json.loads(path.read_text()))
    return dict(getattr(manifest, "loss_history", None) or {})


def _epoch_grids(samples_dir: Path | None, out: Path, count: int) -> list[dict[str, Any]]:
    """Copy up to ``count`` evenly spaced per-epoch grids (the first and the last included)."""
    files = sorted(samples_dir.glob("epoch_*.png")) if samples_dir is not None and samples_dir.is_dir() else []
    if not files or count < 1:
        return []
    shown_count = min(count, len(files))
    picks = sorted({round(i * (len(files) - 1) / max(shown_count - 1, 1)) for i in range(shown_count)})
    out.mkdir(parents=True, exist_ok=True)
    shown = []
    for i in picks:
        src = files[i]
        shutil.copyfile(src, out / src.name)
        shown.append({"epoch": int(src.stem.split("_")[1]), "plot": f"{REPORT_PLOTS}/epochs/{src.name}"})
    return shown


def _pairs(inputs: EvalInputs, count: int, seed: int, threshold: float | None) -> list[dict[str, Any]]:
    if inputs.real_train is None or count < 1:
        return []
    distances, indices = nearest_training(inputs, "synthetic")  # computed once, with memorization
    order = np.argsort(distances, kind="stable")[:count]
    return [
        {
            "synthetic_index": int(i),
            "seed": seed + int(i),
            "training_index": int(indices[i]),
            "distance": float(distances[i]),
            "likely_copy": threshold is not None and float(distances[i]) < threshold,
        }
        for i in order
    ]


@dataclass(frozen=True)
class Images:
    """What an evaluation compares, at the model's size: synthetic, held-out real, training real."""

    synthetic: np.ndarray
    heldout: np.ndarray | None
    train: np.ndarray | None
    provider: str  # ONNX Runtime's provider that drew the synthetic images
    synthetic_labels: np.ndarray | None = None  # a conditional model's class per synthetic image
    session: Any = None  # the ONNX Runtime session (the utility test draws more slices per class)


@dataclass
class Steps:
    """Progress and cancellation between the phases: ``step(what, done)`` of ``total``."""

    total: int
    progress_fn: ProgressFn | None = None
    abort_fn: AbortFn | None = None

    def __call__(self, what: str, done: int) -> None:
        if self.abort_fn is not None and self.abort_fn():
            raise EvaluationAborted(f"evaluation aborted while {what}")
        if self.progress_fn is not None:
            self.progress_fn(what, done, self.total)


def draw_images(model_dir: Path, manifest: ModelManifest, real: RealImages, config: EvalConfig) -> Images:
    session = open_session(model_dir / "generator.onnx", config.providers)
    labels = synthetic_labels(manifest, config.synthetic_count)
    synthetic = synthesize(session, manifest.latent_dim, config.synthetic_count, config.seed, labels=labels)
    size = manifest.image_size
    return Images(synthetic, at_model_size(real.heldout, size), at_model_size(real.train, size),
                  session.get_providers()[0], labels, session)  # fmt: skip


def metric_inputs(images: Images, real: RealImages, config: EvalConfig) -> tuple[EvalInputs | None, str | None]:
    """The metrics' inputs, or None and the reason no metric can be computed."""
    heldout, synthetic, train = images.heldout, images.synthetic, images.train
    if heldout is None or len(heldout) < 2:
        count = 0 if heldout is None else len(heldout)
        return None, f"only {count} real image(s) ({real.heldout_source}); the metrics need at least 2"
    if len(synthetic) < 2:
        return None, f"only {len(synthetic)} synthetic image(s); the metrics need at least 2"
    train_ok = train if train is not None and len(train) >= 2 else None
    return EvalInputs(train_ok, heldout, synthetic, config.seed, config.fid_weights, config.device), None


def write_plots(
    plots_dir: Path, model_dir: Path, manifest: ModelManifest, images: Images, real: RealImages
) -> dict[str, str]:
    """Loss curves, sample grids and intensity histograms; the plots' paths relative to the report."""
    plots_dir.mkdir(parents=True, exist_ok=True)
    history = _loss_history(model_dir, manifest)
    steps_per_epoch = manifest.steps // manifest.epochs if manifest.epochs else None
    d_loss, g_loss = history.get("d_loss", []), history.get("g_loss", [])
    report_plots.loss_curves(d_loss, g_loss, steps_per_epoch, plots_dir / "loss_curves.png")
    grid(images.synthetic[:64]).save(plots_dir / "samples_synthetic.png")
    names = ["loss_curves", "samples_synthetic"]
    hist_sets = [("synthetic", images.synthetic)]
    if images.heldout is not None:
        grid(images.heldout[:64]).save(plots_dir / "samples_real.png")
        names.append("samples_real")
        hist_sets.insert(0, (f"real: {real.label}", images.heldout))
    if images.train is not None:
        hist_sets.insert(1, ("real: training", images.train))
    report_plots.intensity_histograms(hist_sets, plots_dir / "intensity_histograms.png")
    names.append("intensity_histograms")
    return {name: f"{REPORT_PLOTS}/{name}.png" for name in names}


def notes_for(real_count: int, why_not: str | None, heldout_slabs: bool = False) -> list[str]:
    notes = [SLAB_NOTE] if heldout_slabs and not why_not else []
    if 2 <= real_count < SMALL_REAL_SET:
        notes.append(
            f"Only {real_count} real images to compare with: the classifier test, FID and KID have little "
            "statistical power at this size. Read each value next to its real-vs-real reference."
        )
    if why_not:
        notes.append(f"No metric was computed: {why_not}.")
    return notes


def model_section(manifest: ModelManifest) -> dict[str, Any]:
    return {
        "version": manifest.version,
        "architecture": manifest.architecture,
        "image_size": manifest.image_size,
        "latent_dim": manifest.latent_dim,
        "dataset": manifest.dataset,
        "job_id": manifest.job_id,
        "epochs": manifest.epochs,
        "steps": manifest.steps,
        "augment": bool((manifest.spec or {}).get("augment", False)),
        "recipe": {k: (manifest.spec or {}).get(k) for k in RECIPE_FIELDS},
        "augment_p": manifest.augment_p,
        # which snapshot was published and why (None: the last step's generator)
        "snapshot": manifest.snapshot,
    }


def data_section(images: Images, real: RealImages, config: EvalConfig, image_size: int) -> dict[str, Any]:
    n = len(images.synthetic)
    return {
        "real": {"source": real.heldout_source, "count": 0 if images.heldout is None else len(images.heldout)},
        "training": {"source": real.train_source, "count": None if images.train is None else len(images.train)},
        "synthetic": {
            "count": n,
            "first_seed": config.seed,
            "last_seed": config.seed + n - 1,
            "provider": images.provider,
        },
        "image_size": image_size,
    }


def class_sections(
    manifest: ModelManifest,
    images: Images,
    real: RealImages,
    config: EvalConfig,
    inputs: EvalInputs | None,
    step: Steps,
    abort_fn: AbortFn | None,
) -> dict[str, Any]:
    """Per-class metrics and the utility test of a conditional model (None for an unconditional one's classes)."""
    out: dict[str, Any] = {"classes": None, "collapsed_classes": [], "utility": None, "seconds": {}}
    labelled = real.heldout_labels is not None
    if manifest.labels and labelled and inputs is not None:
        step("per class", step.total - 3)
        t0 = time.perf_counter()
        labels = Labelled(images.synthetic_labels, real.heldout_labels, real.train_labels)
        out["classes"] = class_metrics(config.metrics, manifest.labels, images.synthetic, images.heldout,
                                       images.train, labels, inputs)  # fmt: skip
        out["collapsed_classes"] = collapsed_classes(out["classes"])
        out["seconds"]["per_class"] = round(time.perf_counter() - t0, 3)
    if config.utility and labelled:
        if manifest.labels:
            step("utility test", step.total - 2)
        t0 = time.perf_counter()
        out["utility"] = utility_section(manifest, images.session, (images.train, real.train_labels),
                                         (images.heldout, real.heldout_labels),
                                         (config.utility_budget_s, config.utility_seeds), abort_fn)  # fmt: skip
        out["seconds"]["utility"] = round(time.perf_counter() - t0, 3)
    return out


def evaluate(
    model_dir: Path,
    out_dir: Path,
    real: RealImages,
    config: EvalConfig,
    *,
    samples_dir: Path | None = None,
    progress_fn: ProgressFn | None = None,
    abort_fn: AbortFn | None = None,
) -> dict[str, Any]:
    """Evaluate the version in ``model_dir`` against ``real``; write the report into ``out_dir``; return it."""
    started = time.perf_counter()
    manifest = ModelManifest.model_validate_json((model_dir / "model.json").read_bytes())
    names = list(config.metrics)
    if unknown := [n for n in names if n not in METRICS]:
        raise ValueError(f"unknown metrics {unknown}; known: {sorted(METRICS)}")
    conditional = bool(manifest.labels)
    # synthesis, the metrics, per class, the utility test, the plots
    step = Steps(len(names) + 2 + 2 * conditional, progress_fn, abort_fn)
    seconds: dict[str, float] = {}

    # -- Phase 1: synthetic images, and the real ones at the model's size -----------------------
    step("synthesizing", 0)
    t0 = time.perf_counter()
    images = draw_images(model_dir, manifest, real, config)
    seconds["synthesis"] = round(time.perf_counter() - t0, 3)

    # -- Phase 2: the metrics -------------------------------------------------------------------
    t0 = time.perf_counter()
    inputs, why_not = metric_inputs(images, real, config)
    if inputs is not None:
        metrics = compute(names, inputs, on_metric=lambda name, i: step(name, 1 + i))
    else:
        metrics = {name: {"computed": False, "reason": why_not, "seconds": 0.0} for name in names}
    seconds["metrics"] = round(time.perf_counter() - t0, 3)
    sections = class_sections(manifest, images, real, config, inputs, step, abort_fn)
    seconds.update(sections.pop("seconds"))

    # -- Phase 3: plots -------------------------------------------------------------------------
    step("plots", step.total - 1)
    t0 = time.perf_counter()
    plots_dir = out_dir / REPORT_PLOTS
    plots = write_plots(plots_dir, model_dir, manifest, images, real)
    epochs = _epoch_grids(samples_dir, plots_dir / "epochs", config.epoch_grids)
    memo = metrics.get("memorization", {})
    threshold = memo.get("threshold") if memo.get("computed") else None
    pairs = _pairs(inputs, config.closest_pairs, config.seed, threshold) if inputs is not None else []
    if pairs and inputs is not None and inputs.real_train is not None:
        report_plots.closest_pairs(images.synthetic, inputs.real_train, pairs, plots_dir / "closest_pairs.png")
        plots["closest_pairs"] = f"{REPORT_PLOTS}/closest_pairs.png"
    seconds["plots"] = round(time.perf_counter() - t0, 3)

    # -- Phase 4: the report --------------------------------------------------------------------
    seconds["total"] = round(time.perf_counter() - started, 3)
    collapsed_now = collapse_flag(metrics)
    heldout_count = 0 if images.heldout is None else len(images.heldout)
    report: dict[str, Any] = {
        "format": REPORT_FORMAT,
        "created": datetime.now(UTC).isoformat(),
        "model": model_section(manifest),
        "data": data_section(images, real, config, manifest.image_size),
        "metrics": metrics,
        "meanings": {name: MEANINGS.get(name, "") for name in names},
        "summary": summarize(metrics),
        "closest_pairs": pairs,
        "epochs": epochs,
        "plots": plots,
        "collapsed": collapsed_now,
        **sections,  # "classes" (per-class metrics), "collapsed_classes", "utility"
        "notes": notes_for(heldout_count, why_not, real.heldout_slabs and real.train is not None)
        + ([COLLAPSE_NOTE] if collapsed_now else [])
        + [CLASS_COLLAPSE_NOTE.format(classes=", ".join(sections["collapsed_classes"]))]
        * bool(sections["collapsed_classes"]),
        "seconds": seconds,
    }
    atomic_write_json(out_dir / REPORT_JSON, report)
    log.info("evaluated model %s in %.1f s: %s", manifest.version, seconds["total"], report["summary"])
    return report
