"""``drawai.client``: the sync and async clients against a live app (uvicorn), the real Redis and real workers;
retries against a tiny real HTTP server that answers 429/503 with ``Retry-After``."""

from __future__ import annotations

import asyncio
import io
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from PIL import Image
from pydantic import SecretStr

from drawai.client import AsyncClient, Client, DrawAIError, RetryPolicy
from models.platform.settings import Settings
from models.platform.store import Store
from tests.conftest import (
    RedisServer,
    blobs,
    own_settings,
    publish_tiny_conditional_model,
    publish_tiny_model,
    put_dataset,
    spawn_worker,
    wait_for,
)
from tests.live import serve

TINY: dict[str, Any] = {
    "architecture": "dcgan",
    "image_size": 32,
    "width": 8,
    "latent_dim": 16,
    "batch_size": 8,
    "seed": 1,
}


@pytest.fixture
def api_url(settings: Settings, store: Store) -> Iterator[str]:
    with serve(settings) as url:
        yield url


def test_upload_train_watch_generate(api_url: str, settings: Settings, demo_zip: bytes, tmp_path: Path) -> None:
    archive = tmp_path / "mni152.zip"
    archive.write_bytes(demo_zip)
    seen: list[tuple[int, int]] = []
    with Client(api_url) as api:
        assert api.health().status == "ok"
        assert api.ready().status == "not ready"  # no model yet: an answer, not an exception
        ds = api.datasets.upload(archive, name="mni", progress=lambda sent, total: seen.append((sent, total)))
        assert ds.name == "mni" and ds.images > 0
        assert seen[-1] == (len(demo_zip), len(demo_zip))  # every byte reported, in order
        assert [s for s, _ in seen] == sorted(s for s, _ in seen)
        assert api.datasets.get(ds.id) == ds and [d.id for d in api.datasets.iter()] == [ds.id]
        assert api.datasets.preview(ds.id, per_class=2).startswith(b"\x89PNG")
        job = api.jobs.train(ds.id, preset="quick", epochs=1, **TINY)
        assert job.status == "queued" and job.spec is not None and job.spec["epochs"] == 1
        worker = spawn_worker(settings)
        try:
            events = list(api.jobs.watch(job.id))
            assert worker.wait(timeout=240) == 0
        finally:
            worker.kill()
        assert events[0].event == "progress" and events[-1].event == "end"
        final = events[-1].job
        assert final.status == "finished" and final.model_version is not None
        assert [j.id for j in api.jobs.list().data] == [job.id]
        models = api.models.list()
        assert [(m.version, m.active) for m in models.data] == [(final.model_version, True)]
        assert api.models.get(final.model_version).dataset == ds.id
        assert api.models.samples(final.model_version).startswith(b"\x89PNG")
        wait_for(lambda: api.ready().status == "ready", 30, "the API to load the new model")
        pil = api.generate(count=3, seed=7)
        assert pil.seeds == [7, 8, 9] and pil.labels is None and pil.model_version == final.model_version
        assert all(isinstance(im, Image.Image) and im.size == (32, 32) for im in pil.images)
        assert pil.images[0].text["Synthetic"] == "true"
        arr = api.generate(count=3, seed=7, as_="numpy")
        assert arr.images.shape == (3, 1, 32, 32) and arr.images.dtype == np.float32 and arr.seeds == [7, 8, 9]
        assert float(arr.images.min()) >= -1 and float(arr.images.max()) <= 1


def test_conditional_generate_returns_labels(settings: Settings, store: Store) -> None:
    version = publish_tiny_conditional_model(store)  # active, before the app starts
    with serve(settings) as url, Client(url) as api:
        out = api.generate(count=6, seed=3, labels={"yes": 2, "no": 4})
        assert out.labels == ["yes", "yes", "no", "no", "no", "no"] and out.seeds == [3, 4, 5, 6, 7, 8]
        assert [im.text["Class"] for im in out.images] == out.labels
        assert all(f"_{c}_seed{s}" in f for f, c, s in zip(out.files, out.labels, out.seeds, strict=True))
        arr = api.generate(count=6, seed=3, labels="yes:2,no:4", as_="numpy", model=version)
        assert arr.labels == out.labels and arr.images.shape == (6, 1, 32, 32)
        assert api.generate(count=2, label="yes").labels == ["yes", "yes"]
        with pytest.raises(DrawAIError) as err:
            api.generate(count=2, label="maybe")
        assert err.value.status == 422 and "yes" in err.value.detail


def test_errors_carry_status_and_detail(api_url: str) -> None:
    with Client(api_url) as api:
        with pytest.raises(DrawAIError) as err:
            api.jobs.get("nope")
        assert err.value.status == 404 and "nope" in err.value.detail
        with pytest.raises(DrawAIError) as err:
            api.jobs.train("ds-000000000000", epochs=0)
        assert err.value.status == 422 and isinstance(err.value.detail, list)  # FastAPI's list of problems
        with pytest.raises(DrawAIError) as err:
            list(api.jobs.watch("nope"))
        assert err.value.status == 404
        with pytest.raises(DrawAIError) as err:
            api.generate(count=2)
        assert err.value.status == 503  # no model: retried, then raised
    with pytest.raises(DrawAIError) as err, Client("http://127.0.0.1:9") as api:
        api.health()
    assert err.value.status is None and "cannot connect" in err.value.detail


def test_key_from_env(settings: Settings, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    keyed = settings.model_copy(update={"api_keys": SecretStr("k-123")})
    with serve(keyed) as url:
        with Client(url) as anonymous, pytest.raises(DrawAIError) as err:
            anonymous.datasets.upload(b"not an archive", filename="x.zip")
        assert err.value.status == 401
        monkeypatch.setenv("DRAWAI_API_KEY", "k-123")
        with Client(url) as api, pytest.raises(DrawAIError) as err:
            api.datasets.upload(b"not an archive", filename="x.zip")
        assert err.value.status == 422  # the key was accepted; the body was read and refused
        with Client(url, api_key="wrong") as api, pytest.raises(DrawAIError) as err:
            api.jobs.cancel("nope")
        assert err.value.status == 403


class Flaky(BaseHTTPRequestHandler):
    """Answers ``plan``'s statuses in turn (with ``Retry-After``), then 200 ``{"status": "ok"}``."""

    plan: ClassVar[list[tuple[int, str | None]]] = []
    seen: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        type(self).seen.append(self.headers.get("authorization", ""))
        status, after = type(self).plan.pop(0) if type(self).plan else (200, None)
        body = json.dumps({"status": "ok"} if status == 200 else {"detail": f"busy ({status})"}).encode()
        self.send_response(status)
        if after is not None:
            self.send_header("Retry-After", after)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def flaky() -> Iterator[str]:
    Flaky.plan, Flaky.seen = [], []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_retries_honour_retry_after(flaky: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRAWAI_API_KEY", "env-key")
    Flaky.plan = [(429, "1"), (503, "0")]
    waits: list[float] = []
    with Client(flaky) as api:
        real_sleep = api.sleep

        def record(s: float) -> None:
            waits.append(s)
            real_sleep(s)

        api.sleep = record
        assert api.health().status == "ok"
    assert waits == [1.0, 0.0] and len(Flaky.seen) == 3
    assert set(Flaky.seen) == {"Bearer env-key"}
    Flaky.plan, Flaky.seen = [(429, "0")] * 5, []
    with Client(flaky, retry=RetryPolicy(attempts=2)) as api, pytest.raises(DrawAIError) as err:
        api.health()
    assert err.value.status == 429 and err.value.detail == "busy (429)" and len(Flaky.seen) == 2
    Flaky.plan, Flaky.seen = [(500, None)], []
    with Client(flaky) as api, pytest.raises(DrawAIError) as err:
        api.health()
    assert err.value.status == 500 and len(Flaky.seen) == 1  # not retried


def test_async_retries(flaky: str) -> None:
    Flaky.plan = [(503, "0"), (429, None)]  # no Retry-After: the policy's backoff

    async def run() -> list[float]:
        waits: list[float] = []

        async def record(s: float) -> None:
            waits.append(s)

        async with AsyncClient(flaky, retry=RetryPolicy(backoff_s=0.01)) as api:
            api.sleep = record
            assert (await api.health()).status == "ok"
        return waits

    assert asyncio.run(run()) == [0.0, 0.02]


def test_async_client(settings: Settings, store: Store, demo_zip: bytes) -> None:
    version = publish_tiny_model(store, activate=True)

    async def run(url: str) -> None:
        seen: list[int] = []
        async with AsyncClient(url) as api:
            ds = await api.datasets.upload(
                io.BytesIO(demo_zip), filename="mni.zip", progress=lambda s, t: seen.append(s)
            )
            assert seen[-1] == len(demo_zip) and ds.images > 0
            paged = [d.id async for d in api.datasets.iter(page_size=1)]  # two pages of one
            assert paged == [d.id for d in (await api.datasets.list()).data] and len(paged) == 2
            job = await api.jobs.train(ds.id, epochs=1, **TINY)
            assert (await api.jobs.cancel(job.id)).status == "canceled"  # queued: canceled at once
            events = [e async for e in api.jobs.watch(job.id)]
            assert [e.event for e in events] == ["progress", "end"] and events[-1].job.status == "canceled"
            assert (await api.jobs.wait(job.id)).status == "canceled"
            assert (await api.models.active()) is not None
            out = await api.generate(count=2, seed=0, model=version)
            assert out.seeds == [0, 1] and len(out.images) == 2
            arr = await api.generate(count=2, seed=0, as_="numpy")
            assert arr.images.shape == (2, 1, 32, 32)
            await api.datasets.delete(ds.id)
            assert ds.id not in [d.id async for d in api.datasets.iter()]

    with serve(settings) as url:
        asyncio.run(run(url))


def test_watch_reopens_a_broken_stream(tmp_path: Path, own_redis: RedisServer) -> None:
    """Redis stops mid-watch (the server sends an ``error`` event): the watch reopens the stream once Redis is back,
    without repeating the state already seen; with Redis still down, it gives up with a 503."""
    settings, store = own_settings(tmp_path, own_redis)
    ds = put_dataset(store, blobs(16))
    with serve(settings) as url, Client(url, retry=RetryPolicy(backoff_s=0.01)) as api:
        job = api.jobs.train(ds.id, epochs=1, **TINY)
        breaks: list[float] = []

        def redis_back_and_cancel(wait: float) -> None:  # the client's pause before it reopens the stream
            breaks.append(wait)
            if len(breaks) == 1:
                own_redis.start()
                with Client(url) as other:
                    assert other.jobs.cancel(job.id).status == "canceled"

        api.sleep = redis_back_and_cancel
        events = []
        for event in api.jobs.watch(job.id):
            events.append(event)
            if len(events) == 1:
                own_redis.stop()  # the server's next read fails: an "error" event ends its stream
        assert [(e.event, e.job.status) for e in events] == [("progress", "queued"), ("progress", "canceled"),
                                                             ("end", "canceled")]  # fmt: skip
        assert breaks[0] == 0.01
        job = api.jobs.train(ds.id, epochs=1, **TINY)
        api.sleep = lambda wait: None
        with pytest.raises(DrawAIError) as err:
            for _ in api.jobs.watch(job.id):
                own_redis.stop()
        assert err.value.status == 503 and "Redis" in err.value.detail
