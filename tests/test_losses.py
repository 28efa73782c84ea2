"""The GAN losses (``models.gan.losses``): each one's values on known logits, and training with each."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from models.gan.losses import LOSSES, BCELoss, HingeLoss, WGANGPLoss, make_loss
from models.gan.training import train
from models.platform.schemas import TrainSpec
from tests.conftest import blobs


def test_bce_is_the_reports_min_max_loss() -> None:
    loss = BCELoss()
    zero = torch.zeros(4, 1)
    assert loss.d_loss(zero, zero).item() == pytest.approx(2 * math.log(2))  # D undecided: log 2 per side
    assert loss.g_loss(torch.full((4, 1), 20.0)).item() == pytest.approx(0.0, abs=1e-6)  # D calls fakes real
    assert loss.d_loss(torch.full((4, 1), 20.0), torch.full((4, 1), -20.0)).item() == pytest.approx(0.0, abs=1e-6)
    assert loss.regularizer(nn.Identity(), zero, zero) is None


def test_hinge_is_zero_past_the_margin() -> None:
    loss = HingeLoss()
    assert loss.d_loss(torch.full((4, 1), 1.5), torch.full((4, 1), -1.5)).item() == 0.0
    assert loss.d_loss(torch.zeros(4, 1), torch.zeros(4, 1)).item() == pytest.approx(2.0)
    assert loss.g_loss(torch.full((4, 1), 3.0)).item() == pytest.approx(-3.0)


class Linear(nn.Module):
    """``D(x) = sum(w * x)``: its gradient is ``w`` everywhere, so the penalty is known exactly."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self.w).flatten(1).sum(1, keepdim=True)


def test_wgan_gp_penalises_a_critic_whose_gradient_norm_is_not_one() -> None:
    loss = WGANGPLoss(generator=torch.Generator().manual_seed(0))
    real, fake = torch.randn(8, 1, 4, 4), torch.randn(8, 1, 4, 4)
    unit = torch.full((1, 1, 4, 4), 1 / 4)  # 16 entries of 1/4: norm 1
    penalty = loss.regularizer(Linear(unit), real, fake)
    assert penalty is not None and penalty.item() == pytest.approx(0.0, abs=1e-10)
    penalty = loss.regularizer(Linear(2 * unit), real, fake)
    assert penalty is not None and penalty.item() == pytest.approx(10.0)  # 10 x (2 - 1)^2
    assert loss.d_loss(torch.full((4, 1), 2.0), torch.full((4, 1), -1.0)).item() == pytest.approx(-3.0)
    assert loss.g_loss(torch.full((4, 1), -1.0)).item() == pytest.approx(1.0)


def test_unknown_loss_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown loss"):
        make_loss("least-squares")


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_training_runs_and_resumes_with_every_loss(tmp_path: Path, name: str) -> None:
    """The loop is the same for every loss: finite losses, and a resumed run equals a straight one."""
    spec = TrainSpec(
        dataset="x",
        architecture="dcgan",
        image_size=32,
        width=8,
        latent_dim=16,
        epochs=2,
        batch_size=8,
        seed=1,
        loss=name,
    )
    straight = train(spec, blobs(), tmp_path / "a", checkpoint_every=3)
    assert len(straight.d_losses) == 6 and all(math.isfinite(v) for v in straight.d_losses + straight.g_losses)
    calls = {"n": 0}

    def abort_after_4() -> bool:
        calls["n"] += 1
        return calls["n"] >= 4

    from models.gan.training import TrainingAborted

    with pytest.raises(TrainingAborted):
        train(spec, blobs(), tmp_path / "b", checkpoint_every=3, abort_fn=abort_after_4)
    resumed = train(spec, blobs(), tmp_path / "b", checkpoint_every=3)
    assert resumed.resumed_from_step == 3 and resumed.d_losses == straight.d_losses
