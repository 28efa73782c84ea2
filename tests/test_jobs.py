"""Training jobs through the real Redis queue, run by real ``drawai worker`` processes."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fastapi.testclient import TestClient
from redis import Redis
from rq import Queue
from rq.registry import FailedJobRegistry, FinishedJobRegistry, StartedJobRegistry

from models.gan.export import ort_session, sha256_file
from models.gan.training import CHECKPOINT
from models.platform.settings import Settings
from models.platform.store import Store
from models.quality.evaluation import SLAB_NOTE
from tests.conftest import blobs, put_dataset, spawn_worker, wait_for

TINY = {"architecture": "dcgan", "image_size": 32, "width": 8, "latent_dim": 16, "batch_size": 8, "seed": 1}


def kill_worker(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL a worker and its work horse (RQ puts the horse in a process group of its own)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == proc.pid:
            children.append(int(stat.parent.name))
    assert children, "the worker has no work horse"
    for pid in [proc.pid, *children]:
        os.kill(pid, signal.SIGKILL)
    proc.wait()


def finish(proc: subprocess.Popen[bytes], timeout: float = 240) -> None:
    assert proc.wait(timeout=timeout) == 0


def test_bad_specs(client: TestClient, store: Store) -> None:
    ds = put_dataset(store, blobs(12))
    cases: list[tuple[dict[str, Any], int]] = [
        ({"dataset": "ds-doesnotexist"}, 404),
        ({"dataset": ds.id, "epochs": 0}, 422),
        ({"dataset": ds.id, "epochs": -3}, 422),
        ({"dataset": ds.id, "batch_size": 13}, 422),  # the dataset has 12 images
        ({"dataset": ds.id, "image_size": 48}, 422),
        ({"dataset": ds.id, "architecture": "dcgan-seed", "image_size": 64}, 422),
        ({"dataset": ds.id, "architecture": "stylegan"}, 422),
        ({"dataset": ds.id, "lr_g": "fast"}, 422),
        ({}, 422),
    ]
    for body, code in cases:
        r = client.post("/jobs/train", json=body)
        assert r.status_code == code, (body, r.text)
        assert isinstance(r.json()["detail"], str | list)
    r = client.post("/jobs/train", content=b"not json", headers={"content-type": "application/json"})
    assert r.status_code == 422
    assert client.get("/jobs/nope").status_code == 404
    assert client.delete("/jobs/nope").status_code == 404
    assert client.get("/jobs").json()["data"] == []


def test_submit_answers_202_and_lists(client: TestClient, store: Store, redis: Redis, settings: Settings) -> None:
    ds = put_dataset(store, blobs(12))
    r = client.post("/jobs/train", json={**TINY, "dataset": ds.id, "epochs": 1, "my_note": "kept"})
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["status"] == "queued" and job["dataset"] == ds.id
    assert job["spec"]["my_note"] == "kept"  # extra fields are allowed
    assert job["progress"]["phase"] == "queued" and job["progress"]["epochs"] == 1
    queue = Queue(settings.queue_name, connection=redis)
    assert queue.job_ids == [job["id"]]
    assert queue.fetch_job(job["id"]).timeout == settings.job_timeout_s
    assert [j["id"] for j in client.get("/jobs").json()["data"]] == [job["id"]]
    # A dataset a queued job trains on cannot be deleted.
    assert client.delete(f"/datasets/{ds.id}").status_code == 409


def test_worker_process_never_imports_torch(settings: Settings) -> None:
    code = "import sys, worker.main, worker.jobs, service.main; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cancel_queued_job(client: TestClient, store: Store, settings: Settings, redis: Redis) -> None:
    ds = put_dataset(store, blobs(12))
    job = client.post("/jobs/train", json={**TINY, "dataset": ds.id, "epochs": 1}).json()
    r = client.delete(f"/jobs/{job['id']}")
    assert r.status_code == 202 and r.json()["status"] == "canceled"
    assert Queue(settings.queue_name, connection=redis).job_ids == []
    finish(spawn_worker(settings))  # nothing left for it to run
    assert client.get(f"/jobs/{job['id']}").json()["status"] == "canceled"
    assert store.list_models() == []
    assert client.delete(f"/jobs/{job['id']}").status_code == 409  # already canceled
    assert client.delete(f"/datasets/{ds.id}").status_code == 204  # no longer in use


def test_cancel_running_job(client: TestClient, store: Store, settings: Settings, redis: Redis) -> None:
    ds = put_dataset(store, blobs(32))
    job = client.post("/jobs/train", json={**TINY, "dataset": ds.id, "epochs": 500}).json()
    worker = spawn_worker(settings)
    try:
        wait_for(lambda: (client.get(f"/jobs/{job['id']}").json()["progress"] or {}).get("step", 0) >= 2, 120, "steps")
        r = client.delete(f"/jobs/{job['id']}")
        assert r.status_code == 202 and r.json()["cancel_requested"]
        view = wait_for(
            lambda: (v := client.get(f"/jobs/{job['id']}").json())["status"] == "canceled" and v, 60, "canceled"
        )
        finish(worker, 60)
    finally:
        worker.kill()
    assert view["progress"]["step"] < view["progress"]["steps"]
    assert view["model_version"] is None and store.list_models() == []
    assert FailedJobRegistry(settings.queue_name, connection=redis).get_job_ids() == []


def test_upload_train_publish(
    client: TestClient, store: Store, settings: Settings, redis: Redis, demo_zip: bytes
) -> None:
    """The whole path: upload real MRI slices, train a tiny DCGAN with a burst worker, get a model."""
    r = client.post("/datasets", files={"file": ("demo.zip", demo_zip, "application/zip")})
    assert r.status_code == 201, r.text
    ds = r.json()
    r = client.post("/jobs/train", json={**TINY, "dataset": ds["id"], "epochs": 2, "batch_size": 16})
    job_id = r.json()["id"]
    finish(spawn_worker(settings))

    job = client.get(f"/jobs/{job_id}").json()
    assert job["status"] == "finished", job
    steps = 2 * (ds["split"]["train"] // 16)  # training reads the training split only
    p = job["progress"]
    assert (p["phase"], p["epoch"], p["epochs"], p["step"], p["steps"]) == ("done", 2, 2, steps, steps)
    assert p["d_loss"] > 0 and math.isfinite(p["g_loss"]) and p["images_per_s"] > 0 and p["eta_s"] == 0
    assert job["started_at"] and job["ended_at"] and job["error"] is None
    assert job_id in FinishedJobRegistry(settings.queue_name, connection=redis).get_job_ids()

    version = job["model_version"]
    assert version == "v1" and store.active_version() == "v1"  # the first model is activated
    mdir = store.models_dir / version
    manifest = store.get_manifest(version)
    assert manifest.dataset == ds["id"] and manifest.dataset_sha256 == ds["sha256"]
    assert manifest.job_id == job_id and manifest.steps == steps and manifest.image_size == 32
    assert manifest.onnx_sha256 == sha256_file(mdir / "generator.onnx")
    assert manifest.onnx_parity_max_abs_diff <= 1e-4
    assert set(manifest.library_versions) >= {"torch", "onnxruntime"}
    out = ort_session(mdir / "generator.onnx").run(["image"], {"z": np.zeros((3, 16), np.float32)})[0]
    assert out.shape == (3, 1, 32, 32)
    assert (mdir / "samples.png").is_file()
    assert sorted(p.name for p in (store.job_dir(job_id) / "samples").iterdir()) == [
        "epoch_0001.png",
        "epoch_0002.png",
        "published.png",  # the published generator's grid (the chosen snapshot)
    ]

    # The worker evaluated the version against the held-out split before publishing it.
    report = client.get(f"/models/{version}/report").json()
    assert report["model"]["version"] == "v1" and report["data"]["real"]["count"] == ds["split"]["heldout"]
    assert report["data"]["training"]["count"] == ds["split"]["train"]
    assert report["data"]["synthetic"] == {
        "count": settings.eval_synthetic_count,
        "first_seed": 0,
        "last_seed": settings.eval_synthetic_count - 1,
        "provider": "CPUExecutionProvider",
    }
    for name in ("c2st_auc", "intensity_w1", "diversity_msssim", "memorization"):
        assert report["metrics"][name]["computed"] is True, report["metrics"][name]
    assert report["metrics"]["fid"]["computed"] is False and "DRAWAI_FID_WEIGHTS" in report["metrics"]["fid"]["reason"]
    assert [e["epoch"] for e in report["epochs"]] == [1, 2]
    assert manifest.quality is not None and manifest.quality["summary"] == report["summary"]
    assert ds["split"]["dropped"] > 0 and SLAB_NOTE in report["notes"]  # one volume: held out in slabs, said so
    assert client.get("/models").json()["data"][0]["report"] is True
    page = client.get(f"/models/{version}/report.html")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.text.count("data:image/png;base64,") == len(report["plots"]) + len(report["epochs"])


def test_second_model_activates_only_when_asked(store: Store, client: TestClient, settings: Settings) -> None:
    ds = put_dataset(store, blobs(16))
    for activate in (False, False, True):
        client.post("/jobs/train", json={**TINY, "dataset": ds.id, "epochs": 1, "activate": activate})
    finish(spawn_worker(settings))
    assert [m.version for m in store.list_models()] == ["v1", "v2", "v3"]
    assert store.active_version() == "v3"  # v1 (first ever) then v3 (asked); never v2


def test_sigkilled_worker_job_resumes_from_checkpoint(
    client: TestClient, store: Store, settings: Settings, redis: Redis
) -> None:
    ds = put_dataset(store, blobs(32))
    spec = {**TINY, "dataset": ds.id, "epochs": 60, "checkpoint_every": 5}  # 4 steps/epoch, 240 steps
    job_id = client.post("/jobs/train", json=spec).json()["id"]
    ckpt = store.job_dir(job_id) / CHECKPOINT

    first = spawn_worker(settings)
    wait_for(ckpt.exists, 120, "a first checkpoint")
    kill_worker(first)  # the worker and its work horse, mid-training
    killed_at = torch.load(ckpt, weights_only=False)["step"]
    assert 0 < killed_at < 240
    assert client.get(f"/jobs/{job_id}").json()["status"] == "started"  # RQ does not know yet

    # Once the heartbeat lapses (interval 1 s + grace 2 s here), a new worker retries the job.
    started = StartedJobRegistry(settings.queue_name, connection=redis)
    wait_for(lambda: started.get_expired_job_ids(), 30, "the heartbeat to lapse")
    finish(spawn_worker(settings))

    job = client.get(f"/jobs/{job_id}").json()
    assert job["status"] == "finished", job
    assert job["progress"]["resumed_from_step"] == killed_at  # neither from zero nor lost
    assert job["retries_left"] == settings.job_retries - 1
    manifest = store.get_manifest(job["model_version"])
    history = json.loads((store.model_dir(job["model_version"]) / "history.json").read_text())
    assert manifest.steps == 240 and len(history["d_loss"]) == 240
    assert "loss_history" not in json.loads((store.model_dir(job["model_version"]) / "model.json").read_text())
