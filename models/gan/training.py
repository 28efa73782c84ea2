"""The training loop: one function, labelled phases, ``progress_fn`` / ``abort_fn`` callbacks.

A run lives in a work directory (``jobs/<job id>/`` in the store)::

    checkpoint.pt           models, optimizers, AMP scaler, step, RNG states, spec, loss history
    samples/epoch_0001.png  a grid at fixed noise after every epoch

``train`` resumes from ``checkpoint.pt`` when one is there, and continues exactly where it
stopped: batches are drawn from a per-epoch permutation seeded by ``(seed, epoch)``, noise
from a generator whose state is checkpointed, and the global RNG (dropout) state is saved too.
"""

from __future__ import annotations

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
from models.gan.networks import build
from models.platform.grids import grid
from models.platform.schemas import TrainSpec

log = logging.getLogger(__name__)

ProgressFn = Callable[[dict[str, Any]], None]
AbortFn = Callable[[], bool]
CHECKPOINT = "checkpoint.pt"
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
) -> TrainResult:
    """Train ``spec`` on uint8 ``images [N, S, S]``; resume from ``workdir`` when it holds a checkpoint.

    ``amp``: mixed precision (fp16 autocast and a gradient scaler); None: on CUDA only. A checkpoint
    resumes on any device and with either setting (written on a CPU, resumed on a GPU, and back).
    """
    # -- Phase 1: set-up ----------------------------------------------------------------------
    device = device or select_device()
    if device.type == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)  # all cores
    use_amp = device.type == "cuda" if amp is None else amp  # by default only where it pays
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "samples").mkdir(exist_ok=True)
    ckpt_path = workdir / CHECKPOINT

    torch.manual_seed(spec.seed)
    data = prepare_images(images, spec.image_size, device)
    n = len(data)
    batch = spec.batch_size
    if batch > n:
        raise ValueError(f"batch_size {batch} is larger than the dataset ({n} images)")
    steps_per_epoch = n // batch  # drop the last partial batch (BatchNorm needs > 1 sample)
    total_steps = steps_per_epoch * spec.epochs

    G, D = build(spec)
    G.to(device)
    D.to(device)
    opt_g = torch.optim.Adam(G.parameters(), lr=spec.lr_g, betas=(spec.beta1, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=spec.lr_d, betas=(spec.beta1, 0.999))
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp)
    noise = torch.Generator().manual_seed(spec.seed + 1)
    fixed_z = torch.randn(SAMPLES_N, spec.latent_dim, generator=torch.Generator().manual_seed(spec.seed + 2))
    step = 0
    d_losses: list[float] = []
    g_losses: list[float] = []
    resumed_from: int | None = None

    # -- Phase 2: resume ----------------------------------------------------------------------
    if ckpt_path.exists():
        # On the CPU first: RNG states must stay CPU byte tensors; weights and optimizer states are
        # copied onto the device by load_state_dict.
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        G.load_state_dict(ckpt["generator"])
        D.load_state_dict(ckpt["discriminator"])
        opt_g.load_state_dict(ckpt["opt_g"])
        opt_d.load_state_dict(ckpt["opt_d"])
        if ckpt["scaler"]:  # empty when written by a disabled scaler (a CPU run): the new one starts fresh
            scaler.load_state_dict(ckpt["scaler"])
        noise.set_state(ckpt["noise_rng"])
        torch.set_rng_state(ckpt["torch_rng"])
        if device.type == "cuda" and ckpt.get("cuda_rng") is not None:
            torch.cuda.set_rng_state_all(ckpt["cuda_rng"])
        step, d_losses, g_losses = ckpt["step"], ckpt["d_losses"], ckpt["g_losses"]
        resumed_from = step
        log.info("resumed from step %d of %d (%s)", step, total_steps, ckpt_path)

    def checkpoint() -> None:
        _save_checkpoint(
            ckpt_path,
            {
                "spec": spec.model_dump(),
                "step": step,
                "epoch": step // steps_per_epoch,
                "generator": G.state_dict(),
                "discriminator": D.state_dict(),
                "opt_g": opt_g.state_dict(),
                "opt_d": opt_d.state_dict(),
                "scaler": scaler.state_dict(),
                "noise_rng": noise.get_state(),
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if device.type == "cuda" else None,
                "d_losses": d_losses,
                "g_losses": g_losses,
            },
        )

    def save_samples(epoch: int) -> None:
        G.eval()
        with torch.no_grad():
            fake = G(fixed_z.to(device)).float().cpu().numpy()
        G.train()
        grid(fake, ncols=4).save(workdir / "samples" / f"epoch_{epoch:04d}.png")

    def report(rate: float | None) -> dict[str, Any]:
        """What ``progress_fn`` is told (the job's progress)."""
        return {
            "phase": "training",
            "epoch": math.ceil(step / steps_per_epoch),
            "epochs": spec.epochs,
            "step": step,
            "steps": total_steps,
            "d_loss": d_losses[-1] if d_losses else None,
            "g_loss": g_losses[-1] if g_losses else None,
            "images_per_s": rate,
            "eta_s": (total_steps - step) * batch / rate if rate else None,
            "resumed_from_step": resumed_from,
        }

    if progress_fn is not None and resumed_from is not None:
        progress_fn(report(None))  # said at once, even when the checkpoint was the last step

    # -- Phase 3: the adversarial loop ----------------------------------------------------------
    def aug(x: torch.Tensor) -> torch.Tensor:
        return diff_augment(x, noise)

    G.train()
    D.train()
    ones = torch.ones(batch, 1, device=device)
    zeros = torch.zeros(batch, 1, device=device)
    order = _epoch_order(n, spec.seed, step // steps_per_epoch) if steps_per_epoch else None
    t0, step0 = time.perf_counter(), step
    while step < total_steps:
        epoch, i = divmod(step, steps_per_epoch)
        if i == 0:
            order = _epoch_order(n, spec.seed, epoch)
        assert order is not None
        real = data[order[i * batch : (i + 1) * batch].to(device)]
        if spec.augment:  # random horizontal flips of the reals (axial brain slices are near-symmetric)
            flip = (torch.rand(batch, generator=noise) < 0.5).to(device)
            real = torch.where(flip[:, None, None, None], real.flip(-1), real)
        z = torch.randn(batch, spec.latent_dim, generator=noise).to(device)

        # Discriminator: real -> 1, fake -> 0 (binary cross-entropy, the min-max loss).
        with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
            fake = G(z)
            d_real, d_fake = (real, fake.detach()) if not spec.augment else (aug(real), aug(fake.detach()))
            d_loss = F.binary_cross_entropy_with_logits(D(d_real), ones) + F.binary_cross_entropy_with_logits(
                D(d_fake), zeros
            )
        opt_d.zero_grad(set_to_none=True)
        scaler.scale(d_loss).backward()
        scaler.step(opt_d)

        # Generator: make D call the fakes real (the non-saturating form).
        with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
            g_loss = F.binary_cross_entropy_with_logits(D(aug(fake) if spec.augment else fake), ones)
        opt_g.zero_grad(set_to_none=True)
        scaler.scale(g_loss).backward()
        scaler.step(opt_g)
        scaler.update()

        step += 1
        d_losses.append(float(d_loss.item()))
        g_losses.append(float(g_loss.item()))
        end_of_epoch = step % steps_per_epoch == 0
        if end_of_epoch:
            save_samples(step // steps_per_epoch)
        if step % checkpoint_every == 0 or end_of_epoch:
            checkpoint()
        if progress_fn is not None:
            rate = (step - step0) * batch / max(time.perf_counter() - t0, 1e-9)
            progress_fn(report(rate))
        if abort_fn is not None and step < total_steps and abort_fn():
            raise TrainingAborted(f"aborted at step {step}")

    # -- Phase 4: done ------------------------------------------------------------------------
    G.eval()
    D.eval()
    return TrainResult(G, D, step, step // max(steps_per_epoch, 1), d_losses, g_losses, resumed_from, device.type)
