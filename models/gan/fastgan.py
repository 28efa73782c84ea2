"""FastGAN: Liu et al. (2021), "Towards Faster and Stabilized GAN Training for High-fidelity Few-shot Image
Synthesis" (ICLR 2021; https://github.com/odegeasslbc/FastGAN-pytorch), a GAN made for 100-1000 training images.

Its two ideas, kept here:

- the generator's *skip-layer excitation* (SLE): a low-resolution feature map gates, channel by channel, a
  high-resolution one (average-pooled to 4x4, a 4x4 conv, Swish, a 1x1 conv, sigmoid), a cheap long skip;
- the discriminator as a *self-supervised auto-encoder*: on real images, small decoders reconstruct the whole image
  from D's 8x8 feature map and a random quadrant of it from the matching quadrant of D's 16x16 feature map, so that
  D must keep features that describe the image, not only those that tell real from fake (less overfitting).

Adapted to this project:

- grayscale (one channel), 64, 128 or 256 px (``SUPPORTED_SIZES``), ``tanh`` output in ``[-1, 1]``;
- no noise injection in the generator (the paper's ``NoiseInjection``): random ops inside G would make the exported
  ONNX model non-deterministic and break the PyTorch/ONNX parity check; one 3x3 conv per up-block (the paper's
  ``UpBlockComp`` has two); no spectral norm in G (BatchNorm only; it exports as constants anyway);
- the reconstruction loss is L1 (mean absolute error) between the decoders' outputs and the real image (average-
  pooled 2x) and its quadrant, where the paper uses LPIPS: LPIPS needs pretrained VGG/AlexNet weights, which may not
  be downloaded here;
- SLE links: the paper's at 128 px (feat_4 -> feat_64, feat_8 -> feat_128) and 256 px (plus feat_16 -> feat_256);
  at 64 px, where that rule leaves one link, feat_4 excites feat_32 and feat_8 excites feat_64 (``SLE_LINKS``);
- the discriminator's down-blocks are DCGAN's (4x4 stride-2 conv, normalisation, LeakyReLU 0.2) with the choice of
  ``norm`` the other architectures have ("spectral": spectral norm on every conv and no BatchNorm, where the paper's
  code has both; "batch"; "none" for WGAN-GP critics); no second D branch on a 128 px copy of the image and no SLE
  inside D; one logit per image (the paper's head gives a 5x5 patch of logits);
- both decoders output ``S/2 x S/2`` (the paper's 128 at 256 px), so the quadrant needs no resampling.

Channels follow ``width`` as in ``dcgan``, so that the cost stays near a DCGAN's of the same width: in G each conv
before a GLU (which halves its channels) has DCGAN's count, ``width`` at ``S/2`` doubling per halving of the
resolution up to ``8 * width`` (after the GLU: ``width/4`` at ``S``, ..., at most ``4 * width``); D has ``width``
at ``S/2``, doubling up to ``8 * width``, and decoders of ``width/2`` channels at 16x16, halving per up-block (at
least 8). At 64 px and width 32: G about 0.65M parameters, D 0.75M (0.69M without its decoders); a training step
takes about 1.5x a DCGAN step's time on a CPU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from models.gan.networks import weights_init

SUPPORTED_SIZES = (64, 128, 256)
LEAK = 0.2  # LeakyReLU slope of the paper's discriminator
# Generator SLE links per image size: (source resolution, excited resolution).
SLE_LINKS: dict[int, tuple[tuple[int, int], ...]] = {
    64: ((4, 32), (8, 64)),
    128: ((4, 64), (8, 128)),
    256: ((4, 64), (8, 128), (16, 256)),
}
NORMS = ("spectral", "batch", "none")


def _check_size(image_size: int) -> None:
    if image_size not in SUPPORTED_SIZES:
        raise ValueError(f"fastgan supports image sizes {SUPPORTED_SIZES}, not {image_size}")


def _resolutions(lo: int, hi: int) -> list[int]:
    """lo, 2 lo, ..., hi."""
    out = [lo]
    while out[-1] < hi:
        out.append(out[-1] * 2)
    return out


def _channels(image_size: int, width: int, cap: int) -> dict[int, int]:
    """Channels at each resolution 4..S: ``width`` at S/2, doubled per halving up to ``cap``, at least 4."""
    return {r: max(4, min(cap, width * image_size // (2 * r))) for r in _resolutions(4, image_size)}


def _sn(layer: nn.Conv2d, spectral: bool) -> nn.Module:
    return spectral_norm(layer) if spectral else layer


def _up_block(c_in: int, c_out: int, spectral: bool = False, batch: bool = True) -> nn.Sequential:
    """[N, c_in, s, s] -> [N, c_out, 2s, 2s]: nearest x2, 3x3 conv to 2 c_out, (BatchNorm), GLU.

    Upsampling then a conv, never a transposed conv: no checkerboard artefacts.
    """
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="nearest"),
        _sn(nn.Conv2d(c_in, 2 * c_out, 3, 1, 1, bias=not batch), spectral),
        *([nn.BatchNorm2d(2 * c_out)] if batch else []),
        nn.GLU(dim=1),
    )


class SkipExcitation(nn.Module):
    """SLE: ``big * sigmoid(conv1x1(swish(conv4x4(avgpool_4x4(small)))))``, a per-channel gate from ``small``."""

    def __init__(self, c_small: int, res_small: int, c_big: int) -> None:
        super().__init__()
        self.gate = nn.Sequential(
            nn.AvgPool2d(res_small // 4) if res_small > 4 else nn.Identity(),  # [N, c_small, 4, 4]
            nn.Conv2d(c_small, c_big, 4, 1, 0, bias=False),  # [N, c_big, 1, 1]
            nn.SiLU(),  # Swish
            nn.Conv2d(c_big, c_big, 1, 1, 0, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, small: torch.Tensor, big: torch.Tensor) -> torch.Tensor:
        return big * self.gate(small)


class FastGANGenerator(nn.Module):
    """z -> 4x4 (4x4 transposed conv from 1x1, BN, GLU) -> up-blocks to S x S with SLE links -> 3x3 conv, tanh."""

    def __init__(self, latent_dim: int = 100, image_size: int = 64, width: int = 32) -> None:
        super().__init__()
        _check_size(image_size)
        self.latent_dim = latent_dim
        self.image_size = image_size
        ch = _channels(image_size, width // 2, cap=4 * width)
        self.init = nn.Sequential(  # [N, ch4, 4, 4]
            nn.Unflatten(1, (latent_dim, 1, 1)),
            nn.ConvTranspose2d(latent_dim, 2 * ch[4], 4, 1, 0, bias=False),
            nn.BatchNorm2d(2 * ch[4]),
            nn.GLU(dim=1),
        )
        # up[i]: [N, ch[r/2], r/2, r/2] -> [N, ch[r], r, r] for r = 8, 16, ..., S
        self.up = nn.ModuleList(_up_block(ch[r // 2], ch[r]) for r in _resolutions(8, image_size))
        self.sle_sources = {big: small for small, big in SLE_LINKS[image_size]}
        self.sle = nn.ModuleDict(
            {str(big): SkipExcitation(ch[small], small, ch[big]) for small, big in SLE_LINKS[image_size]}
        )
        self.to_image = nn.Sequential(nn.Conv2d(ch[image_size], 1, 3, 1, 1), nn.Tanh())  # [N, 1, S, S]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.init(z)
        feats = {4: x}
        r = 4
        for block in self.up:
            r *= 2
            x = block(x)
            if str(r) in self.sle:
                x = self.sle[str(r)](feats[self.sle_sources[r]], x)
            feats[r] = x
        return self.to_image(x)


class FastGANDiscriminator(nn.Module):
    """S x S -> 16x16 -> 8x8 by 4x4 stride-2 conv blocks -> 4x4 -> one logit; two decoders for the real images.

    ``norm``: "spectral" (spectral norm on every conv, no BatchNorm), "batch" (BatchNorm after every conv but the
    first and the last, plain convs), "none" (neither: a WGAN-GP critic).
    """

    def __init__(self, image_size: int = 64, width: int = 32, norm: str = "spectral") -> None:
        super().__init__()
        _check_size(image_size)
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, not {norm!r}")
        self.image_size = image_size
        self.norm = norm
        ch = _channels(image_size, width, cap=8 * width)
        ch[image_size] = 1  # the input image
        sn, batch = norm == "spectral", norm == "batch"

        def down(r: int) -> nn.Sequential:  # [N, ch[r], r, r] -> [N, ch[r/2], r/2, r/2]
            bn = batch and r < image_size
            return nn.Sequential(
                _sn(nn.Conv2d(ch[r], ch[r // 2], 4, 2, 1, bias=not bn), sn),
                *([nn.BatchNorm2d(ch[r // 2])] if bn else []),
                nn.LeakyReLU(LEAK, True),
            )

        def decoder(c_in: int) -> nn.Sequential:  # [N, c_in, 8, 8] -> [N, 1, S/2, S/2]
            blocks: list[nn.Module] = []
            for k, _ in enumerate(_resolutions(16, image_size // 2)):
                c_out = max(8, width // 2 >> k)
                blocks.append(_up_block(c_in, c_out, sn, batch))
                c_in = c_out
            return nn.Sequential(*blocks, _sn(nn.Conv2d(c_in, 1, 3, 1, 1), sn), nn.Tanh())

        self.to_16 = nn.Sequential(*(down(r) for r in _resolutions(32, image_size)[::-1]))  # [N, ch16, 16, 16]
        self.to_8 = down(16)  # [N, ch8, 8, 8]
        self.head = nn.Sequential(  # [N, 1] logit
            down(8),  # [N, ch4, 4, 4]
            _sn(nn.Conv2d(ch[4], 1, 4, 1, 0), sn),  # [N, 1, 1, 1]
            nn.Flatten(),
        )
        self.feature_channels = ch[4]  # of the last feature map, [N, ch4, 4, 4] (a projection D's embedding width)
        self.decode_whole = decoder(ch[8])  # the whole image at S/2 from the 8x8 features
        self.decode_part = decoder(ch[16])  # a quadrant at S/2 from the matching 8x8 quarter of the 16x16 features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.to_8(self.to_16(x)))

    def forward_with_reconstruction(self, x: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits [N, 1], reconstruction loss) for REAL images ``x``; the quadrant is drawn from ``gen`` (CPU).

        The loss is ``L1(decode_whole(f8), avgpool2(x)) + L1(decode_part(quadrant of f16), quadrant of x)``, both
        means over pixels: L1 stands in for the paper's LPIPS, whose pretrained weights cannot be downloaded here.
        """
        h, loss = self.features_with_reconstruction(x, gen)
        return self.classify(h), loss

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map, [N, feature_channels, 4, 4], before the logit layer."""
        return self.head[0](self.to_8(self.to_16(x)))

    def classify(self, h: torch.Tensor) -> torch.Tensor:
        return self.head[2](self.head[1](h))

    def features_with_reconstruction(self, x: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(last feature map, reconstruction loss) for REAL images ``x`` (``forward_with_reconstruction``)."""
        f16 = self.to_16(x)
        f8 = self.to_8(f16)
        f4 = self.head[0](f8)
        row, col = divmod(int(torch.randint(4, (1,), generator=gen).item()), 2)
        h, half = f16.shape[-1] // 2, self.image_size // 2
        part_feat = f16[:, :, row * h : (row + 1) * h, col * h : (col + 1) * h]
        part_real = x[:, :, row * half : (row + 1) * half, col * half : (col + 1) * half]
        loss = F.l1_loss(self.decode_whole(f8), F.avg_pool2d(x, 2)) + F.l1_loss(self.decode_part(part_feat), part_real)
        return f4, loss


# The paper's init is DCGAN's: conv weights N(0, 0.02), BatchNorm N(1, 0.02) and 0, spectral norms re-estimated.
fastgan_init = weights_init
