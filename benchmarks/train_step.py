"""Images/s of one training step: ``models.gan.training.train`` against a plain PyTorch loop.

Both sides use the same networks (``models.gan.networks.build``), batch, optimizers (Adam, the
spec's learning rates and betas) and BCE-with-logits losses. Runs alternate (ours then plain,
then plain then ours, ...) so machine noise hits both alike; the best images/s of each over
the rounds is reported (noise on a shared machine only ever slows a run down, as with
``timeit``'s minimum), with the ratio ours/plain (target >= 0.95: the harness adds no overhead).
Both sides train in fp32 there.

Then fp32 against mixed precision (bf16 autocast on a CPU with native bf16, read from its flags; on
CUDA what ``precision: auto`` picks) for the presets' dcgan and fastgan networks with their full
recipes: target >= 1.5x at 128 px (width 64, the ``standard`` preset's network); the ``quick``
preset's smaller 64 px networks are reported too.

    python benchmarks/train_step.py [--rounds 4] [--steps 6] [--skip-precision]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from models.gan.networks import build
from models.gan.precision import BF16_CPU_FLAGS, choose_precision, cpu_has_bf16
from models.gan.training import prepare_images, select_device, train
from models.platform.cpu import cpu_flags
from models.platform.schemas import TrainSpec

# The plain loop's recipe (BCE, BatchNorm D, no EMA, no augmentation), pinned over the presets' defaults.
PLAIN = {"loss": "bce", "d_norm": "batch", "ema": False, "augment": False, "snapshots": 0, "precision": "fp32"}
CASES = [
    ("dcgan-seed 128px", TrainSpec(dataset="bench", architecture="dcgan-seed", image_size=128, batch_size=8, **PLAIN)),
    ("dcgan 64px", TrainSpec(dataset="bench", architecture="dcgan", image_size=64, batch_size=32, **PLAIN)),
    ("dcgan 128px", TrainSpec(dataset="bench", architecture="dcgan", image_size=128, batch_size=16, **PLAIN)),
]
WARMUP = 2  # steps excluded from timing on both sides
# fp32 against bf16 autocast: the presets' networks (full recipes: hinge, spectral norm, DiffAugment, EMA).
PRECISION_CASES = [
    ("dcgan 128px w64", TrainSpec(dataset="bench", preset="standard", architecture="dcgan", snapshots=0)),
    ("fastgan 128px w64", TrainSpec(dataset="bench", preset="standard", snapshots=0)),
    ("dcgan 64px quick", TrainSpec(dataset="bench", preset="quick", architecture="dcgan", snapshots=0)),
    ("fastgan 64px quick", TrainSpec(dataset="bench", preset="quick", snapshots=0)),
]
PRECISION_TARGET = 1.5  # bf16 / fp32 for the 128 px networks, on a CPU with native bf16


def images_for(spec: TrainSpec, steps: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (spec.batch_size * (steps + WARMUP + 1), 256, 256), dtype=np.uint8)


def ours(spec: TrainSpec, images: np.ndarray, steps: int) -> float:
    """Images/s of steps WARMUP .. WARMUP+steps, timed from the progress callback."""
    stamps: dict[int, float] = {}
    total = WARMUP + steps

    def progress(p: dict) -> None:
        stamps[p["step"]] = time.perf_counter()

    def abort() -> bool:
        return len(stamps) >= total

    spec = spec.model_copy(update={"epochs": 1})
    with tempfile.TemporaryDirectory() as d:
        try:
            train(spec, images, Path(d), checkpoint_every=10**9, progress_fn=progress, abort_fn=abort, log_every=1)
        except Exception as exc:  # TrainingAborted ends the run once enough steps are timed
            if type(exc).__name__ != "TrainingAborted":
                raise
    return steps * spec.batch_size / (stamps[total] - stamps[WARMUP])


def plain(spec: TrainSpec, images: np.ndarray, steps: int) -> float:
    """The textbook loop (PyTorch's DCGAN example) over the same networks, data and optimizers."""
    device = select_device()
    torch.manual_seed(spec.seed)
    data = prepare_images(images, spec.image_size, device)
    G, D = build(spec)
    G.to(device).train()
    D.to(device).train()
    opt_g = torch.optim.Adam(G.parameters(), lr=spec.lr_g, betas=(spec.beta1, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=spec.lr_d, betas=(spec.beta1, 0.999))
    b = spec.batch_size
    ones, zeros = torch.ones(b, 1, device=device), torch.zeros(b, 1, device=device)
    order = torch.randperm(len(data))
    t0 = 0.0
    for i in range(WARMUP + steps):
        if i == WARMUP:
            t0 = time.perf_counter()
        real = data[order[i * b : (i + 1) * b]]
        fake = G(torch.randn(b, spec.latent_dim, device=device))
        d_loss = F.binary_cross_entropy_with_logits(D(real), ones) + F.binary_cross_entropy_with_logits(
            D(fake.detach()), zeros
        )
        opt_d.zero_grad()
        d_loss.backward()
        opt_d.step()
        g_loss = F.binary_cross_entropy_with_logits(D(fake), ones)
        opt_g.zero_grad()
        g_loss.backward()
        opt_g.step()
        d_loss.item(), g_loss.item()
    return steps * b / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--skip-precision", action="store_true", help="only the ours/plain table")
    args = parser.parse_args()
    print(f"device: {select_device()}  torch {torch.__version__}  threads {torch.get_num_threads()}")
    print(f"{'case':<18}{'batch':>6}{'ours img/s':>12}{'plain img/s':>13}{'ours/plain':>12}")
    worst = float("inf")
    for name, spec in CASES:
        images = images_for(spec, args.steps)
        a, b = [], []
        for r in range(args.rounds):
            if r % 2 == 0:
                a.append(ours(spec, images, args.steps))
                b.append(plain(spec, images, args.steps))
            else:
                b.append(plain(spec, images, args.steps))
                a.append(ours(spec, images, args.steps))
        ratio = max(a) / max(b)
        worst = min(worst, ratio)
        print(f"{name:<18}{spec.batch_size:>6}{max(a):>12.1f}{max(b):>13.1f}{ratio:>12.3f}")
    print(f"worst ratio ours/plain: {worst:.3f} (target >= 0.95): {'PASS' if worst >= 0.95 else 'FAIL'}")
    ok = worst >= 0.95
    if not args.skip_precision:
        ok &= precision_table(args.rounds, args.steps)
    sys.exit(0 if ok else 1)


def precision_table(rounds: int, steps: int) -> bool:
    """fp32 against bf16 autocast, alternating, best of ``rounds``; the 128 px ratios against the target."""
    device = select_device()
    mixed = "bf16" if device.type == "cpu" else choose_precision("auto", device).name
    flags = [f for f in BF16_CPU_FLAGS if f in cpu_flags()]
    print()
    print(f"CPU flags for bf16: {' '.join(flags) or 'none (' + ' or '.join(BF16_CPU_FLAGS) + ')'}; mixed = {mixed}")
    if device.type == "cpu" and not cpu_has_bf16():
        print("no native bf16 on this CPU: `precision: auto` trains in fp32 here; the bf16 table is not measured")
        return True
    print(f"{'case':<20}{'batch':>6}{'fp32 img/s':>12}{mixed + ' img/s':>12}{'ratio':>8}")
    ok = True
    for name, spec in PRECISION_CASES:
        images = images_for(spec, steps)
        runs: dict[str, list[float]] = {"fp32": [], mixed: []}
        for r in range(rounds):
            for p in ("fp32", mixed) if r % 2 == 0 else (mixed, "fp32"):
                runs[p].append(ours(spec.model_copy(update={"precision": p}), images, steps))
        ratio = max(runs[mixed]) / max(runs["fp32"])
        target = "128px" in name
        ok &= ratio >= PRECISION_TARGET or not target
        mark = f"  (target >= {PRECISION_TARGET}: {'PASS' if ratio >= PRECISION_TARGET else 'FAIL'})" if target else ""
        print(f"{name:<20}{spec.batch_size:>6}{max(runs['fp32']):>12.1f}{max(runs[mixed]):>12.1f}{ratio:>8.2f}{mark}")
    return ok


if __name__ == "__main__":
    main()
