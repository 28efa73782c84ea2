"""The state of a training run, its plan, and its checkpoint (``checkpoint.pt``, ``history.json``).

A checkpoint holds everything a step changes (nanoGPT's rule): the spec, the step, G, its moving average,
D, both optimizers, the AMP scaler, the adaptive augmentation, the loop's noise generator, the global (and
CUDA) RNG states, the loss history and the scored snapshots, so ``models.gan.training.train`` resumes
exactly where it stopped.
"""

from __future__ import annotations

import copy
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models.gan.augment import ADA_MIN_SPEED_IMAGES, ADA_SPEED_FRACTION, AdaptiveAugment
from models.gan.networks import build
from models.platform.schemas import TrainSpec

CHECKPOINT = "checkpoint.pt"
HISTORY = "history.json"  # per-step losses: {"steps_per_epoch", "d_loss": [...], "g_loss": [...]}


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
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
    ada: AdaptiveAugment
    G_ema: nn.Module | None = None  # the moving average of G's weights (what is exported), when spec.ema
    step: int = 0  # D steps (real batches); G steps are every n_critic-th
    d_losses: list[float] = field(default_factory=list)
    g_losses: list[float] = field(default_factory=list)
    resumed_from: int | None = None
    snapshots: list[dict[str, Any]] = field(default_factory=list)  # every scored snapshot's metrics
    best: dict[str, Any] | None = None  # {"metrics": the best snapshot's, "state": its G weights (on the CPU)}

    @property
    def exported(self) -> nn.Module:
        """The generator a version would ship now: the moving average when there is one."""
        return self.G_ema if self.G_ema is not None else self.G


@dataclass(frozen=True)
class Plan:
    """The shape of a run: images, batch, steps per epoch and in all (a step is one D update on a real batch)."""

    n: int
    batch: int
    steps_per_epoch: int
    total_steps: int
    epochs: int
    snapshot_steps: frozenset[int] = frozenset()

    def epoch_of(self, step: int) -> int:
        return math.ceil(step / self.steps_per_epoch)


def make_plan(spec: TrainSpec, n: int) -> Plan:
    """Epochs from ``spec.kimg`` (thousands of real images shown) when set, at most ``spec.max_epochs``, else
    ``spec.epochs``; the snapshot steps spread evenly over the second half of the run, the last step always among
    them."""
    if spec.batch_size > n:
        raise ValueError(f"batch_size {spec.batch_size} is larger than the dataset ({n} images)")
    steps_per_epoch = n // spec.batch_size  # drop the last partial batch (BatchNorm needs > 1 sample)
    epochs = spec.epochs
    if spec.kimg is not None:
        epochs = max(1, round(spec.kimg * 1000 / (steps_per_epoch * spec.batch_size)))
        if spec.max_epochs is not None:
            epochs = min(epochs, spec.max_epochs)
    total = steps_per_epoch * epochs
    count = min(spec.snapshots, total)
    snaps = frozenset(total - (total // 2) * k // max(count, 1) for k in range(count)) if count else frozenset()
    return Plan(n, spec.batch_size, steps_per_epoch, total, epochs, snaps)


def new_run(spec: TrainSpec, device: torch.device, use_amp: bool, total_images: int,
            num_classes: int | None = None) -> Run:  # fmt: skip
    G, D = build(spec, num_classes)
    G.to(device)
    D.to(device)
    opt_g = torch.optim.Adam(G.parameters(), lr=spec.lr_g, betas=(spec.beta1, spec.beta2))
    opt_d = torch.optim.Adam(D.parameters(), lr=spec.lr_d, betas=(spec.beta1, spec.beta2))
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp)
    target = spec.ada_target if spec.augment else None  # no augmentation: nothing to adapt (p stays 1, unused)
    ada = AdaptiveAugment(spec.augment_ops, target, max(ADA_SPEED_FRACTION * total_images, ADA_MIN_SPEED_IMAGES))
    G_ema = copy.deepcopy(G).eval().requires_grad_(False) if spec.ema else None
    return Run(G, D, opt_g, opt_d, scaler, torch.Generator().manual_seed(spec.seed + 1), ada, G_ema)


def checkpoint_state(run: Run, spec: TrainSpec, plan: Plan, device: torch.device) -> dict[str, Any]:
    return {
        "spec": spec.model_dump(),
        "step": run.step,
        "epoch": run.step // plan.steps_per_epoch,
        "generator": run.G.state_dict(),
        "generator_ema": run.G_ema.state_dict() if run.G_ema is not None else None,
        "discriminator": run.D.state_dict(),
        "opt_g": run.opt_g.state_dict(),
        "opt_d": run.opt_d.state_dict(),
        "scaler": run.scaler.state_dict(),
        "ada": run.ada.state_dict(),
        "noise_rng": run.noise.get_state(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if device.type == "cuda" else None,
        "d_losses": run.d_losses,
        "g_losses": run.g_losses,
        "snapshots": run.snapshots,
        "best": run.best,
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
    if run.G_ema is not None and ckpt.get("generator_ema") is not None:
        run.G_ema.load_state_dict(ckpt["generator_ema"])
    if ckpt.get("ada"):
        run.ada.load_state_dict(ckpt["ada"])
    run.noise.set_state(ckpt["noise_rng"])
    torch.set_rng_state(ckpt["torch_rng"])
    if device.type == "cuda" and ckpt.get("cuda_rng") is not None:
        torch.cuda.set_rng_state_all(ckpt["cuda_rng"])
    run.step, run.d_losses, run.g_losses = ckpt["step"], ckpt["d_losses"], ckpt["g_losses"]
    run.snapshots, run.best = ckpt.get("snapshots") or [], ckpt.get("best")
    run.resumed_from = run.step


def write_history(workdir: Path, run: Run, plan: Plan) -> None:
    """The per-step losses, ``history.json`` beside the checkpoint (published with the version)."""
    history = {
        "steps_per_epoch": plan.steps_per_epoch,
        "d_loss": run.d_losses,
        "g_loss": run.g_losses,
        "snapshots": run.snapshots,
    }
    tmp = workdir / f".{HISTORY}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(history))
    os.replace(tmp, workdir / HISTORY)
