"""Class-conditional models: networks, transitional conditioning, training, ONNX export with a label, manifest.

Real PyTorch training (tiny networks) and real ONNX Runtime sessions; no fakes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from models.gan.conditional import ConditionalGenerator, ProjectionDiscriminator, set_strength, strength_at
from models.gan.export import check_parity, export_generator, ort_session
from models.gan.networks import build
from models.gan.training import train
from models.platform.schemas import TrainSpec
from models.platform.store import Store
from tests.conftest import publish_tiny_conditional_model, put_dataset, two_class_blobs

TINY = {"image_size": 32, "width": 8, "latent_dim": 16, "batch_size": 8, "epochs": 2}


@pytest.mark.parametrize(
    ("architecture", "size", "extra"),
    [("dcgan", 32, {}), ("fastgan", 64, {"d_norm": "spectral"}), ("dcgan", 32, {"loss": "wgan-gp", "d_norm": "none"})],
)
def test_conditional_training_exports_z_and_label_with_parity_per_class(
    tmp_path: Path, architecture: str, size: int, extra: dict[str, object]
) -> None:
    images, labels = two_class_blobs(24, 64)
    spec = TrainSpec(dataset="d", **{**TINY, "image_size": size}, architecture=architecture, conditional=True,
                     ema=False, augment=True, **extra)  # fmt: skip
    result = train(spec, images, tmp_path, labels=labels, num_classes=2, device=torch.device("cpu"), threads=1)
    assert isinstance(result.generator, ConditionalGenerator)
    assert float(result.generator.strength) == 1.0  # the published generator is fully conditional
    path = tmp_path / "g.onnx"
    export_generator(result.generator, spec.latent_dim, path)
    session = ort_session(path)
    assert [(i.name, i.type) for i in session.get_inputs()] == [("z", "tensor(float)"), ("label", "tensor(int64)")]
    assert check_parity(result.generator, spec.latent_dim, path) <= 1e-4  # checked for every class
    z = np.random.default_rng(0).standard_normal((4, spec.latent_dim), dtype=np.float32)
    no = session.run(["image"], {"z": z, "label": np.zeros(4, np.int64)})[0]
    yes = session.run(["image"], {"z": z, "label": np.ones(4, np.int64)})[0]
    assert no.shape == (4, 1, size, size)
    # The label changes the image (exactly equal when the class is ignored, as at strength 0; a barely trained
    # tiny FastGAN in eval mode draws nearly flat images, so the size of the change is not asserted here).
    assert not np.array_equal(no, yes)


def test_transitional_conditioning_ramps_in_and_starts_unconditional() -> None:
    assert strength_at(0, 100, 0.1, 0.4) == 0.0
    assert strength_at(10, 100, 0.1, 0.4) == 0.0
    assert strength_at(25, 100, 0.1, 0.4) == pytest.approx(0.5)
    assert strength_at(40, 100, 0.1, 0.4) == 1.0
    assert strength_at(99, 100, 0.1, 0.4) == 1.0
    spec = TrainSpec(dataset="d", architecture="dcgan", conditional=True, **TINY, d_norm="spectral")
    G, D = build(spec, num_classes=2)
    assert isinstance(D, ProjectionDiscriminator)
    G.eval()
    D.eval()  # no power iteration of the spectral norms between the calls compared
    z, x = torch.randn(3, 16), torch.randn(3, 1, 32, 32)
    zeros, ones = torch.zeros(3, dtype=torch.int64), torch.ones(3, dtype=torch.int64)
    torch.nn.init.normal_(D.embed.parametrizations.weight.original)  # a class embedding that matters
    set_strength(0.0, G, D)
    with torch.no_grad():
        assert torch.equal(G(z, zeros), G(z, ones))  # at strength 0 the class is not seen at all
        assert torch.equal(D(x, zeros), D(x, ones))
    set_strength(1.0, G, D)
    with torch.no_grad():
        assert not torch.equal(D(x, zeros), D(x, ones))


def test_conditional_is_refused_where_it_cannot_train(store: Store) -> None:
    with pytest.raises(ValueError, match="dcgan-seed"):
        TrainSpec(dataset="d", architecture="dcgan-seed", image_size=128, conditional=True)
    with pytest.raises(ValueError, match="cond_start"):
        TrainSpec(dataset="d", conditional=True, cond_start=0.3, cond_end=0.2)
    images, labels = two_class_blobs(24, 64)
    one_class = put_dataset(store, images, "one")
    problem = TrainSpec(dataset=one_class.id, conditional=True, batch_size=8).check_dataset(one_class)
    assert problem is not None and "at least 2 classes" in problem
    few = put_dataset(store, images[:14], "few", labels[:14], ["no", "yes"])  # 'yes': 5 images
    assert TrainSpec(dataset=few.id, conditional=True, batch_size=8).check_dataset(few) is None  # needs 4 each
    problem = TrainSpec(dataset=few.id, conditional=True, batch_size=12).check_dataset(few)  # needs 6 each
    assert problem is not None and "'yes': 5" in problem and "batch_size" in problem
    assert TrainSpec(dataset=few.id, batch_size=12).check_dataset(few) is None  # unconditional: pooled classes


def test_published_conditional_model_lists_its_classes(store: Store) -> None:
    version = publish_tiny_conditional_model(store)
    manifest = json.loads((store.model_dir(version) / "model.json").read_text())
    assert manifest["conditional"] is True
    assert manifest["onnx_inputs"] == ["z", "label"]
    assert manifest["labels"] == [
        {"name": "no", "index": 0, "train_images": 16},
        {"name": "yes", "index": 1, "train_images": 8},
    ]


def test_conditional_resume_continues_exactly(tmp_path: Path) -> None:
    images, labels = two_class_blobs(24, 64)
    spec = TrainSpec(dataset="d", architecture="dcgan", conditional=True, **{**TINY, "epochs": 3})
    straight = train(spec, images, tmp_path / "a", labels=labels, num_classes=2, device=torch.device("cpu"))
    first = TrainSpec(dataset="d", architecture="dcgan", conditional=True, **{**TINY, "epochs": 3})
    with pytest.raises(RuntimeError):  # stop after the first checkpoint (every 3 steps = one epoch)

        def stop(fields: dict[str, object]) -> None:
            if fields["step"] == 3:
                raise RuntimeError("stop")

        train(first, images, tmp_path / "b", labels=labels, num_classes=2, device=torch.device("cpu"),
              checkpoint_every=3, progress_fn=stop, log_every=3)  # fmt: skip
    resumed = train(first, images, tmp_path / "b", labels=labels, num_classes=2, device=torch.device("cpu"))
    assert resumed.resumed_from_step == 3
    for a, b in zip(straight.generator.state_dict().values(), resumed.generator.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_mode_seeking_is_large_for_a_class_that_ignores_its_latent() -> None:
    from models.gan.losses import mode_seeking

    z = torch.randn(6, 8, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1, 0, 1, 0, 1])
    varied = torch.randn(6, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    collapsed = varied.clone()
    collapsed[labels == 1] = varied[1]  # class 1 draws one image whatever z is
    low, high = mode_seeking(varied, z, labels), mode_seeking(collapsed, z, labels)
    assert low is not None and high is not None and float(high) > 2 * float(low)
    assert mode_seeking(varied[:2], z[:2], labels[:2]) is None  # no two fakes of one class
    assert TrainSpec(dataset="d", conditional=True).mode_seeking == 0.3  # a conditional model's default
    assert TrainSpec(dataset="d", conditional=True, mode_seeking=0).mode_seeking == 0.0  # unless given
    assert TrainSpec(dataset="d").mode_seeking == 0.3  # quick's own (it trains without DiffAugment)
    assert TrainSpec(dataset="d", preset="report").mode_seeking == 0.0
    assert TrainSpec(dataset="d", conditional=True).augment and not TrainSpec(dataset="d").augment  # as measured
