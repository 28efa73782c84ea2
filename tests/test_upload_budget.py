"""One unpacked-bytes budget per upload: DICOM frames and NIfTI volumes checked from their headers.

A DICOM file's decoded frames (Rows x Columns x SamplesPerPixel x BitsAllocated / 8 x frames) take
from ``DRAWAI_MAX_UNPACKED_BYTES`` together with the archive's own unpacked bytes, and the frames of
an upload are capped (``DRAWAI_MAX_DICOM_FRAMES``), all before anything is decoded; a header that
lies about its data is refused (DICOM) or skipped (NIfTI) before anything is allocated. Real
files (pydicom's MR_small.dcm, RLE written here: ``tests.dicom_files``), the real app and store.
"""

from __future__ import annotations

import io
import struct
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
from fastapi.testclient import TestClient
from pydicom.data import get_testdata_file
from pydicom.uid import DeflatedExplicitVRLittleEndian

from models.platform.settings import Settings
from service.main import create_app
from tests.dicom_files import mr_frames, mr_small, packbits_segment, rle_bomb, rle_file, to_bytes
from tests.test_datasets import zip_bytes
from tests.test_formats import nothing_stored, tar_bytes

BOMB_FRAMES = 80  # 80 frames of 32 MiB: 2.5 GiB decoded, over the default 2 GiB, from 40 MiB of RLE
MR_FRAME_BYTES = 64 * 64 * 2  # one decoded MR_small frame: 64 x 64, 16 bits


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


@pytest.fixture(scope="module")
def bomb() -> bytes:
    return rle_bomb(BOMB_FRAMES)


def post_measured(client: TestClient, **request: Any) -> tuple[Any, float, int]:
    """The response to ``POST /datasets``, its seconds and the peak of memory allocated meanwhile (bytes)."""
    tracemalloc.start()
    started = time.monotonic()
    try:
        r = client.post("/datasets", **request)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return r, time.monotonic() - started, peak


@pytest.mark.parametrize("packing", ["raw", "tar.gz"])
def test_rle_bomb_is_refused_from_its_header(
    app: Callable[..., TestClient], settings: Settings, bomb: bytes, packing: str
) -> None:
    client = app()
    assert settings.max_unpacked_bytes < BOMB_FRAMES * 4096 * 4096 * 2  # decodes to gigabytes
    if packing == "raw":
        request = {"content": bomb, "headers": {"content-type": "application/dicom"}}
    else:
        packed = tar_bytes({"scans/bomb.dcm": bomb})
        assert len(packed) < 200_000  # the same bomb, a small upload
        request = {"files": {"file": ("scans.tar.gz", packed)}}
    r, seconds, peak = post_measured(client, **request)
    assert r.status_code == 413, r.text
    assert "DICOM frames decode" in r.json()["detail"]
    assert f"limit of {settings.max_unpacked_bytes} bytes" in r.json()["detail"]
    assert "DRAWAI_MAX_UNPACKED_BYTES" in r.json()["detail"]
    # Nothing decoded: the file's bytes held a few times over (read, parsed: 2x here), never one frame's
    # 96 MiB (32 MiB decoded, 64 MiB as float32) on top; decoding all the frames would take a minute.
    assert peak < 3 * len(bomb) + (8 << 20), peak
    assert seconds < 20, seconds
    assert client.get("/datasets").json()["data"] == []
    nothing_stored(settings)


@pytest.mark.parametrize("packing", ["raw", "zip"])
def test_decoded_frames_share_the_budget_with_the_archive(
    app: Callable[..., TestClient], settings: Settings, packing: str
) -> None:
    scans = [mr_frames(3, first=3 * k, SeriesInstanceUID="1.2.826.0.1.3680043.99.1", InstanceNumber=k) for k in (0, 1)]
    decoded = 3 * MR_FRAME_BYTES
    fits = len(scans[0]) + decoded  # the file's bytes and its decoded frames, exactly

    def post(limit: int, members: dict[str, bytes]) -> Any:
        client = app(max_unpacked_bytes=limit)
        if packing == "raw":
            (data,) = members.values()
            return client.post("/datasets", content=data, headers={"content-type": "application/dicom"})
        return client.post("/datasets", files={"file": ("scans.zip", zip_bytes(members))})

    r = post(fits, {"IM0.dcm": scans[0]})
    assert r.status_code == 201, r.text
    assert r.json()["images"] == 3  # a normal multi-frame RLE file still ingests, exactly at the limit
    r = post(fits - 1, {"IM0.dcm": scans[0]})
    assert r.status_code == 413, r.text
    assert "DICOM frames decode" in r.json()["detail"] and f"limit of {fits - 1} bytes" in r.json()["detail"]
    if packing == "zip":
        padding = bytes(50_000)  # read (its bytes count), then skipped: not an image
        r = post(fits + len(padding) - 1, {"a_padding.png": padding, "b/IM0.dcm": scans[0]})
        assert r.status_code == 413, r.text  # the archive's bytes and the frames' share one budget
        assert "DICOM frames decode" in r.json()["detail"]
        both = len(scans[0]) + len(scans[1]) + 2 * decoded
        r = post(both - 1, {"series/IM0.dcm": scans[0], "series/IM1.dcm": scans[1]})
        assert r.status_code == 413, r.text  # the files of a series share it too
        r = post(both, {"series/IM0.dcm": scans[0], "series/IM1.dcm": scans[1]})
        assert r.status_code == 201, r.text
        assert r.json()["images"] + r.json()["split"]["dropped"] == 6  # one series: a slab held out, its gap dropped
    assert len(app().get("/datasets").json()["data"]) == (2 if packing == "zip" else 1)
    assert list((settings.home / "tmp").iterdir()) == []


def test_rle_segments_decode_no_further_than_their_frame(app: Callable[..., TestClient], settings: Settings) -> None:
    runs = packbits_segment(2048, 4096 * 64, 1)  # 8 MiB of runs of 128: 512 MiB, where the frame needs 16 MiB
    header = struct.pack("<16I", 2, 64, 64 + len(runs), *([0] * 13))
    hostile = rle_file([header + runs + runs], side=4096)  # one 4096 x 4096 16-bit frame: 32 MiB decoded
    r, _, peak = post_measured(app(), files={"file": ("runs.dcm", hostile)})
    assert r.status_code == 422, r.text  # decoded, then skipped: one value
    assert "runs.dcm: blank image" in r.json()["detail"]
    # The file, one 16 MiB segment and the frame (32 MiB decoded, 64 MiB as float32, scaled copies
    # of it): about 230 MiB. pydicom's own decoder would have held a 512 MiB segment on top.
    assert peak < 384 << 20, peak
    nothing_stored(settings)


def test_dicom_frames_are_capped_per_upload(app: Callable[..., TestClient], settings: Settings) -> None:
    series = {f"series/IM{k}.dcm": mr_frames(2, first=2 * k, InstanceNumber=k) for k in range(3)}
    uploads = {
        "one file of 6 frames": {"content": mr_frames(6), "headers": {"content-type": "application/dicom"}},
        "3 files of 2 frames": {"files": {"file": ("series.zip", zip_bytes(series))}},
    }
    for what, request in uploads.items():
        r = app(max_dicom_frames=5).post("/datasets", **request)
        assert r.status_code == 413, (what, r.text)
        assert "more than the limit of 5 DICOM frames (DRAWAI_MAX_DICOM_FRAMES)" in r.json()["detail"]
        nothing_stored(settings)
        r = app(max_dicom_frames=6).post("/datasets", **request)
        assert r.status_code == 201, (what, r.text)
        assert r.json()["images"] + r.json()["split"]["dropped"] == 6  # one series: a slab held out, its gap dropped
        assert app().delete(f"/datasets/{r.json()['id']}").status_code == 204


def test_a_frame_count_that_lies_about_the_data_is_refused(app: Callable[..., TestClient], settings: Settings) -> None:
    lying = {
        "rle.dcm": rle_bomb(2, side=64, declared=5),  # two fragments, five frames declared
        "native.dcm": mr_frames(1, compress=False, NumberOfFrames=3),  # one frame of bytes, three declared
    }
    client = app()
    for name, data in lying.items():
        r = client.post("/datasets", files={"file": (name, data)})
        assert r.status_code == 422, r.text
        assert f"DICOM file {name} declares" in r.json()["detail"] and "holds" in r.json()["detail"]
        r = client.post("/datasets", files={"file": ("scans.zip", zip_bytes({f"a/{name}": data}))})
        assert r.status_code == 422, r.text
        assert f"DICOM file a/{name} declares" in r.json()["detail"]
    assert client.get("/datasets").json()["data"] == []
    nothing_stored(settings)


def test_deflated_dicom_counts_what_it_inflates_to(app: Callable[..., TestClient], settings: Settings) -> None:
    ds = mr_small()
    ds.Rows = ds.Columns = 2048
    ds.NumberOfFrames = 8
    ds.PixelData = bytes(2048 * 2048 * 2 * 8)  # 64 MiB of zeros, uncompressed frames...
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian  # ...in a file deflated whole
    bomb = to_bytes(ds)
    assert len(bomb) < 100_000
    r, _, peak = post_measured(app(max_unpacked_bytes=32 << 20), files={"file": ("deflated.dcm", bomb)})
    assert r.status_code == 413, r.text
    assert "a deflated DICOM file inflates to more than the limit of 33554432 bytes" in r.json()["detail"]
    assert peak < 16 << 20, peak  # counted 1 MiB at a time: pydicom would have inflated all 64 MiB
    nothing_stored(settings)
    deflated = get_testdata_file("image_dfl.dcm")  # a real deflated file still ingests
    assert deflated is not None
    r = app().post("/datasets", files={"file": ("image_dfl.dcm", Path(deflated).read_bytes())})
    assert r.status_code == 201, r.text
    assert r.json()["images"] == 1


def test_unknown_transfer_syntax_is_skipped(app: Callable[..., TestClient]) -> None:
    data = to_bytes(mr_small())
    explicit = b"1.2.840.10008.1.2.1\x00"  # Explicit VR Little Endian, as MR_small.dcm is written
    assert data.count(explicit) == 1
    unknown = data.replace(explicit, b"1.2.840.10008.1.9.9\x00")  # no transfer syntax of the standard
    r = app().post("/datasets", files={"file": ("odd.dcm", unknown)})
    assert r.status_code == 422, r.text  # skipped, not a server error
    assert "odd.dcm: unsupported DICOM transfer syntax" in r.json()["detail"]


def test_nifti_header_declaring_more_than_the_file_holds(app: Callable[..., TestClient], settings: Settings) -> None:
    small = nib.Nifti1Image(np.zeros((10, 10, 10), np.float64), np.eye(4)).to_bytes()
    header = nib.Nifti1Header.from_fileobj(io.BytesIO(small))
    header.set_data_shape((800, 800, 400))  # 256 M voxels of float64: 2 GB declared, 8 KB present
    offset = int(header.get_data_offset())
    lying = header.binaryblock + small[348:offset] + small[offset:]
    r, _, peak = post_measured(app(), files={"file": ("lying.nii", lying)})
    assert r.status_code == 422, r.text
    assert "lying.nii: truncated NIfTI volume" in r.json()["detail"]
    assert peak < 64 << 20, peak  # nibabel would have allocated the 2 GB before finding them missing
    nothing_stored(settings)
