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

from models.gan.training import HISTORY, TrainingAborted, prepare_images
from models.platform.grids import grid, to_uint8
from models.platform.sampling import open_session, synthesize
from models.platform.schemas import ModelManifest
from models.platform.store import REPORT_JSON, REPORT_PLOTS, atomic_write_json
from models.quality import plots as report_plots
from models.quality.metrics import MEANINGS, METRICS, EvalInputs, compute, nearest_training
from models.report.summary import summarize

log = logging.getLogger(__name__)

REPORT_FORMAT = 1
SMALL_REAL_SET = 50  # below this many real images, the report warns that the tests have little power

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
    epoch_grids: int = 10  # per-epoch sample grids shown, evenly spaced, the last one always


@dataclass
class RealImages:
    """The real side of an evaluation: uint8 ``[N, S, S]`` images and where they came from."""

    heldout: np.ndarray
    heldout_source: str
    train: np.ndarray | None = None  # None: not available (memorization is not computed)
    train_source: str | None = None
    label: str = "held-out"  # how plots name the real side


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
    total = len(names) + 2  # synthesis, the metrics, the plots

    def step(what: str, done: int) -> None:
        if abort_fn is not None and abort_fn():
            raise EvaluationAborted(f"evaluation aborted while {what}")
        if progress_fn is not None:
            progress_fn(what, done, total)

    # -- Phase 1: synthetic images, and the real ones at the model's size -----------------------
    step("synthesizing", 0)
    t0 = time.perf_counter()
    session = open_session(model_dir / "generator.onnx", config.providers)
    synthetic = synthesize(session, manifest.latent_dim, config.synthetic_count, config.seed)
    provider = session.get_providers()[0]
    synthesis_s = time.perf_counter() - t0
    heldout = at_model_size(real.heldout, manifest.image_size)
    train = at_model_size(real.train, manifest.image_size)

    # -- Phase 2: the metrics -------------------------------------------------------------------
    inputs: EvalInputs | None = None
    why_not: str | None = None
    if heldout is None or len(heldout) < 2:
        why_not = (
            f"only {0 if heldout is None else len(heldout)} real image(s) ({real.heldout_source}); "
            "the metrics need at least 2"
        )
    elif len(synthetic) < 2:
        why_not = f"only {len(synthetic)} synthetic image(s); the metrics need at least 2"
    else:
        train_ok = train if train is not None and len(train) >= 2 else None
        inputs = EvalInputs(train_ok, heldout, synthetic, config.seed, config.fid_weights, config.device)
    t0 = time.perf_counter()
    if inputs is not None:
        metrics = compute(names, inputs, on_metric=lambda name, i: step(name, 1 + i))
    else:
        metrics = {name: {"computed": False, "reason": why_not, "seconds": 0.0} for name in names}
    metrics_s = time.perf_counter() - t0

    # -- Phase 3: plots -------------------------------------------------------------------------
    step("plots", total - 1)
    t0 = time.perf_counter()
    plots_dir = out_dir / REPORT_PLOTS
    plots_dir.mkdir(parents=True, exist_ok=True)
    plots: dict[str, str] = {}
    spec = manifest.spec or {}
    history = _loss_history(model_dir, manifest)
    steps_per_epoch = manifest.steps // manifest.epochs if manifest.epochs else None
    report_plots.loss_curves(
        history.get("d_loss", []), history.get("g_loss", []), steps_per_epoch, plots_dir / "loss_curves.png"
    )
    plots["loss_curves"] = f"{REPORT_PLOTS}/loss_curves.png"
    epochs = _epoch_grids(samples_dir, plots_dir / "epochs", config.epoch_grids)
    grid(synthetic[:64]).save(plots_dir / "samples_synthetic.png")
    plots["samples_synthetic"] = f"{REPORT_PLOTS}/samples_synthetic.png"
    hist_sets = [("synthetic", synthetic)]
    if heldout is not None:
        grid(heldout[:64]).save(plots_dir / "samples_real.png")
        plots["samples_real"] = f"{REPORT_PLOTS}/samples_real.png"
        hist_sets.insert(0, (f"real: {real.label}", heldout))
    if train is not None:
        hist_sets.insert(1, ("real: training", train))
    report_plots.intensity_histograms(hist_sets, plots_dir / "intensity_histograms.png")
    plots["intensity_histograms"] = f"{REPORT_PLOTS}/intensity_histograms.png"
    memo = metrics.get("memorization", {})
    threshold = memo.get("threshold") if memo.get("computed") else None
    pairs = _pairs(inputs, config.closest_pairs, config.seed, threshold) if inputs is not None else []
    if pairs and inputs is not None and inputs.real_train is not None:
        report_plots.closest_pairs(synthetic, inputs.real_train, pairs, plots_dir / "closest_pairs.png")
        plots["closest_pairs"] = f"{REPORT_PLOTS}/closest_pairs.png"
    plots_s = time.perf_counter() - t0

    real_count = 0 if heldout is None else len(heldout)
    notes = []
    if 2 <= real_count < SMALL_REAL_SET:
        notes.append(
            f"Only {real_count} real images to compare with: the classifier test, FID and KID have little "
            "statistical power at this size. Read each value next to its real-vs-real reference."
        )
    if why_not:
        notes.append(f"No metric was computed: {why_not}.")
    report: dict[str, Any] = {
        "format": REPORT_FORMAT,
        "created": datetime.now(UTC).isoformat(),
        "model": {
            "version": manifest.version,
            "architecture": manifest.architecture,
            "image_size": manifest.image_size,
            "latent_dim": manifest.latent_dim,
            "dataset": manifest.dataset,
            "job_id": manifest.job_id,
            "epochs": manifest.epochs,
            "steps": manifest.steps,
            "augment": bool(spec.get("augment", False)),
        },
        "data": {
            "real": {"source": real.heldout_source, "count": real_count},
            "training": {"source": real.train_source, "count": None if train is None else len(train)},
            "synthetic": {
                "count": len(synthetic),
                "first_seed": config.seed,
                "last_seed": config.seed + len(synthetic) - 1,
                "provider": provider,
            },
            "image_size": manifest.image_size,
        },
        "metrics": metrics,
        "meanings": {name: MEANINGS.get(name, "") for name in names},
        "summary": summarize(metrics),
        "closest_pairs": pairs,
        "epochs": epochs,
        "plots": plots,
        "notes": notes,
        "seconds": {
            "synthesis": round(synthesis_s, 3),
            "metrics": round(metrics_s, 3),
            "plots": round(plots_s, 3),
            "total": round(time.perf_counter() - started, 3),
        },
    }
    atomic_write_json(out_dir / REPORT_JSON, report)
    log.info("evaluated model %s in %.1f s: %s", manifest.version, report["seconds"]["total"], report["summary"])
    return report
