"""/metrics, /healthz and /readyz against the real app, a real Redis and a real tiny ONNX model."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from models.platform.settings import Settings
from models.platform.store import Store
from tests.conftest import blobs, put_dataset

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
TINY_SPEC = {"architecture": "dcgan", "image_size": 32, "width": 8, "latent_dim": 16, "batch_size": 8, "epochs": 1}
DOWN_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1


def scrape(client: TestClient) -> Samples:
    r = client.get("/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    out: Samples = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def names(samples: Samples) -> set[str]:
    return {name for name, _ in samples}


def test_metrics_names_follow_conventions(client: TestClient) -> None:
    samples = scrape(client)
    for name in names(samples):
        assert name.startswith("drawai_") or name.startswith(("python_", "process_")), name
    assert "drawai_active_model_info" not in names(samples)  # no model in this store
    assert value(samples, "drawai_active_model_loaded") == 0
    for status in ("queued", "started", "finished", "failed", "canceled"):
        assert ("drawai_jobs", frozenset({("status", status)})) in samples, status


def test_two_apps_have_separate_registries(settings: Settings) -> None:
    from service.main import create_app

    with TestClient(create_app(settings)) as a, TestClient(create_app(settings)) as b:
        a.get("/healthz")
        a.get("/healthz")
        b.get("/healthz")
        sa, sb = scrape(a), scrape(b)
    route = {"method": "GET", "route": "/healthz", "status": "200"}
    assert value(sa, "drawai_http_requests_total", **route) == 2
    assert value(sb, "drawai_http_requests_total", **route) == 1


def test_generation_moves_the_counters(model_version: str, client: TestClient) -> None:
    before = scrape(client)
    sizes = [1, 3, 5]
    for n in sizes:
        r = client.post("/generate", params={"count": n, "seed": 7, "format": "npy" if n > 1 else "png"})
        assert r.status_code == 200, r.text
    assert client.post("/generate", params={"count": 0}).status_code == 422
    after = scrape(client)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("drawai_images_generated_total", model_version=model_version) == sum(sizes)
    assert delta("drawai_http_requests_total", method="POST", route="/generate", status="200") == len(sizes)
    assert delta("drawai_http_requests_total", method="POST", route="/generate", status="422") == 1
    assert delta("drawai_http_request_duration_seconds_count", method="POST", route="/generate") == len(sizes) + 1
    batches = delta("drawai_generation_batch_size_count")
    assert 1 <= batches <= len(sizes)  # concurrent requests may share a batch; these are sequential
    assert delta("drawai_generation_batch_size_sum") == sum(sizes)
    assert delta("drawai_inference_duration_seconds_count") == batches
    assert delta("drawai_inference_duration_seconds_sum") > 0
    # the batch-size buckets are the powers of two up to 256
    buckets = {dict(k[1])["le"] for k in after if k[0] == "drawai_generation_batch_size_bucket"}
    assert buckets == {"1.0", "2.0", "4.0", "8.0", "16.0", "32.0", "64.0", "128.0", "256.0", "+Inf"}


def test_active_model_info(model_version: str, client: TestClient) -> None:
    samples = scrape(client)
    assert model_version == "v1"
    serving = client.get("/readyz").json()["model"]["serving"]
    info = {"version": "v1", "provider": serving["device"], "engine": serving["engine"]}
    info |= {"precision": serving["precision"], "streams": str(serving["streams"])}
    assert value(samples, "drawai_active_model_info", **info) == 1
    assert value(samples, "drawai_active_model_loaded") == 1


@pytest.fixture
def own_queue_client(settings: Settings) -> Iterator[TestClient]:
    """The app on a queue of its own: no worker listening on ``train`` can start the job under test."""
    from service.main import create_app

    private = settings.model_copy(update={"queue_name": f"metrics-test-{uuid.uuid4().hex}"})
    with TestClient(create_app(private)) as c:
        yield c


def test_jobs_gauge_and_route_templates(store: Store, own_queue_client: TestClient) -> None:
    client = own_queue_client
    assert value(scrape(client), "drawai_jobs", status="queued") == 0
    ds = put_dataset(store, blobs(16))
    r = client.post("/jobs/train", json={"dataset": ds.id, **TINY_SPEC})
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    assert client.get(f"/jobs/{job_id}").status_code == 200
    assert client.get("/jobs/no-such-job").status_code == 404
    assert client.get("/no/such/path").status_code == 404
    assert client.put("/healthz").status_code == 405
    samples = scrape(client)
    assert value(samples, "drawai_jobs", status="queued") == 1
    for status in ("started", "finished", "failed", "canceled"):
        assert value(samples, "drawai_jobs", status=status) == 0
        assert ("drawai_jobs", frozenset({("status", status)})) in samples
    assert value(samples, "drawai_http_requests_total", method="POST", route="/jobs/train", status="202") == 1
    assert value(samples, "drawai_http_requests_total", method="GET", route="/jobs/{job_id}", status="200") == 1
    assert value(samples, "drawai_http_requests_total", method="GET", route="/jobs/{job_id}", status="404") == 1
    assert value(samples, "drawai_http_requests_total", method="GET", route="unmatched", status="404") == 1
    assert value(samples, "drawai_http_requests_total", method="PUT", route="/healthz", status="405") == 1
    routes = {dict(k[1]).get("route") for k in samples if k[0] == "drawai_http_requests_total"}
    assert not any(job_id in (r or "") for r in routes)  # never the raw path
    assert "/no/such/path" not in routes


def test_healthz(client: TestClient) -> None:
    r = client.get("/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}


def test_readyz_without_a_model(client: TestClient) -> None:
    r = client.get("/readyz")
    assert r.status_code == 503
    body = r.json()
    assert body["status"] == "not ready"
    assert body["redis"] == "ok"
    assert body["model"] is None
    assert any(reason.startswith("no active model") and "POST /jobs/train" in reason for reason in body["reasons"])


def test_readyz_with_a_model(model_version: str, client: TestClient) -> None:
    r = client.get("/readyz")
    assert r.status_code == 200, r.text
    body = r.json()
    assert {k: body[k] for k in ("status", "redis")} == {"status": "ready", "redis": "ok"}
    assert set(body) <= {"status", "redis", "model", "reasons", "detail", "warnings"} and "reasons" not in body
    model = body["model"]
    assert model["version"] == model_version and model["provider"] == model["serving"]["device"]
    serving = model["serving"]  # the calibration's choice, and every candidate it timed
    assert serving["engine"] in ("onnxruntime", "openvino") and serving["precision"] in ("fp32", "bf16", "fp16")
    chosen = [t for t in serving["trials"] if (t["engine"], t["precision"], t["streams"]) ==
              (serving["engine"], serving["precision"], serving["streams"])]  # fmt: skip
    assert len(chosen) == 1 and chosen[0]["accepted"] and chosen[0]["within_one_grey"] >= 0.999


def test_readyz_reports_a_model_that_fails_to_load(store: Store, model_version: str, settings: Settings) -> None:
    from service.main import create_app

    (store.model_dir(model_version) / "generator.onnx").write_bytes(b"not an onnx file")
    with TestClient(create_app(settings)) as client:
        r = client.get("/readyz")
        samples = scrape(client)
    assert r.status_code == 503
    assert any("failed to load" in reason and "sha256" in reason for reason in r.json()["reasons"])
    assert value(samples, "drawai_active_model_loaded") == 0


@pytest.fixture
def client_redis_down(tmp_path: Path, model_version: str, store: Store) -> Iterator[TestClient]:
    """The app with a model but a Redis URL where nothing listens: it must still start."""
    from service.main import create_app

    down = Settings(home=store.home, redis_url=DOWN_URL, _env_file=None)  # type: ignore[call-arg]
    with TestClient(create_app(down)) as c:
        yield c


def test_redis_down(client_redis_down: TestClient) -> None:
    c = client_redis_down
    assert c.get("/healthz").status_code == 200
    r = c.get("/readyz")
    assert r.status_code == 503
    body = r.json()
    assert body["redis"] == "unreachable"
    assert any(reason.startswith("redis unreachable") for reason in body["reasons"])
    assert body["model"]["version"] == "v1" and body["model"]["serving"]["engine"]  # the model still shows

    r = c.get("/jobs")
    assert r.status_code == 503
    assert "Redis" in r.json()["detail"]

    samples = scrape(c)  # the jobs collector fails; the scrape does not
    assert not any(name == "drawai_jobs" for name, _ in samples)
    [info] = [dict(labels) for name, labels in samples if name == "drawai_active_model_info"]
    assert info["version"] == "v1" and info["provider"] == body["model"]["provider"]
    assert value(samples, "drawai_http_requests_total", method="GET", route="/jobs", status="503") == 1
    assert c.post("/generate", params={"seed": 1}).status_code == 200  # generation does not need Redis
