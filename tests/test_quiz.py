"""The blind reader test: off unless enabled, keyed, a fixed order per reader, half real and half synthetic, answers
stored once each (and none lost under concurrent readers), accuracy and Wilson intervals checked by hand."""

from __future__ import annotations

import io
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from redis import Redis
from scipy.stats import binomtest

from models.platform.quiz_store import QuizStore, quiz_pool, reader_digest, reader_order, wilson
from models.platform.settings import Settings
from models.platform.store import Store
from tests.conftest import publish_tiny_conditional_model, publish_tiny_model
from tests.live import serve

HELDOUT = 4  # the model's dataset holds out its last 4 of 16 slices: a quiz of 4 real and 4 synthetic slices
KEY = "quiz-test-key-5d1f0a"


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with a tiny model (v1, active) whose dataset has a held-out split: trained once, copied per test."""
    home = tmp_path_factory.mktemp("quiz-template") / "home"
    store = Store(home).ensure()
    version = publish_tiny_model(store, activate=True)
    dataset = store.get_manifest(version).dataset
    heldout = np.zeros(16, bool)
    heldout[-HELDOUT:] = True
    np.save(store.dataset_dir(dataset) / "split.npy", heldout)
    return home


def quiz_settings(tmp_path: Path, template: Path, redis_url: str, **extra: Any) -> Settings:
    shutil.copytree(template, tmp_path / "home")
    return Settings(home=tmp_path / "home", redis_url=redis_url, _env_file=None, **extra)  # type: ignore[call-arg]


@pytest.fixture
def quiz_client(tmp_path: Path, template: Path, redis_url: str, redis: Redis) -> Iterator[TestClient]:
    from service.main import create_app

    settings = quiz_settings(tmp_path, template, redis_url, quiz_enabled=True)
    with TestClient(create_app(settings)) as c:
        yield c


def order_of(store: Store, reader: str, version: str = "v1") -> list[str]:
    manifest = store.get_manifest(version)
    _, labels = store.load_dataset(manifest.dataset, split="heldout")
    return [item.id for item in reader_order(quiz_pool(version, np.asarray(labels), ["default"]), version, reader)]


def test_disabled_everything_refused(tmp_path: Path, template: Path, redis_url: str, redis: Redis) -> None:
    from service.main import create_app

    settings = quiz_settings(tmp_path, template, redis_url)  # DRAWAI_QUIZ_ENABLED unset
    with TestClient(create_app(settings)) as c:
        answers = [
            c.get("/quiz"),
            c.get("/models/v1/quiz", params={"reader": "ann"}),
            c.get("/models/v1/quiz/items/0.png", params={"reader": "ann"}),
            c.post("/models/v1/quiz/answers", json={"reader": "ann", "position": 0, "answer": "real"}),
            c.get("/models/v1/quiz/results"),
        ]
        for r in answers:
            assert r.status_code == 403, r.text
            assert "DRAWAI_QUIZ_ENABLED=true" in r.json()["detail"]
        assert "Reader test" not in c.get("/").text  # the console does not offer it
    assert not (settings.home / "models" / "v1" / "quiz").exists()


def test_keys_needed_even_to_read(tmp_path: Path, template: Path, redis_url: str, redis: Redis) -> None:
    from service.main import create_app

    settings = quiz_settings(tmp_path, template, redis_url, quiz_enabled=True, api_keys=KEY)
    with TestClient(create_app(settings)) as c:
        for path in ("/models/v1/quiz?reader=ann", "/models/v1/quiz/items/0.png?reader=ann", "/models/v1/quiz/results"):
            assert c.get(path).status_code == 401
            assert c.get(path, headers={"X-API-Key": "wrong"}).status_code == 403
            assert c.get(path, headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
        body = {"reader": "ann", "position": 0, "answer": "real"}
        assert c.post("/models/v1/quiz/answers", json=body).status_code == 401
        assert c.post("/models/v1/quiz/answers", json=body, headers={"X-API-Key": KEY}).status_code == 201
        assert c.get("/quiz").status_code == 200  # the page is a shell: its data comes through the keyed API


def test_order_fixed_per_reader_half_real(quiz_client: TestClient) -> None:
    store: Store = quiz_client.app.state.store  # type: ignore[attr-defined]
    state = quiz_client.get("/models/v1/quiz", params={"reader": "ann"}).json()
    assert state == {"version": "v1", "reader": "ann", "total": 2 * HELDOUT, "answered": 0, "next": 0, "image_size": 32}
    ann, bob = order_of(store, "ann"), order_of(store, "bob")
    assert order_of(store, "ann") == ann and ann != bob and sorted(ann) == sorted(bob)
    assert sum(i.startswith("real-") for i in ann) == sum(i.startswith("synthetic-") for i in ann) == HELDOUT

    manifest = store.get_manifest("v1")
    heldout, _ = store.load_dataset(manifest.dataset, split="heldout")
    for position, item in enumerate(ann):
        r = quiz_client.get(f"/models/v1/quiz/items/{position}.png", params={"reader": "ann"})
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        again = quiz_client.get(f"/models/v1/quiz/items/{position}.png", params={"reader": "ann"})
        assert again.content == r.content  # the same slice every time
        image = Image.open(io.BytesIO(r.content))
        assert image.size == (32, 32) and image.mode == "L"
        assert not image.info.get("Synthetic") and not any(k.lower().startswith("x-drawai") for k in r.headers)
        pixels = np.asarray(image)
        kind, index = item.split("-")
        if kind == "real":  # a held-out slice, shrunk to the model's size
            row = Image.fromarray(np.asarray(heldout[int(index)])).resize((32, 32), Image.Resampling.BOX)
            assert np.array_equal(pixels, np.asarray(row))
        else:  # what POST /generate draws for that seed
            g = quiz_client.post("/generate", params={"model": "v1", "seed": int(index), "format": "png"})
            assert np.array_equal(pixels, np.asarray(Image.open(io.BytesIO(g.content))))
    assert quiz_client.get("/models/v1/quiz/items/8.png", params={"reader": "ann"}).status_code == 404
    assert quiz_client.get("/models/v9/quiz", params={"reader": "ann"}).status_code == 404
    assert quiz_client.get("/models/v1/quiz", params={"reader": "../x"}).status_code == 422


def answer_all(c: TestClient, reader: str, answers: list[str]) -> None:
    for position, kind in enumerate(answers):
        r = c.post("/models/v1/quiz/answers", json={"reader": reader, "position": position, "answer": kind})
        assert r.status_code == 201, r.text
    assert r.json()["answered"] == len(answers)


def test_answers_stored_and_results_by_hand(quiz_client: TestClient) -> None:
    store: Store = quiz_client.app.state.store  # type: ignore[attr-defined]
    truth = {r: [i.split("-")[0] for i in order_of(store, r)] for r in ("ann", "bob", "cy")}
    answer_all(quiz_client, "ann", ["real"] * 8)  # 4 of 8 right: every synthetic slice taken for real
    answer_all(quiz_client, "bob", truth["bob"])  # 8 of 8
    answer_all(quiz_client, "cy", ["synthetic" if t == "real" else "real" for t in truth["cy"][:2]])  # 0 of 2

    folder = store.model_dir("v1") / "quiz" / reader_digest("ann")
    assert sorted(p.name for p in folder.iterdir()) == [f"{i}.json" for i in range(8)]
    again = {"reader": "ann", "position": 3, "answer": "synthetic"}
    r = quiz_client.post("/models/v1/quiz/answers", json=again)
    assert r.status_code == 409 and "already answered" in r.json()["detail"]
    assert QuizStore(store, "v1").answers("ann")[3].answer == "real"  # the first answer stays
    bad = {"reader": "ann", "position": 0, "answer": "maybe"}
    assert quiz_client.post("/models/v1/quiz/answers", json=bad).status_code == 422
    assert quiz_client.post("/models/v1/quiz/answers", json={**bad, "answer": "real", "position": 8}).status_code == 404

    results = quiz_client.get("/models/v1/quiz/results").json()
    readers = {x["reader"]: x for x in results["readers"]}
    # Wilson 95 %, by hand: 4/8 -> centre 0.5, half-width 1.96 * sqrt(0.25/8 + 1.96²/256) / (1 + 1.96²/8) = 0.2848
    assert readers["ann"]["accuracy"] == 0.5 and readers["ann"]["complete"]
    assert readers["ann"]["low"] == pytest.approx(0.2152, abs=1e-4)
    assert readers["ann"]["high"] == pytest.approx(0.7848, abs=1e-4)
    assert readers["bob"]["accuracy"] == 1.0 and readers["bob"]["high"] == 1.0
    assert readers["bob"]["low"] == pytest.approx(0.6756, abs=1e-4)  # 8/8: n / (n + z²)
    assert readers["cy"]["accuracy"] == 0.0 and readers["cy"]["low"] == 0.0 and not readers["cy"]["complete"]
    assert results["pooled"]["correct"] == 12 and results["pooled"]["answered"] == 18
    ci = binomtest(12, 18).proportion_ci(confidence_level=0.95, method="wilson")
    assert (results["pooled"]["low"], results["pooled"]["high"]) == pytest.approx((ci.low, ci.high), abs=1e-9)
    fooled = results["fooled"]
    assert len(fooled) == HELDOUT and all(f["shown"] >= 2 for f in fooled)  # ann and bob saw every one
    cy_fooled = [i for i, t in zip(order_of(store, "cy")[:2], truth["cy"][:2], strict=True) if t == "synthetic"]
    counts = [f["fooled"] for f in fooled]
    assert counts == sorted(counts, reverse=True) and sum(counts) == HELDOUT + len(cy_fooled)
    assert {f["item"] for f in fooled if f["fooled"] == 2} == set(cy_fooled)


def test_wilson_matches_scipy() -> None:
    for n in (1, 2, 5, 8, 20, 101):
        for k in range(n + 1):
            ours = wilson(k, n)
            ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
            assert (ours.low, ours.high) == pytest.approx((ci.low, ci.high), abs=1e-9), (k, n)
    assert wilson(0, 0).accuracy is None


def test_concurrent_answers_not_lost(tmp_path: Path, template: Path, redis_url: str, redis: Redis) -> None:
    """16 readers answer all 8 slices at once over real HTTP, and each of them answers slice 0 five times at once:
    every answer is stored, exactly one per position, and every file is whole."""
    settings = quiz_settings(tmp_path, template, redis_url, quiz_enabled=True)
    readers = [f"reader {i}" for i in range(16)]
    with serve(settings) as url, httpx.Client(base_url=url, timeout=30) as http:

        def post(reader: str, position: int, kind: str) -> int:
            body = {"reader": reader, "position": position, "answer": kind}
            return http.post("/models/v1/quiz/answers", json=body).status_code

        calls = [(r, p, "real" if (i + p) % 2 else "synthetic") for i, r in enumerate(readers) for p in range(8)]
        calls += [(r, 0, "real") for r in readers for _ in range(4)]  # duplicates of position 0, racing the first
        with ThreadPoolExecutor(max_workers=16) as pool:
            codes = list(pool.map(lambda c: post(*c), calls))
        assert codes.count(201) == 16 * 8 and codes.count(409) == 16 * 4, sorted(set(codes))
        results = http.get("/models/v1/quiz/results").json()
    assert [x["answered"] for x in results["readers"]] == [8] * 16
    assert results["pooled"]["answered"] == 128
    store = Store(settings.home)
    for reader in readers:
        assert [a.position for a in QuizStore(store, "v1").answers(reader)] == list(range(8))
    leftovers = [p for p in (settings.home / "models" / "v1" / "quiz").rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []


def test_conditional_model_draws_the_real_slices_classes(
    tmp_path: Path, redis_url: str, redis: Redis, store: Store
) -> None:
    """A conditional model's synthetic slices are of the classes of the real ones shown beside them."""
    from service.main import create_app

    version = publish_tiny_conditional_model(store)
    dataset = store.get_manifest(version).dataset
    heldout = np.zeros(24, bool)
    heldout[[0, 1, 4, 7]] = True  # classes no, yes, yes, yes (every third image is "yes")
    np.save(store.dataset_dir(dataset) / "split.npy", heldout)
    settings = Settings(home=store.home, redis_url=redis_url, quiz_enabled=True, _env_file=None)  # type: ignore[call-arg]
    with TestClient(create_app(settings)) as c:
        assert c.get(f"/models/{version}/quiz", params={"reader": "ann"}).json()["total"] == 8
        answer = {"reader": "ann", "answer": "real"}
        for position in range(8):
            r = c.post(f"/models/{version}/quiz/answers", json={**answer, "position": position})
            assert r.status_code == 201
        fooled = c.get(f"/models/{version}/quiz/results").json()["fooled"]
        assert sorted(f["label"] for f in fooled) == ["no", "yes", "yes", "yes"]
        order = [i.id for i in reader_order(quiz_pool(version, np.array([0, 1, 1, 1]), ["no", "yes"]), version, "ann")]
        for f in fooled:
            slide = c.get(f"/models/{version}/quiz/items/{order.index(f['item'])}.png", params={"reader": "ann"})
            params = {"model": version, "seed": f["seed"], "label": f["label"], "format": "png"}
            drawn = c.post("/generate", params=params)
            assert np.array_equal(np.asarray(Image.open(io.BytesIO(slide.content))),
                                  np.asarray(Image.open(io.BytesIO(drawn.content))))  # fmt: skip
