"""The training loop: one function, labelled phases, ``progress_fn`` / ``abort_fn`` callbacks.

A run lives in a work directory (``jobs/<job id>/`` in the store)::

    checkpoint.pt           models, optimizers, AMP scaler, step, RNG states, spec, loss history
    history.json            the per-step losses (published with the version, not in model.json)
    samples/epoch_0001.png  a grid at fixed noise after every epoch

``train`` resumes from ``checkpoint.pt`` when one is there, and continues exactly where it
stopped: batches are drawn from a per-epoch permutation seeded by ``(seed, epoch)``, noise
from a generator whose state is checkpointed, and the global RNG (dropout) state is saved too.
"""

from __future__ import annotations

import copy
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.gan.conditional import fixed_labels, set_strength, strength_at
from models.gan.losses import GanLoss, make_loss, mode_seeking, r1_penalty
from models.gan.precision import Precision, choose_precision
from models.gan.run import (
    CHECKPOINT,
    Plan,
    Run,
    checkpoint_state,
    make_plan,
    new_run,
    resume,
    save_checkpoint,
    write_history,
)
from models.platform.grids import grid
from models.platform.schemas import TrainSpec

log = logging.getLogger(__name__)

ProgressFn = Callable[[dict[str, Any]], None]
AbortFn = Callable[[], bool]
# Scores a generator (in eval mode) during training: {"score": lower is better, "collapsed": bool, ...}
# (models.quality.snapshots). The training loop only calls it and keeps the best.
ScoreFn = Callable[[nn.Module], dict[str, Any]]
COLLAPSE_WARNING = (
    "mode collapse at step {step}: the samples are far more alike than the real slices (diversity check); "
    "more data, a stronger augmentation or another recipe may help"
)
LOG_EVERY = 10  # steps between reads of the losses off the device (and progress reports)
SAMPLES_N = 16  # the fixed-noise grid after every epoch is 4 x 4


class TrainingAborted(Exception):
    """``abort_fn`` asked the run to stop; the last checkpoint is kept."""


@dataclass
class TrainResult:
    generator: nn.Module
    discriminator: nn.Module
    step: int
    epoch: int
    d_losses: list[float] = field(default_factory=list)
    g_losses: list[float] = field(default_factory=list)
    resumed_from_step: int | None = None
    device: str = "cpu"
    # Which snapshot was published and why ({"step", "score", ..., "reason", "candidates"}); None: the last.
    snapshot: dict[str, Any] | None = None
    augment_p: float | None = None  # the adaptive augmentation probability at the end
    precision: str = "fp32"  # what it trained in (models.gan.precision)


def select_device(preference: str = "auto") -> torch.device:
    """CUDA when asked for ("auto" or "cuda") and present; the CPU otherwise (logged, never an error)."""
    if preference in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda")
    if preference == "cuda":
        log.warning("CUDA requested but not available; training on the CPU")
    return torch.device("cpu")


def prepare_images(images: np.ndarray, size: int, device: torch.device) -> torch.Tensor:
    """uint8 ``[N, S, S]`` -> float ``[N, 1, size, size]`` in ``[-1, 1]`` on ``device``."""
    out = []
    for start in range(0, len(images), 256):  # bounded memory for large memory-mapped sets
        x = torch.from_numpy(np.array(images[start : start + 256], dtype=np.float32)).unsqueeze(1)
        if x.shape[-1] != size:
            x = F.interpolate(x, size=(size, size), mode="area" if x.shape[-1] > size else "bilinear")
        out.append(x / 127.5 - 1.0)
    return torch.cat(out).clamp_(-1, 1).to(device)


def _epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g)


def progress(run: Run, plan: Plan, rate: float | None) -> dict[str, Any]:
    """What ``progress_fn`` is told (the job's progress)."""
    best = run.best["metrics"] if run.best is not None else None
    latest = run.snapshots[-1] if run.snapshots else None
    collapsed = bool(latest.get("collapsed")) if latest is not None else None
    return {
        "phase": "training",
        "epoch": plan.epoch_of(run.step),
        "epochs": plan.epochs,
        "step": run.step,
        "steps": plan.total_steps,
        "d_loss": run.d_losses[-1] if run.d_losses else None,
        "g_loss": run.g_losses[-1] if run.g_losses else None,
        "images_per_s": rate,
        "eta_s": (plan.total_steps - run.step) * plan.batch / rate if rate else None,
        "resumed_from_step": run.resumed_from,
        "augment_p": round(run.ada.p, 4) if run.ada.target is not None else None,
        "r_t": round(run.ada.r_t, 4) if run.ada.r_t is not None else None,
        "snapshot": best,
        "collapsed": collapsed,
        "warning": COLLAPSE_WARNING.format(step=latest["step"]) if collapsed and latest is not None else None,
    }


def save_samples(G: nn.Module, fixed_z: torch.Tensor, path: Path, fixed_y: torch.Tensor | None = None) -> None:
    was_training = G.training
    G.eval()
    device = next(G.parameters()).device
    with torch.no_grad():
        fake = generate(G, fixed_z.to(device), None if fixed_y is None else fixed_y.to(device)).float().cpu().numpy()
    G.train(was_training)
    grid(fake, ncols=4).save(path)


def real_batch(
    data: torch.Tensor, labels: torch.Tensor | None, order: torch.Tensor, i: int, run: Run, spec: TrainSpec
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Batch ``i`` of the epoch's order and its labels (conditional runs); with ``augment``, random horizontal flips
    (axial slices are near-symmetric)."""
    batch = spec.batch_size
    rows = order[i * batch : (i + 1) * batch].to(data.device)
    real = data[rows]
    if spec.augment:
        flip = (torch.rand(batch, generator=run.noise) < 0.5).to(data.device)
        real = torch.where(flip[:, None, None, None], real.flip(-1), real)
    return real, None if labels is None else labels[rows]


def generate(G: nn.Module, z: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
    """``G(z)``, or ``G(z, y)`` for a conditional generator."""
    return G(z) if y is None else G(z, y)


def _conditioned(D: nn.Module, y: torch.Tensor | None) -> Callable[[torch.Tensor], torch.Tensor]:
    """D as a function of images only (what the losses' penalties call): ``D(x, y)`` for a conditional D."""
    return D if y is None else (lambda x: D(x, y))


def _d_real(run: Run, x: torch.Tensor, y: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """D's logits on reals, and the reconstruction loss of a discriminator that also decodes (fastgan)."""
    decode = getattr(run.D, "forward_with_reconstruction", None)
    if callable(decode):
        logits, rec = decode(x, run.noise) if y is None else decode(x, run.noise, y)
        return logits, rec
    return _conditioned(run.D, y)(x), None


def adversarial_step(
    run: Run,
    loss: GanLoss,
    real: torch.Tensor,
    y: torch.Tensor | None,
    z: torch.Tensor,
    spec: TrainSpec,
    precision: Precision,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One discriminator update and, every ``n_critic``-th step, one generator update; the losses, on the device.

    A conditional run draws its fakes for the real batch's labels ``y`` (the classes in the data's proportions).
    """
    D = _conditioned(run.D, y)
    g_turn = (run.step + 1) % spec.n_critic == 0

    def aug(x: torch.Tensor) -> torch.Tensor:
        return run.ada(x, run.noise) if spec.augment else x

    with precision.autocast():
        with torch.set_grad_enabled(g_turn):  # no graph through G on critic-only steps
            fake = generate(run.G, z, y)
        d_real, d_fake = aug(real), aug(fake.detach())
        real_logits, reconstruction = _d_real(run, d_real, y)
        run.ada.observe(real_logits)
        fake_logits = D(d_fake)
        d_loss = loss.d_loss(real_logits, fake_logits)
        for extra in (reconstruction, loss.regularizer(D, d_real, d_fake)):
            if extra is not None:
                d_loss = d_loss + extra
        if spec.r1_gamma > 0:
            d_loss = d_loss + r1_penalty(D, d_real, spec.r1_gamma)
    run.opt_d.zero_grad(set_to_none=True)
    run.scaler.scale(d_loss).backward()
    run.scaler.step(run.opt_d)

    if g_turn:
        with precision.autocast():
            g_loss = loss.g_loss(D(aug(fake)))
            if spec.mode_seeking > 0 and (seeking := mode_seeking(fake, z, y)) is not None:
                g_loss = g_loss + spec.mode_seeking * seeking
        run.opt_g.zero_grad(set_to_none=True)
        run.scaler.scale(g_loss).backward()
        run.scaler.step(run.opt_g)
        if run.G_ema is not None:
            update_ema(run.G_ema, run.G, spec.ema_beta, (run.step + 1) // spec.n_critic)
    else:  # a critic-only step logs G's loss on this batch's fakes, as D saw them before its update
        g_loss = loss.g_loss(fake_logits.detach())
    run.scaler.update()
    return d_loss.detach(), g_loss.detach()


@torch.no_grad()
def update_ema(ema: nn.Module, G: nn.Module, beta: float, updates: int) -> None:
    """``ema <- beta_t * ema + (1 - beta_t) * G``; ``beta_t`` ramps up to ``beta`` over the first updates (so a
    short run is not dominated by the initial weights); buffers (BatchNorm statistics) are copied."""
    beta_t = min(beta, (1 + updates) / (10 + updates))
    for p_ema, p in zip(ema.parameters(), G.parameters(), strict=True):
        p_ema.lerp_(p.detach(), 1.0 - beta_t)
    for b_ema, b in zip(ema.buffers(), G.buffers(), strict=True):
        b_ema.copy_(b)


def take_snapshot(run: Run, plan: Plan, score_fn: ScoreFn) -> None:
    """Score the generator a version would ship now; keep its weights when it is the best so far."""
    G = run.exported
    was_training = G.training
    G.eval()
    metrics = {"step": run.step, "epoch": plan.epoch_of(run.step), **score_fn(G)}
    G.train(was_training)
    run.snapshots.append(metrics)
    if run.best is None or metrics["score"] < run.best["metrics"]["score"]:
        state = {k: v.detach().to("cpu", copy=True) for k, v in G.state_dict().items()}
        run.best = {"metrics": metrics, "state": state}
    log.info("snapshot at step %d: %s", run.step, {k: v for k, v in metrics.items() if k != "step"})


def _labels(spec: TrainSpec, labels: np.ndarray | None, num_classes: int | None, n: int, device: torch.device) -> tuple[
    torch.Tensor | None, torch.Tensor | None
]:  # fmt: skip
    """The training labels on the device and the sample grid's fixed labels, for a conditional spec (else None)."""
    if not spec.conditional:
        return None, None
    if labels is None or num_classes is None or len(labels) != n:
        raise ValueError("a conditional run needs one class index per training image, and the number of classes")
    label_t = torch.as_tensor(np.asarray(labels, dtype=np.int64), device=device)
    if int(label_t.min()) < 0 or int(label_t.max()) >= num_classes:
        raise ValueError(f"class indices must lie in 0..{num_classes - 1}")
    return label_t, fixed_labels(SAMPLES_N, num_classes)


def flush_losses(run: Run, pending: list[torch.Tensor]) -> None:
    """Move the losses kept on the device into the history: one host sync per logging interval."""
    if pending:
        values = torch.stack(pending).float().cpu().tolist()
        run.d_losses.extend(v[0] for v in values)
        run.g_losses.extend(v[1] for v in values)
        pending.clear()


def final_generator(run: Run) -> tuple[nn.Module, dict[str, Any] | None]:
    """The generator to publish (the best snapshot's weights when snapshots were scored), and why."""
    G = run.exported
    if run.best is None:
        return G, None
    chosen = copy.deepcopy(G).eval()
    chosen.load_state_dict(run.best["state"])
    best = run.best["metrics"]
    why = (
        f"snapshot at step {best['step']} of {len(run.snapshots)} scored: the lowest score ({best['score']:.3f}; "
        "the classifier test's distance from chance against training slices, plus a penalty when the samples are "
        "less diverse than the real slices)"
    )
    return chosen, {**best, "reason": why, "candidates": run.snapshots, "ema": run.G_ema is not None}


def train(
    spec: TrainSpec,
    images: np.ndarray,
    workdir: Path,
    *,
    labels: np.ndarray | None = None,
    num_classes: int | None = None,
    device: torch.device | None = None,
    checkpoint_every: int = 200,
    progress_fn: ProgressFn | None = None,
    abort_fn: AbortFn | None = None,
    score_fn: ScoreFn | None = None,
    precision: Precision | None = None,
    log_every: int = LOG_EVERY,
    threads: int | None = None,
) -> TrainResult:
    """Train ``spec`` on uint8 ``images [N, S, S]``; resume from ``workdir`` when it holds a checkpoint.

    A conditional spec also needs the images' class indices ``labels [N]`` and ``num_classes``.

    ``precision``: overrides what ``spec.precision`` chooses on ``device`` (models.gan.precision); fp16 adds a
    gradient scaler. A checkpoint resumes on any device and in any precision (written on a CPU, resumed on a GPU,
    and back).
    Losses are read off the device, and ``progress_fn`` told, every ``log_every`` steps and at the
    end of every epoch. With ``score_fn`` and ``spec.snapshots``, the best scored snapshot is returned.
    """
    # -- Phase 1: set-up ----------------------------------------------------------------------
    device = device or select_device()
    if device.type == "cpu":
        torch.set_num_threads(threads or os.cpu_count() or 1)  # all cores unless told otherwise
    else:
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels once
    precision = precision or choose_precision(spec.precision, device)
    channels_last = device.type == "cuda" if spec.channels_last is None else spec.channels_last
    log.info("training on %s in %s%s%s", device, precision.name, ", channels_last" if channels_last else "",
             ", torch.compile" if spec.compile else "")  # fmt: skip
    (workdir / "samples").mkdir(parents=True, exist_ok=True)
    ckpt_path = workdir / CHECKPOINT
    torch.manual_seed(spec.seed)
    data = prepare_images(images, spec.image_size, device)
    plan = make_plan(spec, len(data))
    label_t, fixed_y = _labels(spec, labels, num_classes, len(data), device)
    run = new_run(spec, device, precision.scaled, plan.total_steps * plan.batch, num_classes)
    if channels_last:
        data = data.contiguous(memory_format=torch.channels_last)
        for module in (run.G, run.D, run.G_ema):
            if module is not None:
                module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    if spec.compile:
        run.G.compile()  # in place: state_dict keys (checkpoints, export) are unchanged
        run.D.compile()
    loss = make_loss(spec.loss, run.noise)
    fixed_z = torch.randn(SAMPLES_N, spec.latent_dim, generator=torch.Generator().manual_seed(spec.seed + 2))

    # -- Phase 2: resume ----------------------------------------------------------------------
    if ckpt_path.exists():
        resume(run, ckpt_path, device)
        log.info("resumed from step %d of %d (%s)", run.step, plan.total_steps, ckpt_path)
        if progress_fn is not None:
            progress_fn(progress(run, plan, None))  # said at once, even when the checkpoint was the last step

    # -- Phase 3: the adversarial loop ----------------------------------------------------------
    run.G.train()
    run.D.train()
    pending: list[torch.Tensor] = []  # losses of the steps since the last flush, on the device
    order = _epoch_order(plan.n, spec.seed, run.step // plan.steps_per_epoch)
    t0, step0 = time.perf_counter(), run.step
    while run.step < plan.total_steps:
        epoch, i = divmod(run.step, plan.steps_per_epoch)
        if i == 0:
            order = _epoch_order(plan.n, spec.seed, epoch)
        real, y = real_batch(data, label_t, order, i, run, spec)
        z = torch.randn(plan.batch, spec.latent_dim, generator=run.noise).to(device)
        if y is not None:
            set_strength(strength_at(run.step, plan.total_steps, spec.cond_start, spec.cond_end), run.G, run.D)
        pending.append(torch.stack(adversarial_step(run, loss, real, y, z, spec, precision)))
        run.step += 1

        end_of_epoch = run.step % plan.steps_per_epoch == 0
        if end_of_epoch or run.step % log_every == 0 or run.step % checkpoint_every == 0:
            flush_losses(run, pending)
        if end_of_epoch:
            save_samples(run.exported, fixed_z, workdir / "samples" / f"epoch_{epoch + 1:04d}.png", fixed_y)
        if score_fn is not None and run.step in plan.snapshot_steps:
            take_snapshot(run, plan, score_fn)
        if end_of_epoch or run.step % checkpoint_every == 0:
            save_checkpoint(ckpt_path, checkpoint_state(run, spec, plan, device))
            write_history(workdir, run, plan)
        if progress_fn is not None and not pending:
            rate = (run.step - step0) * plan.batch / max(time.perf_counter() - t0, 1e-9)
            progress_fn(progress(run, plan, rate))
        if abort_fn is not None and run.step < plan.total_steps and abort_fn():
            raise TrainingAborted(f"aborted at step {run.step}")

    # -- Phase 4: done: the generator to publish --------------------------------------------------
    flush_losses(run, pending)
    write_history(workdir, run, plan)
    run.D.eval()
    generator, snapshot = final_generator(run)
    generator.eval()
    save_samples(generator, fixed_z, workdir / "samples" / "published.png", fixed_y)
    epochs = run.step // max(plan.steps_per_epoch, 1)
    p = run.ada.p if spec.augment and spec.ada_target is not None else None
    return TrainResult(generator, run.D, run.step, epochs, run.d_losses, run.g_losses, run.resumed_from, device.type,
                       snapshot, p, precision.name)  # fmt: skip
