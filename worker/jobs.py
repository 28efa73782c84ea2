"""RQ job functions. ``worker.jobs.train`` is enqueued by dotted path from the API.

Runs in RQ's work horse (a forked child): torch is imported here, inside the function, so the
worker's parent process never initialises PyTorch (or CUDA) before it forks.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from redis.exceptions import RedisError
from rq import get_current_job
from rq.job import Job

from models.platform.redisconn import fail_fast
from models.platform.schemas import CANCEL_KEY_FMT, DatasetInfo, JobProgress, TrainSpec
from models.platform.settings import Settings, get_settings
from models.platform.store import Store

log = logging.getLogger(__name__)


class JobReporter:
    """``progress_fn`` and ``abort_fn`` for a running RQ job, throttled to one Redis write/read a second.

    Redis outages: progress writes and the per-step cancellation check go through a fail-fast client
    and are skipped (logged) while Redis is away, so training never waits for it. The writes a job
    cannot do without (its end: ``done`` with the model version, ``canceled``) and the checks between
    phases go through the job's own connection, which waits the outage out (``OutageRetry``).
    """

    def __init__(self, job: Job, interval_s: float = 1.0) -> None:
        self.job = job
        self.interval_s = interval_s
        self.cancel_key = CANCEL_KEY_FMT.format(job_id=job.id)
        self.fast = fail_fast(job.connection)
        self._last_write = 0.0
        self._last_check = 0.0
        self._unsaved = False  # a progress write failed and none has succeeded since

    def evaluation_progress(self, what: str, done: int, total: int) -> None:
        """The evaluation's ``progress_fn``: the metric (or phase) being computed, as the job's detail."""
        self.phase("evaluating", detail=f"{what} ({done + 1} of {total})")

    def phase(self, phase: str, durable: bool = False, **fields: Any) -> None:
        progress = dict(self.job.meta.get("progress") or {})
        progress.update(phase=phase, **fields)
        self.job.meta["progress"] = progress
        if durable:
            self.job.save_meta()  # RQ never saves meta when the job ends: this write must land
        else:
            self._save()

    def progress(self, fields: dict[str, Any]) -> None:
        now = time.monotonic()
        if now - self._last_write < self.interval_s and fields.get("step") != fields.get("steps"):
            return
        self._last_write = now
        self.job.meta["progress"] = JobProgress.model_validate(fields).model_dump()
        self._save()

    def _save(self) -> None:
        try:
            self.fast.hset(self.job.key, "meta", self.job.serializer.dumps(self.job.meta))
        except RedisError as exc:  # a Redis restart must not hold the training up
            if not self._unsaved:
                log.warning("job %s: progress not saved while Redis is away (%s); training goes on", self.job.id, exc)
            self._unsaved = True
            return
        if self._unsaved:
            log.info("job %s: progress saved again", self.job.id)
            self._unsaved = False

    def should_abort(self) -> bool:
        now = time.monotonic()
        if now - self._last_check < self.interval_s:
            return False
        self._last_check = now
        try:
            return bool(self.fast.exists(self.cancel_key))
        except RedisError:
            return False  # Redis unreachable: no cancellation can have been asked for that we could see

    def cancel_requested(self) -> bool:
        return bool(self.job.connection.exists(self.cancel_key))

    def mark_canceled(self) -> dict[str, Any]:
        self.job.meta["canceled"] = True
        self.phase("canceled", durable=True)
        self.job.connection.delete(self.cancel_key)
        log.info("job %s canceled", self.job.id)
        return {"canceled": True}

    def mark_done(self, version: str, active: bool, steps: int) -> dict[str, Any]:
        self.job.meta["model_version"] = version
        self.phase("done", durable=True, detail=None)
        return {"model_version": version, "active": active, "steps": steps}


@dataclass(frozen=True)
class TrainingContext:
    """What a job's phases share: the store, the settings, the dataset and its training rows, the device."""

    store: Store
    settings: Settings
    dataset: DatasetInfo
    images: np.ndarray
    labels: np.ndarray  # the training rows' class indices
    device: Any  # torch.device (torch is imported in the work horse only)
    workdir: Path
    reporter: JobReporter


def evaluate_staged(ctx: TrainingContext, staged: Path) -> dict[str, Any]:
    """The quality report of the staged version, against the dataset's held-out split."""
    from models.platform.sampling import choose_providers
    from models.quality.evaluation import EvalConfig, RealImages, evaluate

    dataset = ctx.dataset
    heldout, heldout_labels = ctx.store.load_dataset(dataset.id, split="heldout")
    labelled = len(dataset.classes) > 1  # class indices mean something only when there are classes
    real = RealImages(
        heldout=heldout,
        heldout_source=f"held-out split of dataset {dataset.id} ({dataset.name}), never used in training",
        train=ctx.images,
        train_source=f"training split of dataset {dataset.id}",
        heldout_labels=heldout_labels if labelled else None,
        train_labels=ctx.labels if labelled else None,
        heldout_slabs=dataset.heldout_in_slabs,
    )
    config = EvalConfig(
        synthetic_count=ctx.settings.eval_synthetic_count,
        fid_weights=ctx.settings.fid_weights,
        device=ctx.device.type,
        providers=choose_providers(ctx.settings.onnx_provider),
        utility_budget_s=ctx.settings.utility_budget_s,
    )
    samples = ctx.workdir / "samples"
    reporter = ctx.reporter
    return evaluate(staged, staged, real, config, samples_dir=samples, progress_fn=reporter.evaluation_progress,
                    abort_fn=reporter.should_abort)  # fmt: skip


def train(spec: dict[str, Any]) -> dict[str, Any]:
    """Train a GAN for ``spec``, export and publish it as a model version. Resumes from a checkpoint."""
    from models.gan.publish import publish
    from models.gan.training import TrainingAborted, select_device
    from models.gan.training import train as run_training

    job = get_current_job()
    if job is None:
        raise RuntimeError("worker.jobs.train must run inside an RQ job")
    settings = get_settings()
    store = Store(settings.home).ensure()
    device = select_device(settings.device)
    # "auto" is the "standard" preset on a GPU and "quick" on a CPU: the worker decides, knowing its device.
    train_spec = TrainSpec.model_validate(spec, context={"gpu": device.type == "cuda", "revalidate": True})
    reporter = JobReporter(job)
    if reporter.cancel_requested():
        return reporter.mark_canceled()
    published = store.version_of_job(job.id)
    if published is not None:  # an earlier run published, then died before RQ recorded its success
        log.info("job %s: already published as %s; not training again", job.id, published.version)
        return reporter.mark_done(published.version, store.active_version() == published.version, published.steps)

    # -- loading -----------------------------------------------------------------------------------
    reporter.phase("loading")
    dataset = store.get_dataset(train_spec.dataset)
    problem = train_spec.check_dataset(dataset)  # the API checked it too; a hand-enqueued spec may not have been
    if problem is not None:
        raise ValueError(problem)
    images, labels = store.load_dataset(train_spec.dataset, split="train")  # never the held-out split
    ctx = TrainingContext(store, settings, dataset, images, labels, device, store.job_dir(job.id), reporter)
    log.info("job %s: training %s (preset %s) on %s (%d training images of %d) on %s", job.id,
             train_spec.architecture, train_spec.preset_used, dataset.id, len(images), dataset.images,
             ctx.device)  # fmt: skip
    scorer = None
    if train_spec.snapshots:
        from models.quality.snapshots import SnapshotScorer

        scorer = SnapshotScorer(images, train_spec.image_size, train_spec.latent_dim, train_spec.seed,
                                labels=labels if train_spec.conditional else None)  # fmt: skip

    # -- training, then exporting, evaluating and publishing ------------------------------------------
    every = train_spec.checkpoint_every or settings.checkpoint_every_steps
    try:
        result = run_training(train_spec, images, ctx.workdir, labels=labels, num_classes=len(dataset.classes),
                              device=ctx.device, checkpoint_every=every, progress_fn=reporter.progress,
                              abort_fn=reporter.should_abort, score_fn=scorer)  # fmt: skip
        if reporter.cancel_requested():
            return reporter.mark_canceled()
        reporter.phase("exporting", detail=None)
        evaluate = partial(evaluate_staged, ctx)
        version, active = publish(store, result, train_spec, dataset, job.id, ctx.workdir, evaluate=evaluate)
    except TrainingAborted:
        return reporter.mark_canceled()
    return reporter.mark_done(version, active, result.step)
