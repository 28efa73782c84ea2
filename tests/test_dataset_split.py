"""What every uploaded dataset gets: duplicate removal, a stratified held-out split, statistics, a preview.

Real uploads through the app (zips built here with Pillow); training and the worker are checked
to read the training split only.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from models.data.curation import stratified_split
from models.platform.grids import LABEL_HEIGHT
from models.platform.schemas import TrainSpec
from models.platform.settings import Settings
from models.platform.store import Store
from service.main import create_app
from tests.conftest import blobs, put_dataset, spawn_worker

S = 256  # settings.storage_size


def slice_image(seed: int, height: int = 128, width: int = 128) -> np.ndarray:
    """uint8 [H, W]: a textured bright ellipse on black, different for every seed."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    r2 = ((x - (width - 1) / 2) / (0.4 * width)) ** 2 + ((y - (height - 1) / 2) / (0.4 * height)) ** 2
    body = 255 - 127 * r2 - rng.integers(0, 60, (height, width))
    return np.where(r2 < 1, np.clip(body, 1, 255), 0).round().astype(np.uint8)


def encode(arr: np.ndarray, fmt: str = "PNG", **kwargs: Any) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def class_zip(counts: dict[str, int], seed: int = 0) -> bytes:
    """A folder per class holding ``counts[class]`` distinct slices."""
    members = {}
    for c, (name, count) in enumerate(sorted(counts.items())):
        for i in range(count):
            members[f"scans/{name}/{name}_{i:03d}.png"] = encode(slice_image(seed * 100_000 + c * 1000 + i))
    return zip_bytes(members)


def upload(client: TestClient, data: bytes) -> dict[str, Any]:
    r = client.post("/datasets", files={"file": ("scans.zip", data, "application/zip")})
    assert r.status_code == 201, r.text
    return r.json()


def row_hashes(images: np.ndarray) -> list[str]:
    return [hashlib.sha256(np.ascontiguousarray(img).tobytes()).hexdigest() for img in images]


def heldout_hashes(settings: Settings, dataset_id: str) -> set[str]:
    return set(row_hashes(Store(settings.home).load_dataset(dataset_id, split="heldout")[0]))


# -- duplicates -------------------------------------------------------------------------------
def test_exact_duplicates_are_removed_and_reported(client: TestClient, settings: Settings) -> None:
    first = slice_image(1)
    members = {
        "yes/a.png": encode(first),
        "yes/b.png": encode(first),  # the same file again
        "yes/c.bmp": encode(first, "BMP"),  # other bytes, the same stored pixels
        "yes/d.png": encode(slice_image(2)),
        "no/e.png": encode(slice_image(3)),
        "no/f.png": encode(slice_image(3)),
    }
    info = upload(client, zip_bytes(members))
    assert info["images"] == 3 and info["classes"] == {"no": 1, "yes": 2}
    assert {s["file"]: s["reason"] for s in info["skipped"]} == {
        "yes/b.png": "duplicate of yes/a.png",
        "yes/c.bmp": "duplicate of yes/a.png",
        "no/f.png": "duplicate of no/e.png",
    }
    assert info["stats"]["duplicates"] == 3
    images, _ = Store(settings.home).load_dataset(info["id"], split="all")
    assert len(set(row_hashes(images))) == len(images) == 3


# -- the held-out split ----------------------------------------------------------------------
def test_split_is_stratified_disjoint_and_complete(client: TestClient, settings: Settings) -> None:
    info = upload(client, class_zip({"big": 40, "mid": 20, "pair": 2, "single": 1}))
    split = info["split"]
    expected = {"big": (34, 6), "mid": (17, 3), "pair": (2, 0), "single": (1, 0)}  # round(0.15 n), >= 1 trains
    assert split["classes"] == {k: {"train": t, "heldout": h} for k, (t, h) in expected.items()}
    assert (split["train"], split["heldout"], split["fraction"], split["seed"]) == (54, 9, 0.15, 0)
    assert info["images"] == 63 and info["classes"] == {"big": 40, "mid": 20, "pair": 2, "single": 1}

    store = Store(settings.home)
    mask = np.load(store.dataset_dir(info["id"]) / "split.npy")
    train_idx, held_idx = np.flatnonzero(~mask), np.flatnonzero(mask)
    assert not set(train_idx) & set(held_idx)
    assert sorted([*train_idx, *held_idx]) == list(range(info["images"]))

    all_images, all_labels = store.load_dataset(info["id"], split="all")
    train, train_labels = store.load_dataset(info["id"])  # the default is the training split
    held, held_labels = store.load_dataset(info["id"], split="heldout")
    assert (len(train), len(held), len(all_images)) == (54, 9, 63)
    assert isinstance(train, np.memmap)  # a view of the stored rows, not a copy
    assert not set(row_hashes(train)) & set(row_hashes(held))
    assert set(row_hashes(train)) | set(row_hashes(held)) == set(row_hashes(all_images))
    names = sorted(expected)
    assert {names[i]: int(c) for i, c in zip(*np.unique(held_labels, return_counts=True), strict=True)} == {
        "big": 6,
        "mid": 3,
    }
    assert np.bincount(train_labels, minlength=4).tolist() == [34, 17, 2, 1]
    assert np.array_equal(all_labels[train_idx], train_labels)


def test_split_is_seeded(client: TestClient, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    data = class_zip({"no": 30, "yes": 30})
    first, again = upload(client, data), upload(client, data)
    assert first["sha256"] == again["sha256"]
    assert heldout_hashes(settings, first["id"]) == heldout_hashes(settings, again["id"])

    monkeypatch.setenv("DRAWAI_SPLIT_SEED", "7")
    seeded = Settings(home=settings.home, redis_url=settings.redis_url, _env_file=None)  # type: ignore[call-arg]
    assert seeded.split_seed == 7
    with TestClient(create_app(seeded)) as other:
        reseeded = upload(other, data)
    assert reseeded["split"]["seed"] == 7
    assert reseeded["split"]["classes"] == first["split"]["classes"]  # same counts, other images
    assert heldout_hashes(settings, reseeded["id"]) != heldout_hashes(settings, first["id"])


def test_fraction_setting_keeps_one_training_image_per_class() -> None:
    labels = np.array([0] * 1 + [1] * 2 + [2] * 3 + [3] * 10)
    held = stratified_split(labels, 0.5, seed=3)
    assert [int(held[labels == c].sum()) for c in range(4)] == [0, 1, 2, 5]  # round(1.5) = 2 of 3
    assert np.array_equal(held, stratified_split(labels, 0.5, seed=3))
    assert not stratified_split(labels, 0.0, seed=3).any()
    assert [int(stratified_split(labels, 0.99, seed=0)[labels == c].sum()) for c in range(4)] == [0, 1, 2, 9]


# -- training reads the training split only ------------------------------------------------
def test_training_sees_only_the_training_split(
    client: TestClient, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    import models.gan.training as training

    info = upload(client, class_zip({"default": 20}))
    n_train = info["split"]["train"]
    assert (n_train, info["split"]["heldout"]) == (17, 3)
    store = Store(settings.home)
    seen: list[set[str]] = []
    real_prepare = training.prepare_images

    def spy(images: np.ndarray, size: int, device: Any) -> Any:
        seen.append(set(row_hashes(images)))
        return real_prepare(images, size, device)

    monkeypatch.setattr(training, "prepare_images", spy)
    spec = TrainSpec(dataset=info["id"], image_size=32, width=8, latent_dim=16, batch_size=2, epochs=1)
    result = training.train(spec, store.load_dataset(info["id"])[0], store.jobs_dir / "direct")
    assert len(seen[0]) == n_train
    assert not seen[0] & heldout_hashes(settings, info["id"])
    assert result.step == n_train // 2 == 8  # all 20 images would make 10 steps


def test_batch_size_is_checked_against_the_training_split(client: TestClient) -> None:
    info = upload(client, class_zip({"default": 20}))  # 17 train, 3 held out
    r = client.post("/jobs/train", json={"dataset": info["id"], "batch_size": 18})
    assert r.status_code == 422, r.text
    assert "training split" in r.json()["detail"] and "17 of 20" in r.json()["detail"]
    assert client.post("/jobs/train", json={"dataset": info["id"], "batch_size": 17}).status_code == 202


def test_worker_trains_on_the_training_split(client: TestClient, settings: Settings) -> None:
    info = upload(client, class_zip({"default": 20}))
    spec = {"dataset": info["id"], "image_size": 32, "width": 8, "latent_dim": 16, "batch_size": 2, "epochs": 1}
    job_id = client.post("/jobs/train", json=spec).json()["id"]
    assert spawn_worker(settings).wait(timeout=240) == 0
    job = client.get(f"/jobs/{job_id}").json()
    assert job["status"] == "finished", job
    assert job["progress"]["steps"] == info["split"]["train"] // 2 == 8


def test_datasets_without_a_split_still_load(client: TestClient, store: Store) -> None:
    ds = put_dataset(store, blobs(12))  # as stored before splits existed: no split.npy, no split in dataset.json
    assert not (store.dataset_dir(ds.id) / "split.npy").exists()
    assert len(store.load_dataset(ds.id)[0]) == 12 and len(store.load_dataset(ds.id, split="heldout")[0]) == 0
    shown = client.get(f"/datasets/{ds.id}").json()
    assert shown["split"] is None and shown["stats"] is None
    assert client.post("/jobs/train", json={"dataset": ds.id, "batch_size": 12}).status_code == 202
    assert client.post("/jobs/train", json={"dataset": ds.id, "batch_size": 13}).status_code == 422
    assert client.get(f"/datasets/{ds.id}/preview.png").status_code == 200
    with pytest.raises(ValueError, match="unknown split"):
        store.load_dataset(ds.id, split="test")  # type: ignore[arg-type]


# -- statistics ------------------------------------------------------------------------------
def test_statistics(client: TestClient, settings: Settings) -> None:
    rotated = Image.fromarray(slice_image(9, 100, 200))  # stored 200 wide, displayed 100 wide (EXIF rotation)
    exif = rotated.getexif()
    exif[0x0112] = 6
    members = {
        "no/a.png": encode(slice_image(1, 64, 48)),
        "no/b.png": encode(slice_image(2, 128, 128)),
        "yes/c.png": encode(slice_image(3, 128, 128)),
        "yes/d.png": encode(slice_image(4, 300, 600)),
        "yes/e.jpg": encode(np.asarray(rotated), "JPEG", exif=exif.tobytes()),
    }
    info = upload(client, zip_bytes(members))
    assert info == client.get(f"/datasets/{info['id']}").json()
    stats = info["stats"]
    assert info["classes"] == {"no": 2, "yes": 3}
    assert sum(c["train"] + c["heldout"] for c in info["split"]["classes"].values()) == info["images"] == 5
    assert stats["common_sizes"] == {"48x64": 1, "128x128": 2, "600x300": 1, "100x200": 1}
    assert stats["width"] == {"min": 48, "median": 128.0, "max": 600}
    assert stats["height"] == {"min": 64, "median": 128.0, "max": 300}
    assert stats["longer_side"] == [
        {"min": 64, "max": 127, "count": 1},
        {"min": 128, "max": 255, "count": 3},
        {"min": 512, "max": 1023, "count": 1},
    ]
    images, _ = Store(settings.home).load_dataset(info["id"], split="all")
    hist = stats["intensity_histogram"]
    assert len(hist) == 32 and stats["intensity_bin_width"] == 8
    assert sum(hist) == info["images"] * S * S
    assert hist == np.bincount(np.asarray(images).ravel() // 8, minlength=32).tolist()
    assert stats["intensity_mean"] == pytest.approx(float(np.asarray(images).mean()))
    assert hist[0] > 0 and hist[-1] > 0  # black padding and normalized maxima


# -- preview ---------------------------------------------------------------------------------
def test_preview_has_one_row_per_class(client: TestClient) -> None:
    info = upload(client, class_zip({"glioma": 5, "healthy": 3, "meningioma": 1}))
    r = client.get(f"/datasets/{info['id']}/preview.png?per_class=4")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    sheet = np.asarray(Image.open(io.BytesIO(r.content)))
    thumb, pad = 96, 2
    block = LABEL_HEIGHT + thumb + pad
    assert sheet.shape == (3 * block + pad, 4 * (thumb + pad) + pad)
    for row, shown in enumerate([4, 3, 1]):
        top = row * block
        assert sheet[top : top + LABEL_HEIGHT].max() > 200  # the class name (antialiased)
        cells = sheet[top + LABEL_HEIGHT + pad : top + LABEL_HEIGHT + pad + thumb]
        filled = [cells[:, pad + c * (thumb + pad) : (c + 1) * (thumb + pad)].max() > 0 for c in range(4)]
        assert filled == [c < shown for c in range(4)]
    assert client.get("/datasets/ds-nothing/preview.png").status_code == 404
    assert client.get(f"/datasets/{info['id']}/preview.png?per_class=0").status_code == 422
