"""Schemathesis over the whole OpenAPI, against a live app: no 5xx, every status and body as documented.

The app is the real one (``create_app(settings)``) served by uvicorn on a free port, with API keys set,
the real Redis, an active tiny model, a stored dataset and an import folder. Every operation is fuzzed
with positive and negative data and a valid key; the key-checked operations also without a key (401)
and with a wrong one (403). Failures are collected over all operations and reported together.

Fixtures the fuzzer could spoil are re-seeded after every case: a deleted dataset is put back from a
pristine copy, and the model version the run started with is made active again. The default run is
bounded (``FUZZ_EXAMPLES`` per operation and mode); ``test_fuzz_large`` (marker ``slow``) runs more.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hypothesis
import numpy as np
import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, Phase
from redis import Redis
from rq import Queue
from schemathesis.checks import not_a_server_error
from schemathesis.errors import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from models.platform.redisconn import free_port
from models.platform.schemas import TrainSpec
from models.platform.settings import Settings
from models.platform.store import Store
from models.quality.evaluation import EvalConfig, RealImages, evaluate
from service import queue as jobq
from service.main import create_app
from tests.conftest import DEMO_SLICES, blobs, publish_tiny_model, put_dataset

KEY = "drawai-fuzz-key-3b9e51c07d24"
WRONG = "drawai-fuzz-key-000000000000"
FUZZ_EXAMPLES = 25  # per operation and generation mode, in the default run
LARGE_EXAMPLES = 200
METRICS = ("intensity_w1", "memorization")  # a small real quality report, for the report routes
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
MODES = (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE)
# Sane path parameters for the key checks: the key is refused before anything looks at them.
AUTH_PATHS = {"dataset_id": "ds-000000000000", "job_id": "job-0", "version": "v1"}


@dataclass
class Live:
    """The live app: where it listens, what it serves, and what the fuzzer must not spoil."""

    base_url: str
    store: Store
    schema: Any
    dataset_id: str
    pristine: Path  # a copy of the dataset's folder
    version: str  # the active one (no quality report)
    reported: str  # another version, with a quality report
    job_id: str  # a queued job (no worker runs it)

    def real_ids(self, operation: Any) -> dict[str, str]:
        """The operation's path parameters, naming things that exist."""
        ids = {"dataset_id": self.dataset_id, "version": self.reported, "job_id": self.job_id}
        return {k: v for k, v in ids.items() if "{" + k + "}" in operation.path}

    def reseed(self) -> None:
        target = self.store.dataset_dir(self.dataset_id)
        if not target.is_dir():
            shutil.copytree(self.pristine, target)
        if self.store.active_version() != self.version:
            self.store.set_active(self.version)


@dataclass
class Tally:
    cases: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    by_operation: dict[str, dict[int, int]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def report(self) -> str:
        return f"{self.cases} cases, {len(self.failures)} failures, statuses {dict(sorted(self.statuses.items()))}"


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Live]:
    conn = Redis.from_url(redis_url)
    conn.flushdb()
    root = tmp_path_factory.mktemp("fuzz")
    imports = root / "imports"
    (imports / "slices").mkdir(parents=True)
    for png in sorted(DEMO_SLICES.glob("*.png"))[:4]:
        shutil.copy(png, imports / "slices" / png.name)
    settings = Settings(
        home=root / "home",
        redis_url=redis_url,
        api_keys=KEY,  # type: ignore[arg-type]
        import_dir=imports,
        max_count=64,
        eval_synthetic_count=16,
        quiz_enabled=True,  # the reader test's routes answer (they are off by default)
        _env_file=None,  # type: ignore[call-arg]
    )
    store = Store(settings.home).ensure()
    version = publish_tiny_model(store)  # active
    reported = publish_tiny_model(store, seed=1)
    real = RealImages(blobs(12, size=64), "held-out split")
    folder = store.model_dir(reported)
    evaluate(folder, folder, real, EvalConfig(synthetic_count=16, metrics=METRICS))
    heldout = np.zeros(16, bool)  # the reader test of `reported` shows 4 held-out slices of its dataset
    heldout[-4:] = True
    np.save(store.dataset_dir(store.get_manifest(reported).dataset) / "split.npy", heldout)
    dataset = put_dataset(store, blobs(12), name="fuzz")
    pristine = root / "pristine"
    shutil.copytree(store.dataset_dir(dataset.id), pristine)
    spec = TrainSpec(dataset=dataset.id, architecture="dcgan", image_size=32, batch_size=4, epochs=1)
    job = jobq.enqueue_training(Queue(settings.queue_name, connection=conn), spec, settings)  # no worker: queued
    app = create_app(settings)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, name="fuzz-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    base_url = f"http://127.0.0.1:{port}"
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    try:
        yield Live(base_url, store, schema, dataset.id, pristine, version, reported, job.id)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        conn.flushdb()
        conn.close()


def operations(live: Live) -> list[Any]:
    return [result.ok() for result in live.schema.get_all_operations()]


def key_checked(operation: Any) -> bool:
    return any(code in operation.definition.raw.get("responses", {}) for code in ("401", "403"))


def negatable(operation: Any) -> bool:
    """Whether invalid input exists: a body or a query parameter (any string fits a path parameter)."""
    raw = operation.definition.raw
    return "requestBody" in raw or any(p.get("in") == "query" for p in raw.get("parameters", []))


def fuzz(
    live: Live,
    operation: Any,
    tally: Tally,
    examples: int,
    headers: dict[str, str],
    expect: int | None = None,
    **strategy: Any,
) -> None:
    """Run ``examples`` cases of each generation mode of one operation; failures go into ``tally``."""
    for mode in MODES if negatable(operation) else MODES[:1]:

        @hypothesis.settings(
            max_examples=examples,
            deadline=None,
            database=None,
            derandomize=examples <= FUZZ_EXAMPLES,  # the default run is reproducible
            phases=[Phase.explicit, Phase.generate],  # failures are collected, not shrunk
            suppress_health_check=list(HealthCheck),
        )
        @hypothesis.given(case=operation.as_strategy(generation_mode=mode, **strategy))
        def run(case: Any) -> None:
            call(live, case, tally, headers, expect)

        try:
            run()
        except hypothesis.errors.Unsatisfiable:
            # All its parameters are fixed (the key checks, the real ids): no invalid input exists.
            assert mode is schemathesis.GenerationMode.NEGATIVE, f"{operation.label}: no valid input generated"


def call(live: Live, case: Any, tally: Tally, headers: dict[str, str], expect: int | None) -> None:
    tally.cases += 1
    started = time.monotonic()
    try:
        response = case.call(base_url=live.base_url, headers=headers, timeout=60)
        for counts in (tally.statuses, tally.by_operation.setdefault(case.operation.label, {})):
            counts[response.status_code] = counts.get(response.status_code, 0) + 1
        case.validate_response(response, checks=CHECKS, headers=headers)
        if expect is not None:
            assert response.status_code == expect, f"expected {expect}, got {response.status_code}: {response.text}"
            assert "detail" in response.json()
    except (FailureGroup, AssertionError) as exc:
        tally.failures.append(f"{case.operation.label}: {exc}".strip()[:3000])
    finally:
        live.reseed()
        label = case.operation.label
        tally.seconds[label] = tally.seconds.get(label, 0.0) + time.monotonic() - started


def run_all(live: Live, examples: int) -> Tally:
    tally = Tally()
    auth = {"Authorization": f"Bearer {KEY}"}
    for operation in operations(live):
        fuzz(live, operation, tally, examples, auth)
    # Again on the dataset, model version and job that exist; in reverse, so DELETE /jobs/{id} cancels the job
    # before DELETE /datasets/{id} deletes its dataset (put back at once by Live.reseed).
    for operation in reversed(operations(live)):
        if live.real_ids(operation):
            fuzz(live, operation, tally, max(examples // 2, 3), auth, path_parameters=live.real_ids(operation))
    for operation in filter(key_checked, operations(live)):
        paths = {k: v for k, v in AUTH_PATHS.items() if "{" + k + "}" in operation.path}
        fuzz(live, operation, tally, max(examples // 5, 3), {}, expect=401, path_parameters=paths)
        fuzz(live, operation, tally, max(examples // 5, 3), {"X-API-Key": WRONG}, expect=403, path_parameters=paths)
    return tally


def assert_reached(tally: Tally, live: Live) -> None:
    """The run was meaningful: every operation answered a success at least once, but those whose random
    bodies cannot name what exists (a dataset to upload, import or train on), and the re-seeded deletion."""
    blind = {"POST /datasets", "POST /datasets/import", "POST /jobs/train"}
    for operation in operations(live):
        if operation.label not in blind:
            answered = tally.by_operation.get(operation.label, {})
            assert any(200 <= code < 300 for code in answered), (operation.label, answered)
    assert tally.by_operation["DELETE /datasets/{dataset_id}"].get(204), "the dataset was never deleted"
    assert live.store.get_dataset(live.dataset_id).id == live.dataset_id  # ... and is back


def assert_clean(tally: Tally, label: str, echo: Callable[[str], None] = print) -> None:
    echo(f"schemathesis {label}: {tally.report()}")
    if os.environ.get("FUZZ_REPORT"):  # statuses per operation and every failure in full, for debugging
        lines = [
            f"{label}: {dict(sorted(counts.items()))} {tally.seconds.get(label, 0):.1f} s"
            for label, counts in sorted(tally.by_operation.items())
        ]
        Path(os.environ["FUZZ_REPORT"]).write_text("\n".join(lines) + "\n\n" + "\n\n".join(tally.failures))
    assert not tally.failures, f"{len(tally.failures)} of {tally.cases} cases failed:\n\n" + "\n\n".join(
        tally.failures[:40]
    )


def test_fuzz_openapi(live: Live) -> None:
    started = time.monotonic()
    tally = run_all(live, FUZZ_EXAMPLES)
    assert_clean(tally, f"default ({FUZZ_EXAMPLES}/operation/mode, {time.monotonic() - started:.1f} s)")
    assert tally.cases >= 20 * FUZZ_EXAMPLES  # the run really ran
    assert_reached(tally, live)


@pytest.mark.slow
def test_fuzz_openapi_large(live: Live) -> None:
    started = time.monotonic()
    tally = run_all(live, LARGE_EXAMPLES)
    assert_clean(tally, f"large ({LARGE_EXAMPLES}/operation/mode, {time.monotonic() - started:.1f} s)")
    assert_reached(tally, live)
