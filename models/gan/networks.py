"""Generator and discriminator networks.

``dcgan-seed`` is the report's Keras network, layer for layer (the same parameter counts,
Keras "same" padding reproduced with explicit zero padding, Glorot-uniform init). ``dcgan`` is
the DCGAN of Radford et al. (2015) at 32-256 px with a configurable width and discriminator
normalisation; ``fastgan`` (``models.gan.fastgan``) is Liu et al.'s (2021) few-shot GAN.

Generators map ``z [N, latent]`` to ``image [N, 1, H, W]`` in ``[-1, 1]``; discriminators
return logits ``[N, 1]`` (the sigmoid lives in the BCE-with-logits loss, which is the same
function, numerically safer).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm

from models.platform.schemas import TrainSpec

LEAK = 0.2  # LeakyReLU slope of the report's Keras code and of Radford et al.


# -- dcgan-seed: the report's network ----------------------------------------------------------
class SeedGenerator(nn.Module):
    """Dense 100 -> 32x32x256, two stride-2 transposed convs, a 'same' conv, tanh: 27,265,281 params."""

    def __init__(self, latent_dim: int = 100) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.project = nn.Sequential(
            nn.Linear(latent_dim, 256 * 32 * 32),  # [N, 262144]
            nn.LeakyReLU(LEAK),
            nn.Unflatten(1, (256, 32, 32)),  # [N, 256, 32, 32]
        )
        self.upsample = nn.Sequential(
            nn.ConvTranspose2d(256, 128, 4, stride=2, padding=1),  # [N, 128, 64, 64]
            nn.LeakyReLU(LEAK),
            nn.ConvTranspose2d(128, 128, 4, stride=2, padding=1),  # [N, 128, 128, 128]
            nn.LeakyReLU(LEAK),
        )
        self.to_image = nn.Sequential(
            nn.ZeroPad2d((1, 2, 1, 2)),  # Keras "same" for an even kernel pads 1 before, 2 after
            nn.Conv2d(128, 1, 4),  # [N, 1, 128, 128]
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.to_image(self.upsample(self.project(z)))


class SeedDiscriminator(nn.Module):
    """Four 3x3 convs (stride 1, 2, 2, 2), dropout 0.4, dense -> 1 logit: 582,785 params."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.ZeroPad2d(1),
            nn.Conv2d(1, 64, 3),  # [N, 64, 128, 128]
            nn.LeakyReLU(LEAK),
            nn.ZeroPad2d((0, 1, 0, 1)),  # Keras "same" with stride 2 pads only after
            nn.Conv2d(64, 128, 3, stride=2),  # [N, 128, 64, 64]
            nn.LeakyReLU(LEAK),
            nn.ZeroPad2d((0, 1, 0, 1)),
            nn.Conv2d(128, 128, 3, stride=2),  # [N, 128, 32, 32]
            nn.LeakyReLU(LEAK),
            nn.ZeroPad2d((0, 1, 0, 1)),
            nn.Conv2d(128, 256, 3, stride=2),  # [N, 256, 16, 16]
            nn.LeakyReLU(LEAK),
        )
        self.classify = nn.Sequential(
            nn.Flatten(),  # [N, 65536]
            nn.Dropout(0.4),
            nn.Linear(256 * 16 * 16, 1),  # [N, 1] logit
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.features(x))


def keras_init(m: nn.Module) -> None:
    """Keras defaults: Glorot-uniform kernels, zero biases."""
    if isinstance(m, nn.Linear | nn.Conv2d | nn.ConvTranspose2d):
        nn.init.xavier_uniform_(m.weight)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


# -- dcgan: Radford et al. ----------------------------------------------------------------------
class DCGANGenerator(nn.Module):
    """z -> 4x4 -> ... -> size x size; BatchNorm + ReLU, tanh output; channels halve per stage."""

    def __init__(self, latent_dim: int = 100, image_size: int = 64, width: int = 64) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        n_up = int(math.log2(image_size)) - 2  # stride-2 stages after the 4x4 projection
        ch = width * 2 ** (n_up - 1)
        stages: list[nn.Module] = [
            nn.Sequential(  # [N, ch, 4, 4]
                nn.Unflatten(1, (latent_dim, 1, 1)),
                nn.ConvTranspose2d(latent_dim, ch, 4, 1, 0, bias=False),
                nn.BatchNorm2d(ch),
                nn.ReLU(True),
            )
        ]
        for _ in range(n_up - 1):  # each: [N, ch, s, s] -> [N, ch/2, 2s, 2s]
            stages.append(
                nn.Sequential(
                    nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ch // 2), nn.ReLU(True)
                )
            )
            ch //= 2
        stages.append(nn.Sequential(nn.ConvTranspose2d(ch, 1, 4, 2, 1, bias=False), nn.Tanh()))  # [N, 1, size, size]
        self.main = nn.Sequential(*stages)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.main(z)


class DCGANDiscriminator(nn.Module):
    """size x size -> 4x4 by stride-2 convs; LeakyReLU; a 4x4 conv to one logit.

    ``norm``: "batch" (Radford et al.: BatchNorm after every conv but the first), "spectral" (spectral normalisation
    of every conv, Miyato et al. 2018, no BatchNorm), "none" (neither: a WGAN-GP critic, Gulrajani et al. 2017).
    """

    def __init__(self, image_size: int = 64, width: int = 64, norm: str = "batch") -> None:
        super().__init__()
        n_down = int(math.log2(image_size)) - 2
        conv = spectral_conv if norm == "spectral" else nn.Conv2d
        stages: list[nn.Module] = [
            nn.Sequential(conv(1, width, 4, 2, 1, bias=False), nn.LeakyReLU(LEAK, True))  # [N, w, size/2, size/2]
        ]
        ch = width
        for _ in range(n_down - 1):  # each: [N, ch, s, s] -> [N, 2ch, s/2, s/2]
            bn: list[nn.Module] = [nn.BatchNorm2d(ch * 2)] if norm == "batch" else []
            stages.append(nn.Sequential(conv(ch, ch * 2, 4, 2, 1, bias=False), *bn, nn.LeakyReLU(LEAK, True)))
            ch *= 2
        stages.append(nn.Sequential(conv(ch, 1, 4, 1, 0, bias=False), nn.Flatten()))  # [N, 1] logit
        self.main = nn.Sequential(*stages)
        self.feature_channels = ch  # of the last feature map, [N, ch, 4, 4] (a projection D's embedding width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map, [N, feature_channels, 4, 4], before the logit layer."""
        return self.main[:-1](x)

    def classify(self, h: torch.Tensor) -> torch.Tensor:
        return self.main[-1](h)


def spectral_conv(*args: Any, **kwargs: Any) -> nn.Module:
    """A ``Conv2d`` whose weight is spectrally normalised (one power iteration per forward pass)."""
    return spectral_norm(nn.Conv2d(*args, **kwargs))


def weights_init(m: nn.Module) -> None:
    """Radford et al. (and FastGAN's code): conv weights N(0, 0.02); BatchNorm scale N(1, 0.02), shift 0.

    A spectrally normalised conv gets the unnormalised weight drawn, then its power iteration rerun (15 steps, as
    ``spectral_norm`` does on creation) so that the normaliser matches the new weight from the first step.
    """
    if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
        if parametrize.is_parametrized(m, "weight"):
            plist = getattr(m, "parametrizations").weight  # noqa: B009 - nn.Module's __getattr__ is loosely typed
            with torch.no_grad():
                nn.init.normal_(plist.original, 0.0, 0.02)
                was_training = plist.training
                plist.train()
                for _ in range(15):
                    _ = m.weight  # one power iteration per access in training mode
                plist.train(was_training)
        else:
            nn.init.normal_(m.weight, 0.0, 0.02)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


def build(spec: TrainSpec, num_classes: int | None = None) -> tuple[nn.Module, nn.Module]:
    """The generator and discriminator a spec asks for, initialised as their papers do; with ``spec.conditional``,
    wrapped for ``num_classes`` classes (``models.gan.conditional``)."""
    if not spec.conditional:
        return _build_base(spec, spec.latent_dim)
    from models.gan.conditional import EMBED_DIM, make_conditional

    if not num_classes or num_classes < 2:
        raise ValueError("a conditional model needs the number of classes (at least 2)")
    G, D = _build_base(spec, spec.latent_dim + EMBED_DIM)
    return make_conditional(G, D, spec.latent_dim, num_classes, spectral=spec.d_norm == "spectral")


def _build_base(spec: TrainSpec, g_inputs: int) -> tuple[nn.Module, nn.Module]:
    G: nn.Module
    D: nn.Module
    if spec.architecture == "dcgan-seed":
        G, D = SeedGenerator(spec.latent_dim), SeedDiscriminator()
        G.apply(keras_init)
        D.apply(keras_init)
    elif spec.architecture == "dcgan":
        G = DCGANGenerator(g_inputs, spec.image_size, spec.width)
        D = DCGANDiscriminator(spec.image_size, spec.width, spec.d_norm)
        G.apply(weights_init)
        D.apply(weights_init)
    elif spec.architecture == "fastgan":
        from models.gan.fastgan import FastGANDiscriminator, FastGANGenerator, fastgan_init

        G = FastGANGenerator(g_inputs, spec.image_size, spec.width)
        D = FastGANDiscriminator(spec.image_size, spec.width, spec.d_norm)
        G.apply(fastgan_init)
        D.apply(fastgan_init)
    else:  # pragma: no cover - TrainSpec validates the name
        raise ValueError(f"unknown architecture {spec.architecture}")
    return G, D


def count_parameters(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())
