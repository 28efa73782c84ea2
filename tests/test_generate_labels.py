"""``POST /generate`` on a class-conditional model: label=, labels=, the training proportions, provenance.

A real conditional model (trained in-process, exported to ONNX) behind the real app and ONNX Runtime.
"""

from __future__ import annotations

import base64
import io
import json
import zipfile

import numpy as np
import pytest
from fastapi.testclient import TestClient

from models.platform.store import Store
from tests.conftest import blobs, publish_tiny_conditional_model, put_dataset, two_class_blobs
from tests.test_generate import generate, ok, open_png, provenance


@pytest.fixture
def conditional_version(store: Store) -> str:
    """An active conditional model: classes "no" (16 training images) and "yes" (8)."""
    return publish_tiny_conditional_model(store)


def zip_entries(data: bytes) -> tuple[dict[str, object], dict[str, bytes]]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        manifest = json.loads(zf.read("manifest.json"))
        return manifest, {name: zf.read(name) for name in zf.namelist() if name.endswith(".png")}


def test_label_draws_that_class_and_every_png_says_so(conditional_version: str, client: TestClient) -> None:
    r = ok(generate(client, label="yes", count=3, seed=5, format="zip"))
    assert r.headers["X-DrawAI-Classes"] == "yes:3"
    manifest, pngs = zip_entries(r.content)
    images = manifest["images"]
    assert isinstance(images, list)
    assert [(e["seed"], e["class"]) for e in images] == [(5, "yes"), (6, "yes"), (7, "yes")]
    for entry in images:
        assert provenance(pngs[entry["file"]])["Class"] == "yes"
        assert "_yes_" in entry["file"]
    one = ok(generate(client, label="yes", count=1, seed=6, format="png")).content
    assert one == pngs[images[1]["file"]]  # same seed, same label, same model: the same bytes
    other = ok(generate(client, label="no", count=1, seed=6, format="png")).content
    assert provenance(other)["Class"] == "no"
    assert np.asarray(open_png(other)).tobytes() != np.asarray(open_png(one)).tobytes()  # the class matters


def test_labels_list_draws_each_class_in_order(conditional_version: str, client: TestClient) -> None:
    r = ok(generate(client, labels="yes:2,no:3", seed=0, format="json"))
    body = r.json()
    assert body["count"] == 5
    assert [e["class"] for e in body["images"]] == ["yes", "yes", "no", "no", "no"]
    assert [e["seed"] for e in body["images"]] == [0, 1, 2, 3, 4]
    assert r.headers["X-DrawAI-Classes"] == "yes:2,no:3"
    for entry in body["images"]:
        assert provenance(base64.b64decode(entry["png_base64"]))["Class"] == entry["class"]
    # image i is seed + i of its class, whichever way it was asked for
    single = ok(generate(client, label="no", count=1, seed=3, format="png")).content
    assert base64.b64decode(body["images"][3]["png_base64"]) == single
    again = ok(generate(client, labels="yes:2,no:3", count=5, seed=0, format="json"))
    assert again.content == r.content


def test_without_a_label_count_follows_the_training_proportions(conditional_version: str, client: TestClient) -> None:
    r = ok(generate(client, count=6, seed=1, format="zip"))
    assert r.headers["X-DrawAI-Classes"] == "no:4,yes:2"  # 16 : 8 training images
    manifest, _ = zip_entries(r.content)
    images = manifest["images"]
    assert isinstance(images, list)
    assert [e["class"] for e in images] == ["no"] * 4 + ["yes"] * 2
    grid = ok(generate(client, count=6, seed=1, format="grid")).content
    assert provenance(grid)["Class"] == "no,no,no,no,yes,yes"


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({"label": "maybe"}, ["'maybe'", "'no'", "'yes'"]),  # an unknown class lists the classes
        ({"labels": "yes:2,maybe:1"}, ["'maybe'", "'no'", "'yes'"]),
        ({"labels": "yes"}, ["class:count"]),
        ({"labels": "yes:0"}, ["whole number"]),
        ({"labels": "yes:x"}, ["whole number"]),
        ({"labels": "yes:1,yes:2"}, ["twice"]),
        ({"labels": "yes:2", "count": 3}, ["count=3"]),
        ({"labels": "yes:1", "label": "no"}, ["not both"]),
        ({"labels": "yes:99999999"}, ["count must be between"]),
        ({"labels": "yes:2,no:2", "format": "png"}, ["format=png"]),
    ],
)
def test_bad_label_requests_are_422_with_json_detail(
    conditional_version: str, client: TestClient, params: dict[str, object], words: list[str]
) -> None:
    r = generate(client, **params)
    assert r.status_code == 422, (params, r.text)
    detail = r.json()["detail"]
    for word in words:
        assert word in str(detail), (params, detail)


def test_an_unconditional_model_refuses_labels(model_version: str, client: TestClient) -> None:
    for params in ({"label": "yes"}, {"labels": "yes:2"}):
        r = generate(client, **params)
        assert r.status_code == 422
        assert "not conditional" in r.json()["detail"]
    r = ok(generate(client, count=2, seed=0, format="zip"))
    assert "X-DrawAI-Classes" not in r.headers
    manifest, _ = zip_entries(r.content)
    images = manifest["images"]
    assert isinstance(images, list)
    assert all("class" not in e for e in images)


def test_conditional_training_is_refused_up_front_when_the_dataset_cannot_serve_it(
    store: Store, client: TestClient
) -> None:
    one_class = put_dataset(store, blobs(16, 64))
    r = client.post("/jobs/train", json={"dataset": one_class.id, "conditional": True, "batch_size": 8})
    assert r.status_code == 422
    assert "at least 2 classes" in r.json()["detail"]
    images, labels = two_class_blobs(12, 64)  # "yes": 4 images
    two = put_dataset(store, images, "two", labels, ["no", "yes"])
    r = client.post("/jobs/train", json={"dataset": two.id, "conditional": True, "batch_size": 12})
    assert r.status_code == 422
    assert "'yes': 4" in r.json()["detail"]
    r = client.post("/jobs/train", json={"dataset": two.id, "architecture": "dcgan-seed", "conditional": True})
    assert r.status_code == 422
    assert "dcgan-seed" in json.dumps(r.json()["detail"])


def test_class_names_outside_ascii_reach_the_png_and_the_header(store: Store, client: TestClient) -> None:
    version = publish_tiny_conditional_model(store, class_names=("gesund", "tumör, 腫瘍"))
    assert client.post(f"/models/{version}/activate").status_code == 200  # published after the app started
    r = ok(generate(client, label="tumör, 腫瘍", count=1, seed=0, format="png"))
    assert provenance(r.content)["Class"] == "tumör, 腫瘍"  # an international text chunk (not latin-1)
    assert r.headers["X-DrawAI-Classes"] == "tum%C3%B6r%2C%20%E8%85%AB%E7%98%8D:1"
    body = ok(generate(client, count=3, seed=0, format="json")).json()
    assert {e["class"] for e in body["images"]} == {"gesund", "tumör, 腫瘍"}


def test_load_shedding_leaves_a_labels_list_to_the_route() -> None:
    """Under overload the middleware answers 429 only for requests whose size it can read; a labels list
    without count is sized (and checked against the model) by the route."""
    from service.shedding import _count

    assert _count({"query_string": b"labels=yes:2,no:3"}, 64) is None
    assert _count({"query_string": b"labels=yes:2&count=2"}, 64) == 2
    assert _count({"query_string": b"label=yes"}, 64) == 1
