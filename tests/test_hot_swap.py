"""Hot-swapping model versions: under load, across processes, refusing broken models, without torch.

The API runs as real ``uvicorn`` server processes here (real sockets, real threads of clients);
every loop is bounded in count and time, and every process is killed in ``finally``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from models.gan.export import sha256_file
from models.platform.redisconn import free_port
from models.platform.settings import Settings
from models.platform.store import Store, atomic_write_bytes, atomic_write_json
from tests.conftest import publish_tiny_model, wait_for

ROOT = Path(__file__).resolve().parent.parent
STARTUP_TIMEOUT_S = 90.0  # a loaded 2-core machine imports FastAPI + ONNX Runtime slowly
WATCH_INTERVAL_S = 0.2


def api_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRAWAI_")}
    env.update(
        DRAWAI_HOME=str(settings.home),
        DRAWAI_REDIS_URL=str(settings.redis_url),
        DRAWAI_MODEL_WATCH_INTERVAL_S=str(WATCH_INTERVAL_S),
        DRAWAI_ONNX_PROVIDER="cpu",
        PYTHONPATH=str(ROOT),
    )
    return env


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    def tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-4000:]
        except OSError:
            return ""


@contextmanager
def api_server(settings: Settings, log: Path) -> Iterator[Server]:
    """``uvicorn --factory service.main:create_app`` on a free port; killed on exit, whatever happens."""
    port = free_port()
    cmd = [sys.executable, "-m", "uvicorn", "--factory", "service.main:create_app"]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=api_env(settings), stdout=out, stderr=subprocess.STDOUT)
    server = Server(proc, f"http://127.0.0.1:{port}", log)
    try:

        def up() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"the API exited with {proc.returncode}:\n{server.tail()}")
            try:
                return httpx.get(f"{server.url}/healthz", timeout=2.0).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(up, STARTUP_TIMEOUT_S, "the API to start")
        yield server
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=15)


def served_version(url: str, **params: Any) -> str:
    r = httpx.post(f"{url}/generate", params={"count": 1, **params}, timeout=30.0)
    assert r.status_code == 200, r.text
    return r.headers["x-drawai-model-version"]


@pytest.fixture
def two_versions(store: Store, model_version: str) -> tuple[str, str]:
    """v1 active and v2 published (not active) before any API starts."""
    v2 = publish_tiny_model(store, seed=1)
    assert (model_version, v2) == ("v1", "v2") and store.active_version() == "v1"
    return model_version, v2


# -- (a) hot swap under concurrent load -------------------------------------------------------------


@dataclass
class Outcome:
    started: float
    ended: float
    status: int | None  # None: the request failed without a response
    version: str | None
    error: str | None = None


def test_hot_swap_under_load_drops_nothing(two_versions: tuple[str, str], settings: Settings, tmp_path: Path) -> None:
    threads_n, max_requests, max_run_s = 8, 400, 60.0
    outcomes: list[Outcome] = []
    lock = threading.Lock()
    stop = threading.Event()

    with api_server(settings, tmp_path / "api.log") as server:

        def client_loop() -> None:
            deadline = time.monotonic() + max_run_s
            with httpx.Client(base_url=server.url, timeout=60.0) as http:
                for _ in range(max_requests):
                    if stop.is_set() or time.monotonic() > deadline:
                        return
                    t0 = time.monotonic()
                    try:
                        r = http.post("/generate", params={"count": 2})
                        o = Outcome(t0, time.monotonic(), r.status_code, r.headers.get("x-drawai-model-version"))
                        if r.status_code != 200:
                            o.error = r.text[:300]
                    except httpx.HTTPError as exc:
                        o = Outcome(t0, time.monotonic(), None, None, repr(exc))
                    with lock:
                        outcomes.append(o)

        def done(after: float, each: int) -> bool:
            with lock:
                return sum(o.started > after for o in outcomes) >= each

        workers = [threading.Thread(target=client_loop, daemon=True) for _ in range(threads_n)]
        try:
            for t in workers:
                t.start()
            wait_for(lambda: done(0.0, 3 * threads_n), 60, "requests before the swap")
            t_activate = time.monotonic()
            r = httpx.post(f"{server.url}/models/v2/activate", timeout=60.0)
            t_activated = time.monotonic()
            assert r.status_code == 200, r.text
            assert r.json()["version"] == "v2"
            wait_for(lambda: done(t_activated, 3 * threads_n), 60, "requests after the swap")
        finally:
            stop.set()
            for t in workers:
                t.join(timeout=90)
        assert not any(t.is_alive() for t in workers)

    failed = [o for o in outcomes if o.status != 200]
    assert not failed, f"{len(failed)} of {len(outcomes)} requests failed: {failed[:5]}"
    before = [o.version for o in outcomes if o.ended < t_activate]
    after = [o.version for o in outcomes if o.started > t_activated]
    during = {o.version for o in outcomes if o.ended >= t_activate and o.started <= t_activated}
    assert len(before) >= 3 * threads_n and len(after) >= 3 * threads_n
    assert set(before) == {"v1"}
    assert set(after) == {"v2"}
    assert during <= {"v1", "v2"}
    assert Store(settings.home).active_version() == "v2"


# -- (b) two API processes on one store -------------------------------------------------------------


def test_activation_through_one_process_reaches_another(
    two_versions: tuple[str, str], settings: Settings, tmp_path: Path
) -> None:
    with (
        api_server(settings, tmp_path / "api-a.log") as a,
        api_server(settings, tmp_path / "api-b.log") as b,
    ):
        assert served_version(a.url) == "v1" and served_version(b.url) == "v1"
        pid_b = b.proc.pid
        r = httpx.post(f"{a.url}/models/v2/activate", timeout=60.0)
        assert r.status_code == 200, r.text
        assert served_version(a.url) == "v2"
        # B follows the store's ACTIVE pointer (checked every 0.2 s): it should take well under 2 s;
        # the bound is generous because a loaded CI machine may stall any process for a while.
        t0 = time.monotonic()
        wait_for(lambda: served_version(b.url) == "v2", 15.0, "process B to serve v2")
        took = time.monotonic() - t0
        assert b.proc.poll() is None and b.proc.pid == pid_b  # no restart
        assert served_version(b.url, seed=3) == "v2"
        print(f"process B served v2 {took:.2f} s after the activation through A")


# -- (c) broken models are refused ------------------------------------------------------------------


def _rewrite_manifest_sha(store: Store, version: str) -> None:
    """Make the manifest agree with whatever generator.onnx now holds (so only ONNX Runtime can refuse it)."""
    path = store.model_dir(version) / "model.json"
    manifest = json.loads(path.read_text())
    manifest["onnx_sha256"] = sha256_file(store.model_dir(version) / "generator.onnx")
    atomic_write_json(path, manifest)


def _truncate(store: Store, onnx: Path, other: Path) -> None:
    atomic_write_bytes(onnx, onnx.read_bytes()[: onnx.stat().st_size // 2])


def _flip_bytes(store: Store, onnx: Path, other: Path) -> None:
    data = bytearray(onnx.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 64] = bytes(b ^ 0xFF for b in data[mid : mid + 64])
    atomic_write_bytes(onnx, bytes(data))


def _garbage_with_matching_sha(store: Store, onnx: Path, other: Path) -> None:
    atomic_write_bytes(onnx, b"this is not an ONNX model" * 100)
    _rewrite_manifest_sha(store, onnx.parent.name)


def _swapped_for_another_valid_model(store: Store, onnx: Path, other: Path) -> None:
    shutil.copyfile(other, onnx)  # a perfectly loadable file, but not the one the manifest describes


@pytest.mark.parametrize(
    ("corrupt", "reason"),
    [
        (_truncate, "sha256"),
        (_flip_bytes, "sha256"),
        (_garbage_with_matching_sha, "ONNX Runtime cannot load"),
        (_swapped_for_another_valid_model, "sha256"),
    ],
)
def test_broken_model_is_refused_and_the_active_one_keeps_serving(
    model_version: str, store: Store, settings: Settings, corrupt: Callable[[Store, Path, Path], None], reason: str
) -> None:
    v2 = publish_tiny_model(store, seed=1)
    v3 = publish_tiny_model(store, seed=2)
    onnx = store.model_dir(v2) / "generator.onnx"
    other = store.model_dir(v3) / "generator.onnx"
    assert sha256_file(onnx) != sha256_file(other)
    corrupt(store, onnx, other)
    assert store.active_version() == "v1"

    fast_watch = settings.model_copy(update={"model_watch_interval_s": WATCH_INTERVAL_S})
    from service.main import create_app

    with TestClient(create_app(fast_watch)) as client:
        baseline = client.post("/generate", params={"seed": 8})
        assert baseline.status_code == 200

        r = client.post(f"/models/{v2}/activate")
        assert r.status_code == 409, r.text
        assert "v2" in r.json()["detail"] and reason in r.json()["detail"]
        assert store.active_version() == "v1"
        g = client.post("/generate", params={"seed": 8})
        assert g.status_code == 200
        assert g.headers["x-drawai-model-version"] == "v1"
        assert g.content == baseline.content
        assert [m["active"] for m in client.get("/models").json()["data"]] == [True, False, False]

        # Pinning the broken version is refused too, as a conflict, not a server error.
        pinned = client.post("/generate", params={"model": v2})
        assert pinned.status_code == 409, pinned.text

        # The store's ACTIVE pointer moved to it behind the API's back (another tool, another host):
        # the watcher refuses to load it and this process keeps serving v1.
        store.set_active(v2)
        time.sleep(5 * WATCH_INTERVAL_S)
        g = client.post("/generate", params={"seed": 8})
        assert g.status_code == 200 and g.headers["x-drawai-model-version"] == "v1"
        assert g.content == baseline.content

        # A valid version still activates afterwards.
        assert client.post(f"/models/{v3}/activate").status_code == 200
        assert client.post("/generate").headers["x-drawai-model-version"] == v3


def test_corrupt_manifest_is_refused_with_409(model_version: str, store: Store, client: TestClient) -> None:
    v2 = publish_tiny_model(store, seed=1)
    atomic_write_bytes(store.model_dir(v2) / "model.json", b'{"version": "v2", "truncated')
    r = client.post(f"/models/{v2}/activate")
    assert r.status_code == 409, r.text
    assert store.active_version() == "v1"
    assert client.post("/generate").headers["x-drawai-model-version"] == "v1"
    assert client.get(f"/models/{v2}").status_code == 409  # reported, never a 500
    assert [m["version"] for m in client.get("/models").json()["data"]] == ["v1"]  # the damaged one is left out


def test_watcher_never_undoes_a_concurrent_activation(two_versions: tuple[str, str], store: Store) -> None:
    """The watcher read ACTIVE=v1 and was loading it when v2 got activated here: v2 must stay active."""
    from service.inference import LoadedModel, ModelHolder, Preferences

    loading, release = threading.Event(), threading.Event()

    class SlowToLoadV1(ModelHolder):
        def get(self, version: str) -> LoadedModel:
            if version == "v1":
                loading.set()
                assert release.wait(60)
            return super().get(version)

    holder = SlowToLoadV1(store, Preferences())
    watcher = threading.Thread(target=holder.load_active, daemon=True)
    watcher.start()
    try:
        assert loading.wait(60)
        assert holder.activate("v2").version == "v2"
    finally:
        release.set()
        watcher.join(60)
    assert not watcher.is_alive()
    assert holder.active is not None and holder.active.version == "v2"
    assert store.active_version() == "v2"
    assert holder.load_active() is holder.active  # and the next tick agrees


def test_broken_active_version_is_not_retried_until_its_files_change(
    two_versions: tuple[str, str], store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    from service.inference import ModelHolder, Preferences

    holder = ModelHolder(store, Preferences())
    assert holder.load_active() is not None and holder.active is not None and holder.active.version == "v1"
    onnx = store.model_dir("v2") / "generator.onnx"
    good = onnx.read_bytes()
    atomic_write_bytes(onnx, good[:100])
    store.set_active("v2")
    with caplog.at_level("ERROR", logger="service.inference"):
        for _ in range(5):  # five watcher ticks: one refusal logged, not five re-hashes
            assert holder.load_active() is not None and holder.active.version == "v1"
    assert holder.load_error and "v2" in holder.load_error
    assert sum("cannot load active model v2" in r.getMessage() for r in caplog.records) == 1
    atomic_write_bytes(onnx, good)  # repaired: the next tick picks it up
    assert holder.load_active() is not None and holder.active.version == "v2"
    assert holder.load_error is None


# -- (d) the API never needs torch ------------------------------------------------------------------

NO_TORCH_SCRIPT = textwrap.dedent(
    """
    import importlib.abc
    import sys

    blocked = []

    class NoTorch(importlib.abc.MetaPathFinder):
        # Every import of torch (or a torch submodule) fails, as on the API image without PyTorch.
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                blocked.append(name)
                raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)", name=name)
            return None

    sys.meta_path.insert(0, NoTorch())

    from fastapi.testclient import TestClient

    from models.platform.settings import Settings
    from service.main import create_app

    settings = Settings(home=sys.argv[1], redis_url=sys.argv[2], _env_file=None)
    with TestClient(create_app(settings)) as client:
        r = client.post("/generate", params={"count": 1, "seed": 5, "format": "png"})
        assert r.status_code == 200, r.text
        assert r.content.startswith(b"\\x89PNG"), r.content[:16]
        assert r.headers["x-drawai-model-version"] == "v1"
        for fmt in ("zip", "json", "npy", "grid"):
            r = client.post("/generate", params={"count": 3, "format": fmt})
            assert r.status_code == 200, (fmt, r.text)
        assert client.get("/models").status_code == 200
        assert client.post("/models/v1/activate").status_code == 200
    assert "torch" not in sys.modules, "torch got imported"
    leaked = sorted(m for m in sys.modules if m == "worker" or m.startswith("worker."))
    assert not leaked, f"the API imported the worker: {leaked}"
    print("torch-free OK; blocked import attempts:", blocked)
    """
)


def test_api_serves_with_torch_unimportable(model_version: str, settings: Settings, tmp_path: Path) -> None:
    script = tmp_path / "no_torch.py"
    script.write_text(NO_TORCH_SCRIPT)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRAWAI_")}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run(
        [sys.executable, str(script), str(settings.home), str(settings.redis_url)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "torch-free OK" in proc.stdout
