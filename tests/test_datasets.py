"""Dataset uploads end to end through the real app: formats, layouts, skipped files, hostile archives.

Every archive and image is built here with ``zipfile``, Pillow and numpy (a bright ellipse on black,
like a brain slice); refused uploads are checked to leave nothing behind, in the store or outside it.
"""

from __future__ import annotations

import hashlib
import io
import stat
import struct
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from redis import Redis
from rq import Queue

from models.platform.schemas import TrainSpec
from models.platform.settings import Settings
from models.platform.store import Store
from service.main import create_app
from service.queue import enqueue_training
from tests.dicom_files import mr_frames, rle_bomb

S = 256  # settings.storage_size


# -- building test files ------------------------------------------------------------------
def ellipse(height: int = 128, width: int = 128) -> np.ndarray:
    """uint8 [H, W]: a bright ellipse (brightest in its centre) on black, filling 80% of each side."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    r2 = ((x - (width - 1) / 2) / (0.4 * width)) ** 2 + ((y - (height - 1) / 2) / (0.4 * height)) ** 2
    return np.where(r2 < 1, 255 - 127 * r2, 0).round().astype(np.uint8)


def encode(img: Image.Image, fmt: str = "PNG", **kwargs: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def png(arr: np.ndarray) -> bytes:
    return encode(Image.fromarray(arr))


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name), data, compress_type=zipfile.ZIP_DEFLATED)
    return buf.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(side: int) -> bytes:
    """A valid, all-black 1-bit PNG of ``side x side`` pixels: a few hundred KB declaring side² pixels."""
    row = bytes(1 + (side + 7) // 8)
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row * 500) for _ in range(side // 500)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def patch_zip(data: bytes, local: tuple[int, bytes], central: tuple[int, bytes]) -> bytes:
    """Overwrite bytes at an offset of the first local header and of the first central directory entry."""
    out = bytearray(data)
    assert out[:4] == b"PK\x03\x04"
    out[local[0] : local[0] + len(local[1])] = local[1]
    cd = out.rfind(b"PK\x01\x02")
    out[cd + central[0] : cd + central[0] + len(central[1])] = central[1]
    return bytes(out)


def upload(client: TestClient, data: bytes, name: str | None = None, filename: str = "slices.zip") -> Any:
    form = {"name": name} if name is not None else {}
    return client.post("/datasets", files={"file": (filename, data, "application/zip")}, data=form)


def stored(settings: Settings, dataset_id: str) -> tuple[np.ndarray, np.ndarray]:
    images, labels = Store(settings.home).load_dataset(dataset_id, split="all")
    return np.asarray(images), labels


# -- fixtures -----------------------------------------------------------------------------
@pytest.fixture
def make_client(settings: Settings) -> Iterator[Callable[..., TestClient]]:
    """A client of an app whose settings override the test settings (small limits)."""
    clients: list[TestClient] = []

    def make(**overrides: Any) -> TestClient:
        s = settings.model_copy(update=overrides)
        client = TestClient(create_app(s)).__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def sandbox(tmp_path: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    """Run in an empty cwd and temp dir; the returned check asserts nothing was written anywhere."""
    cwd, systmp = tmp_path / "cwd", tmp_path / "systmp"
    cwd.mkdir()
    systmp.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(tempfile, "tempdir", str(systmp))
    home = Path(settings.home)

    def check() -> None:
        assert sorted(p.name for p in tmp_path.iterdir()) == ["cwd", "home", "systmp"]
        assert list(cwd.rglob("*")) == []
        assert list(systmp.rglob("*")) == []
        assert list((home / "datasets").iterdir()) == []
        assert list((home / "tmp").iterdir()) == []
        assert not list(tmp_path.parent.glob("**/evil*"))
        assert not Path("/etc/evil.png").exists()

    return check


# -- layouts ------------------------------------------------------------------------------
def test_flat_zip(client: TestClient, settings: Settings) -> None:
    members = {f"slice_{i}.png": png(ellipse(96 + 16 * i, 96 + 16 * i)) for i in range(3)}
    r = upload(client, zip_bytes(members), name="flat")
    assert r.status_code == 201, r.text
    info = r.json()
    assert info["name"] == "flat"
    assert info["images"] == 3
    assert info["classes"] == {"default": 3}
    assert info["image_size"] == S
    assert info["skipped"] == []
    images, labels = stored(settings, info["id"])
    assert images.shape == (3, S, S) and images.dtype == np.uint8
    assert labels.tolist() == [0, 0, 0] and labels.dtype == np.int64
    assert all(img.min() == 0 and img.max() == 255 for img in images)
    assert info["sha256"] == hashlib.sha256(images.tobytes() + labels.tobytes()).hexdigest()
    assert list(Path(settings.home, "tmp").iterdir()) == []  # the upload's temp file is gone


def test_class_folders(client: TestClient, settings: Settings) -> None:
    members = {f"yes/y{i}.png": png(ellipse(128, 96 + 8 * i)) for i in range(2)}  # distinct: duplicates are dropped
    members |= {f"no/n{i}.jpg": encode(Image.fromarray(ellipse(128, 96 + 8 * i)), "JPEG") for i in range(3)}
    r = upload(client, zip_bytes(members))
    assert r.status_code == 201, r.text
    info = r.json()
    assert info["classes"] == {"no": 3, "yes": 2}
    assert info["name"] == "slices"  # the uploaded file's stem
    _, labels = stored(settings, info["id"])
    assert sorted(labels.tolist()) == [0, 0, 0, 1, 1]  # ids in sorted class-name order: no=0, yes=1


def test_kaggle_nesting_and_macosx_junk(client: TestClient, settings: Settings) -> None:
    members = {
        "brain_tumor_dataset/yes/Y1.jpg": encode(Image.fromarray(ellipse()), "JPEG"),
        "brain_tumor_dataset/yes/Y2.png": png(ellipse()),
        "brain_tumor_dataset/no/1 no.jpeg": encode(Image.fromarray(ellipse(128, 112)), "JPEG"),
        "__MACOSX/brain_tumor_dataset/yes/._Y1.jpg": b"\x00\x05\x16\x07 apple double",
        "brain_tumor_dataset/.DS_Store": b"\x00\x00\x00\x01Bud1",
    }
    r = upload(client, zip_bytes(members))
    assert r.status_code == 201, r.text
    info = r.json()
    assert info["classes"] == {"no": 1, "yes": 2}
    assert {s["file"]: s["reason"] for s in info["skipped"]} == {
        "__MACOSX/brain_tumor_dataset/yes/._Y1.jpg": "system file",
        "brain_tumor_dataset/.DS_Store": "system file",
    }


def test_raw_body_upload(client: TestClient) -> None:
    body = zip_bytes({"a.png": png(ellipse())})
    r = client.post("/datasets?name=raw", content=body, headers={"Content-Type": "application/zip"})
    assert r.status_code == 201, r.text
    assert r.json()["name"] == "raw" and r.json()["images"] == 1
    r = client.post("/datasets", content=body, headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 201, r.text
    assert r.json()["name"] == "dataset"


# -- image formats ------------------------------------------------------------------------
def test_color_modes_converted_to_the_same_gray(client: TestClient, settings: Settings) -> None:
    gray = ellipse()
    tint = np.stack([gray, gray * 0.8, gray * 0.6], axis=-1).round().astype(np.uint8)  # luma is linear in gray
    alpha = np.where(gray > 0, 255, 0).astype(np.uint8)
    white_outside = np.where(alpha[..., None] > 0, tint, 255).astype(np.uint8)  # hidden by alpha: must not show
    members = {
        "a_reference.png": png(gray),
        "b_rgb.jpg": encode(Image.fromarray(tint, "RGB"), "JPEG", quality=95),
        "c_rgba.png": encode(Image.fromarray(np.dstack([white_outside, alpha]), "RGBA")),
        "d_palette.png": encode(Image.fromarray(tint, "RGB").quantize(256)),
        "e_16bit.png": encode(Image.fromarray(gray.astype(np.uint16) * 257)),
    }
    assert Image.open(io.BytesIO(members["d_palette.png"])).mode == "P"
    assert Image.open(io.BytesIO(members["e_16bit.png"])).mode.startswith("I")
    images = {}
    for name, data in members.items():  # one upload each: identical results would be dropped as duplicates
        r = upload(client, zip_bytes({name: data}))
        assert r.status_code == 201, r.text
        assert r.json()["images"] == 1 and r.json()["skipped"] == []
        images[name] = stored(settings, r.json()["id"])[0][0]
    ref = images["a_reference.png"].astype(np.int16)
    diffs = {name: np.abs(img.astype(np.int16) - ref) for name, img in images.items()}
    assert diffs["e_16bit.png"].max() <= 1  # 16-bit and its 8-bit version: the same slice
    assert diffs["c_rgba.png"].max() <= 2  # transparent parts composited onto black
    assert diffs["d_palette.png"].mean() < 3
    assert diffs["b_rgb.jpg"].mean() < 3


@pytest.mark.parametrize(("height", "width"), [(128, 256), (256, 128)])
def test_non_square_is_padded_not_stretched(client: TestClient, settings: Settings, height: int, width: int) -> None:
    r = upload(client, zip_bytes({"wide.png": png(ellipse(height, width))}))
    assert r.status_code == 201, r.text
    (img,), _ = stored(settings, r.json()["id"])
    band = (S - S * min(height, width) // max(height, width)) // 2  # 64 px of black on each side
    across = img if height < width else img.T  # bands are top and bottom of ``across``
    assert across[:band].max() == 0 and across[-band:].max() == 0
    assert across[band : S - band].max() == 255
    ys, xs = np.nonzero(across > 64)
    extent_long, extent_short = xs.max() - xs.min() + 1, ys.max() - ys.min() + 1
    assert abs(extent_long / extent_short - 2.0) < 0.1  # the ellipse keeps its 2:1 aspect ratio


def test_skipped_files_are_reported(client: TestClient) -> None:
    jpeg = encode(Image.fromarray(ellipse(256, 256)), "JPEG", quality=95)
    members = {
        "good.png": png(ellipse()),
        "notes.txt": b"patient list, do not upload",
        "garbage.png": b"this is not a png at all" * 10,
        "broken.jpg": jpeg[: len(jpeg) // 2],
        "tiny.png": png(ellipse(16, 20)),
        "blank.png": png(np.full((64, 64), 90, np.uint8)),
        "__MACOSX/._good.png": b"\x00\x05\x16\x07",
        "Thumbs.db": b"\xd0\xcf\x11\xe0",
        ".hidden.png": png(ellipse()),
        "empty_folder/": b"",
    }
    r = upload(client, zip_bytes(members))
    assert r.status_code == 201, r.text
    assert r.json()["images"] == 1
    assert {s["file"]: s["reason"] for s in r.json()["skipped"]} == {
        "notes.txt": "not an image",
        "garbage.png": "not an image",
        "broken.jpg": "corrupt or truncated image",
        "tiny.png": "too small (20x16 < min side 32)",
        "blank.png": "blank image",
        "__MACOSX/._good.png": "system file",
        "Thumbs.db": "system file",
        ".hidden.png": "hidden file",
    }


# -- hostile and refused uploads ------------------------------------------------------------
def _symlink_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("ok.png", png(ellipse()))
        link = zipfile.ZipInfo("link.png")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc/passwd")
    return buf.getvalue()


def _encrypted_zip() -> bytes:
    plain = zip_bytes({"secret.png": png(ellipse())})
    return patch_zip(plain, (6, b"\x01\x00"), (8, b"\x01\x00"))  # general purpose flag bit 0: encrypted


def _eleven_members() -> bytes:
    return zip_bytes({f"{i}.png": b"x" for i in range(11)})


def _four_megabytes() -> bytes:
    return zip_bytes({"big.png": bytes(4_000_000)})  # 4 MB of zeros: a few KB compressed


def _lying_size_zip() -> bytes:
    return patch_zip(_four_megabytes(), (22, struct.pack("<I", 100)), (24, struct.pack("<I", 100)))


def _lying_count_zip() -> bytes:
    data = bytearray(zip_bytes({f"m{i}.png": b"x" for i in range(20)}))
    eocd = data.rfind(b"PK\x05\x06")
    data[eocd + 8 : eocd + 12] = struct.pack("<HH", 1, 1)  # claims 1 entry; the directory holds 20
    return bytes(data)


HOSTILE: dict[str, tuple[Callable[[], bytes], dict[str, Any], int, str]] = {
    "traversal": (lambda: zip_bytes({"ok.png": png(ellipse()), "../evil.png": png(ellipse())}), {}, 422, "unsafe"),
    "nested-traversal": (lambda: zip_bytes({"yes/../../evil.png": png(ellipse())}), {}, 422, "unsafe"),
    "absolute": (lambda: zip_bytes({"/etc/evil.png": png(ellipse())}), {}, 422, "unsafe"),
    "backslash": (lambda: zip_bytes({"..\\evil.png": png(ellipse())}), {}, 422, "unsafe"),
    "drive": (lambda: zip_bytes({"C:\\evil.png": png(ellipse())}), {}, 422, "unsafe"),
    "symlink": (_symlink_zip, {}, 422, "symbolic link"),
    "encrypted": (_encrypted_zip, {}, 422, "encrypted"),
    "too-many-members": (_eleven_members, {"max_archive_members": 10}, 413, "members"),
    "lying-member-count": (_lying_count_zip, {"max_archive_members": 10}, 413, "members"),
    "unpacks-too-large": (_four_megabytes, {"max_unpacked_bytes": 1_000_000}, 413, "unpacks"),
    "lying-size": (_lying_size_zip, {"max_unpacked_bytes": 1_000_000}, 422, "corrupt"),
    "pixel-bomb": (lambda: zip_bytes({"ok.png": png(ellipse()), "bomb.png": png_bomb(20_000)}), {}, 413, "pixels"),
    "pixel-bomb-under-pil-limit": (lambda: zip_bytes({"bomb.png": png_bomb(9_000)}), {}, 413, "over the limit"),
    "pixel-limit": (
        lambda: zip_bytes({"big.png": png(ellipse(300, 300))}),
        {"max_image_pixels": 50_000},
        413,
        "pixels",
    ),
    "not-a-zip": (lambda: b"hello, this is not a zip archive" * 100, {}, 422, "not a valid zip"),
    "empty-zip": (lambda: zip_bytes({}), {}, 422, "no usable images"),
    "only-junk": (lambda: zip_bytes({"a.txt": b"x", "b.png": b"junk"}), {}, 422, "no usable images"),
    "over-upload-limit": (lambda: zip_bytes({"a.png": png(ellipse())}), {"max_upload_bytes": 1_000}, 413, "limit"),
    # 80 uniform RLE frames of 4096 x 4096 x 16 bits: a zip of 40 KB that decodes to 2.5 GiB (tests.dicom_files).
    "dicom-rle-bomb": (lambda: zip_bytes({"bomb.dcm": rle_bomb(80)}), {}, 413, "DRAWAI_MAX_UNPACKED_BYTES"),
    "dicom-frames": (lambda: zip_bytes({"mr.dcm": mr_frames(3)}), {"max_dicom_frames": 2}, 413, "2 DICOM frames"),
    "dicom-lying-frames": (lambda: zip_bytes({"mr.dcm": rle_bomb(2, 64, declared=5)}), {}, 422, "declares 5 frames"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_upload_is_refused(
    case: str, make_client: Callable[..., TestClient], sandbox: Callable[[], None]
) -> None:
    build, overrides, expected, detail = HOSTILE[case]
    client = make_client(**overrides)
    r = upload(client, build())
    assert r.status_code == expected, r.text
    assert detail in r.json()["detail"]
    assert client.get("/datasets").json()["data"] == []
    sandbox()


def test_streamed_body_over_the_limit(make_client: Callable[..., TestClient], sandbox: Callable[[], None]) -> None:
    client = make_client(max_upload_bytes=100_000)

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        for _ in range(50):
            yield bytes(10_000)

    r = client.post("/datasets", content=chunks(), headers={"Content-Type": "application/zip"})
    assert r.status_code == 413, r.text
    assert "limit" in r.json()["detail"]
    sandbox()


@pytest.mark.parametrize(
    ("kwargs", "expected", "detail"),
    [
        ({"content": b"PK", "headers": {"Content-Type": "text/plain"}}, 415, "content type"),
        ({"data": {"name": "x"}, "files": {"other": ("a.zip", b"PK")}}, 422, "missing form field"),
        ({"files": {"file": ("a.zip", b"PK")}, "data": {"name": "\x01bad"}}, 422, "printable"),
    ],
)
def test_bad_requests(
    client: TestClient, sandbox: Callable[[], None], kwargs: dict, expected: int, detail: str
) -> None:
    r = client.post("/datasets", **kwargs)
    assert r.status_code == expected, r.text
    assert detail in r.json()["detail"]
    sandbox()


# -- list, show, delete ---------------------------------------------------------------------
def test_list_show_delete(client: TestClient, settings: Settings) -> None:
    assert client.get("/datasets").json()["data"] == []
    first = upload(client, zip_bytes({"a.png": png(ellipse())}), name="first").json()
    second = upload(client, zip_bytes({"b.png": png(ellipse())}), name="second").json()
    assert [d["id"] for d in client.get("/datasets").json()["data"]] == [first["id"], second["id"]]
    assert client.get(f"/datasets/{first['id']}").json() == first
    r = client.get("/datasets/ds-nothing")
    assert r.status_code == 404 and "detail" in r.json()
    assert client.get("/datasets/..%2Fetc").status_code == 404

    assert client.delete(f"/datasets/{first['id']}").status_code == 204
    assert client.get(f"/datasets/{first['id']}").status_code == 404
    assert client.delete(f"/datasets/{first['id']}").status_code == 404
    assert [d["id"] for d in client.get("/datasets").json()["data"]] == [second["id"]]
    assert not Path(settings.home, "datasets", first["id"]).exists()


def test_delete_refused_while_a_job_uses_the_dataset(client: TestClient, settings: Settings) -> None:
    info = upload(client, zip_bytes({"a.png": png(ellipse())})).json()
    assert settings.redis_url is not None
    queue = Queue(settings.queue_name, connection=Redis.from_url(settings.redis_url))
    job = enqueue_training(queue, TrainSpec(dataset=info["id"], batch_size=1), settings)  # no worker: stays queued
    r = client.delete(f"/datasets/{info['id']}")
    assert r.status_code == 409, r.text
    assert job.id in r.json()["detail"]
    assert client.get(f"/datasets/{info['id']}").status_code == 200
    job.cancel()
    job.meta["canceled"] = True
    job.save_meta()
    assert client.delete(f"/datasets/{info['id']}").status_code == 204


@pytest.mark.parametrize(
    "damage",
    ["dataset.json truncated", "dataset.json not a dataset", "images.npy missing", "labels.npy missing"],
)
def test_damaged_dataset_is_skipped_in_the_list_and_409_alone(
    client: TestClient, settings: Settings, damage: str
) -> None:
    """One damaged dataset folder never hides the others or answers a 500; it can still be deleted."""
    good = upload(client, zip_bytes({"a.png": png(ellipse())}), name="good").json()
    bad = upload(client, zip_bytes({"b.png": png(ellipse(96, 128))}), name="bad").json()
    folder = Path(settings.home, "datasets", bad["id"])
    if damage == "dataset.json truncated":
        (folder / "dataset.json").write_bytes((folder / "dataset.json").read_bytes()[:40])
    elif damage == "dataset.json not a dataset":
        (folder / "dataset.json").write_text('{"id": 7}')
    else:
        (folder / damage.split()[0]).unlink()

    assert [d["id"] for d in client.get("/datasets").json()["data"]] == [good["id"]]
    for path in (f"/datasets/{bad['id']}", f"/datasets/{bad['id']}/preview.png"):
        r = client.get(path)
        assert r.status_code == 409, (path, r.text)
        assert bad["id"] in r.json()["detail"]
    r = client.post("/jobs/train", json={"dataset": bad["id"], "batch_size": 1})
    assert r.status_code == 409 and bad["id"] in r.json()["detail"]
    assert client.get(f"/datasets/{good['id']}").json() == good
    assert client.delete(f"/datasets/{bad['id']}").status_code == 204
    assert not folder.exists()
