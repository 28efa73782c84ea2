"""The small-data recipe: presets, losses' own defaults, spectral norm, R1, EMA, adaptive augmentation,
snapshot selection and the collapse flag, each through the real training loop."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from torch import nn

from models.gan.augment import ADA_INTERVAL, AdaptiveAugment, color, diff_augment
from models.gan.losses import r1_penalty
from models.gan.networks import build
from models.gan.training import CHECKPOINT, TrainingAborted, make_plan, train
from models.platform.schemas import PRESETS, TrainSpec
from tests.conftest import blobs

TINY = {"architecture": "dcgan", "image_size": 32, "width": 8, "latent_dim": 16, "batch_size": 8, "seed": 2}


# -- presets --------------------------------------------------------------------------------------
def test_a_spec_with_only_a_dataset_trains_quick_on_a_cpu_and_standard_on_a_gpu() -> None:
    cpu = TrainSpec(dataset="ds")
    assert cpu.preset == "auto" and cpu.preset_used == "quick"
    assert {k: getattr(cpu, k) for k in PRESETS["quick"]} == PRESETS["quick"]
    gpu = TrainSpec.model_validate(cpu.model_dump(), context={"gpu": True, "revalidate": True})  # as the worker
    assert gpu.preset_used == "standard" and gpu.image_size == 128 and gpu.kimg == PRESETS["standard"]["kimg"]


def test_explicit_fields_override_the_preset_and_survive_revalidation() -> None:
    spec = TrainSpec(dataset="ds", preset="quick", architecture="dcgan", image_size=32, epochs=3)
    assert (spec.architecture, spec.image_size, spec.epochs, spec.kimg) == ("dcgan", 32, 3, None)  # epochs given
    assert spec.ema is True and spec.loss == "hinge"  # the rest from the preset
    again = TrainSpec.model_validate(spec.model_dump(), context={"gpu": True, "revalidate": True})
    assert (again.architecture, again.image_size, again.preset_used) == ("dcgan", 32, "quick")


def test_a_client_cannot_mark_its_own_fields_as_not_given() -> None:
    spec = TrainSpec.model_validate({"dataset": "ds", "epochs": 3, "given": [], "preset_used": "standard"})
    assert spec.epochs == 3 and spec.kimg is None and spec.preset_used == "quick" and "epochs" in spec.given


def test_the_report_preset_is_the_seed_recipe() -> None:
    spec = TrainSpec(dataset="ds", preset="report")
    assert (spec.architecture, spec.image_size, spec.epochs, spec.loss, spec.kimg) == (
        "dcgan-seed",
        128,
        10,
        "bce",
        None,
    )
    assert not spec.ema and not spec.augment and spec.snapshots == 0


def test_wgan_gp_brings_its_own_defaults_unless_given() -> None:
    spec = TrainSpec(dataset="ds", loss="wgan-gp")
    assert (spec.n_critic, spec.lr_g, spec.lr_d, spec.beta1, spec.beta2, spec.d_norm) == (
        5,
        1e-4,
        1e-4,
        0.0,
        0.9,
        "none",
    )
    assert TrainSpec(dataset="ds", loss="wgan-gp", n_critic=2).n_critic == 2
    with pytest.raises(ValidationError, match="BatchNorm"):
        TrainSpec(dataset="ds", loss="wgan-gp", d_norm="batch")


@pytest.mark.parametrize(("bad", "match"), [({"augment_policy": "color,zoom"}, "augment_policy"),
                                            ({"architecture": "fastgan", "image_size": 32}, "not supported"),
                                            ({"preset": "fast"}, "preset")])  # fmt: skip
def test_bad_recipe_fields_are_refused_with_the_choices(bad: dict[str, Any], match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        TrainSpec(dataset="ds", **bad)


def test_kimg_sets_the_length_and_snapshots_fall_in_the_second_half() -> None:
    plan = make_plan(TrainSpec(dataset="ds", **TINY, kimg=0.48, snapshots=3), 24)  # 3 steps of 8 per epoch
    assert plan.epochs == 20 and plan.total_steps == 60
    assert plan.snapshot_steps == {60, 50, 40}


def test_max_epochs_shortens_a_kimg_run_on_a_small_set_only() -> None:
    """quick's kimg on a small set would show each slice so often that G copies it: max_epochs ends it sooner."""
    small = make_plan(TrainSpec(dataset="ds", **TINY, kimg=0.48, max_epochs=12, snapshots=3), 24)
    assert small.epochs == 12 and small.total_steps == 36 and max(small.snapshot_steps) == 36
    large = make_plan(TrainSpec(dataset="ds", **TINY, kimg=0.48, max_epochs=12), 240)  # 30 steps of 8 per epoch
    assert large.epochs == 2 and large.total_steps == 60  # kimg ends it first
    given = make_plan(TrainSpec(dataset="ds", **TINY, epochs=30, max_epochs=12), 24)
    assert given.epochs == 30  # without kimg the length is the epochs given


def test_quick_caps_epochs_unless_the_client_sets_the_length() -> None:
    assert TrainSpec(dataset="ds").max_epochs == PRESETS["quick"]["max_epochs"]
    own = TrainSpec(dataset="ds", kimg=50)  # an explicit kimg is the length: the preset's cap is dropped
    assert own.kimg == 50 and own.max_epochs is None
    both = TrainSpec(dataset="ds", kimg=50, max_epochs=100)
    assert both.max_epochs == 100
    again = TrainSpec.model_validate(own.model_dump(), context={"revalidate": True})  # the worker validates again
    assert again.kimg == 50 and again.max_epochs is None


# -- networks and losses --------------------------------------------------------------------------
def test_discriminator_normalisation_options() -> None:
    def kinds(norm: str) -> tuple[bool, bool]:
        _, D = build(TrainSpec(dataset="ds", **TINY, d_norm=norm))
        bn = any(isinstance(m, nn.BatchNorm2d) for m in D.modules())
        sn = any(hasattr(m, "parametrizations") for m in D.modules())
        return bn, sn

    assert kinds("batch") == (True, False)
    assert kinds("spectral") == (False, True)
    assert kinds("none") == (False, False)


def test_r1_penalty_is_half_gamma_times_the_squared_gradient_norm() -> None:
    D = nn.Sequential(nn.Flatten(), nn.Linear(4, 1, bias=False))
    with torch.no_grad():
        D[1].weight.copy_(torch.tensor([[1.0, 2.0, 0.0, 2.0]]))  # gradient w.r.t. x is w: |w|^2 = 9
    assert float(r1_penalty(D, torch.randn(3, 1, 2, 2), gamma=10.0).detach()) == pytest.approx(45.0)


# -- augmentation ---------------------------------------------------------------------------------
def test_color_changes_brightness_and_contrast_and_is_differentiable() -> None:
    x = (torch.rand(4, 1, 16, 16) * 2 - 1).requires_grad_(True)
    y = color(x, torch.Generator().manual_seed(0))
    assert not torch.allclose(y.mean(dim=(1, 2, 3)), x.mean(dim=(1, 2, 3)))
    y.sum().backward()
    assert x.grad is not None and torch.all(x.grad != 0)


def test_augmentation_probability_zero_is_the_identity_and_one_changes_every_image() -> None:
    x = torch.rand(6, 1, 16, 16) * 2 - 1
    ops = ("color", "translation", "cutout")
    assert torch.equal(diff_augment(x, torch.Generator().manual_seed(1), ops, p=0.0), x)
    changed = diff_augment(x, torch.Generator().manual_seed(1), ops, p=1.0)
    assert all(not torch.equal(a, b) for a, b in zip(changed, x, strict=True))


def test_ada_raises_p_while_d_overfits_and_lowers_it_otherwise() -> None:
    ada = AdaptiveAugment(("translation",), target=0.6, speed_images=64)
    assert ada.p == 0.0
    for _ in range(ADA_INTERVAL * 2):
        ada.observe(torch.ones(8, 1))  # D sure of every real: r_t = 1 > 0.6
    assert ada.r_t == 1.0 and ada.p == pytest.approx(1.0)
    state = ada.state_dict()
    for _ in range(ADA_INTERVAL):
        ada.observe(-torch.ones(8, 1))  # r_t = -1 < 0.6
    assert ada.p == pytest.approx(0.5)
    restored = AdaptiveAugment(("translation",), target=0.6, speed_images=64)
    restored.load_state_dict(state)
    assert restored.p == pytest.approx(1.0) and restored.r_t == 1.0
    assert AdaptiveAugment(("cutout",), target=None, speed_images=64).p == 1.0  # not adaptive: always on


def test_training_reports_the_augmentation_probability(tmp_path: Path) -> None:
    seen: list[dict] = []
    spec = TrainSpec(dataset="ds", **TINY, epochs=6, augment=True, ada_target=0.6)
    result = train(spec, blobs(), tmp_path, progress_fn=seen.append, log_every=1)
    assert all(p["augment_p"] is not None for p in seen) and seen[-1]["r_t"] is not None
    assert result.augment_p == seen[-1]["augment_p"]
    plain = train(spec.model_copy(update={"augment": False}), blobs(), tmp_path / "plain", progress_fn=seen.append)
    assert plain.augment_p is None and seen[-1]["augment_p"] is None  # no augmentation: no probability shown


# -- EMA, n_critic ----------------------------------------------------------------------------------
def test_the_exported_generator_is_the_moving_average(tmp_path: Path) -> None:
    spec = TrainSpec(dataset="ds", **TINY, epochs=2, ema=True, snapshots=0)
    result = train(spec, blobs(), tmp_path)
    ckpt = torch.load(tmp_path / CHECKPOINT, weights_only=False)
    exported = result.generator.state_dict()
    for name, value in ckpt["generator_ema"].items():
        assert torch.equal(exported[name], value), name
    raw = ckpt["generator"]
    weights = [k for k in raw if k.endswith("weight")]
    assert any(not torch.equal(raw[k], exported[k]) for k in weights)  # an average, not the raw weights


def test_critic_steps_update_the_generator_every_n_critic_steps(tmp_path: Path) -> None:
    spec = TrainSpec(dataset="ds", **TINY, epochs=1, loss="wgan-gp", n_critic=5, ema=False, snapshots=0)
    assert spec.n_critic == 5
    torch.manual_seed(spec.seed)
    G0, _ = build(spec)
    result = train(spec, blobs(40), tmp_path)  # 5 steps of 8: G moves once, at step 5
    assert result.step == 5
    assert any(not torch.equal(a, b) for a, b in zip(G0.parameters(), result.generator.parameters(), strict=True))
    seen = train(spec.model_copy(update={"epochs": 1}), blobs(32), tmp_path / "short")  # 4 critic steps only
    assert all(
        torch.equal(a, b) for a, b in zip(G0.parameters(), seen.generator.parameters(), strict=True)
    )  # weights, not BN stats


# -- snapshot selection -----------------------------------------------------------------------------
class PreferStep:
    """A score_fn that prefers the snapshot taken at ``best_step`` and remembers what it scored."""

    def __init__(self, best_step: int, collapse_at: int | None = None) -> None:
        self.best_step, self.collapse_at = best_step, collapse_at
        self.step = 0
        self.weights: dict[int, dict[str, torch.Tensor]] = {}

    def __call__(self, G: nn.Module) -> dict[str, Any]:
        self.step += 1
        assert not G.training
        self.weights[self.step] = {k: v.clone() for k, v in G.state_dict().items()}
        return {"score": 0.0 if self.step == self.best_step else 1.0, "collapsed": self.step == self.collapse_at}


def test_the_best_snapshot_is_published_not_the_last(tmp_path: Path) -> None:
    spec = TrainSpec(dataset="ds", **TINY, epochs=8, snapshots=3)  # 24 steps; snapshots at 24, 20, 16
    scorer = PreferStep(best_step=1)  # the first scored (step 16)
    seen: list[dict] = []
    result = train(spec, blobs(), tmp_path, score_fn=scorer, progress_fn=seen.append, log_every=1)
    assert result.snapshot is not None and result.snapshot["step"] == 16
    assert [c["step"] for c in result.snapshot["candidates"]] == [16, 20, 24]
    assert "lowest score" in result.snapshot["reason"]
    for name, value in scorer.weights[1].items():
        assert torch.equal(result.generator.state_dict()[name], value), name
    assert seen[-1]["snapshot"]["step"] == 16 and (tmp_path / "samples" / "published.png").is_file()


def test_a_collapsed_snapshot_is_flagged_in_progress(tmp_path: Path) -> None:
    spec = TrainSpec(dataset="ds", **TINY, epochs=8, snapshots=3)
    seen: list[dict] = []
    train(spec, blobs(), tmp_path, score_fn=PreferStep(best_step=2, collapse_at=3), progress_fn=seen.append)
    last = seen[-1]
    assert last["collapsed"] is True and "mode collapse at step 24" in last["warning"]


def test_resume_keeps_the_best_snapshot(tmp_path: Path) -> None:
    spec = TrainSpec(dataset="ds", **TINY, epochs=8, snapshots=3)
    straight = train(spec, blobs(), tmp_path / "a", score_fn=PreferStep(best_step=1), checkpoint_every=2)
    calls = {"n": 0}

    def abort_after_18() -> bool:
        calls["n"] += 1
        return calls["n"] >= 18

    with pytest.raises(TrainingAborted):
        train(spec, blobs(), tmp_path / "b", score_fn=PreferStep(best_step=1), checkpoint_every=2,
              abort_fn=abort_after_18)  # fmt: skip
    scorer = PreferStep(best_step=99)  # scores every later snapshot worse than the one kept in the checkpoint
    resumed = train(spec, blobs(), tmp_path / "b", score_fn=scorer, checkpoint_every=2)
    assert resumed.resumed_from_step == 18 and resumed.snapshot is not None and resumed.snapshot["step"] == 16
    for (name, a), b in zip(
        straight.generator.state_dict().items(), resumed.generator.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name


# -- the snapshot scorer and fastgan in the loop ------------------------------------------------------
def test_snapshot_scorer_flags_a_collapsed_generator_and_not_a_varied_one() -> None:
    from models.quality.snapshots import SnapshotScorer

    images = blobs(48, size=64, seed=4)
    scorer = SnapshotScorer(images, 32, 16, seed=0)

    class Constant(nn.Module):  # every sample the same slice
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.zeros(1))

        def forward(self, z: torch.Tensor) -> torch.Tensor:
            one = torch.from_numpy(scorer.real[:1].astype(np.float32) / 127.5 - 1)[None]
            return one.expand(len(z), 1, 32, 32) + self.w

    class Replay(nn.Module):  # the training slices themselves: as varied as the real ones
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.zeros(1))

        def forward(self, z: torch.Tensor) -> torch.Tensor:
            real = torch.from_numpy(scorer.real.astype(np.float32) / 127.5 - 1)[:, None]
            return real[torch.arange(len(z)) % len(real)] + self.w

    bad, good = scorer(Constant().eval()), scorer(Replay().eval())
    assert bad["collapsed"] and bad["diversity_ratio"] > 1.5
    assert not good["collapsed"] and good["diversity_ratio"] == pytest.approx(1.0, abs=0.15)
    assert good["score"] < bad["score"]


def test_fastgan_trains_with_its_reconstruction_loss_and_resumes_exactly(tmp_path: Path) -> None:
    spec = TrainSpec(dataset="ds", architecture="fastgan", image_size=64, width=8, latent_dim=16, batch_size=8,
                     epochs=2, seed=5)  # fmt: skip
    straight = train(spec, blobs(16, size=64), tmp_path / "a", checkpoint_every=2)
    assert straight.step == 4 and all(np.isfinite(straight.d_losses + straight.g_losses))
    calls = {"n": 0}

    def abort_after_3() -> bool:
        calls["n"] += 1
        return calls["n"] >= 3

    with pytest.raises(TrainingAborted):
        train(spec, blobs(16, size=64), tmp_path / "b", checkpoint_every=2, abort_fn=abort_after_3)
    resumed = train(spec, blobs(16, size=64), tmp_path / "b", checkpoint_every=2)
    assert resumed.d_losses == straight.d_losses
