"""Class-conditional GANs: one model for every class of a labelled dataset.

- The generator gets a learned label embedding concatenated to its latent (Mirza & Osindero 2014): the base
  generator (``dcgan`` or ``fastgan``) is built for ``latent_dim + EMBED_DIM`` inputs and sees
  ``[z, strength * embed(label)]``.
- The discriminator is a projection discriminator (Miyato & Koyama 2018): the base D's last feature map ``h``
  ``[N, C, 4, 4]`` is summed over space to ``phi(x)`` ``[N, C]``; the logit is the base D's unconditional logit
  plus ``strength * <embed(label), phi(x)>`` (the class embedding spectrally normalised when D's convs are).
- **Transitional conditioning** (Shahbazi et al. 2022, "Collapse by Conditioning"): with few images per class,
  a conditional GAN trained from the start collapses per class. ``strength`` (a buffer of both networks) is 0 for
  the first ``cond_start`` of the run, so both networks first learn the pooled (unconditional) distribution,
  rises linearly to 1 at ``cond_end``, and stays 1 after (``strength_at``). The exported model always has 1 once
  the run has passed ``cond_end``; a resumed run recomputes it from its step.

The ONNX signature is DESIGN.md's: ``z`` float32 ``[N, latent]`` and ``label`` int64 ``[N]`` (class indices in the
sorted order of the dataset's class names) -> ``image`` float32 ``[N, 1, H, W]``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

EMBED_DIM = 32  # the label embedding's size in G (appended to z); D's projection uses its feature width


def strength_at(step: int, total_steps: int, start: float, end: float) -> float:
    """How much the class information counts at ``step``: 0 before ``start``, 1 after ``end`` (fractions of the run)."""
    t = step / max(total_steps, 1)
    if t <= start:
        return 0.0
    if t >= end:
        return 1.0
    return (t - start) / (end - start)


class ConditionalGenerator(nn.Module):
    """``G(z, label)``: the base generator on ``[z, strength * embed(label)]`` ([N, latent + EMBED_DIM])."""

    def __init__(self, base: nn.Module, latent_dim: int, num_classes: int, embed_dim: int = EMBED_DIM) -> None:
        super().__init__()
        self.latent_dim = latent_dim  # the ONNX input z's width (the base sees latent_dim + embed_dim)
        self.num_classes = num_classes
        self.embed = nn.Embedding(num_classes, embed_dim)  # [N] -> [N, embed_dim]
        self.base = base
        self.register_buffer("strength", torch.ones(()))  # transitional conditioning; 1 when exported

    def forward(self, z: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        return self.base(torch.cat([z, self.strength * self.embed(label)], dim=1))


class ProjectionDiscriminator(nn.Module):
    """``D(x, label) = base logit + strength * <embed(label), sum_hw features(x)>``.

    The base D must offer ``features(x)`` ([N, C, 4, 4], before its last layer) and ``classify(h)`` ([N, 1]); a
    FastGAN D also ``features_with_reconstruction(x, gen)`` for its decoders' loss on real images.
    """

    def __init__(self, base: nn.Module, num_classes: int, channels: int, spectral: bool) -> None:
        super().__init__()
        self.base = base
        self.num_classes = num_classes
        embed = nn.Embedding(num_classes, channels)  # [N] -> [N, C]
        nn.init.normal_(embed.weight, 0.0, 0.02)
        self.embed = spectral_norm(embed) if spectral else embed
        self.register_buffer("strength", torch.ones(()))

    def _logit(self, h: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        projection = (self.embed(label) * h.sum(dim=(2, 3))).sum(dim=1, keepdim=True)  # [N, 1]
        base: Any = self.base  # a DCGAN or FastGAN discriminator (features / classify)
        return base.classify(h) + self.strength * projection

    def forward(self, x: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        base: Any = self.base
        return self._logit(base.features(x), label)

    def forward_with_reconstruction(
        self, x: torch.Tensor, gen: torch.Generator, label: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(logits, reconstruction loss) on REAL images; the loss is None unless the base D decodes (fastgan)."""
        if not hasattr(self.base, "features_with_reconstruction"):
            return self(x, label), None
        base: Any = self.base
        h, loss = base.features_with_reconstruction(x, gen)
        return self._logit(h, label), loss


def make_conditional(G: nn.Module, D: nn.Module, latent_dim: int, num_classes: int, spectral: bool) -> tuple[
    ConditionalGenerator, ProjectionDiscriminator
]:  # fmt: skip
    """Wrap a base pair built for ``latent_dim + EMBED_DIM`` inputs; D's feature width is read off ``D``."""
    channels = int(getattr(D, "feature_channels"))  # noqa: B009 - nn.Module's __getattr__ is loosely typed
    return ConditionalGenerator(G, latent_dim, num_classes), ProjectionDiscriminator(D, num_classes, channels, spectral)


def set_strength(strength: float, *modules: nn.Module | None) -> None:
    """Set the conditioning strength of every conditional module given (others are left alone)."""
    for m in modules:
        if isinstance(m, ConditionalGenerator | ProjectionDiscriminator):
            buffer: Any = m.strength
            buffer.fill_(strength)


def fixed_labels(count: int, num_classes: int) -> torch.Tensor:
    """``count`` labels in equal runs per class (0, 0, ..., 1, 1, ...): a sample grid shows a class per row block."""
    return torch.arange(count) * num_classes // count
