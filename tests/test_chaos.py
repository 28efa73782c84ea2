"""Chaos: Redis killed and restarted under a live worker, and a job killed between publishing and success.

The worker's connection waits out every outage shorter than DRAWAI_REDIS_OUTAGE_GRACE_S, whichever
loop of RQ it hits (dequeue, heartbeats, maintenance, a job's finish); the work horse trains on.
Past the grace the worker exits (status 3) and the job is retried from its checkpoint. A job whose
run died after publishing its version is not published again when it is retried.

The moments of the outages are drawn at random; the seed is printed (``DRAWAI_CHAOS_SEED`` replays one).
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from redis import Redis
from redis.exceptions import RedisError
from rq import Queue, Worker
from rq.job import Job
from rq.registry import StartedJobRegistry

from models.gan.training import CHECKPOINT
from models.platform.redisconn import RedisOutageExceeded, connect
from models.platform.schemas import TrainSpec
from models.platform.settings import Settings
from models.platform.store import Store
from service.queue import enqueue_training
from tests.conftest import RedisServer, blobs, own_settings, put_dataset, spawn_worker, wait_for
from tests.test_jobs import TINY, finish, kill_worker

STEPS = 160  # 40 epochs of 32 images in batches of 8: about 20 s of training on two busy cores


def chaos_settings(tmp_path: Path, server: RedisServer, **extra: Any) -> tuple[Settings, Store]:
    settings, store = own_settings(tmp_path, server)
    settings = settings.model_copy(update={"eval_synthetic_count": 16, **extra})  # a short evaluation
    return settings, store


def submit(server: RedisServer, settings: Settings, dataset: str, epochs: int = STEPS // 4) -> str:
    spec = TrainSpec.model_validate({**TINY, "dataset": dataset, "epochs": epochs, "checkpoint_every": 5})
    with Redis.from_url(server.url) as conn:
        return enqueue_training(Queue(settings.queue_name, connection=conn), spec, settings).id


def read_job(server: RedisServer, job_id: str) -> Job | None:
    """The job as Redis has it now; None while Redis is away."""
    try:
        with Redis.from_url(server.url, socket_timeout=2) as conn:
            return Job.fetch(job_id, connection=conn)
    except RedisError:
        return None


def progress_of(server: RedisServer, job_id: str) -> dict[str, Any]:
    job = read_job(server, job_id)
    return (job.meta.get("progress") or {}) if job is not None else {}


def worker_state(server: RedisServer) -> str | None:
    try:
        with Redis.from_url(server.url, socket_timeout=2) as conn:
            states = {w.get_state() for w in Worker.all(connection=conn)}
    except RedisError:
        return None
    return states.pop() if len(states) == 1 else None


class Chaos:
    """Kills Redis at the moments the test names, after a random delay, and records what it did."""

    def __init__(self, server: RedisServer, rng: random.Random) -> None:
        self.server, self.rng, self.log = server, rng, []  # type: ignore[var-annotated]

    def outage(self, seconds: float, when: str, jitter_s: float = 1.0) -> None:
        time.sleep(self.rng.uniform(0, jitter_s))
        self.server.kill()
        time.sleep(seconds)
        self.server.start()
        self.log.append((when, seconds))
        print(f"chaos: Redis killed {when}, back after {seconds:g} s")


def train_through_outages(chaos: Chaos, server: RedisServer, store: Store, job_id: str, version: str) -> None:
    """One job: an outage mid-training, one as it finishes (exporting, evaluating, publishing)."""
    wait_for(lambda: progress_of(server, job_id).get("step", 0) >= 10, 180, f"job {job_id} to train")
    chaos.outage(1 if version == "v1" else chaos.rng.choice([1, 20]), f"while {job_id} trains")

    def finishing() -> bool:
        return (store.models_dir / version).exists() or progress_of(server, job_id).get("phase") in (
            "exporting",
            "evaluating",
            "done",
        )

    wait_for(finishing, 240, f"job {job_id} to finish training")
    chaos.outage(20 if version == "v1" else 1, f"as {job_id} finishes", jitter_s=0.5)
    ended = ("finished", "failed", "canceled", "stopped")
    wait_for(lambda: (j := read_job(server, job_id)) is not None and j.get_status() in ended, 240, "the job to end")


def test_worker_outlives_redis_killed_five_times(tmp_path: Path, own_redis: RedisServer) -> None:
    seed = int(os.environ.get("DRAWAI_CHAOS_SEED") or random.SystemRandom().randrange(1_000_000))
    print(f"chaos seed {seed} (DRAWAI_CHAOS_SEED={seed} replays it)")
    chaos = Chaos(own_redis, random.Random(seed))
    settings, store = chaos_settings(tmp_path, own_redis)
    ds = put_dataset(store, blobs(32))
    worker = spawn_worker(settings, burst=False)
    try:
        first = submit(own_redis, settings, ds.id)
        train_through_outages(chaos, own_redis, store, first, "v1")
        wait_for(lambda: worker_state(own_redis) == "idle", 60, "the worker to wait for work")
        chaos.outage(20, "while the worker waits in dequeue", jitter_s=2.0)
        second = submit(own_redis, settings, ds.id)
        train_through_outages(chaos, own_redis, store, second, "v2")
        assert worker.poll() is None, "the worker died"
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)
    assert len(chaos.log) == 5, chaos.log
    for job_id in (first, second):
        job = read_job(own_redis, job_id)
        assert job is not None and job.get_status() == "finished", (job_id, job and job.get_status(), seed)
        progress = job.meta["progress"]
        assert progress["phase"] == "done" and progress["step"] == progress["steps"] == STEPS, (progress, seed)
        assert progress["resumed_from_step"] is None, seed  # it never stopped: no retry, no resume
        assert job.retries_left == settings.job_retries, seed
    versions = {m.version: m.job_id for m in store.list_models()}
    assert versions == {"v1": first, "v2": second}, (versions, seed)  # one version per job, none twice


def test_a_job_killed_after_publishing_is_not_published_twice(tmp_path: Path, own_redis: RedisServer) -> None:
    """The run is killed once its version is in the store but before RQ could record the success (Redis hung)."""
    settings, store = chaos_settings(tmp_path, own_redis)
    ds = put_dataset(store, blobs(32))
    job_id = submit(own_redis, settings, ds.id, epochs=5)
    worker = spawn_worker(settings, burst=False)
    try:
        wait_for(lambda: progress_of(own_redis, job_id).get("phase") == "evaluating", 180, "the evaluation")
        own_redis.pause()  # nothing the run says to Redis from here on arrives
        try:
            wait_for((store.models_dir / "v1" / "model.json").exists, 120, "the version to be published")
            kill_worker(worker)  # SIGKILL: the worker and its work horse
        finally:
            own_redis.resume()
    finally:
        if worker.poll() is None:
            kill_worker(worker)
    checkpoint = store.job_dir(job_id) / CHECKPOINT
    trained_at = checkpoint.stat().st_mtime_ns
    started = StartedJobRegistry(settings.queue_name, connection=Redis.from_url(own_redis.url))
    wait_for(lambda: started.get_expired_job_ids(), 30, "the killed job's heartbeat to lapse")
    finish(spawn_worker(settings), timeout=240)  # the retry

    job = read_job(own_redis, job_id)
    assert job is not None and job.get_status() == "finished"
    assert job.meta["model_version"] == "v1" and job.meta["progress"]["phase"] == "done"
    assert job.return_value() == {"model_version": "v1", "active": True, "steps": 20}
    assert job.retries_left == settings.job_retries - 1  # it was retried ...
    assert checkpoint.stat().st_mtime_ns == trained_at  # ... without training again
    assert [(m.version, m.job_id) for m in store.list_models()] == [("v1", job_id)]
    assert store.active_version() == "v1"


def test_worker_exits_past_the_outage_grace_and_its_job_resumes(tmp_path: Path, own_redis: RedisServer) -> None:
    """Past DRAWAI_REDIS_OUTAGE_GRACE_S the worker stops its horse and exits 3; a new worker resumes the job."""
    settings, store = chaos_settings(tmp_path, own_redis, redis_outage_grace_s=4.0)
    ds = put_dataset(store, blobs(32))
    job_id = submit(own_redis, settings, ds.id, epochs=60)  # 240 steps: several times the 4 s grace
    worker = spawn_worker(settings, burst=False)
    checkpoint = store.job_dir(job_id) / CHECKPOINT
    try:
        wait_for(checkpoint.exists, 180, "a first checkpoint")
        horses = [int(p.name) for p in Path("/proc").glob("[0-9]*") if _parent(p) == worker.pid]
        assert len(horses) == 1, horses
        own_redis.kill()
        assert worker.wait(timeout=60) == 3
        assert _gone(horses[0]), "the work horse outlived its worker"
    finally:
        if worker.poll() is None:
            kill_worker(worker)
        own_redis.start()
    started = StartedJobRegistry(settings.queue_name, connection=Redis.from_url(own_redis.url))
    wait_for(lambda: started.get_expired_job_ids(), 30, "the job's heartbeat to lapse")
    finish(spawn_worker(settings), timeout=300)
    job = read_job(own_redis, job_id)
    assert job is not None and job.get_status() == "finished"
    assert job.meta["progress"]["resumed_from_step"] >= 5  # from its checkpoint, not from zero
    assert job.meta["progress"]["step"] == job.meta["progress"]["steps"] == 240
    assert [m.job_id for m in store.list_models()] == [job_id]


def _parent(proc: Path) -> int | None:
    try:
        return int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def restart_later(server: RedisServer, after_s: float) -> threading.Thread:
    """Start ``server`` again ``after_s`` seconds from now, in a thread (the caller is blocked on Redis)."""

    def restart() -> None:
        time.sleep(after_s)
        server.start()

    t = threading.Thread(target=restart, daemon=True)
    t.start()
    return t


def test_outage_retry_waits_for_redis_and_gives_up_past_the_grace(tmp_path: Path, own_redis: RedisServer) -> None:
    settings, _ = own_settings(tmp_path, own_redis)
    conn = connect(settings, outage_grace_s=30)
    conn.set("k", b"before")
    own_redis.stop()
    restart = restart_later(own_redis, 2)
    assert conn.get("k") == b"before"  # waited ~2 s for the restart, then answered
    restart.join()

    impatient = connect(settings, outage_grace_s=1.5)
    impatient.ping()
    own_redis.kill()
    t0 = time.monotonic()
    with pytest.raises(RedisOutageExceeded, match="DRAWAI_REDIS_OUTAGE_GRACE_S"):
        impatient.ping()
    assert 1.5 <= time.monotonic() - t0 < 10
    with pytest.raises(RedisOutageExceeded):  # the grace is spent: the next call gives up at once
        impatient.get("k")
    own_redis.start()
    assert impatient.get("k") == b"before"  # and it works again once Redis is back


def test_progress_and_cancellation_tolerate_an_outage(tmp_path: Path, own_redis: RedisServer) -> None:
    """In the horse: progress writes and the per-step cancel check never wait for Redis; the end is saved."""
    from worker.jobs import JobReporter

    settings, _ = own_settings(tmp_path, own_redis)
    conn = connect(settings, outage_grace_s=60)
    job = Queue(settings.queue_name, connection=conn).enqueue("builtins.len", "x")
    reporter = JobReporter(job, interval_s=0)
    own_redis.kill()
    t0 = time.monotonic()
    reporter.progress({"phase": "training", "step": 3, "steps": 9})
    reporter.phase("evaluating", detail="c2st_auc (1 of 8)")
    assert reporter.should_abort() is False
    assert time.monotonic() - t0 < 5, "progress waited for Redis"
    restart = restart_later(own_redis, 2)
    reporter.mark_canceled()  # waits for Redis: a canceled job must be recorded as such
    restart.join()
    saved = Job.fetch(job.id, connection=Redis.from_url(own_redis.url))
    assert saved.meta["canceled"] is True
    progress = saved.meta["progress"]  # what the outage kept from Redis is saved with the end
    assert (progress["phase"], progress["step"], progress["detail"]) == ("canceled", 3, "c2st_auc (1 of 8)")
