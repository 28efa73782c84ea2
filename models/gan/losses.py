"""GAN losses behind one small interface, so that a new loss never changes the training loop.

In the style of StyleGAN2-ADA's ``loss.py``: a loss is an object with

- ``d_loss(real_logits, fake_logits)``: the discriminator's (critic's) loss on a batch;
- ``g_loss(fake_logits)``: the generator's loss;
- ``regularizer(D, real, fake)``: an optional extra term of the discriminator's loss (None: none),
  given the networks' inputs, for penalties that need gradients of ``D``.

Logits are ``D``'s raw outputs ``[N, 1]``. The training loop calls exactly these three, whatever
the loss; ``LOSSES`` maps the names of ``TrainSpec.loss`` to them.

- ``bce``: the report's (Goodfellow et al. 2014): binary cross-entropy, real -> 1 and fake -> 0,
  the generator in the non-saturating form (fakes -> 1).
- ``hinge``: Lim & Ye 2017, Miyato et al. 2018 (SN-GAN): ``relu(1 - D(x)) + relu(1 + D(G(z)))``,
  the generator ``-D(G(z))``.
- ``wgan-gp``: Gulrajani et al. 2017: the critic ``D(G(z)) - D(x)``, the generator ``-D(G(z))``,
  and the gradient penalty ``gp_weight * (||grad D(x_hat)||_2 - 1)^2`` on random interpolates of
  real and fake as its regulariser (weight 10, the paper's).

``r1_penalty`` is the optional R1 penalty on reals (``TrainSpec.r1_gamma``), for any of them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
import torch.nn.functional as F

# What a penalty calls: D as a function of images alone (a conditional D with its labels bound).
Critic = Callable[[torch.Tensor], torch.Tensor]


class GanLoss(Protocol):
    def d_loss(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor: ...

    def g_loss(self, fake_logits: torch.Tensor) -> torch.Tensor: ...

    def regularizer(self, D: Critic, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor | None: ...


class BCELoss:
    """The report's min-max loss as binary cross-entropy; the generator's is non-saturating."""

    def d_loss(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        real = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
        return real + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))

    def g_loss(self, fake_logits: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))

    def regularizer(self, D: Critic, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor | None:
        return None


class HingeLoss:
    """The hinge loss of SN-GAN and BigGAN."""

    def d_loss(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()

    def g_loss(self, fake_logits: torch.Tensor) -> torch.Tensor:
        return -fake_logits.mean()

    def regularizer(self, D: Critic, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor | None:
        return None


class WGANGPLoss:
    """The Wasserstein loss with a gradient penalty on interpolates of real and fake (WGAN-GP)."""

    def __init__(self, gp_weight: float = 10.0, generator: torch.Generator | None = None) -> None:
        self.gp_weight = gp_weight
        self.generator = generator  # the interpolation weights' RNG (the run's checkpointed noise)

    def d_loss(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        return fake_logits.mean() - real_logits.mean()

    def g_loss(self, fake_logits: torch.Tensor) -> torch.Tensor:
        return -fake_logits.mean()

    def regularizer(self, D: Critic, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor | None:
        alpha = torch.rand(real.shape[0], 1, 1, 1, generator=self.generator).to(real.device, real.dtype)
        x_hat = (alpha * real + (1 - alpha) * fake.detach()).requires_grad_(True)
        (grad,) = torch.autograd.grad(D(x_hat).sum(), x_hat, create_graph=True)
        return self.gp_weight * ((grad.flatten(1).norm(2, dim=1) - 1) ** 2).mean()


def r1_penalty(D: Critic, real: torch.Tensor, gamma: float) -> torch.Tensor:
    """R1 (Mescheder et al. 2018): ``gamma / 2 * E ||grad_x D(x)||^2`` on real images, added to D's loss.

    Used with any loss (``TrainSpec.r1_gamma``); it keeps D flat around the data, which stabilises small-data runs.
    """
    x = real.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(D(x).sum(), x, create_graph=True)
    return 0.5 * gamma * grad.flatten(1).pow(2).sum(dim=1).mean()


LOSSES: dict[str, type[BCELoss] | type[HingeLoss] | type[WGANGPLoss]] = {
    "bce": BCELoss,
    "hinge": HingeLoss,
    "wgan-gp": WGANGPLoss,
}


def make_loss(name: str, generator: torch.Generator | None = None) -> GanLoss:
    """The loss called ``name`` (a key of ``LOSSES``); ``generator`` seeds what the loss draws at random."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; known: {sorted(LOSSES)}")
    if name == "wgan-gp":
        return WGANGPLoss(generator=generator)
    return LOSSES[name]()


def mode_seeking(fake: torch.Tensor, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor | None:
    """Mode seeking (Mao et al. 2019, MSGAN): ``1 / (E[d(G(z1), G(z2)) / d(z1, z2)] + eps)`` over pairs of the
    batch's fakes of the same class, added to G's loss; it is large when G maps different latents to the same
    image (a class that collapsed). Pairs each fake with the next one of its class (no extra forward pass);
    None when no two fakes share a class. Distances are mean absolute differences.
    """
    y = labels if labels is not None else torch.zeros(len(z), dtype=torch.int64, device=z.device)
    order = torch.argsort(y, stable=True)
    following = torch.roll(order, -1)
    same = y[order] == y[following]
    if not bool(same.any()):
        return None
    a, b = order[same], following[same]
    d_image = (fake[a] - fake[b]).abs().flatten(1).mean(dim=1)
    d_latent = (z[a] - z[b]).abs().mean(dim=1)
    return 1.0 / ((d_image / d_latent).mean() + 1e-5)
