"""The console's routes without a browser: the open shell and assets, the key check, the job's latest grid."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from redis import Redis
from rq import Queue

from models.platform.schemas import TrainSpec
from models.platform.settings import Settings
from models.platform.store import Store
from service import queue as jobq
from tests.conftest import blobs, put_dataset

KEY = "console-test-key-41b7"


@pytest.fixture
def keyed(tmp_path: Path, redis_url: str, redis: Redis) -> Iterator[TestClient]:
    from service.main import create_app

    settings = Settings(home=tmp_path / "home", redis_url=redis_url, api_keys=KEY, _env_file=None)  # type: ignore[arg-type,call-arg]
    with TestClient(create_app(settings)) as c:
        yield c


def test_shell_is_open_and_data_is_keyed(keyed: TestClient) -> None:
    for path in (
        "/",
        "/console/training",
        "/console/jobs",
        "/console/jobs/abc",
        "/console/models",
        "/console/generate",
    ):
        r = keyed.get(path)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html"), path
        assert 'id="keygate"' in r.text and "/console/static/console.js" in r.text
    assert "Reader test" not in keyed.get("/").text  # DRAWAI_QUIZ_ENABLED is off
    js = keyed.get("/console/static/console.js")
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    assert keyed.get("/console/static/console.css").headers["content-type"].startswith("text/css")
    for name in ("nope.js", "..%2Fconsole.py", "../templates/base.html"):
        assert keyed.get(f"/console/static/{name}").status_code == 404
    assert keyed.get("/auth/check").status_code == 401
    assert keyed.get("/auth/check", headers={"X-API-Key": "wrong"}).status_code == 403
    assert keyed.get("/auth/check", headers={"Authorization": f"Bearer {KEY}"}).status_code == 204
    assert "/" not in keyed.get("/openapi.json").json()["paths"]  # the pages are not API routes


def test_auth_check_open_without_keys(client: TestClient) -> None:
    assert client.get("/auth/check").status_code == 204


def test_job_samples_latest_grid(client: TestClient, store: Store, settings: Settings, redis: Redis) -> None:
    assert client.get("/jobs/no-such-job/samples.png").status_code == 404
    ds = put_dataset(store, blobs(12))
    spec = TrainSpec(dataset=ds.id, architecture="dcgan", image_size=32, batch_size=4, epochs=1)
    job = jobq.enqueue_training(Queue(settings.queue_name, connection=redis), spec, settings)
    assert client.get(f"/jobs/{job.id}/samples.png").status_code == 204  # queued: no grid yet
    samples = store.job_dir(job.id) / "samples"
    samples.mkdir(parents=True)
    for name in ("epoch_0001.png", "epoch_0002.png"):
        (samples / name).write_bytes(name.encode())
    r = client.get(f"/jobs/{job.id}/samples.png")
    assert r.status_code == 200 and r.content == b"epoch_0002.png" and r.headers["x-drawai-grid"] == "epoch_0002"
    (samples / "published.png").write_bytes(b"published")
    assert client.get(f"/jobs/{job.id}/samples.png").content == b"published"
