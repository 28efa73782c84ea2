"""Backpressure on ``POST /generate``: past ``DRAWAI_MAX_QUEUED_ROWS`` in-flight rows, 429 with Retry-After at once.

A real uvicorn server on a free port, the real app and a real ONNX Runtime model. The overload is made
deterministic by holding the batcher's inference thread (a job that waits on an event, as a very slow
inference would): nothing admitted can finish until the test lets it, so exactly the rows that fit are
admitted and every other request must be refused without waiting. No assertion depends on speed.
"""

from __future__ import annotations

import asyncio
import re
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import numpy as np
import pytest
import uvicorn
from fastapi import FastAPI
from pydantic import SecretStr

from models.platform.redisconn import free_port
from models.platform.sampling import latents
from models.platform.settings import Settings
from models.platform.store import Store
from service.batching import DynamicBatcher, Overloaded
from service.inference import Preferences, load_model
from tests.conftest import wait_for
from tests.test_generate import open_png, provenance

BOUND = 4


@dataclass
class Server:
    url: str
    app: FastAPI
    gate: threading.Event

    @property
    def batcher(self) -> DynamicBatcher:
        return self.app.state.batcher

    def hold(self) -> None:
        """Occupy every inference thread until ``release``: admitted requests wait in the batcher."""
        from service.batching import MAX_STREAMS

        self.gate.clear()
        for _ in range(MAX_STREAMS):
            self.batcher.executor.submit(self.gate.wait)

    def release(self) -> None:
        self.gate.set()


@contextmanager
def serve(settings: Settings) -> Iterator[Server]:
    from service.main import create_app

    app = create_app(settings.model_copy(update={"max_queued_rows": BOUND}))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="test-uvicorn")
    thread.start()
    s = Server(f"http://127.0.0.1:{port}", app, threading.Event())
    try:
        wait_for(lambda: server.started or not thread.is_alive(), 60, "uvicorn")
        assert server.started, "uvicorn did not start"
        yield s
    finally:
        s.release()  # never leave the inference thread blocked: the process could not exit
        server.should_exit = True
        thread.join(60)


def post(url: str, timeout: float = 120, **params: object) -> httpx.Response:
    with httpx.Client(base_url=url, timeout=timeout) as c:
        return c.post("/generate", params=params)


def rejected_total(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=30).text
    m = re.search(r"^drawai_generate_rejected_total (\S+)$", text, re.M)
    assert m, "drawai_generate_rejected_total is not in /metrics"
    return float(m.group(1))


def assert_overloaded(r: httpx.Response) -> None:
    assert r.status_code == 429, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert "DRAWAI_MAX_QUEUED_ROWS" in r.json()["detail"]
    assert int(r.headers["retry-after"]) >= 1


def test_past_the_bound_requests_are_429_at_once_and_the_admitted_ones_succeed(
    model_version: str, settings: Settings
) -> None:
    n = 12
    with serve(settings) as srv, ThreadPoolExecutor(n) as pool:
        assert rejected_total(srv.url) == 0
        srv.hold()
        futures: list[Future[httpx.Response]] = [
            pool.submit(post, srv.url, count=1, seed=100 + i, format="png") for i in range(n)
        ]
        # Nothing admitted can finish while the inference thread is held: the refusals come back without it.
        wait_for(lambda: sum(f.done() for f in futures) == n - BOUND, 60, "the refusals")
        assert srv.batcher.inflight_rows == BOUND
        srv.release()
        responses = [f.result() for f in futures]
        assert srv.batcher.inflight_rows == 0

        refused = [r for r in responses if r.status_code == 429]
        served = [r for r in responses if r.status_code == 200]
        assert len(refused) == n - BOUND and len(served) == BOUND, [r.status_code for r in responses]
        for r in refused:
            assert_overloaded(r)
        for r in served:
            seed = int(r.headers["x-drawai-seed"])
            assert provenance(r.content)["Seed"] == str(seed)
            assert open_png(r.content).size == (32, 32)
            assert post(srv.url, count=1, seed=seed, format="png").content == r.content  # a valid, reproducible image
        assert rejected_total(srv.url) == len(refused)


def test_a_request_larger_than_the_bound_is_served_alone(model_version: str, settings: Settings) -> None:
    with serve(settings) as srv, ThreadPoolExecutor(1) as pool:
        srv.hold()
        big = pool.submit(post, srv.url, count=2 * BOUND, seed=0, format="npy")
        wait_for(lambda: srv.batcher.inflight_rows == 2 * BOUND, 60, "the large request's admission")
        assert_overloaded(post(srv.url, count=1, seed=0))  # it waits alone: nothing joins it
        srv.release()
        r = big.result()
        assert r.status_code == 200, r.text
        assert r.content.startswith(b"\x93NUMPY")
        assert srv.batcher.inflight_rows == 0
        assert rejected_total(srv.url) == 1


def test_clients_that_disconnect_and_failed_requests_release_their_rows(model_version: str, settings: Settings) -> None:
    with serve(settings) as srv:
        srv.hold()
        port = int(srv.url.rsplit(":", 1)[1])
        socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(BOUND)]
        for i, sock in enumerate(socks):
            sock.sendall(f"POST /generate?count=1&seed={i} HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n".encode())
        wait_for(lambda: srv.batcher.inflight_rows == BOUND, 60, "the admissions")
        for sock in socks:  # every client goes away while its request waits in the batcher
            sock.close()
        srv.release()
        wait_for(lambda: srv.batcher.inflight_rows == 0, 60, "the disconnected clients' rows to be released")

        # A request that fails after its admission (here 422: a label for a model without classes) releases too.
        r = post(srv.url, count=BOUND, label="yes")
        assert r.status_code == 422, r.text
        assert srv.batcher.inflight_rows == 0
        r = post(srv.url, count=BOUND, seed=1, format="zip")  # the whole bound is free again
        assert r.status_code == 200, r.text
        assert rejected_total(srv.url) == 0


def test_failed_inference_releases_the_rows(model_version: str, store: Store) -> None:
    """ONNX Runtime refusing the input (wrong latent width) fails the request; the batcher does not leak rows."""
    model = load_model(store, model_version, Preferences())

    async def scenario() -> None:
        batcher = DynamicBatcher(max_batch=8, max_wait_s=0.0, max_queued_rows=BOUND)
        await batcher.start()
        try:
            with pytest.raises(Exception, match=r"(?i)dimension|shape|invalid"), batcher.admit(2):
                await batcher.infer(model, np.zeros((2, model.latent_dim + 3), np.float32))
            assert batcher.inflight_rows == 0
            with batcher.admit(BOUND):
                with pytest.raises(Overloaded) as info:
                    batcher.admit(1)
                assert info.value.retry_after_s >= 1
                out = await batcher.infer(model, latents(model.latent_dim, list(range(BOUND))))
                assert out.shape == (BOUND, 1, 32, 32)
            assert batcher.inflight_rows == 0
        finally:
            await batcher.stop()

    asyncio.run(scenario())


def test_openapi_declares_429_with_retry_after(model_version: str, settings: Settings) -> None:
    from fastapi.testclient import TestClient

    from service.main import create_app

    with TestClient(create_app(settings)) as c:
        spec = c.get("/openapi.json").json()
    declared = spec["paths"]["/generate"]["post"]["responses"]["429"]
    assert "Retry-After" in declared["headers"]
    assert declared["headers"]["Retry-After"]["schema"]["type"] == "integer"


def test_under_overload_keys_and_parameters_keep_their_answers(model_version: str, settings: Settings) -> None:
    """The shed path answers 429 only to a request the route would have refused with 429: a missing or wrong
    key still gets 401/403, a bad count 422; the 429s are counted under the route's own label."""
    keyed = settings.model_copy(update={"api_keys": SecretStr("k1")})
    with serve(keyed) as srv, ThreadPoolExecutor(1) as pool:
        srv.hold()
        admitted = pool.submit(httpx.post, f"{srv.url}/generate", params={"count": BOUND}, headers={"X-API-Key": "k1"})
        wait_for(lambda: srv.batcher.inflight_rows == BOUND, 60, "the admission that fills the bound")
        with httpx.Client(base_url=srv.url, timeout=60) as c:
            assert c.post("/generate").status_code == 401
            assert c.post("/generate", headers={"X-API-Key": "nope"}).status_code == 403
            for bad in ("0", "x", "10000000", "-1"):
                r = c.post("/generate", params={"count": bad}, headers={"X-API-Key": "k1"})
                assert r.status_code == 422, (bad, r.text)
            for headers in ({"X-API-Key": "k1"}, {"Authorization": "Bearer k1"}):
                assert_overloaded(c.post("/generate", params={"count": 1}, headers=headers))
            metrics = c.get("/metrics").text
        srv.release()
        assert admitted.result(60).status_code == 200
    shed = r'^drawai_http_requests_total\{method="POST",route="/generate",status="429"\} 2\.0$'
    assert re.search(shed, metrics, re.M)
    assert re.search(r"^drawai_generate_rejected_total 2\.0$", metrics, re.M)


def test_refusals_are_not_access_logged_one_line_each() -> None:
    import logging

    from service.shedding import QuietRefusals

    def record(path: str, status: int) -> logging.LogRecord:
        args = ("127.0.0.1:5000", "POST", path, "1.1", status)
        return logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d', args, None)

    quiet = QuietRefusals()
    assert not quiet.filter(record("/generate?count=8", 429))
    assert quiet.filter(record("/generate?count=8", 200))
    assert quiet.filter(record("/jobs", 429))
    assert quiet.filter(record("/generate", 401))


def test_retry_after_grows_with_the_crowd_of_refused_clients() -> None:
    """Retry-After counts the rows in flight and those refused in the last second (their clients retry too)."""
    from service.batching import RETRY_AFTER_MAX_S, RecentRows

    now = [100.0]
    recent = RecentRows(clock=lambda: now[0])
    recent.add(8)
    recent.add(8)
    assert recent.recent() == 16
    now[0] = 101.5  # the next second: the previous one still counts
    recent.add(4)
    assert recent.recent() == 20
    now[0] = 102.0
    assert recent.recent() == 4
    now[0] = 110.0  # a quiet gap: nothing recent
    assert recent.recent() == 0

    batcher = DynamicBatcher(max_batch=64, max_queued_rows=BOUND)
    batcher._row_s = 0.01  # 100 rows a second, as measured by earlier batches
    batcher._inflight = BOUND
    first = batcher.refusal(1)
    assert first is not None and first.retry_after_s == 1  # 5 rows ahead: 0.05 s, rounded up to 1
    for _ in range(100):
        batcher.count_refusal(2)  # 200 rows refused this second
    crowded = batcher.refusal(1)
    assert crowded is not None and crowded.retry_after_s == 3  # 205 rows ahead: 2.05 s
    for _ in range(10_000):
        batcher.count_refusal(2)
    capped = batcher.refusal(1)
    assert capped is not None and capped.retry_after_s == RETRY_AFTER_MAX_S
    batcher.executor.shutdown()
