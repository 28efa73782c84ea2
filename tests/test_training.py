"""The training loop on real networks: callbacks, samples, checkpoints, exact resume, ONNX export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from models.gan.export import check_parity, export_generator, ort_session
from models.gan.training import CHECKPOINT, TrainingAborted, select_device, train
from models.platform.schemas import TrainSpec
from tests.conftest import blobs

SPEC = TrainSpec(
    dataset="x", architecture="dcgan", image_size=32, width=8, latent_dim=16, epochs=3, batch_size=8, seed=3
)


def test_train_reports_progress_and_writes_samples(tmp_path: Path) -> None:
    seen: list[dict] = []
    result = train(SPEC, blobs(), tmp_path, progress_fn=seen.append, checkpoint_every=100, log_every=1)
    assert result.step == 9 and result.epoch == 3  # 24 images / batch 8 = 3 steps x 3 epochs
    assert [p["step"] for p in seen] == list(range(1, 10))
    last = seen[-1]
    assert last["epoch"] == 3 and last["steps"] == 9 and last["eta_s"] == 0
    assert last["images_per_s"] > 0 and np.isfinite(last["d_loss"]) and np.isfinite(last["g_loss"])
    assert len(result.d_losses) == len(result.g_losses) == 9
    grids = sorted((tmp_path / "samples").glob("epoch_*.png"))
    assert [g.name for g in grids] == ["epoch_0001.png", "epoch_0002.png", "epoch_0003.png"]
    assert Image.open(grids[-1]).mode == "L"
    ckpt = torch.load(tmp_path / CHECKPOINT, weights_only=False)
    assert ckpt["step"] == 9 and ckpt["spec"]["seed"] == 3
    assert {"generator", "discriminator", "opt_g", "opt_d", "noise_rng", "torch_rng"} <= set(ckpt)


def test_losses_are_read_at_the_logging_interval_and_kept_per_step(tmp_path: Path) -> None:
    """Progress (and the host reads of the losses) every ``log_every`` steps and at each epoch's end; the
    history still holds every step, in ``history.json`` beside the checkpoint."""
    import json

    from models.gan.run import HISTORY

    seen: list[dict] = []
    spec = SPEC.model_copy(update={"epochs": 4})  # 12 steps of 3 per epoch
    result = train(spec, blobs(), tmp_path, progress_fn=seen.append, checkpoint_every=100, log_every=5)
    assert [p["step"] for p in seen] == [3, 5, 6, 9, 10, 12]
    history = json.loads((tmp_path / HISTORY).read_text())
    assert history["d_loss"] == result.d_losses and history["g_loss"] == result.g_losses
    assert len(history["d_loss"]) == 12 and history["steps_per_epoch"] == 3
    assert seen[-1]["d_loss"] == result.d_losses[-1]


def test_resume_continues_exactly(tmp_path: Path) -> None:
    """Stopped after step 5 (last checkpoint at step 4) and resumed == never stopped."""
    spec = SPEC.model_copy(update={"augment": True})
    straight = train(spec, blobs(), tmp_path / "a", checkpoint_every=2)

    calls = {"n": 0}

    def abort_after_5() -> bool:
        calls["n"] += 1
        return calls["n"] >= 5

    with pytest.raises(TrainingAborted):
        train(spec, blobs(), tmp_path / "b", checkpoint_every=2, abort_fn=abort_after_5)
    assert torch.load(tmp_path / "b" / CHECKPOINT, weights_only=False)["step"] == 4
    resumed = train(spec, blobs(), tmp_path / "b", checkpoint_every=2)
    assert resumed.resumed_from_step == 4
    assert resumed.d_losses == straight.d_losses
    for (k, a), b in zip(straight.generator.state_dict().items(), resumed.generator.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_batch_larger_than_dataset_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="larger than the dataset"):
        train(SPEC.model_copy(update={"batch_size": 64}), blobs(), tmp_path)


def test_device_falls_back_to_cpu_without_cuda() -> None:
    if torch.cuda.is_available():  # pragma: no cover - GPU machines
        assert select_device("auto").type == "cuda"
    else:
        assert select_device("auto").type == "cpu"
        assert select_device("cuda").type == "cpu"
    assert select_device("cpu").type == "cpu"


def test_onnx_export_matches_pytorch(tmp_path: Path) -> None:
    result = train(SPEC.model_copy(update={"epochs": 1}), blobs(), tmp_path / "run")
    path = tmp_path / "g.onnx"
    export_generator(result.generator, 16, path)
    assert check_parity(result.generator, 16, path) <= 1e-4
    sess = ort_session(path)
    assert [i.name for i in sess.get_inputs()] == ["z"]
    assert [o.name for o in sess.get_outputs()] == ["image"]
    for n in (1, 5):  # dynamic batch
        out = sess.run(["image"], {"z": np.zeros((n, 16), np.float32)})[0]
        assert out.shape == (n, 1, 32, 32) and out.dtype == np.float32
        assert out.min() >= -1 and out.max() <= 1


def test_diff_augment_is_differentiable_and_reproducible() -> None:
    from models.gan.augment import diff_augment

    x = (torch.rand(6, 1, 32, 32) * 2 - 1).requires_grad_(True)
    a = diff_augment(x, torch.Generator().manual_seed(5))
    b = diff_augment(x, torch.Generator().manual_seed(5))
    assert a.shape == x.shape and torch.equal(a, b)
    assert not torch.equal(a, x)  # something was moved or cut out
    assert a.min() >= -1 and a.max() <= 1
    a.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize(("first", "then"), [(False, True), (True, False)], ids=["fp32-to-fp16", "fp16-to-fp32"])
def test_resume_across_scaler_settings(tmp_path: Path, first: bool, then: bool) -> None:
    """A checkpoint written without a gradient scaler (fp32 or bf16: the scaler's state is empty) resumes with one
    (fp16, as on a GPU without bf16), and the reverse; the run finishes every step from where it left off."""
    from models.gan.precision import Precision

    precisions = {False: Precision("fp32", "cpu"), True: Precision("fp16", "cpu")}
    calls = {"n": 0}

    def abort_after_4() -> bool:
        calls["n"] += 1
        return calls["n"] >= 4

    with pytest.raises(TrainingAborted):
        train(SPEC, blobs(), tmp_path, checkpoint_every=2, abort_fn=abort_after_4, precision=precisions[first])
    ckpt = torch.load(tmp_path / CHECKPOINT, weights_only=False)
    assert ckpt["step"] == 4
    assert bool(ckpt["scaler"]) is first  # a disabled scaler saves an empty state
    assert ckpt["torch_rng"].device.type == "cpu" and ckpt["torch_rng"].dtype == torch.uint8

    resumed = train(SPEC, blobs(), tmp_path, checkpoint_every=2, precision=precisions[then])
    assert resumed.resumed_from_step == 4 and resumed.step == 9
    assert all(np.isfinite(resumed.d_losses)) and len(resumed.d_losses) == 9
    assert bool(torch.load(tmp_path / CHECKPOINT, weights_only=False)["scaler"]) is then


def test_resume_is_reported_even_when_no_step_is_left(tmp_path: Path) -> None:
    train(SPEC, blobs(), tmp_path, checkpoint_every=100)  # all 9 steps, the last checkpoint at step 9
    seen: list[dict] = []
    resumed = train(SPEC, blobs(), tmp_path, progress_fn=seen.append)
    assert resumed.step == 9 and resumed.resumed_from_step == 9
    assert [(p["step"], p["steps"], p["resumed_from_step"]) for p in seen] == [(9, 9, 9)]


@pytest.mark.parametrize(
    "extra",
    [{}, {"channels_last": True}, {"architecture": "fastgan", "image_size": 64}],
    ids=["dcgan", "channels-last", "fastgan"],
)
def test_mixed_precision_is_chosen_by_the_cpu_and_resumes_exactly(tmp_path: Path, extra: dict) -> None:
    """``precision: auto`` trains in bf16 exactly where the CPU has a native bf16 dot product (its flags, read at
    run time), and such a run killed midway resumes to the same weights as one that never stopped."""
    from models.gan.precision import cpu_has_bf16

    spec = SPEC.model_copy(update={"epochs": 3, **extra})
    spec = TrainSpec.model_validate(spec.model_dump())
    whole = train(spec, blobs(), tmp_path / "whole", checkpoint_every=2)
    assert whole.precision == ("bf16" if cpu_has_bf16() else "fp32")
    calls = {"n": 0}

    def abort_after_3() -> bool:
        calls["n"] += 1
        return calls["n"] >= 3

    with pytest.raises(TrainingAborted):
        train(spec, blobs(), tmp_path / "split", checkpoint_every=2, abort_fn=abort_after_3)
    resumed = train(spec, blobs(), tmp_path / "split", checkpoint_every=2)
    assert resumed.resumed_from_step == 3 and resumed.d_losses == whole.d_losses
    for a, b in zip(whole.generator.state_dict().values(), resumed.generator.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_an_unsupported_precision_trains_in_fp32(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    fp32 = train(SPEC.model_copy(update={"precision": "fp32"}), blobs(), tmp_path / "a")
    assert fp32.precision == "fp32"
    fp16 = train(SPEC.model_copy(update={"precision": "fp16"}), blobs(), tmp_path / "b")  # fp16 is CUDA's
    assert fp16.precision == "fp32" and "fp16 training runs on CUDA only" in caplog.text
