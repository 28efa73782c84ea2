"""Shared fixtures: a real Redis (flushed per test), a store in a temp folder, the API client."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from redis import Redis

from models.platform.redisconn import (
    DEFAULT_URL,
    _answers,
    free_port,
    redis_server_binary,
    start_embedded,
    stop_embedded,
)
from models.platform.schemas import DatasetInfo
from models.platform.settings import Settings
from models.platform.store import Store

# Never the default database 0 that a developer's running stack uses. Parallel test runs on one machine
# (several checkouts) each pick their own database with DRAWAI_TEST_REDIS_DB.
TEST_DB = int(os.environ.get("DRAWAI_TEST_REDIS_DB", "15"))


@pytest.fixture(scope="session", autouse=True)
def _default_settings() -> Iterator[None]:
    """Tests run on the defaults: a developer's exported DRAWAI_* variables (API keys...) never leak in."""
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("DRAWAI_")}
    yield
    os.environ.update(saved)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The machine's Redis when one answers, else an embedded one: a real server either way."""
    if _answers(DEFAULT_URL):
        yield DEFAULT_URL.rsplit("/", 1)[0] + f"/{TEST_DB}"
        return
    redis_dir = tmp_path_factory.mktemp("redis")
    url = start_embedded(redis_dir)
    yield url.rsplit("/", 1)[0] + f"/{TEST_DB}"
    stop_embedded(redis_dir)


@pytest.fixture
def redis(redis_url: str) -> Iterator[Redis]:
    conn = Redis.from_url(redis_url)
    conn.flushdb()
    yield conn
    conn.flushdb()
    conn.close()


@pytest.fixture
def settings(tmp_path: Path, redis_url: str, redis: Redis) -> Settings:
    return Settings(
        home=tmp_path / "home",
        redis_url=redis_url,
        job_monitoring_interval_s=1,
        job_heartbeat_grace_s=2,
        _env_file=None,  # type: ignore[call-arg]
    )


@pytest.fixture
def store(settings: Settings) -> Store:
    return Store(settings.home).ensure()


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    from service.main import create_app

    with TestClient(create_app(settings)) as c:
        yield c


def blobs(n: int = 24, size: int = 256, seed: int = 0) -> np.ndarray:
    """Bright ellipses of random size on black: a stand-in for slices, enough to train on."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size - 0.5
    out = np.empty((n, size, size), np.uint8)
    for i in range(n):
        a, b = rng.uniform(0.2, 0.4, 2)
        out[i] = np.where((xx / a) ** 2 + (yy / b) ** 2 < 1, 200, 0).astype(np.uint8)
    return out


def put_dataset(store: Store, images: np.ndarray, name: str = "blobs", labels: np.ndarray | None = None,
                class_names: list[str] | None = None) -> DatasetInfo:  # fmt: skip
    """Store ``images`` (uint8 [N, S, S]) as a dataset directly, without the upload path (one class "default"
    unless ``labels`` and the sorted ``class_names`` they index are given)."""
    with store.staging("test-ds") as staged:
        labels = np.zeros(len(images), np.int64) if labels is None else np.asarray(labels, np.int64)
        names = class_names or ["default"]
        np.save(staged / "images.npy", images)
        np.save(staged / "labels.npy", labels)
        info = DatasetInfo(
            id=store.new_dataset_id(),
            name=name,
            images=len(images),
            classes={c: int((labels == i).sum()) for i, c in enumerate(names)},
            image_size=images.shape[-1],
            sha256=hashlib.sha256(images.tobytes() + labels.tobytes()).hexdigest(),
            created=datetime.now(UTC).isoformat(),
        )
        return store.commit_dataset(staged, info)


def two_class_blobs(n: int = 24, size: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``blobs`` as class "no" and, for every third image, class "yes" with a dark hole in the ellipse."""
    images = blobs(n, size, seed)
    labels = (np.arange(n) % 3 == 1).astype(np.int64)
    yy, xx = np.mgrid[:size, :size] / size - 0.5
    hole = (xx - 0.05) ** 2 + (yy + 0.05) ** 2 < 0.01
    images[labels == 1] = np.where(hole, 40, images[labels == 1]).astype(np.uint8)
    return images, labels


def worker_env(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "DRAWAI_HOME": str(settings.home),
        "DRAWAI_REDIS_URL": str(settings.redis_url),
        "DRAWAI_JOB_MONITORING_INTERVAL_S": str(settings.job_monitoring_interval_s),
        "DRAWAI_JOB_HEARTBEAT_GRACE_S": str(settings.job_heartbeat_grace_s),
        "DRAWAI_EVAL_SYNTHETIC_COUNT": str(settings.eval_synthetic_count),
        "DRAWAI_UTILITY_BUDGET_S": str(settings.utility_budget_s),
        "DRAWAI_REDIS_OUTAGE_GRACE_S": str(settings.redis_outage_grace_s),
        "DRAWAI_API_KEYS": "",  # an empty variable beats a developer's .env file: tests run without keys
    }


def spawn_worker(settings: Settings, burst: bool = True, metrics_port: int = 0) -> subprocess.Popen[bytes]:
    """``drawai worker`` in its own process group (so a test can kill it and its work horse).

    Its ``/metrics`` is served only when a test asks for it (``metrics_port``): workers of
    different tests never compete for one port.
    """
    cmd = [sys.executable, "-m", "drawai.cli", "worker"] + (["--burst"] if burst else [])
    env = {**worker_env(settings), "DRAWAI_WORKER_METRICS_PORT": str(metrics_port)}
    return subprocess.Popen(cmd, env=env, start_new_session=True)


DEMO_SLICES = Path(__file__).resolve().parent.parent / "data" / "demo" / "mni152_axial"


@pytest.fixture(scope="session")
def demo_zip() -> bytes:
    """The bundled real MRI slices (MNI ICBM152 axial T1), zipped as a user would upload them."""
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for p in sorted(DEMO_SLICES.glob("*.png")):
            zf.write(p, f"mni152/{p.name}")
    return buf.getvalue()


def publish_tiny_model(store: Store, seed: int = 0, epochs: int = 1, activate: bool = False) -> str:
    """Train a tiny real DCGAN (32 px) in-process and publish it as a model version."""
    from models.gan.publish import publish
    from models.gan.training import train

    spec_fields = {
        "architecture": "dcgan",
        "image_size": 32,
        "width": 8,
        "latent_dim": 16,
        "batch_size": 8,
        "epochs": epochs,
        "seed": seed,
    }
    ds = put_dataset(store, blobs(16, seed=seed))
    from models.platform.schemas import TrainSpec

    spec = TrainSpec(dataset=ds.id, activate=activate, **spec_fields)
    workdir = store.jobs_dir / f"job-{ds.id}"
    result = train(spec, store.load_dataset(ds.id)[0], workdir)
    version, _ = publish(store, result, spec, ds, f"job-{ds.id}", workdir)
    return version


def publish_tiny_conditional_model(store: Store, seed: int = 0, epochs: int = 2, activate: bool = True,
                                   class_names: tuple[str, str] = ("no", "yes")) -> str:  # fmt: skip
    """Train a tiny real class-conditional DCGAN (32 px, classes "no" and "yes" unless named) and publish it."""
    from models.gan.publish import publish
    from models.gan.training import train
    from models.platform.schemas import TrainSpec

    images, labels = two_class_blobs(24, 64, seed)
    ds = put_dataset(store, images, "two-class", labels, sorted(class_names))
    spec = TrainSpec(dataset=ds.id, architecture="dcgan", image_size=32, width=8, latent_dim=16, batch_size=8,
                     epochs=epochs, seed=seed, conditional=True, activate=activate)  # fmt: skip
    workdir = store.jobs_dir / f"job-{ds.id}"
    train_images, train_labels = store.load_dataset(ds.id)
    result = train(spec, train_images, workdir, labels=train_labels, num_classes=2)
    version, _ = publish(store, result, spec, ds, f"job-{ds.id}", workdir)
    return version


@pytest.fixture
def model_version(store: Store) -> str:
    """A published, active tiny model (v1) in the store, before the app starts."""
    return publish_tiny_model(store)


def wait_for(cond: Callable[[], Any], timeout: float = 60.0, what: str = "condition") -> Any:
    """Poll ``cond`` until it returns something truthy (returned), or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


class RedisServer:
    """A real redis-server with append-only persistence (as docker-compose runs it), restartable on one port."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        cmd = [
            redis_server_binary(), "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.folder),
            "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--daemonize", "yes",
            "--pidfile", str(self.folder / "redis.pid"), "--logfile", str(self.folder / "redis.log"),
        ]  # fmt: skip
        subprocess.run(cmd, check=True)
        wait_for(lambda: _answers(self.url), 15, "redis to start")

    def stop(self) -> None:
        if _answers(self.url):
            Redis.from_url(self.url).shutdown()  # writes the append-only file, as `docker compose restart redis`
        wait_for(lambda: not _answers(self.url), 15, "redis to stop")

    @property
    def pid(self) -> int:
        return int((self.folder / "redis.pid").read_text())

    def kill(self) -> None:
        """SIGKILL, as a crash or an OOM kill: only what it had acknowledged is in its append-only file."""
        pid = self.pid
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not Path(f"/proc/{pid}").exists() or _zombie(pid), 15, "redis to die")
        (self.folder / "redis.pid").unlink(missing_ok=True)

    def pause(self) -> None:
        """SIGSTOP: Redis holds its connections but answers nothing (a hung server)."""
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def own_settings(tmp_path: Path, server: RedisServer) -> tuple[Settings, Store]:
    """Settings on ``server`` with a short heartbeat grace (a killed job is retried within seconds), and the store."""
    settings = Settings(
        home=tmp_path / "home",
        redis_url=server.url,
        job_monitoring_interval_s=1,
        job_heartbeat_grace_s=2,
        _env_file=None,  # type: ignore[call-arg]
    )
    return settings, Store(settings.home).ensure()
