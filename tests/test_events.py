"""``GET /jobs/{id}/events``: a job's progress as Server-Sent Events, from a live app (uvicorn) over real HTTP,
with the real Redis and real ``drawai worker`` processes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from httpx_sse import ServerSentEvent, connect_sse

from models.platform.settings import Settings
from models.platform.store import Store
from tests.conftest import RedisServer, blobs, own_settings, put_dataset, spawn_worker, wait_for
from tests.live import serve

TINY = {"architecture": "dcgan", "image_size": 32, "width": 8, "latent_dim": 16, "batch_size": 8, "seed": 1}


@pytest.fixture
def http(settings: Settings, store: Store) -> Iterator[httpx.Client]:
    with serve(settings) as base_url, httpx.Client(base_url=base_url, timeout=60) as client:
        yield client


def submit(http: httpx.Client, store: Store, **fields: Any) -> dict[str, Any]:
    ds = put_dataset(store, blobs(16))
    r = http.post("/jobs/train", json={**TINY, "dataset": ds.id, **fields})
    assert r.status_code == 202, r.text
    return r.json()


def check_ids(events: list[ServerSentEvent]) -> None:
    ids = [int(e.id) for e in events]
    assert ids == list(range(1, len(events) + 1))


def test_training_job_streams_progress_then_end(http: httpx.Client, store: Store, settings: Settings) -> None:
    job = submit(http, store, epochs=2)
    events: list[ServerSentEvent] = []
    with connect_sse(http, "GET", f"/jobs/{job['id']}/events") as source:
        assert source.response.status_code == 200
        assert source.response.headers["content-type"].startswith("text/event-stream")
        stream = source.iter_sse()
        events.append(next(stream))  # the current state, before any worker runs it
        worker = spawn_worker(settings)
        try:
            events.extend(stream)  # until the server closes the stream after "end"
            assert worker.wait(timeout=240) == 0
        finally:
            worker.kill()
    kinds = [e.event for e in events]
    views = [json.loads(e.data) for e in events]
    assert kinds[0] == "progress" and views[0]["status"] == "queued" and views[0]["id"] == job["id"]
    assert kinds[-1] == "end" and kinds.count("end") == 1
    end = views[-1]
    assert end["status"] == "finished" and end["model_version"] in [m.version for m in store.list_models()]
    assert end == http.get(f"/jobs/{job['id']}").json()  # the same object GET /jobs/{id} answers
    assert "phase" in kinds  # queued -> ... -> finished changed the status at least once
    for i, kind in enumerate(kinds):
        if kind == "phase":  # followed by the progress event of the same view
            assert kinds[i + 1] == "progress" and views[i + 1] == views[i]
    assert views[-2] == end and kinds[-2] == "progress"  # the final view was sent as progress before "end"
    check_ids(events)


def test_ended_job_streams_progress_and_end_at_once(http: httpx.Client, store: Store, settings: Settings) -> None:
    job = submit(http, store, epochs=1)
    assert http.delete(f"/jobs/{job['id']}").status_code == 202  # queued: canceled at once
    with connect_sse(http, "GET", f"/jobs/{job['id']}/events") as source:
        events = list(source.iter_sse())
    assert [e.event for e in events] == ["progress", "end"]
    assert [json.loads(e.data)["status"] for e in events] == ["canceled", "canceled"]
    check_ids(events)


def test_cancel_while_watching_ends_the_stream(http: httpx.Client, store: Store) -> None:
    job = submit(http, store, epochs=1)
    with connect_sse(http, "GET", f"/jobs/{job['id']}/events") as source:
        stream = source.iter_sse()
        first = next(stream)
        assert first.event == "progress" and json.loads(first.data)["status"] == "queued"
        assert http.delete(f"/jobs/{job['id']}").status_code == 202
        rest = list(stream)
    kinds = [e.event for e in rest]
    assert kinds == ["phase", "progress", "end"]
    end = json.loads(rest[-1].data)
    assert end["status"] == "canceled" and end["model_version"] is None
    check_ids([first, *rest])


def test_unknown_and_malformed_ids_are_404_json(http: httpx.Client) -> None:
    for job_id in ("nope", "a:b", "x" * 200, "%20"):
        r = http.get(f"/jobs/{job_id}/events")
        assert r.status_code == 404, (job_id, r.text)
        assert r.headers["content-type"] == "application/json"
        assert "detail" in r.json()
    operation = http.get("/openapi.json").json()["paths"]["/jobs/{job_id}/events"]["get"]
    assert {"200", "404", "503"} <= set(operation["responses"])
    assert "text/event-stream" in operation["responses"]["200"]["content"]


def test_keep_alive_comments(settings: Settings, store: Store) -> None:
    fast = settings.model_copy(update={"sse_keepalive_s": 0.2})
    with serve(fast) as base_url, httpx.Client(base_url=base_url, timeout=60) as http:
        job = submit(http, store, epochs=1)
        with http.stream("GET", f"/jobs/{job['id']}/events") as r:
            assert r.status_code == 200
            lines = r.iter_lines()
            seen = [next(lines) for _ in range(3)]  # event, data, id of the first "progress"
            assert seen[0] == "event: progress"
            wait_for(lambda: next(lines) == ": keep-alive", 30, "a keep-alive comment")
            assert http.delete(f"/jobs/{job['id']}").status_code == 202
            tail = list(lines)  # the stream closes after "end"
    assert "event: end" in tail


def test_redis_down_mid_stream_ends_with_an_error_event(tmp_path: Path, own_redis: RedisServer) -> None:
    settings, store = own_settings(tmp_path, own_redis)
    with serve(settings) as base_url, httpx.Client(base_url=base_url, timeout=60) as http:
        job = submit(http, store, epochs=1)
        with connect_sse(http, "GET", f"/jobs/{job['id']}/events") as source:
            stream = source.iter_sse()
            assert next(stream).event == "progress"
            own_redis.stop()
            rest = list(stream)  # ends: no hang, no broken chunked encoding
        assert [e.event for e in rest] == ["error"]
        assert "Redis" in json.loads(rest[0].data)["detail"]
        r = http.get(f"/jobs/{job['id']}/events")  # Redis still down: refused before a stream starts
        assert r.status_code == 503 and "detail" in r.json()


def events_answered(http: httpx.Client) -> bool:
    """Whether the app has counted a finished request of the events route (the middleware counts it at its end)."""
    text = http.get("/metrics").text
    return 'drawai_http_requests_total{method="GET",route="/jobs/{job_id}/events",status="200"} 1.0' in text


def test_client_disconnect_ends_the_stream(http: httpx.Client, store: Store) -> None:
    job = submit(http, store, epochs=1)  # queued, no worker: the stream would go on for ever
    with connect_sse(http, "GET", f"/jobs/{job['id']}/events") as source:
        stream = source.iter_sse()  # held: dropping the generator would close the connection at once
        assert next(stream).event == "progress"
        assert not events_answered(http)  # still streaming
    # The connection is closed: the server notices, stops reading the job from Redis and ends the request.
    wait_for(lambda: events_answered(http), 30, "the server to end the stream of a client that left")
