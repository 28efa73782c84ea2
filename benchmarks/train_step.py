"""Images/s of one training step: ``models.gan.training.train`` against a plain PyTorch loop.

Both sides use the same networks (``models.gan.networks.build``), batch, optimizers (Adam, the
spec's learning rates and betas) and BCE-with-logits losses. Runs alternate (ours then plain,
then plain then ours, ...) so machine noise hits both alike; the best images/s of each over
the rounds is reported (noise on a shared machine only ever slows a run down, as with
``timeit``'s minimum), with the ratio ours/plain (target >= 0.95: the harness adds no overhead).

    python benchmarks/train_step.py [--rounds 3] [--steps 6]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from models.gan.networks import build
from models.gan.training import prepare_images, select_device, train
from models.platform.schemas import TrainSpec

# The plain loop's recipe (BCE, BatchNorm D, no EMA, no augmentation), pinned over the presets' defaults.
PLAIN = {"loss": "bce", "d_norm": "batch", "ema": False, "augment": False, "snapshots": 0}
CASES = [
    ("dcgan-seed 128px", TrainSpec(dataset="bench", architecture="dcgan-seed", image_size=128, batch_size=8, **PLAIN)),
    ("dcgan 64px", TrainSpec(dataset="bench", architecture="dcgan", image_size=64, batch_size=32, **PLAIN)),
    ("dcgan 128px", TrainSpec(dataset="bench", architecture="dcgan", image_size=128, batch_size=16, **PLAIN)),
]
WARMUP = 2  # steps excluded from timing on both sides


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
            train(spec, images, Path(d), checkpoint_every=10**9, progress_fn=progress, abort_fn=abort)
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


if __name__ == "__main__":
    main()
