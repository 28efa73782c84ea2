"""Differentiable augmentation for GANs trained on a few dozen images, at an adaptive probability.

With so little data the discriminator memorises the training set and the generator's gradient
vanishes. DiffAugment (Zhao et al., "Differentiable Augmentation for Data-Efficient GAN
Training", NeurIPS 2020) applies the same random, differentiable transforms to every image the
discriminator sees, real and fake, so the generator still learns the un-augmented
distribution. Its transforms, for grayscale slices:

- ``color``: brightness (add U(-0.5, 0.5)) and contrast (scale the deviation from the image
  mean by U(0.5, 1.5)); DiffAugment's saturation has no meaning for one channel;
- ``translation``: a shift of up to 1/8 of the side, black fill;
- ``cutout``: a black square of half the side.

``AdaptiveAugment`` applies each transform to each image with probability ``p`` and moves ``p``
with StyleGAN2-ADA's overfitting heuristic (Karras et al., "Training Generative Adversarial
Networks with Limited Data", NeurIPS 2020): ``r_t = E[sign(D(real))]`` over the last interval;
``p`` rises while ``r_t`` is above the target (0.6) and falls below it. Randomness comes from
the caller's ``torch.Generator``, so a checkpointed run resumes exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

ADA_INTERVAL = 4  # D steps between adjustments of p (StyleGAN2-ADA's)
ADA_SPEED_FRACTION = 0.05  # p can go from 0 to 1 in this fraction of the run's images (StyleGAN2-ADA: 500 kimg)
ADA_MIN_SPEED_IMAGES = 1000  # but never faster than in 1,000 images (a tiny run would swing p from 0 to 1 at once)


def _uniform(n: int, gen: torch.Generator, device: torch.device, low: float, high: float) -> torch.Tensor:
    return (torch.rand(n, 1, 1, 1, generator=gen) * (high - low) + low).to(device)


def color(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random brightness, then random contrast, per image (values may leave [-1, 1], as in DiffAugment)."""
    n = x.shape[0]
    x = x + _uniform(n, gen, x.device, -0.5, 0.5)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * _uniform(n, gen, x.device, 0.5, 1.5) + mean


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


TRANSFORMS: dict[str, Callable[[torch.Tensor, torch.Generator], torch.Tensor]] = {
    "color": color,
    "translation": translate,
    "cutout": cutout,
}


def diff_augment(
    x: torch.Tensor, gen: torch.Generator, ops: tuple[str, ...] = ("translation", "cutout"), p: float = 1.0
) -> torch.Tensor:
    """``ops`` in order, each applied to each image with probability ``p``; differentiable with respect to ``x``.

    The random draws do not depend on ``p`` (every transform is drawn for every image, then kept or not), so
    the noise stream stays aligned whatever ``p`` is.
    """
    for op in ops:
        augmented = TRANSFORMS[op](x, gen)
        keep = (torch.rand(x.shape[0], 1, 1, 1, generator=gen) < p).to(x.device)
        x = torch.where(keep, augmented, x)
    return x


class AdaptiveAugment:
    """DiffAugment at probability ``p``; with a ``target``, ``p`` follows ADA's ``r_t`` heuristic (else ``p = 1``).

    ``observe(real_logits)`` after every D step on reals; every ``ADA_INTERVAL`` steps ``p`` moves by
    ``sign(r_t - target) * images / speed_images``, clamped to [0, 1].
    """

    def __init__(self, ops: tuple[str, ...], target: float | None, speed_images: float) -> None:
        self.ops = ops
        self.target = target
        self.speed_images = max(speed_images, 1.0)
        self.p = 0.0 if target is not None else 1.0
        self.r_t: float | None = None
        self._signs = 0.0
        self._count = 0
        self._steps = 0

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        return diff_augment(x, gen, self.ops, self.p)

    def observe(self, real_logits: torch.Tensor) -> None:
        if self.target is None:
            return
        self._signs += float(torch.sign(real_logits.detach().float()).sum())
        self._count += real_logits.numel()
        self._steps += 1
        if self._steps % ADA_INTERVAL == 0 and self._count:
            self.r_t = self._signs / self._count
            step = self._count / self.speed_images
            self.p = min(1.0, max(0.0, self.p + (step if self.r_t > self.target else -step)))
            self._signs, self._count = 0.0, 0

    def state_dict(self) -> dict[str, Any]:
        return {"p": self.p, "r_t": self.r_t, "signs": self._signs, "count": self._count, "steps": self._steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.p, self.r_t = float(state["p"]), state["r_t"]
        self._signs, self._count, self._steps = float(state["signs"]), int(state["count"]), int(state["steps"])
