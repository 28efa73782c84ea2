"""``drawai datasets add|list|show`` in real processes against a real API (uvicorn on a free port)."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from models.platform.settings import Settings
from tests.test_cli import env_for, free_port


@pytest.fixture
def api(settings: Settings, tmp_path: Path) -> Iterator[str]:
    """The real API in its own process, on the test's store and Redis; its base URL."""
    port = free_port()
    log = (tmp_path / "api.log").open("wb")
    cmd = [sys.executable, "-m", "uvicorn", "--factory", "service.main:create_app", "--port", str(port), "--log-level"]
    proc = subprocess.Popen([*cmd, "warning"], env=env_for(settings), stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (tmp_path / "api.log").read_text()
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the API did not start"
            time.sleep(0.2)
        yield url
    finally:
        proc.kill()
        proc.wait(timeout=30)
        log.close()


def drawai(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "drawai.cli", "datasets", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env or dict(os.environ))


def kaggle_folder(root: Path) -> Path:
    """``brain_tumor_dataset/{yes,no}/`` of PNGs of mixed sizes, one RGB, plus junk the server must report."""
    top = root / "brain_tumor_dataset"
    rng = np.random.default_rng(0)
    for cls, n in (("yes", 5), ("no", 3)):
        (top / cls).mkdir(parents=True)
        for i in range(n):
            pixels = rng.integers(0, 256, (48 + 16 * i, 64), dtype=np.uint8)
            Image.fromarray(pixels).save(top / cls / f"{cls}{i}.png")
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(top / "yes" / "rgb.png")
    (top / "notes [draft].txt").write_text("not an image")  # brackets: printed as they are, not as markup
    (top / "no" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    return top


def test_add_folder_and_zip_then_list_and_show(api: str, tmp_path: Path) -> None:
    folder = kaggle_folder(tmp_path)
    r = drawai("add", str(folder), "--url", api)
    assert r.returncode == 0, r.stdout + r.stderr
    listed = httpx.get(f"{api}/datasets").json()["data"]
    assert len(listed) == 1
    ds = listed[0]
    assert ds["name"] == "brain_tumor_dataset" and ds["classes"] == {"no": 3, "yes": 6}
    out = " ".join(r.stdout.split())  # rich tables: compare on whitespace-normalized text
    assert ds["id"] in out and "9 images" in out
    assert "│ no │ 3 │" in out and "│ yes │ 6 │" in out
    assert "brain_tumor_dataset/notes [draft].txt │" in out and ".DS_Store │" in out  # zipped, reported by the server
    if ds.get("split"):  # the held-out split, when the server reports one, goes into the class table
        assert "held out" in out and f"split: train {ds['split']['train']}" in out

    archive = tmp_path / "upload.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for p in sorted(folder.rglob("*.png")):
            zf.write(p, p.relative_to(folder).as_posix())
    r = drawai("--url", api, "add", str(archive), "--name", "from zip")
    assert r.returncode == 0, r.stdout + r.stderr
    listed = httpx.get(f"{api}/datasets").json()["data"]
    assert [d["name"] for d in listed] == ["brain_tumor_dataset", "from zip"]
    second = listed[1]
    assert second["classes"] == {"no": 3, "yes": 6} and second["id"] in r.stdout
    assert "skipped: none" in r.stdout

    r = drawai("list", "--url", api)
    assert r.returncode == 0, r.stderr
    assert ds["id"] in r.stdout and second["id"] in r.stdout and "no 3, yes 6" in r.stdout
    r = drawai("show", second["id"], "--url", api)
    assert r.returncode == 0 and second["id"] in r.stdout and "9 images" in r.stdout


def test_upload_streams_the_file_in_chunks(api: str, tmp_path: Path) -> None:
    """The body is read from disk in httpx's 64 KiB chunks as it is sent, never whole."""
    from drawai.upload import TIMEOUT, post_dataset, zip_folder

    archive = tmp_path / "big.zip"
    zip_folder(kaggle_folder(tmp_path), archive)
    rng = np.random.default_rng(1)
    with zipfile.ZipFile(archive, "a") as zf:  # ~2 MB of incompressible pixels
        for i in range(4):
            path = tmp_path / f"large{i}.png"
            Image.fromarray(rng.integers(0, 256, (720, 720), dtype=np.uint8)).save(path)
            zf.write(path, f"brain_tumor_dataset/yes/large{i}.png")
    positions: list[int] = []
    with httpx.Client(base_url=api, timeout=TIMEOUT) as client:
        report = post_dataset(client, archive, archive.name, None, positions.append)
    size = archive.stat().st_size
    assert size > 2_000_000 and positions[-1] == size
    steps = [b - a for a, b in itertools.pairwise(positions) if b > a]
    assert len(steps) >= size // (64 * 1024) and max(steps) <= 64 * 1024
    assert report["name"] == "big" and report["classes"]["yes"] == 10


def test_api_url_setting_is_the_default(api: str, settings: Settings, tmp_path: Path) -> None:
    folder = kaggle_folder(tmp_path)
    r = drawai("add", str(folder / "yes"), env={**env_for(settings), "DRAWAI_API_URL": api})
    assert r.returncode == 0, r.stdout + r.stderr
    assert httpx.get(f"{api}/datasets").json()["data"][0]["classes"] == {"default": 6}


def test_refusals_exit_1_with_the_servers_detail(api: str, tmp_path: Path) -> None:
    bogus = tmp_path / "scans.zip"
    bogus.write_text("this is not a zip archive")
    r = drawai("add", str(bogus), "--url", api)
    assert r.returncode == 1
    assert "HTTP 422" in r.stderr and "not a valid zip archive" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr

    empty = tmp_path / "empty"
    empty.mkdir()
    r = drawai("add", str(empty), "--url", api)
    assert r.returncode == 1 and "HTTP 422" in r.stderr, r.stderr  # an empty zip: nothing to ingest

    r = drawai("show", "ds-000000000000", "--url", api)
    assert r.returncode == 1 and "HTTP 404" in r.stderr, r.stderr
    assert httpx.get(f"{api}/datasets").json()["data"] == []


def test_missing_path_and_unreachable_server_exit_1(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    r = drawai("add", str(missing), "--url", f"http://127.0.0.1:{free_port()}")
    assert r.returncode == 1
    assert "no such file or folder" in r.stderr and str(missing) in " ".join(r.stderr.split())
    assert "Traceback" not in r.stderr

    (tmp_path / "a.zip").write_bytes(b"PK")
    r = drawai("add", str(tmp_path / "a.zip"), "--url", f"http://127.0.0.1:{free_port()}")
    assert r.returncode == 1 and "cannot connect" in r.stderr and "Traceback" not in r.stderr
