"""Differentiable augmentation for GANs trained on a few dozen images.

With so little data the discriminator memorises the training set and the generator's gradient
vanishes. DiffAugment (Zhao et al., "Differentiable Augmentation for Data-Efficient GAN
Training", NeurIPS 2020) applies the same random, differentiable transforms to every image the
discriminator sees, real and fake, so the generator still learns the un-augmented
distribution. Here: random translation (1/8 of the side, zero fill) and cutout (a square of
half the side), the pair the paper recommends for small data sets. Randomness comes from the
caller's ``torch.Generator`` so a checkpointed run resumes exactly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def translate(x: torch.Tensor, gen: torch.Generator, ratio: float = 0.125) -> torch.Tensor:
    n, _, h, w = x.shape
    sy, sx = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = torch.randint(-sy, sy + 1, (n, 1, 1), generator=gen).to(x.device)
    dx = torch.randint(-sx, sx + 1, (n, 1, 1), generator=gen).to(x.device)
    gy, gx = torch.meshgrid(torch.arange(h, device=x.device), torch.arange(w, device=x.device), indexing="ij")
    iy = torch.clamp(gy[None] + dy + 1, 0, h + 1)  # indices into the 1-pixel zero-padded image
    ix = torch.clamp(gx[None] + dx + 1, 0, w + 1)
    padded = F.pad(x, (1, 1, 1, 1), value=-1.0)  # -1 is black in the [-1, 1] range
    batch = torch.arange(n, device=x.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[batch, iy, ix].permute(0, 3, 1, 2)


def cutout(x: torch.Tensor, gen: torch.Generator, ratio: float = 0.5) -> torch.Tensor:
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    oy = torch.randint(0, h + (1 - ch % 2), (n, 1, 1), generator=gen).to(x.device)
    ox = torch.randint(0, w + (1 - cw % 2), (n, 1, 1), generator=gen).to(x.device)
    gy, gx = torch.meshgrid(torch.arange(ch, device=x.device), torch.arange(cw, device=x.device), indexing="ij")
    ys = torch.clamp(gy[None] + oy - ch // 2, 0, h - 1)
    xs = torch.clamp(gx[None] + ox - cw // 2, 0, w - 1)
    mask = torch.ones(n, h, w, device=x.device, dtype=x.dtype)
    mask[torch.arange(n, device=x.device)[:, None, None], ys, xs] = 0
    return x * mask[:, None] + (mask[:, None] - 1)  # cut squares become -1 (black)


def diff_augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Translation then cutout, differentiable with respect to ``x``."""
    return cutout(translate(x, gen), gen)
