"""Restart safety: queued and running jobs survive a killed worker, a restarted Redis and a restarted API."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import torch
from fastapi.testclient import TestClient
from redis import Redis
from rq.registry import StartedJobRegistry

from models.gan.training import CHECKPOINT
from service.main import create_app
from tests.conftest import RedisServer, blobs, own_settings, put_dataset, spawn_worker, wait_for
from tests.test_jobs import TINY, finish, kill_worker


def test_jobs_survive_killed_worker_and_restarted_redis_and_api(tmp_path: Path, own_redis: RedisServer) -> None:
    settings, store = own_settings(tmp_path, own_redis)
    ds = put_dataset(store, blobs(32))
    with TestClient(create_app(settings)) as api:
        running = api.post("/jobs/train", json={**TINY, "dataset": ds.id, "epochs": 60, "checkpoint_every": 5})
        queued = [api.post("/jobs/train", json={**TINY, "dataset": ds.id, "epochs": 2}) for _ in range(2)]
    ids = [r.json()["id"] for r in (running, *queued)]

    worker = spawn_worker(settings, burst=False)
    ckpt = store.job_dir(ids[0]) / CHECKPOINT
    try:
        wait_for(ckpt.exists, 120, "a first checkpoint of the running job")
    finally:
        kill_worker(worker)  # SIGKILL, worker and work horse, mid-training; two jobs still queued
    killed_at = torch.load(ckpt, weights_only=False)["step"]
    assert 0 < killed_at < 240

    own_redis.stop()  # Redis restarts: everything it knew comes back from its append-only file
    own_redis.start()

    with TestClient(create_app(settings)) as api:  # a restarted API lists every job
        statuses = [api.get(f"/jobs/{i}").json()["status"] for i in ids]
        assert statuses == ["started", "queued", "queued"]
    started = StartedJobRegistry(settings.queue_name, connection=Redis.from_url(own_redis.url))
    wait_for(lambda: started.get_expired_job_ids(), 30, "the killed job's heartbeat to lapse")
    finish(spawn_worker(settings), timeout=400)  # a new worker retries the abandoned job and runs the queued ones

    with TestClient(create_app(settings)) as api:
        jobs = [api.get(f"/jobs/{i}").json() for i in ids]
    assert [j["status"] for j in jobs] == ["finished"] * 3, jobs
    assert jobs[0]["progress"]["resumed_from_step"] == killed_at  # resumed from its checkpoint, not from zero
    assert sorted(j["model_version"] for j in jobs) == ["v1", "v2", "v3"]
    assert [m.version for m in store.list_models()] == ["v1", "v2", "v3"]  # models in the store survive too


def test_training_goes_on_through_a_redis_restart(tmp_path: Path, own_redis: RedisServer) -> None:
    """A Redis restart under a live worker: the worker survives, the job trains on and finishes, unrestarted."""
    settings, store = own_settings(tmp_path, own_redis)
    ds = put_dataset(store, blobs(32))
    with TestClient(create_app(settings)) as api:
        job_id = api.post("/jobs/train", json={**TINY, "dataset": ds.id, "epochs": 60, "checkpoint_every": 5}).json()[
            "id"
        ]
    worker = spawn_worker(settings, burst=False)
    try:
        wait_for((store.job_dir(job_id) / CHECKPOINT).exists, 120, "training to be under way")
        own_redis.stop()
        time.sleep(3)  # longer than the job's heartbeat TTL here (1 s + 2 s)
        own_redis.start()

        def ended() -> dict | None:
            with TestClient(create_app(settings)) as api:
                job = api.get(f"/jobs/{job_id}").json()
            return job if job["status"] in ("finished", "failed", "canceled") else None

        job = wait_for(ended, 300, "the job to end")
        assert worker.poll() is None, "the worker died with Redis"
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)
    assert job["status"] == "finished", job
    assert job["progress"]["resumed_from_step"] is None  # it never stopped: no retry, no resume
    assert job["progress"]["step"] == job["progress"]["steps"] == 240
    assert [m.version for m in store.list_models()] == ["v1"]
