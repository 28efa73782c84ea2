"""What every uploaded dataset gets: duplicate removal, a held-out split grouped by source, statistics, a preview.

Real uploads through the app (zips built here with Pillow, the bundled demo series, a real NIfTI
volume); training and the worker are checked to read the training split only. The split's own
rules are unit-tested in tests/test_split.py.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from models.data.curation import GAP_REASON
from models.data.sources import iter_slices
from models.data.split import GAP, SLAB
from models.platform.grids import LABEL_HEIGHT
from models.platform.schemas import TrainSpec
from models.platform.settings import Settings
from models.platform.store import Store
from service.main import create_app
from tests.conftest import DEMO_SLICES, blobs, put_dataset, spawn_worker

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


def letters(i: int) -> str:
    """``i`` in letters (a, b, ..., ba, bb, ...): file names that are not a numbered series."""
    out = ""
    while True:
        out = chr(ord("a") + i % 26) + out
        i //= 26
        if not i:
            return out


def class_zip(counts: dict[str, int], seed: int = 0) -> bytes:
    """A folder per class holding ``counts[class]`` distinct slices, each a file of its own (scans of
    different patients: named by letters, since numbered files of one size are read as one volume)."""
    members = {}
    for c, (name, count) in enumerate(sorted(counts.items())):
        for i in range(count):
            members[f"scans/{name}/{name}_{letters(i)}.png"] = encode(slice_image(seed * 100_000 + c * 1000 + i))
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
    assert (split["groups"], split["dropped"]) == (63, 0)  # single files: each its own group, held out whole
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


def stored_positions(settings: Settings, dataset_id: str, position_of: dict[str, int]) -> dict[str, list[int]]:
    """The sorted slice positions of the training and held-out rows, found by their pixels."""
    store = Store(settings.home)
    return {
        side: sorted(position_of[h] for h in row_hashes(store.load_dataset(dataset_id, split=side)[0]))
        for side in ("train", "heldout")
    }


def decoded(source: Path, settings: Settings, tmp_path: Path) -> dict[str, str]:
    """sha256 of each stored slice of ``source`` -> its path, decoded by the real readers."""
    work = tmp_path / "decode"
    work.mkdir()
    return {row_hashes(s.pixels[None])[0]: s.path for s in iter_slices(source, settings, [], work)}


def assert_slabs_with_gaps(train: list[int], held: list[int], dropped: list[int], step: int) -> None:
    """Held-out positions in blocks of ``SLAB`` consecutive stored slices (``step`` apart), ``GAP`` slices
    dropped on each side of every block, and no training slice nearer than ``GAP + 1`` stored slices."""
    held_index = np.asarray(held) // step
    breaks = np.flatnonzero(np.diff(held_index) != 1)
    assert np.diff(np.concatenate([[-1], breaks, [len(held) - 1]])).tolist() == [SLAB] * (len(held) // SLAB)
    nearest = np.abs(np.asarray(train)[:, None] - np.asarray(held)[None, :]).min(axis=1)
    assert nearest.min() == (GAP + 1) * step
    gap = np.abs(np.asarray(dropped)[:, None] - np.asarray(held)[None, :]).min(axis=1)
    assert set(gap.tolist()) <= {k * step for k in range(1, GAP + 1)}


def test_the_demo_series_is_one_volume_held_out_in_slabs(
    client: TestClient, settings: Settings, demo_zip: bytes, tmp_path: Path
) -> None:
    """57 numbered slices of one volume, every other slice (numbers step by 2): slabs with a gap, in positions."""
    info = upload(client, demo_zip)
    split = info["split"]
    assert (split["groups"], split["heldout"], split["dropped"], split["train"]) == (1, 9, 12, 36)
    assert info["images"] == 45 == split["train"] + split["heldout"] and info["classes"] == {"default": 45}
    assert {s["reason"] for s in info["skipped"]} == {GAP_REASON}
    dropped = sorted(slice_number(s["file"]) for s in info["skipped"])
    number_of = {h: slice_number(path) for h, path in decoded(DEMO_SLICES, settings, tmp_path).items()}
    sides = stored_positions(settings, info["id"], number_of)
    assert sorted(sides["train"] + sides["heldout"] + dropped) == list(range(26, 139, 2))  # every slice, once
    assert_slabs_with_gaps(sides["train"], sides["heldout"], dropped, step=2)
    assert sides["heldout"][0] < 60 and sides["heldout"][-1] > 100  # spread from the bottom to the top of the brain
    again = upload(client, demo_zip)
    assert again["sha256"] == info["sha256"] and again["skipped"] == info["skipped"]  # the same split, every time


def slice_number(path: str) -> int:
    """The last number in a slice's name: the file number of slice_026.png, k of "vol.nii.gz [axial k]"."""
    return int(re.findall(r"\d+", path)[-1])


def test_a_nifti_volume_is_one_group_held_out_in_slabs(client: TestClient, settings: Settings, tmp_path: Path) -> None:
    volume = Path(__file__).parent / "data" / "mni152_small.nii.gz"
    r = client.post("/datasets", files={"file": ("t1.nii.gz", volume.read_bytes())})
    assert r.status_code == 201, r.text
    info = r.json()
    (tmp_path / "t1.nii.gz").write_bytes(volume.read_bytes())
    number_of = {h: slice_number(path) for h, path in decoded(tmp_path / "t1.nii.gz", settings, tmp_path).items()}
    sides = stored_positions(settings, info["id"], number_of)
    dropped = sorted(slice_number(s["file"]) for s in info["skipped"])
    assert {s["reason"] for s in info["skipped"]} == {GAP_REASON}
    assert sorted(sides["train"] + sides["heldout"] + dropped) == sorted(number_of.values())  # every slice, once
    n = len(number_of)
    assert info["split"]["groups"] == 1 and info["split"]["heldout"] == round(0.15 * n) == len(sides["heldout"])
    assert_slabs_with_gaps(sides["train"], sides["heldout"], dropped, step=1)  # axial slices k, 1 mm apart


def test_several_volumes_hold_whole_volumes_out(client: TestClient, settings: Settings, tmp_path: Path) -> None:
    """Six scans of 10 numbered slices each, in one class: one patient held out whole, nothing dropped."""
    members = {}
    for patient in range(6):
        for k in range(10):
            members[f"scans/tumor/{letters(patient)}_slice_{k:02d}.png"] = encode(slice_image(100 * patient + k))
    data = zip_bytes(members)
    info = upload(client, data)
    split = info["split"]
    assert (split["groups"], split["heldout"], split["train"], split["dropped"]) == (6, 10, 50, 0)
    (tmp_path / "scans.zip").write_bytes(data)
    patient_of = {h: path.split("_")[0] for h, path in decoded(tmp_path / "scans.zip", settings, tmp_path).items()}
    held = {patient_of[h] for h in heldout_hashes(settings, info["id"])}
    train = {patient_of[h] for h in row_hashes(Store(settings.home).load_dataset(info["id"])[0])}
    assert len(held) == 1 and len(train) == 5 and not held & train


def test_datasets_stored_before_the_split_was_grouped_still_load(client: TestClient, settings: Settings) -> None:
    info = upload(client, class_zip({"no": 6, "yes": 8}))
    store = Store(settings.home)
    path = store.dataset_dir(info["id"]) / "dataset.json"
    old = json.loads(path.read_text())
    del old["split"]["groups"], old["split"]["dropped"]  # as written before
    path.write_text(json.dumps(old))
    shown = client.get(f"/datasets/{info['id']}").json()
    assert shown["split"]["groups"] is None and shown["split"]["dropped"] is None
    assert shown["split"]["train"] == info["split"]["train"]
    assert len(store.load_dataset(info["id"])[0]) == info["split"]["train"]
    assert client.get("/datasets").status_code == 200


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
    spec = TrainSpec(
        dataset=info["id"], architecture="dcgan", image_size=32, width=8, latent_dim=16, batch_size=2, epochs=1
    )
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
    spec = {"dataset": info["id"], "architecture": "dcgan", "image_size": 32, "width": 8, "latent_dim": 16,
            "batch_size": 2, "epochs": 1}  # fmt: skip
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
