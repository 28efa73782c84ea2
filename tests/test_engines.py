"""Serving engines: calibration's choice, the grey-level check, forced settings, parallel streams, provenance.

Real ONNX Runtime and OpenVINO on real ONNX files: a tiny trained DCGAN, and a hand-made graph whose pixels
swing from black to white on a tiny change of a dot product (reduced precision cannot keep it within one grey
level, so calibration must refuse bf16 for it wherever the CPU offers bf16).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from models.platform.settings import Settings
from models.platform.store import Store, atomic_write_json, sha256_file
from service.engines import Setting
from service.engines.calibration import MIN_WITHIN_ONE, Preferences
from service.engines.openvino_engine import openvino_precisions
from service.inference import load_model

SIZE, LATENT = 16, 32


def publish_sensitive_model(store: Store) -> str:
    """A real ONNX "generator": image = sin(4000 * (z @ W)), reshaped to 16 x 16. Rounding W or
    the products to bf16's 8 mantissa bits moves many pixels by far more than one grey level."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from models.platform.schemas import ModelManifest

    rng = np.random.default_rng(0)
    weights = (rng.standard_normal((LATENT, SIZE * SIZE)) / np.sqrt(LATENT)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["z", "w"], ["dot"]),
            helper.make_node("Mul", ["dot", "gain"], ["scaled"]),
            helper.make_node("Sin", ["scaled"], ["flat"]),
            helper.make_node("Reshape", ["flat", "shape"], ["image"]),
        ],
        "sensitive",
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", LATENT])],
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, SIZE, SIZE])],
        [
            numpy_helper.from_array(weights, "w"),
            numpy_helper.from_array(np.array(4000.0, np.float32), "gain"),
            numpy_helper.from_array(np.array([-1, 1, SIZE, SIZE], np.int64), "shape"),
        ],
    )
    with store.staging("sensitive") as staged:
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), staged / "generator.onnx")
        manifest = ModelManifest(
            version="pending", architecture="handmade", image_size=SIZE, latent_dim=LATENT, conditional=False,
            classes={}, dataset="none", dataset_sha256="", job_id="none", spec={}, epochs=0, steps=0,
            final_losses={}, onnx_sha256=sha256_file(staged / "generator.onnx"), onnx_parity_max_abs_diff=0.0,
            onnx_opset=17, onnx_inputs=["z"], library_versions={}, created="",
        )  # fmt: skip
        atomic_write_json(staged / "model.json", manifest.model_dump())
        return store.publish_model(staged)


def test_auto_serves_the_fastest_candidate_that_keeps_the_pixels(model_version: str, store: Store) -> None:
    model = load_model(store, model_version, Preferences())
    serving = model.serving
    trials = serving.trials
    timed = [t for t in trials if t.images_per_s is not None]
    assert {(t.engine, t.precision) for t in timed} >= {("openvino", "fp32"), ("onnxruntime", "fp32")}
    if "bf16" in openvino_precisions():  # read from the CPU plugin at run time
        assert any(t.precision == "bf16" for t in timed)
    else:
        assert not any(t.precision == "bf16" for t in trials)
    accepted = [t for t in timed if t.accepted]
    fastest = max(accepted, key=lambda t: t.images_per_s or 0.0)
    assert (serving.engine, serving.precision, serving.streams) == (fastest.engine, fastest.precision, fastest.streams)
    for t in timed:
        assert t.within_one_grey is not None and t.batch_invariant is not None
        assert t.accepted == (t.within_one_grey >= MIN_WITHIN_ONE and t.batch_invariant)
    assert model.engine.setting == Setting(serving.engine, serving.precision, serving.streams)
    assert serving.reason == "fastest accepted candidate" and serving.calibration_s > 0

    # What the invariance check protects: an image does not depend on the batch it was computed in.
    z = np.random.default_rng(2).standard_normal((24, model.latent_dim)).astype(np.float32)
    full = model.run(z)
    for rows in (1, 2, 3, 5, 7, 9, 16):
        assert np.array_equal(model.run(z[:rows]), full[:rows]), rows


def test_a_candidate_that_moves_pixels_by_more_than_a_grey_level_is_refused(store: Store) -> None:
    version = publish_sensitive_model(store)
    model = load_model(store, version, Preferences(streams=1))
    by_setting = {(t.engine, t.precision): t for t in model.serving.trials}
    assert by_setting["onnxruntime", "fp32"].accepted and by_setting["openvino", "fp32"].accepted
    if "bf16" in openvino_precisions():
        bf16 = by_setting["openvino", "bf16"]
        assert bf16.max_grey_diff is not None and bf16.max_grey_diff > 1
        assert bf16.within_one_grey is not None and bf16.within_one_grey < MIN_WITHIN_ONE and not bf16.accepted
    assert model.serving.precision == "fp32"  # whatever is fastest here, it is exact


def test_forced_settings_are_obeyed_and_impossible_ones_fall_back_to_the_reference(
    model_version: str, store: Store
) -> None:
    forced = load_model(store, model_version, Preferences(engine="openvino", precision="fp32", streams=2))
    [trial] = forced.serving.trials
    assert (trial.engine, trial.precision, trial.streams) == ("openvino", "fp32", 2)
    if trial.accepted:  # served as asked
        assert (forced.serving.engine, forced.serving.precision, forced.serving.streams) == ("openvino", "fp32", 2)
        assert forced.provider == "openvino:CPU" and "DRAWAI_ENGINE" in forced.serving.reason
    else:  # a forced setting that fails the checks is never served
        assert forced.serving.engine == "onnxruntime" and forced.serving.reason.startswith("fallback")

    impossible = load_model(store, model_version, Preferences(engine="onnxruntime", precision="bf16"))
    assert (impossible.serving.engine, impossible.serving.precision) == ("onnxruntime", "fp32")
    assert impossible.serving.reason.startswith("fallback")
    [refused] = impossible.serving.trials
    assert refused.error == "onnxruntime does not run bf16 on this machine" and not refused.accepted

    z = np.random.default_rng(1).standard_normal((5, forced.latent_dim)).astype(np.float32)
    a, b = forced.run(z), impossible.run(z)  # both fp32: the same pixels
    assert np.abs(np.round((a + 1) * 127.5) - np.round((b + 1) * 127.5)).max() <= 1


@pytest.mark.parametrize("streams", [1, 2])
def test_the_batcher_runs_as_many_batches_at_once_as_the_model_has_streams(
    model_version: str, store: Store, streams: int
) -> None:
    """Inference held: the first ``streams`` requests each start a batch; the next one waits, gathering."""
    import threading

    from service.batching import MAX_STREAMS, DynamicBatcher

    model = load_model(store, model_version, Preferences(engine="onnxruntime", precision="fp32", streams=streams))
    assert model.streams == streams
    gate = threading.Event()

    async def scenario() -> list[np.ndarray]:
        batcher = DynamicBatcher(max_batch=4, max_wait_s=0.0)
        await batcher.start()
        try:
            for _ in range(MAX_STREAMS):  # every inference thread busy until the gate opens
                batcher.executor.submit(gate.wait)
            z = np.random.default_rng(0).standard_normal((streams + 2, model.latent_dim)).astype(np.float32)
            tasks = []
            for i in range(streams + 2):
                tasks.append(asyncio.create_task(batcher.infer(model, z[i : i + 1])))
                await asyncio.sleep(0)  # let the batcher take it
                started = min(i + 1, streams)
                await _until(lambda n=started: batcher.running_batches == n)
            assert batcher.running_batches == streams  # no more than the model's streams
            gate.set()
            outs = await asyncio.gather(*tasks)
            assert np.array_equal(np.concatenate(outs), model.run(z))  # each row what it gives alone
            return outs
        finally:
            gate.set()
            await batcher.stop()

    assert len(asyncio.run(scenario())) == streams + 2


async def _until(cond: object, timeout_s: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not cond():  # type: ignore[operator]
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.01)


@pytest.fixture
def streams_client(settings: Settings, model_version: str) -> Iterator[TestClient]:
    from service.main import create_app

    with TestClient(create_app(settings.model_copy(update={"infer_streams": 2}))) as c:
        yield c


def test_engine_and_precision_are_shown_and_carried_by_every_image(streams_client: TestClient) -> None:
    from tests.test_generate import open_png, provenance

    c = streams_client
    served = c.get("/readyz").json()["model"]
    serving = served["serving"]
    engine, precision = serving["engine"], serving["precision"]
    assert serving["streams"] == 2 and "DRAWAI_INFER_STREAMS" in serving["reason"]
    assert c.get("/models/v1").json()["serving"] == serving
    metrics = c.get("/metrics").text
    assert f'engine="{engine}"' in metrics and f'precision="{precision}"' in metrics and 'streams="2"' in metrics

    r = c.post("/generate", params={"seed": 3})
    assert r.status_code == 200
    assert (r.headers["x-drawai-engine"], r.headers["x-drawai-precision"]) == (engine, precision)
    text = provenance(r.content)
    assert (text["Engine"], text["Precision"]) == (engine, precision)
    assert open_png(r.content).size == (32, 32)
    assert c.post("/generate", params={"seed": 3}).content == r.content  # same engine and precision: same bytes
    body = c.post("/generate", params={"seed": 3, "count": 2, "format": "json"}).json()
    assert (body["engine"], body["precision"]) == (engine, precision)


def test_an_unknown_engine_setting_is_refused_at_start(tmp_path: Path) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="engine"):
        Settings(home=tmp_path, engine="tensorrt", _env_file=None)  # type: ignore[call-arg,arg-type]


def test_what_gathered_is_shared_by_the_idle_streams() -> None:
    """Requests gathered while two streams are idle go out as two batches of about equal rows, whole requests each,
    in their order (one stream per core: one batch alone would leave the other cores idle)."""
    from service.batching import _Pending, _spread

    loop = asyncio.new_event_loop()
    try:
        batch = [_Pending(None, np.zeros((n, 4), np.float32), loop.create_future()) for n in (1, 1, 1, 1, 3, 1)]  # type: ignore[arg-type]
        groups = _spread(batch, 2)
        assert [[len(p.z) for p in g] for g in groups] == [[1, 1, 1, 1], [3, 1]]
        assert [p for g in groups for p in g] == batch
        assert _spread(batch, 1) == [batch] and _spread(batch[:1], 4) == [batch[:1]]
        assert len(_spread(batch, 8)) <= len(batch)
    finally:
        loop.close()


def test_a_request_that_waited_for_a_busy_stream_goes_when_it_frees(model_version: str, store: Store) -> None:
    """The batch wait counts from a request's arrival (Triton's max queue delay): a request that already waited
    longer than ``max_wait_s`` behind a running batch goes as soon as the stream frees, not ``max_wait_s`` later.

    The batcher's clock is the test's: it passes 100 s while the first batch is held; ``max_wait_s`` is 60 s, so
    a second wait would outlast the test's 20 s bound by far."""
    import threading

    from service.batching import MAX_STREAMS, DynamicBatcher

    model = load_model(store, model_version, Preferences(engine="onnxruntime", precision="fp32", streams=1))
    gate, now = threading.Event(), [0.0]

    async def scenario() -> np.ndarray:
        batcher = DynamicBatcher(max_batch=2, max_wait_s=60.0, clock=lambda: now[0])
        await batcher.start()
        try:
            for _ in range(MAX_STREAMS):  # every inference thread busy until the gate opens
                batcher.executor.submit(gate.wait)
            z = np.random.default_rng(0).standard_normal((3, model.latent_dim)).astype(np.float32)
            first = asyncio.create_task(batcher.infer(model, z[:2]))  # fills a batch: goes at once, held
            await _until(lambda: batcher.running_batches == 1)
            second = asyncio.create_task(batcher.infer(model, z[2:]))  # one row of two: may wait for another
            await asyncio.sleep(0.05)  # queued behind the held batch
            now[0] = 100.0  # it has waited past max_wait_s
            gate.set()
            assert np.array_equal(await asyncio.wait_for(first, 20), model.run(z[:2]))
            return await asyncio.wait_for(second, 20)
        finally:
            gate.set()
            await batcher.stop()

    np.testing.assert_array_equal(asyncio.run(scenario()), model.run(np.random.default_rng(0).standard_normal(
        (3, model.latent_dim)).astype(np.float32)[2:]))  # fmt: skip


def test_api_processes_share_one_calibration_per_version(model_version: str, store: Store) -> None:
    """The first load of a version calibrates and records its choice in DRAWAI_HOME/serving/; a later load with
    the same settings opens that choice (its trials kept) instead of timing candidates again, so every API process
    serves the same engine and precision, hence the same bytes. Other settings calibrate for themselves; an
    unreadable record is calibrated over."""
    from service.engines.shared import SHARED

    first = load_model(store, model_version, Preferences())
    assert SHARED not in first.serving.reason
    [record] = (store.home / "serving").glob(f"{model_version}-*.json")
    again = load_model(store, model_version, Preferences())
    assert (again.serving.engine, again.serving.precision, again.serving.streams) == (
        first.serving.engine, first.serving.precision, first.serving.streams,
    )  # fmt: skip
    assert SHARED in again.serving.reason and record.name in again.serving.reason
    assert again.serving.trials == first.serving.trials and again.provider == first.provider
    z = np.random.default_rng(1).standard_normal((3, again.latent_dim)).astype(np.float32)
    assert np.array_equal(again.run(z), first.run(z))

    pinned = load_model(store, model_version, Preferences(engine="onnxruntime", precision="fp32", streams=1))
    assert SHARED not in pinned.serving.reason and len(list((store.home / "serving").glob("*.json"))) == 2

    record.write_text("{not json")
    mended = load_model(store, model_version, Preferences())
    assert SHARED not in mended.serving.reason and record.read_text().startswith("{")


LOAD_AND_PRINT = """
import sys
from models.platform.store import Store
from service.engines.calibration import Preferences
from service.inference import load_model
model = load_model(Store(sys.argv[1]), sys.argv[2], Preferences(cores=1))
print(model.serving.model_dump_json())
"""


def test_processes_loading_a_version_at_once_agree_on_its_setting(model_version: str, store: Store) -> None:
    """Two API processes starting together: one calibrates under the lock, the other waits and opens its choice."""
    import json
    import subprocess
    import sys

    from service.engines.shared import SHARED

    procs = [
        subprocess.Popen(
            [sys.executable, "-c", LOAD_AND_PRINT, str(store.home), model_version],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    servings = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()[-2000:]
        servings.append(json.loads(out.decode().strip().splitlines()[-1]))
    assert len({(s["engine"], s["precision"], s["streams"]) for s in servings}) == 1
    assert sorted(SHARED in s["reason"] for s in servings) == [False, True]  # one calibrated, one reused
