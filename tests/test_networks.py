"""The report's network exactly, and the DCGAN at every supported size."""

from __future__ import annotations

import pytest
import torch

from models.gan.networks import build, count_parameters
from models.platform.schemas import TrainSpec


def test_dcgan_seed_matches_the_report() -> None:
    G, D = build(TrainSpec(dataset="x", architecture="dcgan-seed", image_size=128))
    assert count_parameters(G) == 27_265_281
    assert count_parameters(D) == 582_785
    z = torch.randn(3, 100)
    with torch.no_grad():
        x = G(z)
        assert x.shape == (3, 1, 128, 128)
        assert x.min() >= -1 and x.max() <= 1
        assert D(x).shape == (3, 1)


def test_dcgan_seed_layers_match_the_keras_summary() -> None:
    """Per-layer parameter counts as printed in the report's Keras model summaries."""
    G, D = build(TrainSpec(dataset="x", architecture="dcgan-seed", image_size=128))
    g = [
        count_parameters(m)
        for m in G.modules()
        if isinstance(m, torch.nn.Linear | torch.nn.Conv2d | torch.nn.ConvTranspose2d)
    ]
    d = [count_parameters(m) for m in D.modules() if isinstance(m, torch.nn.Linear | torch.nn.Conv2d)]
    assert g == [26_476_544, 524_416, 262_272, 2_049]
    assert d == [640, 73_856, 147_584, 295_168, 65_537]


@pytest.mark.parametrize("size", [32, 64, 128, 256])
def test_dcgan_sizes(size: int) -> None:
    G, D = build(TrainSpec(dataset="x", architecture="dcgan", image_size=size, width=8, latent_dim=16))
    with torch.no_grad():
        x = G(torch.randn(2, 16))
        assert x.shape == (2, 1, size, size)
        assert D(x).shape == (2, 1)


def test_dcgan_init_follows_radford() -> None:
    G, _ = build(TrainSpec(dataset="x", architecture="dcgan", image_size=64, width=64))
    w = torch.cat([m.weight.detach().flatten() for m in G.modules() if isinstance(m, torch.nn.ConvTranspose2d)])
    assert abs(float(w.mean())) < 1e-3
    assert 0.019 < float(w.std()) < 0.021


@pytest.mark.parametrize(
    "bad",
    [
        {"architecture": "dcgan-seed", "image_size": 64},
        {"architecture": "dcgan", "image_size": 100},
        {"architecture": "stylegan9"},
        {"epochs": 0},
        {"batch_size": -1},
    ],
)
def test_spec_refuses_unsupported(bad: dict) -> None:
    with pytest.raises(ValueError):
        TrainSpec(dataset="x", **bad)
