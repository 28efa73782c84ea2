"""One error shape, documented: every declared error status has a JSON body with ``detail``; what is sent
matches it (app 422s a sentence, FastAPI's validation 422s a list); odd job ids are 404, never a 500.

The whole-API check of "sent == documented" is the schemathesis run in ``test_openapi_fuzz.py``; these are
the contracts it relies on, checked directly against the real app (real Redis, real store).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import TypeAdapter
from rq.job import JobStatus as RQStatus

from models.platform.schemas import TrainSpec
from models.platform.settings import Settings
from models.platform.store import Store
from service import queue as jobq
from service.errors import ErrorBody
from service.main import create_app
from tests.conftest import blobs, put_dataset
from tests.test_auth import KEYED_READS, PROTECTED
from tests.test_metrics import DOWN_URL

# Ids no job can have: RQ would raise ValueError on most (a 500 before), and read "a:b" as job "a".
# ".." percent-encoded: a client resolves /jobs/.. to / (the web console) before sending it.
WEIRD_IDS = ["a:b", "a b", "ü", "a.b", "%2E%2E", "x" * 200, "%00", "a%2Fb", "-" * 129, "'; DROP", "\u202e"]


def openapi(settings: Settings) -> dict[str, Any]:
    return create_app(settings).openapi()


def resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def operations(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            yield method.upper(), path, operation


def test_every_error_status_has_a_json_body_with_detail(settings: Settings) -> None:
    spec = openapi(settings)
    seen = 0
    for method, path, operation in operations(spec):
        for code, answer in operation["responses"].items():
            if int(code) < 400:
                continue
            content = answer.get("content", {})
            assert list(content) == ["application/json"], (method, path, code, list(content))
            schema = resolve(spec, content["application/json"]["schema"])
            assert "detail" in schema["properties"] and "detail" in schema.get("required", []), (method, path, code)
            seen += 1
    assert seen > 50
    assert "HTTPValidationError" not in spec["components"]["schemas"]  # FastAPI's list-only 422 is replaced
    detail = resolve(spec, {"$ref": "#/components/schemas/ErrorBody"})["properties"]["detail"]
    assert [s.get("type") or s["items"]["$ref"].rsplit("/", 1)[1] for s in detail["anyOf"]] == ["string", "array"]


def test_statuses_of_keys_overload_and_outages_are_declared(settings: Settings) -> None:
    spec = openapi(settings)
    declared = {(m, p): op["responses"] for m, p, op in operations(spec)}
    for route in PROTECTED | KEYED_READS:
        answers = declared[route]
        assert {"401", "403"} <= set(answers), route
        assert answers["401"]["headers"]["WWW-Authenticate"]["required"] is True
    unprotected = {route for route in declared if route not in PROTECTED | KEYED_READS}
    assert not any("401" in declared[route] for route in unprotected)  # reads stay open (but the KEYED_READS)
    generate = declared[("POST", "/generate")]
    assert {"404", "409", "422", "429", "503"} <= set(generate)
    assert generate["429"]["headers"]["Retry-After"]["required"] is True
    assert {"400", "413", "415", "422"} <= set(declared[("POST", "/datasets")])
    for route in [("GET", "/jobs"), ("GET", "/jobs/{job_id}"), ("POST", "/jobs/train"), ("DELETE", "/jobs/{job_id}")]:
        assert "503" in declared[route], route  # Redis
    assert "409" in declared[("DELETE", "/datasets/{dataset_id}")] and "503" in declared[("GET", "/readyz")]


@pytest.mark.parametrize("job_id", WEIRD_IDS)
def test_odd_job_ids_are_404_with_a_json_detail(client: TestClient, job_id: str) -> None:
    for method in ("GET", "DELETE"):
        r = client.request(method, f"/jobs/{job_id}")
        assert r.status_code == 404, (method, job_id, r.status_code, r.text)
        assert r.headers["content-type"] == "application/json"
        assert isinstance(r.json()["detail"], str)


def test_a_job_id_with_a_suffix_is_not_that_job(client: TestClient, store: Store, settings: Settings) -> None:
    ds = put_dataset(store, blobs(12))
    queue = client.app.state.queue  # type: ignore[attr-defined]
    job = jobq.enqueue_training(
        queue, TrainSpec(dataset=ds.id, architecture="dcgan", image_size=32, batch_size=4), settings
    )
    assert client.get(f"/jobs/{job.id}").json()["id"] == job.id
    assert client.get(f"/jobs/{job.id}:anything").status_code == 404  # RQ alone reads it as job.id
    assert client.delete(f"/jobs/{job.id}:anything").status_code == 404
    assert client.get(f"/jobs/{job.id}").json()["status"] == "queued"


def test_both_422_shapes_fit_the_error_body(client: TestClient) -> None:
    body = TypeAdapter(ErrorBody)
    fastapi_422 = client.post("/generate", params={"count": "many"})
    assert fastapi_422.status_code == 422
    items = body.validate_python(fastapi_422.json()).detail
    assert isinstance(items, list) and items[0].loc == ["query", "count"]
    app_422 = client.post("/generate", params={"count": 100_000})
    assert app_422.status_code == 422
    assert isinstance(body.validate_python(app_422.json()).detail, str)


def test_every_rq_state_is_one_of_the_five() -> None:
    assert set(jobq._STATUS) == set(RQStatus)
    assert set(jobq._STATUS.values()) <= {"queued", "started", "finished", "failed", "canceled"}


def test_redis_down_is_a_documented_503_on_every_route_that_needs_it(store: Store) -> None:
    ds = put_dataset(store, blobs(12))
    down = Settings(home=store.home, redis_url=DOWN_URL, _env_file=None)  # type: ignore[call-arg]
    app = create_app(down)
    declared = {(m, p): op["responses"] for m, p, op in operations(app.openapi())}
    calls = [
        ("GET", "/jobs", "/jobs", None),
        ("GET", "/jobs/{job_id}", "/jobs/abc", None),
        ("DELETE", "/jobs/{job_id}", "/jobs/abc", None),
        (
            "POST",
            "/jobs/train",
            "/jobs/train",
            {"dataset": ds.id, "architecture": "dcgan", "image_size": 32, "batch_size": 4},
        ),
        ("DELETE", "/datasets/{dataset_id}", f"/datasets/{ds.id}", None),
    ]
    with TestClient(app) as client:
        for method, route, url, body in calls:
            r = client.request(method, url, json=body)
            assert r.status_code == 503 and "Redis" in r.json()["detail"], (route, r.status_code, r.text)
            assert "503" in declared[(method, route)], route


def test_upload_refusals_are_declared(client: TestClient, settings: Settings) -> None:
    """What the fuzzer cannot reach with its small documented bodies: another media type, an oversized one."""
    declared = {(m, p): op["responses"] for m, p, op in operations(openapi(settings))}[("POST", "/datasets")]
    cases = [
        ({"content-type": "text/plain"}, b"hello", 415),
        ({"content-type": "application/zip", "content-length": str(10**12)}, b"PK", 413),
        ({"content-type": "application/zip", "content-length": "many"}, b"PK", 400),
        ({"content-type": "multipart/form-data"}, b"--x--", 400),  # no boundary
        ({"content-type": "application/zip"}, b"PK\x03\x04 not a zip", 422),
    ]
    for headers, body, status in cases:
        r = client.post("/datasets", content=body, headers=headers)
        assert r.status_code == status, (headers, r.status_code, r.text)
        assert str(status) in declared and isinstance(r.json()["detail"], str)


def test_each_domain_error_has_one_http_status() -> None:
    """The domain errors of ``models.platform.errors`` meet HTTP only in ``service.errors``: one status per kind,
    a subclass taking its closest mapped ancestor's."""
    from models.data.decode_image import PixelBombError
    from models.platform.errors import ConflictError, CorruptError, NotFoundError, Refused, TooLarge
    from service.errors import status_of

    cases = {
        NotFoundError("d1"): 404,
        ConflictError("in use"): 409,
        CorruptError("model.json is damaged"): 409,
        Refused("no usable images"): 422,
        TooLarge("over the limit"): 413,
        PixelBombError("image of 1e9 pixels"): 413,
    }
    for error, status in cases.items():
        assert status_of(error) == status, type(error).__name__
        assert error.detail and str(error) == error.detail  # the client's sentence, unquoted (KeyError would quote)


def test_list_routes_page_with_limit_and_offset(settings: Settings) -> None:
    """``GET /datasets``, ``/jobs`` and ``/models`` answer ``{data, count, limit, offset}``; a bad limit is a 422."""
    store = Store(settings.home).ensure()
    ids = [put_dataset(store, blobs(4, seed=i)).id for i in range(5)]
    with TestClient(create_app(settings)) as c:
        whole = c.get("/datasets").json()
        assert [d["id"] for d in whole["data"]] == ids and whole["count"] == 5
        pages = [c.get("/datasets", params={"limit": 2, "offset": o}).json() for o in (0, 2, 4, 6)]
        assert [[d["id"] for d in p["data"]] for p in pages] == [ids[:2], ids[2:4], ids[4:], []]
        assert {p["count"] for p in pages} == {5}
        for route in ("/datasets", "/jobs", "/models"):
            for bad in ({"limit": 0}, {"limit": 100_000}, {"offset": -1}, {"limit": "x"}):
                r = c.get(route, params=bad)
                assert r.status_code == 422, (route, bad, r.text)
                assert isinstance(r.json()["detail"], list)
            page = c.get(route, params={"limit": 1}).json()
            assert set(page) == {"data", "count", "limit", "offset"} and page["limit"] == 1
        schema = c.get("/openapi.json").json()
        for route in ("/datasets", "/jobs", "/models"):
            ok = schema["paths"][route]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
            assert ok["$ref"].startswith("#/components/schemas/Page_"), (route, ok)
