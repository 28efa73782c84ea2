"""``POST /generate`` and ``/models`` as a client sees them: real ONNX models, real PNG/zip/npy decoding."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import zipfile

import numpy as np
import pytest
from fastapi.testclient import TestClient
from httpx import Response
from PIL import Image

from models.platform.store import Store
from tests.conftest import publish_tiny_model

SIZE = 32  # the tiny model's image side
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def generate(client: TestClient, **params: object) -> Response:
    return client.post("/generate", params=params)


def ok(r: Response) -> Response:
    assert r.status_code == 200, r.text
    return r


def open_png(data: bytes) -> Image.Image:
    assert data.startswith(PNG_SIGNATURE)
    im = Image.open(io.BytesIO(data))
    im.load()
    assert im.format == "PNG"
    return im


def provenance(data: bytes) -> dict[str, str]:
    """The PNG's text chunks, checked for the provenance every image must carry."""
    text = dict(open_png(data).text)  # type: ignore[attr-defined]
    assert text.get("Synthetic") == "true", text
    assert text.get("Software") == "Draw.AI", text
    assert "SYNTHETIC" in text.get("Description", ""), text
    assert "Model-Version" in text and "Seed" in text, text
    return text


def single_png(client: TestClient, seed: int, **params: object) -> bytes:
    return ok(generate(client, count=1, seed=seed, format="png", **params)).content


@pytest.mark.parametrize("shape", [(1, 1), (7, 13), (64, 64), (128, 128), (300, 256)])
def test_png_files_read_back_exactly_in_pillow(shape: tuple[int, int]) -> None:
    """The hand-written encoder (service.encoders.png_bytes): any size, any grey levels (the "Up" filter wraps
    modulo 256), Latin-1 text as tEXt and other text as iTXt; Pillow gets every pixel and chunk back, and the same
    input gives the same bytes."""
    from service.encoders import png_bytes

    pixels = np.random.default_rng(shape[0]).integers(0, 256, shape, dtype=np.uint8)
    pixels[0, 0], pixels[-1, -1] = 0, 255  # both ends of the range
    text = [("Synthetic", "true"), ("Model-Version", "v7"), ("Class", "tumör, 腫瘍")]
    data = png_bytes(pixels, text)
    im = open_png(data)
    assert im.mode == "L" and im.size == (shape[1], shape[0])
    np.testing.assert_array_equal(np.asarray(im), pixels)
    assert dict(im.text) == dict(text)  # type: ignore[attr-defined]
    assert png_bytes(pixels, text) == data
    assert Image.open(io.BytesIO(data)).verify() is None  # every chunk's CRC checked


# -- formats --------------------------------------------------------------------------------------


def test_png_is_one_grayscale_image_with_provenance(model_version: str, client: TestClient) -> None:
    r = ok(generate(client, count=1, seed=7, format="png"))
    assert r.headers["content-type"] == "image/png"
    assert r.headers["x-drawai-model-version"] == model_version == "v1"
    assert r.headers["x-drawai-seed"] == "7"
    assert r.headers["x-drawai-synthetic"] == "true"
    im = open_png(r.content)
    assert im.mode == "L"
    assert im.size == (SIZE, SIZE)
    assert np.asarray(im).shape == (SIZE, SIZE)
    text = provenance(r.content)
    assert text["Model-Version"] == "v1"
    assert text["Seed"] == "7"


def test_default_format_is_png_for_one_image(model_version: str, client: TestClient) -> None:
    r = ok(generate(client, seed=3))
    assert r.headers["content-type"] == "image/png"
    assert r.content == single_png(client, 3)


def test_zip_holds_count_pngs_and_a_manifest_whose_seeds_reproduce_each(model_version: str, client: TestClient) -> None:
    r = ok(generate(client, count=5, seed=100, format="zip"))
    assert r.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        assert zf.testzip() is None
        names = zf.namelist()
        manifest = json.loads(zf.read("manifest.json"))
        files = {n: zf.read(n) for n in names if n != "manifest.json"}
    assert len(names) == 6 and "manifest.json" in names
    assert len(files) == 5 and all(n.endswith(".png") for n in files)
    assert manifest["synthetic"] is True
    assert manifest["model_version"] == "v1"
    assert manifest["count"] == 5
    entries = manifest["images"]
    assert [e["seed"] for e in entries] == [100, 101, 102, 103, 104]
    assert sorted(e["file"] for e in entries) == sorted(files)
    for entry in entries:
        data = files[entry["file"]]
        im = open_png(data)
        assert im.mode == "L" and im.size == (SIZE, SIZE)
        text = provenance(data)
        assert text["Seed"] == str(entry["seed"]) and text["Model-Version"] == "v1"
        # Each image alone, from its own seed: byte for byte the same file.
        assert single_png(client, entry["seed"]) == data
    assert len(set(files.values())) == 5  # different seeds, different images


def test_default_format_for_several_images_is_zip(model_version: str, client: TestClient) -> None:
    r = ok(generate(client, count=2, seed=5))
    assert r.headers["content-type"] == "application/zip"
    assert zipfile.ZipFile(io.BytesIO(r.content)).namelist()[-1] == "manifest.json"


def test_json_has_base64_pngs_with_seeds(model_version: str, client: TestClient) -> None:
    r = ok(generate(client, count=3, seed=40, format="json"))
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert body["synthetic"] is True and body["model_version"] == "v1" and body["count"] == 3
    assert [e["seed"] for e in body["images"]] == [40, 41, 42]
    for entry in body["images"]:
        data = base64.b64decode(entry["png_base64"], validate=True)
        im = open_png(data)
        assert im.mode == "L" and im.size == (SIZE, SIZE)
        text = provenance(data)
        assert text["Seed"] == str(entry["seed"]) and text["Model-Version"] == "v1"
        assert single_png(client, entry["seed"]) == data


def test_npy_is_float32_in_range_and_matches_the_pngs(model_version: str, client: TestClient) -> None:
    r = ok(generate(client, count=4, seed=9, format="npy"))
    arr = np.load(io.BytesIO(r.content), allow_pickle=False)
    assert arr.shape == (4, 1, SIZE, SIZE)
    assert arr.dtype == np.float32
    assert np.isfinite(arr).all()
    assert arr.min() >= -1.0 and arr.max() <= 1.0
    # The PNG of seed 9 + i is these floats, quantized.
    for i in range(4):
        pixels = np.asarray(open_png(single_png(client, 9 + i)))
        expected = np.clip(np.rint((arr[i, 0] + 1.0) * 127.5), 0, 255).astype(np.uint8)
        np.testing.assert_array_equal(pixels, expected)


def test_grid_is_one_png_larger_than_an_image(model_version: str, client: TestClient) -> None:
    r = ok(generate(client, count=4, seed=11, format="grid"))
    assert r.headers["content-type"] == "image/png"
    im = open_png(r.content)
    assert im.mode == "L"
    assert im.width > SIZE and im.height > SIZE
    text = provenance(r.content)
    assert text["Model-Version"] == "v1"
    assert text["Seed"] == "11,12,13,14"


# -- reproducibility ------------------------------------------------------------------------------


def test_same_seed_same_model_is_byte_identical(model_version: str, client: TestClient) -> None:
    assert single_png(client, 1234) == single_png(client, 1234)
    assert single_png(client, 1234) != single_png(client, 1235)
    a = ok(generate(client, count=3, seed=77, format="zip")).content
    b = ok(generate(client, count=3, seed=77, format="zip")).content
    assert a == b
    n1 = ok(generate(client, count=3, seed=77, format="npy")).content
    n2 = ok(generate(client, count=3, seed=77, format="npy")).content
    assert n1 == n2


def test_seed_without_request_is_drawn_returned_and_reproducible(model_version: str, client: TestClient) -> None:
    r = ok(generate(client, count=1, format="png"))
    seed = int(r.headers["x-drawai-seed"])
    assert seed >= 0
    assert provenance(r.content)["Seed"] == str(seed)
    assert single_png(client, seed) == r.content

    z = ok(generate(client, count=3, format="zip"))
    zseed = int(z.headers["x-drawai-seed"])
    manifest = json.loads(zipfile.ZipFile(io.BytesIO(z.content)).read("manifest.json"))
    assert [e["seed"] for e in manifest["images"]] == [zseed, zseed + 1, zseed + 2]
    assert ok(generate(client, count=3, seed=zseed, format="zip")).content == z.content


def test_batcher_gathers_concurrent_requests_without_changing_their_images(model_version: str, store: Store) -> None:
    """Six concurrent requests share one inference call, a large one is split, and each image is exactly what
    its latent gives alone (so batching never breaks byte-identical reproducibility); a failing metrics
    observer fails no request."""
    from models.platform.sampling import latents
    from service.batching import DynamicBatcher
    from service.inference import Preferences, load_model

    model = load_model(store, model_version, Preferences(streams=1))  # one stream: batches of max_batch rows
    rows_seen: list[int] = []

    def broken_observer(rows: int, seconds: float) -> None:
        rows_seen.append(rows)
        raise RuntimeError("a broken metrics hook")

    async def scenario() -> tuple[list[np.ndarray], np.ndarray]:
        batcher = DynamicBatcher(max_batch=8, max_wait_s=1.0, observer=broken_observer)
        await batcher.start()
        try:
            singles = [batcher.infer(model, latents(model.latent_dim, [s])) for s in range(6)]
            outs = await asyncio.wait_for(asyncio.gather(*singles), 120)
            big = await asyncio.wait_for(batcher.infer(model, latents(model.latent_dim, list(range(20)))), 120)
        finally:
            await batcher.stop()
        return outs, big

    outs, big = asyncio.run(scenario())
    alone = [model.run(latents(model.latent_dim, [s])) for s in range(20)]
    for s, out in enumerate(outs):
        np.testing.assert_array_equal(out, alone[s])
    np.testing.assert_array_equal(big, np.concatenate(alone))
    assert rows_seen == [6, 8, 8, 4]


# -- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [
        {"count": 0},
        {"count": 257},
        {"count": -1},
        {"count": "abc"},
        {"format": "bmp"},
        {"format": "png", "count": 3},
        {"seed": -1},
        {"seed": "x"},
        {"seed": 2**31},
        {"seed": 2**31 - 2, "count": 5, "format": "zip"},
        {"label": "yes"},
    ],
)
def test_bad_parameters_are_422_with_json_detail(
    model_version: str, client: TestClient, params: dict[str, object]
) -> None:
    r = generate(client, **params)
    assert r.status_code == 422, (params, r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")
    assert r.json()["detail"]


def test_unknown_model_is_404(model_version: str, client: TestClient) -> None:
    for version in ("v999", "nope", "..%2Fv1"):
        r = generate(client, model=version)
        assert r.status_code == 404, (version, r.text)
        assert r.json()["detail"]


def test_no_active_model_is_503_pointing_at_training(client: TestClient) -> None:
    r = generate(client, count=1)
    assert r.status_code == 503, r.text
    detail = r.json()["detail"]
    assert "train" in detail.lower()
    assert client.get("/models").json()["data"] == []


# -- model versions -------------------------------------------------------------------------------


@pytest.fixture
def two_models(store: Store, model_version: str) -> tuple[str, str]:
    """v1 and v2 in the store, v2 active, before the app starts."""
    v2 = publish_tiny_model(store, seed=1, activate=True)
    assert (model_version, v2) == ("v1", "v2")
    assert store.active_version() == "v2"
    return model_version, v2


def test_pinned_version_while_another_is_active(two_models: tuple[str, str], client: TestClient) -> None:
    active = ok(generate(client, seed=5))
    assert active.headers["x-drawai-model-version"] == "v2"
    assert provenance(active.content)["Model-Version"] == "v2"

    pinned = ok(generate(client, seed=5, model="v1"))
    assert pinned.headers["x-drawai-model-version"] == "v1"
    assert provenance(pinned.content)["Model-Version"] == "v1"
    assert pinned.content != active.content
    assert ok(generate(client, seed=5, model="v1")).content == pinned.content  # reproducible when pinned

    z = ok(generate(client, count=2, seed=5, model="v1", format="zip"))
    manifest = json.loads(zipfile.ZipFile(io.BytesIO(z.content)).read("manifest.json"))
    assert manifest["model_version"] == "v1"


def test_list_and_describe_models(two_models: tuple[str, str], client: TestClient, store: Store) -> None:
    r = client.get("/models")
    assert r.status_code == 200
    assert (r.json()["count"], r.json()["offset"]) == (2, 0)
    listed = r.json()["data"]
    assert [m["version"] for m in listed] == ["v1", "v2"]
    assert [m["active"] for m in listed] == [False, True]
    assert all(m["image_size"] == SIZE for m in listed)

    r = client.get("/models/v1")
    assert r.status_code == 200
    manifest = r.json()
    stored = store.get_manifest("v1")
    assert manifest["version"] == "v1"
    assert manifest["active"] is False
    assert manifest["onnx_sha256"] == stored.onnx_sha256
    assert manifest["image_size"] == SIZE and manifest["latent_dim"] == stored.latent_dim
    assert manifest["dataset"] == stored.dataset
    assert client.get("/models/v2").json()["active"] is True

    r = client.get("/models/v1/samples.png")
    assert r.status_code == 200
    assert r.headers["content-type"] == "image/png"
    open_png(r.content)


def test_unknown_versions_are_404(model_version: str, client: TestClient) -> None:
    for method, path in [
        ("GET", "/models/v999"),
        ("GET", "/models/v999/samples.png"),
        ("POST", "/models/v999/activate"),
        ("GET", "/models/..%2F..%2Fetc"),
    ]:
        r = client.request(method, path)
        assert r.status_code == 404, (method, path, r.text)
        assert r.json()["detail"]


def test_activation_switches_generation(model_version: str, store: Store, client: TestClient) -> None:
    v2 = publish_tiny_model(store, seed=1)  # published while the app runs, not active
    assert store.active_version() == "v1"
    before = ok(generate(client, seed=21))
    assert provenance(before.content)["Model-Version"] == "v1"

    r = client.post(f"/models/{v2}/activate")
    assert r.status_code == 200, r.text
    assert r.json()["version"] == "v2" and r.json()["active"] is True
    assert store.active_version() == "v2"

    after = ok(generate(client, seed=21))
    assert after.headers["x-drawai-model-version"] == "v2"
    assert provenance(after.content)["Model-Version"] == "v2"
    assert after.content != before.content
    assert [m["active"] for m in client.get("/models").json()["data"]] == [False, True]

    assert client.post("/models/v1/activate").status_code == 200  # and back
    assert ok(generate(client, seed=21)).content == before.content
