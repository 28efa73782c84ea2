"""API keys: every route that changes state needs a key when ``DRAWAI_API_KEYS`` is set; reads stay open.

In-process tests run the real app (real Redis, real store, real ONNX Runtime) behind ``BodySpy``,
which counts the body bytes the app reads, so a refusal is shown to happen before any upload or
JSON body is read. Subprocess tests run ``drawai api`` and ``drawai datasets`` as a user does.
"""

from __future__ import annotations

import io
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
from fastapi.testclient import TestClient
from redis import Redis
from rq import Queue
from starlette.types import Message, Receive, Scope, Send

from models.platform.redisconn import free_port
from models.platform.schemas import TrainSpec
from models.platform.settings import Settings
from models.platform.store import Store
from service import queue as jobq
from service.auth import check_listen_allowed
from service.main import create_app
from tests.conftest import DEMO_SLICES, blobs, publish_tiny_model, put_dataset, worker_env

K1 = "drawai-test-key-one-7c1f0e9b5a"
K2 = "drawai-test-key-two-42d8a6c3e1"
WRONG = "drawai-test-key-bad-000000000"
# The four ways a valid key may arrive: both headers, both keys.
GOOD = [
    {"Authorization": f"Bearer {K1}"},
    {"X-API-Key": K1},
    {"Authorization": f"bearer {K2}"},  # the scheme is case-insensitive
    {"X-API-Key": K2},
]
QUEUE = "train-auth-test"
PROTECTED = {
    ("POST", "/datasets"),
    ("POST", "/datasets/import"),
    ("DELETE", "/datasets/{dataset_id}"),
    ("POST", "/jobs/train"),
    ("DELETE", "/jobs/{job_id}"),
    ("POST", "/models/{version}/activate"),
    ("POST", "/generate"),
    ("POST", "/models/{version}/quiz/answers"),
}
# Reads that need a key too: the reader test shows real held-out slices (docs/console.md), and /auth/check is the
# key check itself.
KEYED_READS = {
    ("GET", "/auth/check"),
    ("GET", "/models/{version}/quiz"),
    ("GET", "/models/{version}/quiz/items/{position}.png"),
    ("GET", "/models/{version}/quiz/results"),
}


class BodySpy:
    """ASGI wrapper around the app: the number of request-body messages the app has received."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.body_messages = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def counted() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                self.body_messages += 1
            return message

        await self.app(scope, counted if scope["type"] == "http" else receive, send)


Keyed = Callable[..., tuple[TestClient, BodySpy]]


@pytest.fixture
def make_keyed(settings: Settings) -> Iterator[Keyed]:
    """Builds clients of apps whose settings are the test's plus ``api_keys=K1,K2`` and any overrides."""
    with ExitStack() as stack:

        def make(**overrides: Any) -> tuple[TestClient, BodySpy]:
            # A queue of its own: a worker that another test left running never takes these jobs.
            fields = {**settings.model_dump(), "queue_name": QUEUE, "api_keys": f"{K1},{K2}", **overrides}
            spy = BodySpy(create_app(Settings(**fields, _env_file=None)))  # type: ignore[call-arg]
            return stack.enter_context(TestClient(spy)), spy

        yield make


@pytest.fixture
def keyed_client(make_keyed: Keyed) -> tuple[TestClient, BodySpy]:
    """A client of the app with keys K1 and K2 configured."""
    return make_keyed()


def assert_refused(client: TestClient, spy: BodySpy, method: str, url: str, **kwargs: Any) -> None:
    """No usable key: 401 with ``WWW-Authenticate: Bearer``; a wrong one: 403; no body byte read either way."""
    missing = [{}, {"Authorization": f"Basic {K1}"}, {"Authorization": "Bearer "}, {"X-API-Key": ""}]
    wrong = [
        {"Authorization": f"Bearer {WRONG}"},
        {"X-API-Key": WRONG},
        {"Authorization": f"Bearer {K1[:-1]}"},  # a prefix of a key
        {"Authorization": f"Bearer {K1},{K2}"},  # the whole setting
        {"X-API-Key": K1 + "x"},
    ]
    base = kwargs.pop("headers", {})
    spy.body_messages = 0
    for headers in missing:
        r = client.request(method, url, headers={**base, **headers}, **kwargs)
        assert r.status_code == 401, (headers, r.text)
        assert r.headers["www-authenticate"] == "Bearer" and "API key is required" in r.json()["detail"]
    for headers in wrong:
        r = client.request(method, url, headers={**base, **headers}, **kwargs)
        assert r.status_code == 403, (headers, r.text)
        assert r.json() == {"detail": "the API key is not valid"}
    assert spy.body_messages == 0, "the app read the request body before checking the key"


def small_zip(n: int = 4) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for p in sorted(DEMO_SLICES.glob("*.png"))[:n]:
            zf.write(p, f"slices/{p.name}")
    return buf.getvalue()


def queue_of(redis: Redis) -> Queue:
    return Queue(QUEUE, connection=redis)


# -- every protected route ------------------------------------------------------------------------


def test_upload_needs_a_key(keyed_client: tuple[TestClient, BodySpy], store: Store) -> None:
    client, spy = keyed_client
    body = small_zip()
    assert_refused(client, spy, "POST", "/datasets", files={"file": ("s.zip", body, "application/zip")})
    assert_refused(client, spy, "POST", "/datasets?name=raw", content=body, headers={"content-type": "application/zip"})
    assert store.list_datasets() == []
    assert list(store.tmp_dir.glob("*")) == [], "a refused upload left a temp file"
    for i, headers in enumerate(GOOD):
        r = client.post("/datasets", files={"file": ("s.zip", body)}, data={"name": f"d{i}"}, headers=headers)
        assert r.status_code == 201, r.text
    assert [d.name for d in store.list_datasets()] == ["d0", "d1", "d2", "d3"]


def test_import_needs_a_key(make_keyed: Keyed, store: Store, tmp_path: Path) -> None:
    imports = tmp_path / "imports"
    (imports / "slices").mkdir(parents=True)
    for p in sorted(DEMO_SLICES.glob("*.png"))[:4]:
        (imports / "slices" / p.name).write_bytes(p.read_bytes())
    client, spy = make_keyed(import_dir=imports)
    assert_refused(client, spy, "POST", "/datasets/import", json={"path": "slices"})
    assert_refused(client, spy, "POST", "/datasets/import", content=b"{not json", headers={"content-type": "text/x"})
    assert store.list_datasets() == []
    for headers in GOOD:
        r = client.post("/datasets/import", json={"path": "slices"}, headers=headers)
        assert r.status_code == 201, r.text
    assert len(store.list_datasets()) == 4


def test_training_needs_a_key(keyed_client: tuple[TestClient, BodySpy], store: Store, redis: Redis) -> None:
    client, spy = keyed_client
    ds = put_dataset(store, blobs(12))
    spec = {"dataset": ds.id, "architecture": "dcgan", "image_size": 32, "width": 8, "batch_size": 4, "epochs": 1}
    assert_refused(client, spy, "POST", "/jobs/train", json=spec)
    # Before FastAPI parses the body: a malformed or invalid one is refused for the key, not with 422.
    assert_refused(client, spy, "POST", "/jobs/train", content=b"{oops", headers={"content-type": "application/json"})
    assert_refused(client, spy, "POST", "/jobs/train", json={"epochs": -1})
    queue = queue_of(redis)
    assert queue.count == 0 and jobq.list_jobs(queue) == []
    ids = []
    for headers in GOOD:
        r = client.post("/jobs/train", json=spec, headers=headers)
        assert r.status_code == 202, r.text
        ids.append(r.json()["id"])
    assert queue.count == 4 and sorted(j.id for j in jobq.list_jobs(queue)) == sorted(ids)


def test_cancel_needs_a_key(
    keyed_client: tuple[TestClient, BodySpy], store: Store, settings: Settings, redis: Redis
) -> None:
    client, spy = keyed_client
    ds = put_dataset(store, blobs(12))
    queue = queue_of(redis)
    jobs = [jobq.enqueue_training(queue, TrainSpec(dataset=ds.id, batch_size=4), settings) for _ in range(5)]
    assert_refused(client, spy, "DELETE", f"/jobs/{jobs[0].id}")
    assert client.get(f"/jobs/{jobs[0].id}").json()["status"] == "queued"
    assert queue.count == 5
    for job, headers in zip(jobs[1:], GOOD, strict=True):
        r = client.delete(f"/jobs/{job.id}", headers=headers)
        assert r.status_code == 202, r.text
        assert client.get(f"/jobs/{job.id}").json()["status"] == "canceled"
    assert client.get(f"/jobs/{jobs[0].id}").json()["status"] == "queued"


def test_dataset_deletion_needs_a_key(keyed_client: tuple[TestClient, BodySpy], store: Store) -> None:
    client, spy = keyed_client
    datasets = [put_dataset(store, blobs(4, size=64, seed=i), name=f"d{i}") for i in range(5)]
    assert_refused(client, spy, "DELETE", f"/datasets/{datasets[0].id}")
    assert len(store.list_datasets()) == 5
    for ds, headers in zip(datasets[1:], GOOD, strict=True):
        assert client.delete(f"/datasets/{ds.id}", headers=headers).status_code == 204
    assert [d.id for d in store.list_datasets()] == [datasets[0].id]


def test_activation_needs_a_key(model_version: str, store: Store, make_keyed: Keyed) -> None:
    v2 = publish_tiny_model(store, seed=1)
    client, spy = make_keyed()
    assert_refused(client, spy, "POST", f"/models/{v2}/activate")
    assert store.active_version() == model_version
    assert client.post("/generate?seed=1").status_code == 401  # still v1 served, for key holders only
    for target, headers in zip([v2, model_version, v2, model_version], GOOD, strict=True):
        r = client.post(f"/models/{target}/activate", headers=headers)
        assert r.status_code == 200, r.text
        assert store.active_version() == target
        assert client.post("/generate", headers=headers).headers["x-drawai-model-version"] == target


def test_generate_needs_a_key_unless_public(model_version: str, make_keyed: Keyed, store: Store) -> None:
    # Two apps, one engine: each app's auto calibration times its candidates, and may choose another engine and
    # precision than the other's (byte-identical answers are promised for the same engine and precision).
    pinned = {"engine": "onnxruntime", "precision": "fp32"}
    client, spy = make_keyed(**pinned)
    assert_refused(client, spy, "POST", "/generate?count=2&seed=3&format=json")
    for headers in GOOD:
        r = client.post("/generate?seed=5", headers=headers)
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"

    public, _ = make_keyed(public_generate=True, **pinned)
    r = public.post("/generate?seed=5")
    assert r.status_code == 200 and r.content == client.post("/generate?seed=5", headers=GOOD[0]).content
    assert public.post("/generate?seed=5", headers={"X-API-Key": WRONG}).status_code == 200  # keys are not looked at
    # Only generation is public: everything else still needs a key.
    assert public.post("/models/v1/activate").status_code == 401
    ds = put_dataset(store, blobs(4, size=64))
    assert public.delete(f"/datasets/{ds.id}").status_code == 401


def test_reads_stay_open_with_keys(model_version: str, keyed_client: tuple[TestClient, BodySpy], store: Store) -> None:
    client, _ = keyed_client
    ds = put_dataset(store, blobs(4, size=64))
    job = client.post("/jobs/train", json={"dataset": ds.id, "batch_size": 2}, headers=GOOD[0]).json()
    for url in [
        "/healthz",
        "/readyz",
        "/metrics",
        "/datasets",
        f"/datasets/{ds.id}",
        f"/datasets/{ds.id}/preview.png",
        "/jobs",
        f"/jobs/{job['id']}",
        "/models",
        f"/models/{model_version}",
        f"/models/{model_version}/samples.png",
        "/openapi.json",
    ]:
        r = client.get(url)
        assert r.status_code == 200, (url, r.status_code, r.text[:200])
    assert client.get("/datasets/ds-nothing").status_code == 404  # reads answer as before, not 401


def test_every_state_changing_route_and_only_those_need_a_key(keyed_client: tuple[TestClient, BodySpy]) -> None:
    """Every operation the app publishes, asked without a key: a new POST/PUT/PATCH/DELETE route fails here
    until it needs a key (or is listed in ``PROTECTED``); no GET asks for one but the ``KEYED_READS``."""
    client, _ = keyed_client
    changing, gets = set(), set()
    for path, operations in client.get("/openapi.json").json()["paths"].items():
        for method in operations:
            (gets if method == "get" else changing).add((method.upper(), path))
    assert changing == PROTECTED
    for method, path in sorted(changing | gets):
        url = re.sub(r"\{[^}]+\}", "x", path)
        r = client.request(method, url)
        if (method, path) in PROTECTED | KEYED_READS:
            assert r.status_code == 401, (method, path, r.status_code)
        else:
            assert r.status_code not in (401, 403), (method, path, r.status_code)


def test_without_keys_everything_is_open(settings: Settings, store: Store, model_version: str) -> None:
    for keys in (None, " , "):  # unset, or only blanks: no keys
        fields = {**settings.model_dump(), "api_keys": keys}
        with TestClient(create_app(Settings(**fields, _env_file=None))) as client:  # type: ignore[call-arg]
            r = client.post("/datasets", files={"file": ("s.zip", small_zip(2))})
            assert r.status_code == 201, r.text
            ds = r.json()["id"]
            junk = {"Authorization": f"Bearer {WRONG}"}  # ignored when no keys are set
            job = client.post("/jobs/train", json={"dataset": ds, "batch_size": 1}, headers=junk)
            assert job.status_code == 202, job.text
            assert client.delete(f"/jobs/{job.json()['id']}").status_code == 202
            assert client.delete(f"/datasets/{ds}", headers=junk).status_code == 204
            assert client.post(f"/models/{model_version}/activate").status_code == 200
            assert client.post("/generate").status_code == 200


def test_keys_never_reach_the_logs(
    caplog: pytest.LogCaptureFixture, make_keyed: Keyed, store: Store, model_version: str
) -> None:
    caplog.set_level(logging.DEBUG)
    client, _ = make_keyed()
    ds = put_dataset(store, blobs(4, size=64))
    spec = {"dataset": ds.id, "batch_size": 2}
    answers = [
        client.post("/jobs/train", json=spec),
        client.post("/jobs/train", json=spec, headers={"Authorization": f"Bearer {WRONG}"}),
        client.post("/jobs/train", json=spec, headers={"X-API-Key": K1[:-4]}),
        client.post("/jobs/train", json=spec, headers={"Authorization": f"Bearer {K1}"}),
        client.post("/jobs/train", json=spec, headers={"X-API-Key": K2}),
        client.post("/generate", headers={"X-API-Key": K2}),
        client.post(f"/models/{model_version}/activate", headers={"X-API-Key": WRONG}),
    ]
    assert [r.status_code for r in answers] == [401, 403, 403, 202, 202, 200, 403]
    assert "rejected: missing key" in caplog.text and "rejected: wrong key" in caplog.text
    assert "path=/jobs/train" in caplog.text
    for secret in (K1, K2, WRONG, K1[:-4], K1[:12]):
        assert secret not in caplog.text
        assert all(secret not in r.text for r in answers if r.headers["content-type"] == "application/json")


# -- where the API may listen ---------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.53", "::1", "[::1]", "localhost", "LOCALHOST"])
def test_loopback_needs_no_keys(host: str) -> None:
    check_listen_allowed(host, Settings(_env_file=None))  # type: ignore[call-arg]


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "10.0.0.5", "fe80::1", "drawai.example.org"])
def test_other_addresses_need_keys_or_an_explicit_opt_in(host: str) -> None:
    from service.auth import ListenRefused

    with pytest.raises(ListenRefused, match=r"DRAWAI_API_KEYS.*DRAWAI_ALLOW_ANONYMOUS=true"):
        check_listen_allowed(host, Settings(api_keys=None, allow_anonymous=False, _env_file=None))  # type: ignore[call-arg]
    with pytest.raises(ListenRefused):
        check_listen_allowed(host, Settings(api_keys=" ,", _env_file=None))  # type: ignore[call-arg]
    check_listen_allowed(host, Settings(api_keys=K1, _env_file=None))  # type: ignore[call-arg]
    check_listen_allowed(host, Settings(allow_anonymous=True, _env_file=None))  # type: ignore[call-arg]


def clean_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The test's Redis and store, no ``DRAWAI_*`` setting from the caller's environment, plus ``extra``."""
    base = {k: v for k, v in worker_env(settings).items() if not k.startswith("DRAWAI_")}
    return {**base, "DRAWAI_HOME": str(settings.home), "DRAWAI_REDIS_URL": str(settings.redis_url), **extra}


def test_drawai_api_refuses_a_public_address_without_keys(settings: Settings, tmp_path: Path) -> None:
    port = free_port()
    cmd = [sys.executable, "-m", "drawai.cli", "api", "--host", "0.0.0.0", "--port", str(port)]
    r = subprocess.run(cmd, env=clean_env(settings), cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "refusing to listen on 0.0.0.0" in r.stderr
    assert "DRAWAI_API_KEYS" in r.stderr and "DRAWAI_ALLOW_ANONYMOUS=true" in r.stderr
    assert "Traceback" not in r.stderr
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)


@contextmanager
def drawai_api(env: dict[str, str], cwd: Path, log: Path) -> Iterator[str]:
    """``drawai --log-level DEBUG api`` on a free loopback port; its URL. Stopped (its whole group) on exit."""
    port = free_port()
    cmd = [sys.executable, "-m", "drawai.cli", "--log-level", "DEBUG", "api", "--port", str(port)]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the API did not start:\n" + log.read_text()
            time.sleep(0.2)
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)


def run_cli(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "drawai.cli", "datasets", *args]
    return subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=120)


def test_cli_sends_the_key_to_an_api_with_keys(settings: Settings, tmp_path: Path) -> None:
    folder = tmp_path / "brain"
    folder.mkdir()
    for p in sorted(DEMO_SLICES.glob("*.png"))[:3]:
        (folder / p.name).write_bytes(p.read_bytes())
    log = tmp_path / "api.log"
    with drawai_api(clean_env(settings, DRAWAI_API_KEYS=f"{K1},{K2}"), tmp_path, log) as url:
        r = run_cli(clean_env(settings), tmp_path, "add", str(folder), "--url", url)
        assert r.returncode == 1 and "HTTP 401" in r.stderr and "DRAWAI_API_KEY" in r.stderr, r.stderr
        r = run_cli(clean_env(settings, DRAWAI_API_KEY=WRONG), tmp_path, "add", str(folder), "--url", url)
        assert r.returncode == 1 and "HTTP 403" in r.stderr, r.stderr
        assert httpx.get(f"{url}/datasets").json()["data"] == []

        r = run_cli(clean_env(settings, DRAWAI_API_KEYS=f"{K1},{K2}"), tmp_path, "add", str(folder), "--url", url)
        assert r.returncode == 0, r.stdout + r.stderr
        r = run_cli(clean_env(settings, DRAWAI_API_KEY=K2), tmp_path, "add", str(folder), "--url", url)
        assert r.returncode == 0, r.stdout + r.stderr
        r = run_cli(clean_env(settings, DRAWAI_API_KEY=K2), tmp_path, "list", "--url", url)
        assert r.returncode == 0 and r.stdout.count("brain") == 2, r.stdout + r.stderr
        httpx.post(f"{url}/jobs/train", json={}, headers={"X-API-Key": WRONG})  # one more refusal in the log
    text = log.read_text()
    assert "rejected: missing key" in text and "rejected: wrong key" in text and "POST /datasets" in text
    for secret in (K1, K2, WRONG):
        assert secret not in text


class _Recorder(BaseHTTPRequestHandler):
    """Answers ``GET /datasets`` with an empty page and remembers each request's ``Authorization`` header."""

    seen: ClassVar[list[str | None]] = []

    def do_GET(self) -> None:
        self.seen.append(self.headers.get("Authorization"))
        body = b'{"data": [], "count": 0, "limit": 500, "offset": 0}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_cli_key_is_api_key_else_the_first_of_api_keys_else_none(settings: Settings, tmp_path: Path) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    _Recorder.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        for extra in ({"DRAWAI_API_KEY": K2, "DRAWAI_API_KEYS": K1}, {"DRAWAI_API_KEYS": f" {K1} , {K2}"}, {}):
            r = run_cli(clean_env(settings, **extra), tmp_path, "list", "--url", url)
            assert r.returncode == 0 and "no datasets" in r.stdout, r.stdout + r.stderr
    finally:
        server.shutdown()
        server.server_close()
    assert _Recorder.seen == [f"Bearer {K2}", f"Bearer {K1}", None]


def test_several_api_workers_share_a_fresh_metrics_folder(settings: Settings, tmp_path: Path) -> None:
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    stale = metrics / "counter_999999.db"
    stale.write_bytes(b"left by a dead process")
    env = clean_env(settings, DRAWAI_API_WORKERS="2", DRAWAI_METRICS_DIR=str(metrics), DRAWAI_API_KEYS=K1)
    with drawai_api(env, tmp_path, tmp_path / "api.log") as url:
        assert not stale.exists()
        for _ in range(4):
            assert httpx.get(f"{url}/healthz", timeout=5).status_code == 200
        deadline = time.monotonic() + 30
        while not list(metrics.glob("*.db")):  # the workers inherited PROMETHEUS_MULTIPROC_DIR
            assert time.monotonic() < deadline, "no worker wrote into the metrics folder"
            time.sleep(0.2)
        assert httpx.post(f"{url}/jobs/train", json={}).status_code == 401


@pytest.mark.slow
def test_demo_works_with_keys(settings: Settings, tmp_path: Path) -> None:
    """``drawai demo`` sends the first of DRAWAI_API_KEYS to the API it starts (which has the same keys)."""
    from tests.test_cli import processes_of

    out = tmp_path / "demo"
    cmd = [sys.executable, "-m", "drawai.cli", "demo", "--epochs", "1", "--out", str(out), "--port", str(free_port())]
    env = clean_env(settings, DRAWAI_API_KEYS=f"{K1},{K2}")
    try:
        r = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    finally:
        for pid in processes_of(settings.home):
            os.kill(pid, signal.SIGKILL)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "model v1 trained and active" in r.stdout and len(list((out / "images").glob("*.png"))) == 16
    api_log = (settings.home / "logs" / "api.log").read_text()
    assert '" 401 ' not in api_log and '" 403 ' not in api_log and "rejected" not in api_log  # uvicorn's access log
    assert K1 not in api_log + r.stdout + r.stderr
