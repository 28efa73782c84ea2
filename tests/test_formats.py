"""The formats and sources real teams have: NIfTI volumes, DICOM files and series, tar and Kaggle archives, imports.

Real files only: a NIfTI volume cut from the MNI ICBM152 template (``tests/data``, see its NOTICE),
volumes nibabel writes from it, pydicom's own MR test files (edited with pydicom), and archives and
folders built here. Pixel checks run the real readers (``models.data.sources.iter_slices``) on real
files; the rest goes through the real app, store and Redis.
"""

from __future__ import annotations

import gzip
import io
import logging
import os
import stat
import tarfile
import warnings
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from pydicom.data import get_testdata_file

from models.data.curation import GAP_REASON
from models.data.members import Slice
from models.data.sources import iter_slices
from models.platform.settings import Settings
from models.platform.store import Store
from service.main import create_app
from tests.test_datasets import ellipse, encode, png, png_bomb, zip_bytes

MNI = Path(__file__).parent / "data" / "mni152_small.nii.gz"
PLANTED = "Zzyzx^Planted"
PLANTED_UID = "1.2.826.0.1.3680043.99.7373"


# -- building files -------------------------------------------------------------------------
def mni() -> nib.Nifti1Image:
    return nib.Nifti1Image.from_bytes(gzip.decompress(MNI.read_bytes()))


def nifti_bytes(data: np.ndarray, affine: np.ndarray) -> bytes:
    return nib.Nifti1Image(data, affine).to_bytes()


def dicom(name: str) -> Path:
    path = get_testdata_file(name)  # names that ship in the pydicom wheel: never a download
    assert path is not None, name
    return Path(path)


def mr(pixels: np.ndarray | None = None, **changes: Any) -> bytes:
    """MR_small.dcm with header changes (None deletes an element) and, optionally, other pixels."""
    ds = pydicom.dcmread(dicom("MR_small.dcm"))
    for keyword, value in changes.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    if pixels is not None:
        ds.PixelData = np.ascontiguousarray(pixels, dtype=np.int16).tobytes()
        ds.NumberOfFrames = 1 if pixels.ndim == 2 else pixels.shape[0]
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def mr_pixels() -> np.ndarray:
    return pydicom.dcmread(dicom("MR_small.dcm")).pixel_array.astype(np.int16)


def tar_bytes(members: dict[str, bytes], mode: str = "w:gz", special: tuple[tarfile.TarInfo, ...] = ()) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:  # type: ignore[call-overload]
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for info in special:
            tf.addfile(info)
    return buf.getvalue()


def special(name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info


def slices_of(tmp_path: Path, settings: Settings, members: dict[str, bytes]) -> tuple[list[Slice], list[dict]]:
    """The slices the real readers make of a zip holding ``members``, and what they skipped."""
    source = tmp_path / f"source-{len(list(tmp_path.glob('source-*')))}.zip"
    source.write_bytes(zip_bytes(members))
    skipped: list[dict[str, str]] = []
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    return list(iter_slices(source, settings, skipped, work)), skipped


@pytest.fixture
def plain(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home", _env_file=None)  # type: ignore[call-arg]


@pytest.fixture
def app(settings: Settings) -> Iterator[Callable[..., TestClient]]:
    """Clients of apps whose settings override the test settings."""
    clients: list[TestClient] = []

    def make(**overrides: Any) -> TestClient:
        clients.append(TestClient(create_app(settings.model_copy(update=overrides))).__enter__())
        return clients[-1]

    yield make
    for client in clients:
        client.__exit__(None, None, None)


def nothing_stored(settings: Settings) -> None:
    assert list((settings.home / "datasets").iterdir()) == []
    assert list((settings.home / "tmp").iterdir()) == []


# -- NIfTI ----------------------------------------------------------------------------------
def expected_axial_slices(data: np.ndarray, fraction: float = 0.15) -> list[int]:
    """Axial slices whose body fills ``fraction``, computed independently of models.data.decode_nifti."""
    lo, hi = np.percentile(data, [0.5, 99.5])
    body = np.clip((data - lo) / (hi - lo), 0, 1) > 0.05
    return [int(k) for k in np.flatnonzero(body.mean(axis=(0, 1)) >= fraction)]


def test_nifti_volume_upload(app: Callable[..., TestClient], settings: Settings) -> None:
    client = app()
    img = mni()
    assert nib.aff2axcodes(img.affine) == ("R", "A", "S") and img.shape == (77, 94, 80)
    expected = expected_axial_slices(np.asarray(img.dataobj, dtype=np.float64))
    r = client.post("/datasets", files={"file": ("mni152_small.nii.gz", MNI.read_bytes())})
    assert r.status_code == 201, r.text
    info = r.json()
    assert info["name"] == "mni152_small"
    # One volume: held out in slabs, the slices beside them kept out of both sides (tests/test_dataset_split.py).
    stored, dropped = info["images"], info["split"]["dropped"]
    assert stored + dropped == len(expected) > 40 and info["classes"] == {"default": stored}
    assert info["split"]["groups"] == 1 and 0 < dropped < len(expected) // 4
    assert {s["reason"] for s in info["skipped"]} == {GAP_REASON} and len(info["skipped"]) == dropped
    assert {s["file"] for s in info["skipped"]} < {f"mni152_small.nii.gz [axial {k}]" for k in expected}
    images, _ = Store(settings.home).load_dataset(info["id"], split="all")
    assert images.shape[1:] == (256, 256) and images.max() == 255
    assert sorted(int(img.max()) for img in images)[0] < 255  # scaled per volume, not stretched per slice
    # A raw body without any name: the gzip magic, then the NIfTI header inside, tell the kind.
    r = client.post("/datasets", content=MNI.read_bytes(), headers={"content-type": "application/gzip"})
    assert r.status_code == 201, r.text
    assert r.json()["images"] == stored and r.json()["sha256"] == info["sha256"]  # the same split


def test_nifti_orientation_does_not_depend_on_the_stored_axes(tmp_path: Path, plain: Settings) -> None:
    img = mni()
    data = np.asarray(img.dataobj, dtype=np.float32)
    x, _, z = data.shape
    marked = data.copy()
    marked[x - 14 : x - 10, 80:84, 40] = 255  # the patient's right, anterior, in axial slice 40
    # The same voxels stored as (A, L, I): axes swapped, x and z reversed, with the matching affine.
    to_ras = np.array([[0, -1, 0, x - 1], [1, 0, 0, 0], [0, 0, -1, z - 1], [0, 0, 0, 1]], dtype=np.float64)
    other = img.affine @ to_ras
    assert nib.aff2axcodes(other) == ("A", "L", "I")

    def flipped(d: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(d[::-1, :, ::-1].transpose(1, 0, 2))

    files = {
        "a_ras.nii": nifti_bytes(data, img.affine),
        "b_ali.nii": nifti_bytes(flipped(data), other),
        "c_ras_marked.nii": nifti_bytes(marked, img.affine),
        "d_ali_marked.nii": nifti_bytes(flipped(marked), other),
    }
    out, skipped = slices_of(tmp_path, plain, files)
    assert skipped == []
    by_file: dict[str, dict[str, np.ndarray]] = {}
    for s in out:
        name, index = s.path.split(" ", 1)
        by_file.setdefault(name, {})[index] = s.pixels
    assert by_file["a_ras.nii"].keys() == by_file["b_ali.nii"].keys()
    for index, pixels in by_file["a_ras.nii"].items():
        assert np.abs(pixels.astype(int) - by_file["b_ali.nii"][index]).max() <= 1, index
    # Radiological display, nose up: the right-anterior marker lands top left.
    for name in ("c_ras_marked.nii", "d_ali_marked.nii"):
        diff = np.abs(by_file[name]["[axial 40]"].astype(int) - by_file["a_ras.nii"]["[axial 40]"])
        row, col = np.unravel_index(np.argmax(diff), diff.shape)
        assert row < 128 and col < 128, (name, row, col)


def test_nifti_planes_frames_and_body_fraction(tmp_path: Path, plain: Settings) -> None:
    img = mni()
    data = np.asarray(img.dataobj, dtype=np.float32)
    both = np.stack([data, data[::-1]], axis=-1)  # 4-D: frame 1 is frame 0 mirrored left-right
    files = {"vol.nii.gz": MNI.read_bytes(), "vol4d.nii": nifti_bytes(both, img.affine)}
    sizes = {"axial": (77, 94), "coronal": (77, 80), "sagittal": (94, 80)}
    for plane, size in sizes.items():
        out, skipped = slices_of(
            tmp_path, plain.model_copy(update={"nifti_plane": plane}), {"v.nii.gz": files["vol.nii.gz"]}
        )
        assert skipped == [] and len(out) > 30
        assert {s.original_size for s in out} == {size}
        assert all(s.path.startswith(f"v.nii.gz [{plane} ") for s in out)
    first, _ = slices_of(tmp_path, plain, {"v.nii": files["vol4d.nii"]})
    second, _ = slices_of(tmp_path, plain.model_copy(update={"nifti_frame": 1}), {"v.nii": files["vol4d.nii"]})
    assert len(first) == len(second)
    for a, b in zip(first, second, strict=True):
        assert np.abs(a.pixels[:, ::-1].astype(int) - b.pixels).max() <= 1  # mirrored, exactly
    _, skipped = slices_of(tmp_path, plain.model_copy(update={"nifti_frame": 5}), {"v.nii": files["vol4d.nii"]})
    assert skipped == [{"file": "v.nii", "reason": "no frame 5 in a 4-D volume of 2 frames"}]
    fewer, _ = slices_of(tmp_path, plain.model_copy(update={"nifti_min_body_fraction": 0.5}), files)
    assert 0 < len(fewer) < len(first) * 2
    _, skipped = slices_of(
        tmp_path, plain.model_copy(update={"nifti_min_body_fraction": 1.0}), {"v.nii.gz": files["vol.nii.gz"]}
    )
    assert skipped == [{"file": "v.nii.gz", "reason": "no axial slice where the body fills at least 100% of the slice"}]


def test_nifti_intensity_scaling_is_robust(tmp_path: Path, plain: Settings) -> None:
    img = mni()
    data = np.asarray(img.dataobj, dtype=np.float32)
    hot = data.copy()
    hot[38, 47, 60] = 1e6  # one hot voxel: a min-max scaling would turn every slice black
    files = {
        "a.nii": nifti_bytes(data, img.affine),
        "b_linear.nii": nifti_bytes(data * 3.0 + 7.0, img.affine),
        "c_hot.nii": nifti_bytes(hot, img.affine),
    }
    out, _ = slices_of(tmp_path, plain, files)
    by_path = {s.path: s.pixels.astype(int) for s in out}
    ref = {p.split(" ", 1)[1]: px for p, px in by_path.items() if p.startswith("a.nii ")}
    for prefix in ("b_linear.nii", "c_hot.nii"):
        mine = {p.split(" ", 1)[1]: px for p, px in by_path.items() if p.startswith(prefix + " ")}
        assert mine.keys() == ref.keys()
        for index, pixels in mine.items():
            diff = np.abs(pixels - ref[index])
            assert diff.max() <= 1 or (prefix == "c_hot.nii" and index == "[axial 60]" and diff.mean() < 0.1)


def test_nifti_gzip_bomb_is_refused(app: Callable[..., TestClient], settings: Settings) -> None:
    bomb = gzip.compress(nifti_bytes(np.zeros((128, 128, 200), np.uint8), np.eye(4)))
    assert len(bomb) < 20_000
    r = app(max_unpacked_bytes=1_000_000).post("/datasets", files={"file": ("bomb.nii.gz", bomb)})
    assert r.status_code == 413, r.text
    assert "unpacks" in r.json()["detail"]
    nothing_stored(settings)


# -- DICOM ----------------------------------------------------------------------------------
def test_dicom_single_files_by_magic_and_by_suffix(app: Callable[..., TestClient]) -> None:
    client = app()
    r = client.post(
        "/datasets", content=dicom("MR_small.dcm").read_bytes(), headers={"content-type": "application/dicom"}
    )
    assert r.status_code == 201, r.text
    assert r.json()["images"] == 1 and r.json()["name"] == "dataset"
    r = client.post("/datasets", files={"file": ("IM000042", mr(mr_pixels()[::-1]))})  # no suffix: DICM at 128
    assert r.status_code == 201, r.text
    assert r.json()["name"] == "IM000042" and r.json()["images"] == 1
    ds = pydicom.dcmread(dicom("MR_small.dcm"))
    del ds.file_meta  # no preamble, no file meta: nothing in the bytes says DICOM, only the name
    ds.preamble = None  # (MR_small's preamble is a TIFF header: a dual-personality file)
    buf = io.BytesIO()
    ds.save_as(buf, implicit_vr=True, little_endian=True)
    raw = {"content": buf.getvalue(), "headers": {"content-type": "application/octet-stream"}}
    assert client.post("/datasets", **raw).status_code == 422  # read as an image: "no usable images"
    r = client.post("/datasets?filename=slice.dcm", **raw)
    assert r.status_code == 201, r.text
    assert r.json()["name"] == "slice" and r.json()["images"] == 1


def test_dicom_modality_lut_window_and_monochrome1(tmp_path: Path, plain: Settings) -> None:
    files = {
        "a_plain.dcm": mr(),
        "b_rescaled_window_moved.dcm": mr(RescaleSlope=2, RescaleIntercept=-100, WindowCenter=1100, WindowWidth=3200),
        "c_rescaled_same_window.dcm": mr(RescaleSlope=2, RescaleIntercept=-100),
        "d_monochrome1.dcm": mr(PhotometricInterpretation="MONOCHROME1"),
        "e_rle.dcm": dicom("MR_small_RLE.dcm").read_bytes(),
        "f_jpeg2000.dcm": dicom("MR_small_jp2klossless.dcm").read_bytes(),
        "g_no_window.dcm": mr(WindowCenter=None, WindowWidth=None, SeriesInstanceUID="1.2.3.4.5"),
    }
    out, skipped = slices_of(tmp_path, plain, files)
    assert skipped == []
    px = {s.path: s.pixels.astype(int) for s in out}
    a = px["a_plain.dcm"]
    window = np.clip((mr_pixels() - (600 - 0.5 - 799.5)) / 1599.0, 0, 1)  # WindowCenter 600, WindowWidth 1600
    assert np.abs(a.mean() / 255 - window.mean()) < 0.01  # the file's window, not its min-max
    assert np.abs(px["b_rescaled_window_moved.dcm"] - a).max() <= 1  # slope and intercept applied before the window
    assert np.abs(px["c_rescaled_same_window.dcm"] - a).mean() > 20  # ...so the same window shows other values
    assert np.abs(px["d_monochrome1.dcm"] - (255 - a)).max() <= 1  # MONOCHROME1: inverted
    assert np.array_equal(px["e_rle.dcm"], a) and np.array_equal(px["f_jpeg2000.dcm"], a)  # decoders installed
    lo, hi = np.percentile(mr_pixels(), [0.5, 99.5])
    robust = np.clip((mr_pixels() - lo) / (hi - lo), 0, 1)
    assert np.abs(px["g_no_window.dcm"].mean() / 255 - robust.mean()) < 0.01  # no window: robust percentiles


@pytest.mark.filterwarnings("ignore:Expected .* VR:UserWarning")  # pydicom on the fake file
def test_dicom_multiframe_and_unsupported_compression(tmp_path: Path, plain: Settings) -> None:
    base = mr_pixels()
    frames = np.stack([base, np.roll(base, 8, axis=0), np.roll(base, 16, axis=1)])
    files = {
        "a_multi.dcm": mr(frames),
        **{f"b_single_{i}.dcm": mr(frames[i], SeriesInstanceUID=f"1.2.3.{i}") for i in range(3)},
        "c_rgb_rle_2frame.dcm": dicom("SC_rgb_rle_2frame.dcm").read_bytes(),
        "d_jpeg_ls.dcm": dicom("MR_small_jpeg_ls_lossless.dcm").read_bytes(),
        "e_jpeg_12bit.dcm": dicom("JPEG-lossy.dcm").read_bytes(),
        "f_plan.dcm": dicom("rtplan.dcm").read_bytes(),
        "g_fake.dcm": b"not DICOM at all" * 20,
    }
    out, skipped = slices_of(tmp_path, plain, files)
    px = {s.path: s.pixels for s in out}
    for i in range(3):
        assert np.array_equal(px[f"a_multi.dcm [frame {i + 1}]"], px[f"b_single_{i}.dcm"])
    assert {p for p in px if p.startswith("c_rgb")} == {
        "c_rgb_rle_2frame.dcm [frame 1]",
        "c_rgb_rle_2frame.dcm [frame 2]",
    }
    assert {s["file"]: s["reason"] for s in skipped} == {
        "d_jpeg_ls.dcm": "unsupported DICOM compression JPEG-LS Lossless Image Compression",
        "e_jpeg_12bit.dcm": "unsupported DICOM compression JPEG Extended (Process 2 and 4)",
        "f_plan.dcm": "DICOM file without an image",
        "g_fake.dcm": "DICOM file without an image",
    }


def test_dicom_series_grouped_and_ordered_by_position(tmp_path: Path, plain: Settings) -> None:
    base = mr_pixels()
    contents = [np.roll(base, 6 * k, axis=1) for k in range(5)]
    heights = [30.0, 10.0, 50.0, 20.0, 40.0]  # file order is not slice order; InstanceNumber disagrees with both
    files = {
        f"series/IM{k}": mr(contents[k], ImagePositionPatient=[-83.9, -91.2, h], InstanceNumber=5 - k)
        for k, h in enumerate(heights)
    }
    other = {
        f"series/A{k}": mr(contents[k][::-1], SeriesInstanceUID=PLANTED_UID, InstanceNumber=2 - k) for k in range(2)
    }
    alone = {f"x{k}.dcm": mr(contents[k], SeriesInstanceUID=f"1.2.3.9.{k}") for k in range(5)}
    out, skipped = slices_of(tmp_path, plain, {**files, **other, **alone})
    assert skipped == []
    series = [s for s in out if s.path.startswith("series/")]
    reference = {s.path: s.pixels for s in out if s.path.startswith("x")}
    # The other series was seen first (A* sort before IM*): grouped, ordered by InstanceNumber (no position change).
    assert [s.path for s in series] == [
        "series/A1",
        "series/A0",
        "series/IM1",
        "series/IM3",
        "series/IM0",
        "series/IM4",
        "series/IM2",
    ]
    for s in series[2:]:
        assert np.array_equal(s.pixels, reference[f"x{s.path[-1]}.dcm"])


def test_planted_patient_data_reaches_neither_store_nor_logs(
    app: Callable[..., TestClient], settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    planted = {
        "PatientName": PLANTED,
        "PatientID": "ZZYZX-QX-ID",
        "PatientBirthDate": "19120623",
        "StudyDescription": f"scan of {PLANTED}",
        "InstitutionName": "Zzyzx Clinic",
        "SeriesInstanceUID": PLANTED_UID,
        "ReferringPhysicianName": PLANTED,
    }
    jpeg_ls = pydicom.dcmread(dicom("MR_small_jpeg_ls_lossless.dcm"))
    for keyword, value in planted.items():
        setattr(jpeg_ls, keyword, value)
    buf = io.BytesIO()
    jpeg_ls.save_as(buf, enforce_file_format=True)
    members = {
        **{f"patient/IM{k}": mr(np.roll(mr_pixels(), 5 * k, axis=0), InstanceNumber=k, **planted) for k in range(3)},
        "patient/compressed.dcm": buf.getvalue(),
        "patient/plan.dcm": dicom("rtplan.dcm").read_bytes(),
    }
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = app().post("/datasets", files={"file": ("scans.tar.gz", tar_bytes(members))})
    assert r.status_code == 201, r.text
    assert r.json()["images"] == 3
    assert {
        "file": "patient/compressed.dcm",
        "reason": "unsupported DICOM compression JPEG-LS Lossless Image Compression",
    } in r.json()["skipped"]
    needles = [b"zzyzx", b"19120623", PLANTED_UID.encode()]  # every planted value holds one
    files = [p for p in settings.home.rglob("*") if p.is_file()]
    assert any(p.name == "dataset.json" for p in files)
    for path in files:
        content = path.read_bytes().lower()
        assert not [n for n in needles if n in content], path
    text = (caplog.text + r.text + " ".join(str(w.message) for w in caught)).lower()
    assert not [n for n in needles if n.decode() in text]


# -- archives -------------------------------------------------------------------------------
def rgb_jpeg(height: int, width: int, **kwargs: Any) -> bytes:
    gray = ellipse(height, width)
    tint = np.stack([gray, gray * 0.8, gray * 0.6], axis=-1).round().astype(np.uint8)
    return encode(Image.fromarray(tint, "RGB"), "JPEG", quality=90, **kwargs)


def kaggle_members() -> dict[str, bytes]:
    top = "archive/brain_tumor_dataset"
    truncated = rgb_jpeg(256, 256)
    return {
        f"{top}/yes/Y1.jpg": rgb_jpeg(300, 250),
        f"{top}/yes/Y2.JPG": rgb_jpeg(512, 512),
        f"{top}/yes/Y3.png": png(ellipse(180, 220)),
        f"{top}/no/1 no.jpeg": rgb_jpeg(480, 640),
        f"{top}/no/2 no.jpg": encode(Image.fromarray(ellipse(225, 225)), "JPEG"),
        f"{top}/no/broken.jpg": truncated[: len(truncated) // 2],
        f"{top}/README.txt": b"Brain tumour MRI, yes/no",
        f"{top}/.DS_Store": b"\x00\x00\x00\x01Bud1",
        f"{top}/no/Thumbs.db": b"\xd0\xcf\x11\xe0",
        f"__MACOSX/{top}/yes/._Y1.jpg": b"\x00\x05\x16\x07 apple double",
        f"{top}/extra/nested.zip": zip_bytes({"a.png": png(ellipse())}),
    }


@pytest.mark.parametrize("kind", ["zip", "tar.gz", "tar", "tar.bz2"])
def test_kaggle_archive(app: Callable[..., TestClient], kind: str) -> None:
    members = kaggle_members()
    body = zip_bytes(members) if kind == "zip" else tar_bytes(members, mode="w:" + kind.removeprefix("tar").lstrip("."))
    r = app().post("/datasets", files={"file": (f"brain_tumor_dataset.{kind}", body)})
    assert r.status_code == 201, r.text
    info = r.json()
    assert info["name"] == "brain_tumor_dataset"
    assert info["classes"] == {"no": 2, "yes": 3}
    top = "archive/brain_tumor_dataset"
    assert {s["file"]: s["reason"] for s in info["skipped"]} == {
        f"{top}/no/broken.jpg": "corrupt or truncated image",
        f"{top}/README.txt": "not an image",
        f"{top}/.DS_Store": "system file",
        f"{top}/no/Thumbs.db": "system file",
        f"__MACOSX/{top}/yes/._Y1.jpg": "system file",
        f"{top}/extra/nested.zip": "nested archive (not read)",
    }


def test_split_folders_of_a_download_are_merged(app: Callable[..., TestClient]) -> None:
    members = {
        "archive/Training/glioma/a.jpg": rgb_jpeg(200, 180),
        "archive/Testing/glioma/b.png": png(ellipse(150, 120)),
        "archive/Training/notumor/c.png": png(ellipse(128, 100)),
        "archive/Testing/notumor/d.jpg": rgb_jpeg(220, 240),
        "archive/Training/notumor/scan.nii.gz": MNI.read_bytes(),
    }
    r = app().post("/datasets", content=tar_bytes(members), headers={"content-type": "application/gzip"})
    assert r.status_code == 201, r.text
    assert r.json()["classes"]["glioma"] == 2 and r.json()["classes"]["notumor"] > 40


def _pax_bomb() -> bytes:
    header = special("pax", tarfile.XHDTYPE)
    header.size = 16 << 20
    raw = header.tobuf(format=tarfile.USTAR_FORMAT) + bytes(16 << 20) + bytes(1024)
    return gzip.compress(raw)


TAR_HOSTILE: dict[str, tuple[Callable[[], bytes], dict[str, Any], int, str]] = {
    "traversal": (lambda: tar_bytes({"ok.png": png(ellipse()), "../evil.png": png(ellipse())}), {}, 422, "unsafe"),
    "nested-traversal": (lambda: tar_bytes({"yes/../../evil.png": png(ellipse())}), {}, 422, "unsafe"),
    "absolute": (lambda: tar_bytes({"/etc/evil.png": png(ellipse())}), {}, 422, "unsafe"),
    "symlink": (
        lambda: tar_bytes({"ok.png": png(ellipse())}, special=(special("l.png", tarfile.SYMTYPE, "/etc/passwd"),)),
        {},
        422,
        "symbolic link",
    ),
    "hardlink": (
        lambda: tar_bytes({"ok.png": png(ellipse())}, special=(special("h.png", tarfile.LNKTYPE, "ok.png"),)),
        {},
        422,
        "hard link",
    ),
    "device": (
        lambda: tar_bytes({"ok.png": png(ellipse())}, special=(special("null.png", tarfile.CHRTYPE),)),
        {},
        422,
        "device",
    ),
    "fifo": (
        lambda: tar_bytes({"ok.png": png(ellipse())}, special=(special("pipe.png", tarfile.FIFOTYPE),)),
        {},
        422,
        "FIFO",
    ),
    "too-many-members": (
        lambda: tar_bytes({f"{i}.png": b"x" for i in range(11)}),
        {"max_archive_members": 10},
        413,
        "members",
    ),
    "unpacks-too-large": (
        lambda: tar_bytes({"big.png": bytes(4_000_000)}),
        {"max_unpacked_bytes": 1_000_000},
        413,
        "unpacks",
    ),
    "pax-header-bomb": (_pax_bomb, {}, 422, "header"),
    "pixel-bomb": (lambda: tar_bytes({"ok.png": png(ellipse()), "bomb.png": png_bomb(20_000)}), {}, 413, "pixels"),
    "not-a-tar": (lambda: gzip.compress(b"plain text, not a tar" * 100), {}, 422, "not a valid tar"),
    "truncated": (
        lambda: tar_bytes({f"{i}.png": png(ellipse(100 + i, 100)) for i in range(20)})[:3000],
        {},
        422,
        "tar",
    ),
    "only-junk": (lambda: tar_bytes({"a.txt": b"x", "b.png": b"junk"}), {}, 422, "no usable images"),
}


@pytest.mark.parametrize("case", list(TAR_HOSTILE))
def test_hostile_tar_is_refused(case: str, app: Callable[..., TestClient], settings: Settings) -> None:
    build, overrides, expected, detail = TAR_HOSTILE[case]
    client = app(**overrides)
    r = client.post("/datasets", files={"file": ("upload.tar.gz", build())})
    assert r.status_code == expected, r.text
    assert detail in r.json()["detail"]
    assert client.get("/datasets").json()["data"] == []
    nothing_stored(settings)
    assert not list(settings.home.parent.rglob("evil*"))


def test_zip_device_member_is_refused(app: Callable[..., TestClient], settings: Settings) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("ok.png", png(ellipse()))
        device = zipfile.ZipInfo("null.png")
        device.external_attr = (stat.S_IFCHR | 0o666) << 16
        zf.writestr(device, b"")
    r = app().post("/datasets", files={"file": ("a.zip", buf.getvalue())})
    assert r.status_code == 422 and "special file" in r.json()["detail"]
    nothing_stored(settings)


# -- server-side import ---------------------------------------------------------------------
@pytest.fixture
def import_dir(tmp_path: Path) -> Path:
    """An import folder: a Kaggle-style folder with traps, an archive, a volume; secrets outside it."""
    root, outside = tmp_path / "import", tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.png").write_bytes(png(ellipse(90, 90)))
    for name, data in kaggle_members().items():
        if not name.startswith("__MACOSX"):
            path = root / "kaggle" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
    yes = root / "kaggle/archive/brain_tumor_dataset/yes"
    (yes / "link_out.png").symlink_to(outside / "secret.png")
    (yes / "link_in.png").symlink_to(yes / "Y3.png")
    (yes / "linked_folder").symlink_to(outside, target_is_directory=True)
    os.mkfifo(yes / "pipe.png")
    (root / "kaggle/.git/objects").mkdir(parents=True)
    (root / "kaggle/.git/objects/x.png").write_bytes(png(ellipse()))
    (root / "scans.tar.gz").write_bytes(tar_bytes({"IM1": mr()}))
    (root / "brain.nii.gz").write_bytes(MNI.read_bytes())
    (root / "escape").symlink_to(outside, target_is_directory=True)
    return root


def test_import_disabled(app: Callable[..., TestClient]) -> None:
    r = app().post("/datasets/import", json={"path": "kaggle"})
    assert r.status_code == 403 and "DRAWAI_IMPORT_DIR" in r.json()["detail"]


@pytest.mark.parametrize(
    ("path", "expected"),
    [("../outside", 403), ("kaggle/../../outside/secret.png", 403), ("/etc", 403), ("escape", 403),
     ("escape/secret.png", 403), ("kaggle/archive/brain_tumor_dataset/yes/link_out.png", 403), ("nothing", 404)],
)  # fmt: skip
def test_import_paths_escaping_the_folder(
    app: Callable[..., TestClient], settings: Settings, import_dir: Path, path: str, expected: int
) -> None:
    r = app(import_dir=import_dir).post("/datasets/import", json={"path": path})
    assert r.status_code == expected, r.text
    nothing_stored(settings)


def test_import_folder_archive_and_volume(app: Callable[..., TestClient], import_dir: Path) -> None:
    client = app(import_dir=import_dir)
    r = client.post("/datasets/import", json={"path": str(import_dir.parent / "outside")})
    assert r.status_code == 403, r.text
    r = client.post("/datasets/import", json={"path": "kaggle", "name": "kaggle import"})
    assert r.status_code == 201, r.text
    info = r.json()
    assert info["name"] == "kaggle import" and info["classes"] == {"no": 2, "yes": 3}  # link_in: duplicate of Y3
    reasons = {s["file"]: s["reason"] for s in info["skipped"]}
    yes = "archive/brain_tumor_dataset/yes"
    assert reasons[f"{yes}/link_out.png"] == "symbolic link out of the import folder"
    assert reasons[f"{yes}/linked_folder/"] == "symbolic link to a folder (not followed)"
    assert reasons[f"{yes}/pipe.png"] == "not a regular file"
    assert reasons[".git/"] == "hidden or system folder"
    assert reasons[f"{yes}/link_in.png"].startswith("duplicate of")
    r = client.post("/datasets/import", json={"path": "scans.tar.gz"})
    assert r.status_code == 201 and r.json()["images"] == 1 and r.json()["name"] == "scans"
    r = client.post("/datasets/import", json={"path": str(import_dir / "brain.nii.gz")})
    assert r.status_code == 201 and r.json()["images"] > 40
    r = client.post("/datasets/import", json={"path": "kaggle", "extra": 1})
    assert r.status_code == 422
