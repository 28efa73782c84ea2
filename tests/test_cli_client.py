"""``drawai train | jobs | jobs watch | models | generate`` in real processes, against a live app (uvicorn), the real
Redis and a real worker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from drawai.cli_client import parse_field
from models.platform.settings import Settings
from models.platform.store import Store
from tests.conftest import blobs, publish_tiny_conditional_model, put_dataset, spawn_worker
from tests.live import serve

TINY = {"architecture": "dcgan", "image_size": 32, "width": 8, "latent_dim": 16, "batch_size": 8, "seed": 1}
TINY_FIELDS = ["architecture=dcgan", "image_size=32", "width=8", "latent_dim=16", "batch_size=8", "epochs=1", "seed=1"]


def drawai(url: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DRAWAI_API_URL": url, "COLUMNS": "200", "DRAWAI_API_KEY": "", "DRAWAI_API_KEYS": ""}
    cmd = [sys.executable, "-m", "drawai.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture
def api_url(settings: Settings, store: Store) -> Iterator[str]:
    with serve(settings) as url:
        yield url


def test_parse_field() -> None:
    assert parse_field("epochs=3") == ("epochs", 3)
    assert parse_field("lr_g=0.0002") == ("lr_g", 0.0002)
    assert parse_field("ema=true") == ("ema", True)
    assert parse_field("loss=hinge") == ("loss", "hinge")
    assert parse_field("note=a=b") == ("note", "a=b")


def test_train_watch_jobs_models_generate(api_url: str, settings: Settings, store: Store, tmp_path: Path) -> None:
    ds = put_dataset(store, blobs(16))
    worker = spawn_worker(settings, burst=False)  # waits for the job: no race with the submission
    try:
        fields = [a for f in TINY_FIELDS for a in ("--field", f)]
        r = drawai(api_url, "train", ds.id, "--preset", "quick", *fields, "--watch")
        assert r.returncode == 0, r.stdout + r.stderr
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=60)
    assert "finished: model version v1" in r.stdout
    assert "epoch 1/1" in r.stderr  # the live bar (on stderr), fed by the job's events
    job_id = r.stdout.split()[1]
    jobs = drawai(api_url, "jobs")
    assert jobs.returncode == 0 and job_id in jobs.stdout and "finished" in jobs.stdout and "v1" in jobs.stdout
    again = drawai(api_url, "jobs", "watch", job_id)  # an ended job: its state and end at once
    assert again.returncode == 0 and "finished: model version v1" in again.stdout
    models = drawai(api_url, "models")
    assert models.returncode == 0 and "v1" in models.stdout and "*" in models.stdout
    out = tmp_path / "synthetic"
    gen = drawai(api_url, "generate", "--count", "3", "--seed", "5", "--out", str(out))
    assert gen.returncode == 0, gen.stderr
    files = sorted(out.glob("*.png"))
    assert [f.name for f in files] == [f"synthetic_v1_seed{s}.png" for s in (5, 6, 7)]
    assert [Image.open(f).info["Seed"] for f in files] == ["5", "6", "7"]  # the server's PNGs, provenance kept


def test_watch_exits_nonzero_for_canceled_and_unknown_jobs(api_url: str, store: Store) -> None:
    ds = put_dataset(store, blobs(16))
    job = httpx.post(f"{api_url}/jobs/train", json={"dataset": ds.id, "epochs": 1}).json()
    assert httpx.delete(f"{api_url}/jobs/{job['id']}").status_code == 202
    r = drawai(api_url, "jobs", "watch", job["id"])
    assert r.returncode == 1 and "canceled" in r.stderr
    r = drawai(api_url, "jobs", "watch", "nope")
    assert r.returncode == 1 and "HTTP 404" in r.stderr and "nope" in r.stderr
    r = drawai(api_url, "train", "ds-000000000000")
    assert r.returncode == 1 and "HTTP 404" in r.stderr


def test_watch_exits_nonzero_for_a_failed_job(settings: Settings, store: Store) -> None:
    ds = put_dataset(store, blobs(16))
    with serve(settings.model_copy(update={"job_retries": 0})) as url:
        job = httpx.post(f"{url}/jobs/train", json={"dataset": ds.id, "epochs": 1, **TINY}).json()
        store.delete_dataset(ds.id)  # behind the API's back: the worker cannot load it, the job fails
        finish = spawn_worker(settings).wait(timeout=240)
        assert finish == 0
        r = drawai(url, "jobs", "watch", job["id"])
    assert r.returncode == 1 and f"job {job['id']} failed" in r.stderr


def test_generate_conditional_and_empty_lists(settings: Settings, store: Store, tmp_path: Path) -> None:
    with serve(settings) as url:
        assert "no jobs" in drawai(url, "jobs").stdout
        assert "no model versions" in drawai(url, "models").stdout
    publish_tiny_conditional_model(store)
    with serve(settings) as url:
        r = drawai(url, "generate", "--labels", "yes:2,no:1", "--seed", "0", "--out", str(tmp_path / "out"))
        assert r.returncode == 0, r.stderr
    names = sorted(p.name for p in (tmp_path / "out").glob("*.png"))
    assert names == ["synthetic_v1_no_seed2.png", "synthetic_v1_yes_seed0.png", "synthetic_v1_yes_seed1.png"]
