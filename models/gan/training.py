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

import json
import logging
import math
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

from models.gan.augment import diff_augment
from models.gan.losses import GanLoss, make_loss
from models.gan.networks import build
from models.platform.grids import grid
from models.platform.schemas import TrainSpec

log = logging.getLogger(__name__)

ProgressFn = Callable[[dict[str, Any]], None]
AbortFn = Callable[[], bool]
CHECKPOINT = "checkpoint.pt"
HISTORY = "history.json"  # per-step losses: {"steps_per_epoch", "d_loss": [...], "g_loss": [...]}
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


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # atomic: a reader (or a resumed run) never sees half a checkpoint


@dataclass
class Run:
    """Everything a training step changes: what a checkpoint holds besides the spec."""

    G: nn.Module
    D: nn.Module
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    noise: torch.Generator  # every random draw of the loop (batches' noise, flips, augmentation, penalties)
    step: int = 0
    d_losses: list[float] = field(default_factory=list)
    g_losses: list[float] = field(default_factory=list)
    resumed_from: int | None = None


@dataclass(frozen=True)
class Plan:
    """The shape of a run: images, batch, steps per epoch and in all."""

    n: int
    batch: int
    steps_per_epoch: int
    total_steps: int
    epochs: int

    def epoch_of(self, step: int) -> int:
        return math.ceil(step / self.steps_per_epoch)


def make_plan(spec: TrainSpec, n: int) -> Plan:
    if spec.batch_size > n:
        raise ValueError(f"batch_size {spec.batch_size} is larger than the dataset ({n} images)")
    steps_per_epoch = n // spec.batch_size  # drop the last partial batch (BatchNorm needs > 1 sample)
    return Plan(n, spec.batch_size, steps_per_epoch, steps_per_epoch * spec.epochs, spec.epochs)


def new_run(spec: TrainSpec, device: torch.device, use_amp: bool) -> Run:
    G, D = build(spec)
    G.to(device)
    D.to(device)
    opt_g = torch.optim.Adam(G.parameters(), lr=spec.lr_g, betas=(spec.beta1, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=spec.lr_d, betas=(spec.beta1, 0.999))
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp)
    return Run(G, D, opt_g, opt_d, scaler, torch.Generator().manual_seed(spec.seed + 1))


def checkpoint_state(run: Run, spec: TrainSpec, plan: Plan, device: torch.device) -> dict[str, Any]:
    return {
        "spec": spec.model_dump(),
        "step": run.step,
        "epoch": run.step // plan.steps_per_epoch,
        "generator": run.G.state_dict(),
        "discriminator": run.D.state_dict(),
        "opt_g": run.opt_g.state_dict(),
        "opt_d": run.opt_d.state_dict(),
        "scaler": run.scaler.state_dict(),
        "noise_rng": run.noise.get_state(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if device.type == "cuda" else None,
        "d_losses": run.d_losses,
        "g_losses": run.g_losses,
    }


def resume(run: Run, path: Path, device: torch.device) -> None:
    """Load ``path`` into ``run``. On the CPU first: RNG states must stay CPU byte tensors; weights and
    optimizer states are copied onto the device by ``load_state_dict``."""
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    run.G.load_state_dict(ckpt["generator"])
    run.D.load_state_dict(ckpt["discriminator"])
    run.opt_g.load_state_dict(ckpt["opt_g"])
    run.opt_d.load_state_dict(ckpt["opt_d"])
    if ckpt["scaler"]:  # empty when written by a disabled scaler (a CPU run): the new one starts fresh
        run.scaler.load_state_dict(ckpt["scaler"])
    run.noise.set_state(ckpt["noise_rng"])
    torch.set_rng_state(ckpt["torch_rng"])
    if device.type == "cuda" and ckpt.get("cuda_rng") is not None:
        torch.cuda.set_rng_state_all(ckpt["cuda_rng"])
    run.step, run.d_losses, run.g_losses = ckpt["step"], ckpt["d_losses"], ckpt["g_losses"]
    run.resumed_from = run.step


def write_history(workdir: Path, run: Run, plan: Plan) -> None:
    """The per-step losses, ``history.json`` beside the checkpoint (published with the version)."""
    history = {"steps_per_epoch": plan.steps_per_epoch, "d_loss": run.d_losses, "g_loss": run.g_losses}
    tmp = workdir / f".{HISTORY}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(history))
    os.replace(tmp, workdir / HISTORY)


def progress(run: Run, plan: Plan, rate: float | None) -> dict[str, Any]:
    """What ``progress_fn`` is told (the job's progress)."""
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
    }


def save_samples(G: nn.Module, fixed_z: torch.Tensor, path: Path) -> None:
    G.eval()
    with torch.no_grad():
        fake = G(fixed_z.to(next(G.parameters()).device)).float().cpu().numpy()
    G.train()
    grid(fake, ncols=4).save(path)


def real_batch(data: torch.Tensor, order: torch.Tensor, i: int, run: Run, spec: TrainSpec) -> torch.Tensor:
    """Batch ``i`` of the epoch's order; with ``augment``, random horizontal flips (axial slices are near-symmetric)."""
    batch = spec.batch_size
    real = data[order[i * batch : (i + 1) * batch].to(data.device)]
    if spec.augment:
        flip = (torch.rand(batch, generator=run.noise) < 0.5).to(data.device)
        real = torch.where(flip[:, None, None, None], real.flip(-1), real)
    return real


def adversarial_step(
    run: Run, loss: GanLoss, real: torch.Tensor, z: torch.Tensor, augment: bool, use_amp: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """One discriminator update, then one generator update; the losses, still on the device."""
    device_type = real.device.type

    def aug(x: torch.Tensor) -> torch.Tensor:
        return diff_augment(x, run.noise) if augment else x

    with torch.autocast(device_type, dtype=torch.float16, enabled=use_amp):
        fake = run.G(z)
        d_real, d_fake = aug(real), aug(fake.detach())
        d_loss = loss.d_loss(run.D(d_real), run.D(d_fake))
        penalty = loss.regularizer(run.D, d_real, d_fake)
        if penalty is not None:
            d_loss = d_loss + penalty
    run.opt_d.zero_grad(set_to_none=True)
    run.scaler.scale(d_loss).backward()
    run.scaler.step(run.opt_d)

    with torch.autocast(device_type, dtype=torch.float16, enabled=use_amp):
        g_loss = loss.g_loss(run.D(aug(fake)))
    run.opt_g.zero_grad(set_to_none=True)
    run.scaler.scale(g_loss).backward()
    run.scaler.step(run.opt_g)
    run.scaler.update()
    return d_loss.detach(), g_loss.detach()


def flush_losses(run: Run, pending: list[torch.Tensor]) -> None:
    """Move the losses kept on the device into the history: one host sync per logging interval."""
    if pending:
        values = torch.stack(pending).float().cpu().tolist()
        run.d_losses.extend(v[0] for v in values)
        run.g_losses.extend(v[1] for v in values)
        pending.clear()


def train(
    spec: TrainSpec,
    images: np.ndarray,
    workdir: Path,
    *,
    device: torch.device | None = None,
    checkpoint_every: int = 200,
    progress_fn: ProgressFn | None = None,
    abort_fn: AbortFn | None = None,
    amp: bool | None = None,
    log_every: int = LOG_EVERY,
) -> TrainResult:
    """Train ``spec`` on uint8 ``images [N, S, S]``; resume from ``workdir`` when it holds a checkpoint.

    ``amp``: mixed precision (fp16 autocast and a gradient scaler); None: on CUDA only. A checkpoint
    resumes on any device and with either setting (written on a CPU, resumed on a GPU, and back).
    Losses are read off the device, and ``progress_fn`` told, every ``log_every`` steps and at the
    end of every epoch.
    """
    # -- Phase 1: set-up ----------------------------------------------------------------------
    device = device or select_device()
    if device.type == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)  # all cores
    use_amp = device.type == "cuda" if amp is None else amp  # by default only where it pays
    (workdir / "samples").mkdir(parents=True, exist_ok=True)
    ckpt_path = workdir / CHECKPOINT
    torch.manual_seed(spec.seed)
    data = prepare_images(images, spec.image_size, device)
    plan = make_plan(spec, len(data))
    run = new_run(spec, device, use_amp)
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
        real = real_batch(data, order, i, run, spec)
        z = torch.randn(plan.batch, spec.latent_dim, generator=run.noise).to(device)
        pending.append(torch.stack(adversarial_step(run, loss, real, z, spec.augment, use_amp)))
        run.step += 1

        end_of_epoch = run.step % plan.steps_per_epoch == 0
        if end_of_epoch or run.step % log_every == 0 or run.step % checkpoint_every == 0:
            flush_losses(run, pending)
        if end_of_epoch:
            save_samples(run.G, fixed_z, workdir / "samples" / f"epoch_{run.step // plan.steps_per_epoch:04d}.png")
        if end_of_epoch or run.step % checkpoint_every == 0:
            _save_checkpoint(ckpt_path, checkpoint_state(run, spec, plan, device))
            write_history(workdir, run, plan)
        if progress_fn is not None and not pending:
            rate = (run.step - step0) * plan.batch / max(time.perf_counter() - t0, 1e-9)
            progress_fn(progress(run, plan, rate))
        if abort_fn is not None and run.step < plan.total_steps and abort_fn():
            raise TrainingAborted(f"aborted at step {run.step}")

    # -- Phase 4: done ------------------------------------------------------------------------
    flush_losses(run, pending)
    write_history(workdir, run, plan)
    run.G.eval()
    run.D.eval()
    epochs = run.step // max(plan.steps_per_epoch, 1)
    return TrainResult(run.G, run.D, run.step, epochs, run.d_losses, run.g_losses, run.resumed_from, device.type)
