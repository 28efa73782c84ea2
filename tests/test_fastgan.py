"""FastGAN (models.gan.fastgan): shapes, the discriminator's options and self-supervision, ONNX export."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from models.gan.export import check_parity, export_generator, ort_session
from models.gan.fastgan import SUPPORTED_SIZES, FastGANDiscriminator, FastGANGenerator, fastgan_init

LATENT = 16
WIDTH = 8  # small networks: the behaviour under test does not depend on the width


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """Networks this small gain nothing from intra-op threads, and on a busy 2-core machine they lose 10-50x."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def _generator(size: int) -> FastGANGenerator:
    torch.manual_seed(0)
    G = FastGANGenerator(LATENT, size, WIDTH)
    G.apply(fastgan_init)
    return G


def _discriminator(norm: str, size: int = 64) -> FastGANDiscriminator:
    torch.manual_seed(0)
    D = FastGANDiscriminator(size, WIDTH, norm)
    D.apply(fastgan_init)
    return D


def _reals(n: int = 4, size: int = 64) -> torch.Tensor:
    """Smooth random images in [-1, 1] (low-resolution noise, upsampled), a fixed batch."""
    low = torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    return nn.functional.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)


@pytest.mark.parametrize("size", SUPPORTED_SIZES)
def test_generator_shapes_and_range(size: int) -> None:
    G = _generator(size)
    assert G.latent_dim == LATENT
    with torch.no_grad():
        x = G(torch.randn(2, LATENT))
    assert x.shape == (2, 1, size, size)
    assert x.dtype == torch.float32
    assert float(x.min()) >= -1 and float(x.max()) <= 1


@pytest.mark.parametrize("norm", ["spectral", "batch", "none"])
@pytest.mark.parametrize("size", [64, 128])
def test_discriminator_logits_shape(norm: str, size: int) -> None:
    D = _discriminator(norm, size)
    logits = D(torch.rand(3, 1, size, size) * 2 - 1)
    assert logits.shape == (3, 1)
    assert torch.isfinite(logits).all()


def test_unsupported_size_and_norm_are_refused() -> None:
    with pytest.raises(ValueError):
        FastGANGenerator(LATENT, 32, WIDTH)
    with pytest.raises(ValueError):
        FastGANDiscriminator(100, WIDTH)
    with pytest.raises(ValueError):
        FastGANDiscriminator(64, WIDTH, norm="layer")


@pytest.mark.parametrize("norm", ["spectral", "batch", "none"])
def test_reconstruction_loss_backpropagates_and_is_reproducible(norm: str) -> None:
    D = _discriminator(norm)
    twin = copy.deepcopy(D)  # the same weights (and power-iteration state)
    x = _reals()
    logits, loss = D.forward_with_reconstruction(x, torch.Generator().manual_seed(3))
    assert logits.shape == (4, 1)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    first_conv = next(m for m in D.to_16.modules() if isinstance(m, nn.Conv2d))  # the trunk, not only the decoders
    for module in (first_conv, D.decode_whole, D.decode_part):
        grads = [p.grad for p in module.parameters()]
        assert all(g is not None for g in grads)
        assert any(float(g.abs().sum()) > 0 for g in grads if g is not None)
    _, again = twin.forward_with_reconstruction(x, torch.Generator().manual_seed(3))
    assert float(again.detach()) == float(loss.detach())
    # the quadrant follows the generator: several seeds reconstruct more than one quadrant
    losses = set()
    for seed in range(8):
        with torch.no_grad():
            _, rec = copy.deepcopy(twin).forward_with_reconstruction(x, torch.Generator().manual_seed(seed))
        losses.add(float(rec))
    assert len(losses) > 1


def test_norm_options() -> None:
    def convs(D: nn.Module) -> list[nn.Module]:
        return [m for m in D.modules() if isinstance(m, nn.Conv2d)]

    def has_bn(D: nn.Module) -> bool:
        return any(isinstance(m, nn.BatchNorm2d) for m in D.modules())

    spectral, batch, none = (_discriminator(n) for n in ("spectral", "batch", "none"))
    assert all(parametrize.is_parametrized(m, "weight") for m in convs(spectral)) and not has_bn(spectral)
    assert not any(parametrize.is_parametrized(m, "weight") for m in convs(none)) and not has_bn(none)
    assert not any(parametrize.is_parametrized(m, "weight") for m in convs(batch)) and has_bn(batch)


def test_init_follows_the_paper() -> None:
    G = _generator(64)
    w = torch.cat([m.weight.detach().flatten() for m in G.modules() if isinstance(m, nn.Conv2d | nn.ConvTranspose2d)])
    assert abs(float(w.mean())) < 2e-3 and 0.018 < float(w.std()) < 0.022
    bn = torch.cat([m.weight.detach() for m in G.modules() if isinstance(m, nn.BatchNorm2d)])
    assert float(bn.min()) > 0.9 and float(bn.max()) < 1.1
    # spectral norm: the unnormalised weight is drawn, and the normaliser matches it (largest singular value ~1)
    D = _discriminator("spectral")
    for m in D.modules():
        if isinstance(m, nn.Conv2d):
            with torch.no_grad():
                sigma = torch.linalg.matrix_norm(m.weight.flatten(1), 2)
            assert 0.9 < float(sigma) < 1.1


@pytest.mark.parametrize("size", [64, 128])
def test_onnx_export_parity_and_dynamic_batch(size: int, tmp_path: Path) -> None:
    G = _generator(size)
    G(torch.randn(8, LATENT))  # one training step's BatchNorm statistics, so that eval mode differs from init
    path = tmp_path / "g.onnx"
    export_generator(G, LATENT, path)
    assert check_parity(G, LATENT, path) <= 1e-4
    z = torch.randn(3, LATENT, generator=torch.Generator().manual_seed(5))
    got = ort_session(path).run(["image"], {"z": z.numpy()})[0]
    with torch.no_grad():
        expected = G.eval()(z).numpy()
    assert got.shape == (3, 1, size, size)
    assert float(np.max(np.abs(got - expected))) <= 1e-4


def test_decoders_learn_to_reconstruct() -> None:
    D = _discriminator("spectral")
    x = _reals()
    opt = torch.optim.Adam(D.parameters(), lr=2e-3, betas=(0.5, 0.999))

    def loss_over_quadrants() -> float:
        with torch.no_grad():
            return sum(float(D.forward_with_reconstruction(x, torch.Generator().manual_seed(s))[1]) for s in range(4))

    before = loss_over_quadrants()
    gen = torch.Generator().manual_seed(0)
    for _ in range(30):
        opt.zero_grad()
        _, loss = D.forward_with_reconstruction(x, gen)
        loss.backward()
        opt.step()
    assert loss_over_quadrants() < 0.7 * before
