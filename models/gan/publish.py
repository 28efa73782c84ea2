"""Turn a finished training run into a model version: ONNX export, parity check, manifest, samples."""

from __future__ import annotations

import importlib.metadata
import logging
import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from models.gan.export import OPSET, check_parity, export_generator, onnx_inputs, sha256_file
from models.gan.run import HISTORY
from models.gan.training import TrainingAborted, TrainResult
from models.platform.schemas import DatasetInfo, LabelInfo, ModelManifest, TrainSpec, class_indices, class_train_counts
from models.platform.store import REPORT_JSON, REPORT_PLOTS, Store, atomic_write_json

log = logging.getLogger(__name__)

# Evaluates a staged version folder (model.json and generator.onnx written) into that folder;
# returns the report (``models.quality.evaluation.evaluate``).
Evaluator = Callable[[Path], dict[str, Any]]


def library_versions() -> dict[str, str]:
    out = {}
    for name in ("drawai", "torch", "onnx", "onnxruntime", "numpy"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def model_labels(dataset: DatasetInfo) -> list[LabelInfo]:
    """A conditional model's classes: name, ONNX label index (sorted names), training images."""
    counts = class_train_counts(dataset)
    return [LabelInfo(name=c, index=i, train_images=counts[c]) for c, i in class_indices(dataset.classes).items()]


def _evaluate_staged(evaluate: Evaluator, staged: Path) -> dict[str, Any]:
    """The manifest's ``quality``: the report's summary, or the error that stopped the evaluation.

    A failed evaluation never loses the trained model: the version is published without a report.
    Cancellation (``TrainingAborted``) propagates, and the staged version is dropped.
    """
    try:
        report = evaluate(staged)
    except TrainingAborted:
        raise
    except Exception as exc:
        log.exception("evaluation failed; publishing the model without a report")
        shutil.rmtree(staged / REPORT_PLOTS, ignore_errors=True)
        (staged / REPORT_JSON).unlink(missing_ok=True)
        return {"error": f"{type(exc).__name__}: {exc}"}
    return {"summary": report["summary"], "report": REPORT_JSON, "seconds": report["seconds"]["total"]}


def publish(
    store: Store,
    result: TrainResult,
    spec: TrainSpec,
    dataset: DatasetInfo,
    job_id: str,
    workdir: Path,
    evaluate: Evaluator | None = None,
) -> tuple[str, bool]:
    """Write the model version, evaluated by ``evaluate`` before anyone can see it; activate it when none is
    active or ``spec.activate``. Returns (version, active).

    Exactly once per job: when ``job_id`` already published a version (a run that died before its
    queue recorded the success), that version is returned and nothing new is written.
    """
    with store.publishing(job_id):
        existing = store.version_of_job(job_id)
        if existing is not None:
            log.info("job %s already published %s; not publishing again", job_id, existing.version)
            return existing.version, store.active_version() == existing.version
        version = _write_version(store, result, spec, dataset, job_id, workdir, evaluate)
    activate = spec.activate or store.active_version() is None
    if activate:
        store.set_active(version)
    log.info("published model version=%s job=%s active=%s", version, job_id, activate)
    return version, activate


def _write_version(
    store: Store,
    result: TrainResult,
    spec: TrainSpec,
    dataset: DatasetInfo,
    job_id: str,
    workdir: Path,
    evaluate: Evaluator | None,
) -> str:
    """Export, check, describe and evaluate the version in staging, then publish it as the next ``v<N>``."""
    with store.staging("model") as staged:
        onnx_path = staged / "generator.onnx"
        export_generator(result.generator, spec.latent_dim, onnx_path)
        diff = check_parity(result.generator, spec.latent_dim, onnx_path, batch=8, seed=spec.seed)
        published = workdir / "samples" / "published.png"  # the exported generator's grid at the fixed noise
        samples = [published] if published.is_file() else sorted((workdir / "samples").glob("epoch_*.png"))
        if samples:
            shutil.copyfile(samples[-1], staged / "samples.png")
        if (workdir / HISTORY).is_file():  # the per-step losses, for the report's loss curves
            shutil.copyfile(workdir / HISTORY, staged / HISTORY)
        manifest = ModelManifest(
            version="pending",  # publish_model assigns v<N>
            architecture=spec.architecture,
            image_size=spec.image_size,
            latent_dim=spec.latent_dim,
            conditional=spec.conditional,
            classes=dataset.classes,
            labels=model_labels(dataset) if spec.conditional else None,
            dataset=dataset.id,
            dataset_sha256=dataset.sha256,
            job_id=job_id,
            spec=spec.model_dump(),
            epochs=result.epoch,
            steps=result.step,
            final_losses={
                "d_loss": result.d_losses[-1] if result.d_losses else None,
                "g_loss": result.g_losses[-1] if result.g_losses else None,
            },
            onnx_sha256=sha256_file(onnx_path),
            onnx_parity_max_abs_diff=diff,
            onnx_opset=OPSET,
            onnx_inputs=onnx_inputs(result.generator),
            library_versions=library_versions(),
            created=datetime.now(UTC).isoformat(),
            trained_on=result.device,
            trained_precision=result.precision,
            snapshot=result.snapshot,
            augment_p=result.augment_p,
        )
        atomic_write_json(staged / "model.json", manifest.model_dump())
        if evaluate is not None:
            manifest.quality = _evaluate_staged(evaluate, staged)
            atomic_write_json(staged / "model.json", manifest.model_dump())
        log.info("job %s: ONNX export matches PyTorch to %.2g", job_id, diff)
        return store.publish_model(staged)
