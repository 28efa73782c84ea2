"""A local ``drawai up`` for the load and soak benchmarks: its own store, Redis and port; its processes.

``build_home`` publishes ``versions`` copies of a benchmark model (``bench_model.py``: ``demo``, the
64 px ``dcgan`` that ``make demo`` trains, or the report's ``dcgan-seed``, 128 px) in a child
process, so the scripts that import locust (gevent) never import PyTorch. ``LocalStack.start`` runs
``python -m drawai.cli up`` on a free port against an embedded Redis of the store (never a
developer's database) with the given ``DRAWAI_*`` settings, and waits for ``/readyz``.
``api_processes`` are the processes that answer HTTP: the ``drawai api`` process itself with one
worker, its uvicorn worker processes with ``DRAWAI_API_WORKERS`` > 1.

    python benchmarks/bench_stack.py publish HOME N MODEL    # what build_home runs
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
from redis import Redis

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
STARTUP_TIMEOUT_S = 180.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def build_home(home: Path, versions: int = 1, model: str = "demo") -> None:
    """``versions`` copies of a benchmark model (``demo`` or ``dcgan-seed``) in a new store, the last active."""
    cmd = [sys.executable, str(HERE / "bench_stack.py"), "publish", str(home), str(versions), model]
    subprocess.run(cmd, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT)


def _publish(home: Path, versions: int, model: str) -> None:
    sys.path.insert(0, str(HERE))
    from bench_model import SPECS, publish_bench_model

    from models.platform.store import Store

    store = Store(home).ensure()
    for _ in range(versions):
        publish_bench_model(store, SPECS[model])


@dataclass
class LocalStack:
    home: Path
    settings: dict[str, str] = field(default_factory=dict)  # DRAWAI_* overrides
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    redis_url: str = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        from models.platform.redisconn import start_embedded

        self.redis_url = start_embedded(self.home / "redis")
        self.port = free_port()
        env = {**os.environ, "PYTHONPATH": str(ROOT), "DRAWAI_HOME": str(self.home), "DRAWAI_REDIS_URL": self.redis_url}
        env["DRAWAI_WORKER_METRICS_PORT"] = "0"  # the stack's training worker idles here; no port to clash
        env.update(self.settings)
        cmd = [sys.executable, "-m", "drawai.cli", "--log-level", "WARNING", "up", "--port", str(self.port)]
        with open(self.home / "up.log", "wb") as out:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not self._ready():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"drawai up did not become ready; see {self.home / 'logs'} and {self.home}/up.log")
            time.sleep(0.3)

    def _ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/readyz", timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    def api_root(self) -> psutil.Process:
        assert self.proc is not None
        for child in psutil.Process(self.proc.pid).children():
            if "api" in child.cmdline():
                return child
        raise RuntimeError("drawai up has no API process")

    def api_processes(self) -> list[psutil.Process]:
        """The processes that serve HTTP (uvicorn's workers, or the single API process)."""
        root = self.api_root()
        workers = [p for p in root.children() if any("spawn_main" in a for a in p.cmdline())]
        return workers or [root]

    def redis_memory(self) -> int:
        conn = Redis.from_url(self.redis_url)
        try:
            return int(conn.info("memory")["used_memory"])  # type: ignore[index]
        finally:
            conn.close()

    def stop(self) -> None:
        from models.platform.redisconn import stop_embedded

        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        stop_embedded(self.home / "redis")


def rss_mb(proc: psutil.Process) -> float:
    return proc.memory_info().rss / 2**20


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "publish":
        _publish(Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
    else:
        sys.exit(__doc__)
