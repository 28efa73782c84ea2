"""Several uvicorn worker processes (``DRAWAI_API_WORKERS``): every scrape sums every process's requests."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import httpx

from models.platform.redisconn import free_port
from models.platform.settings import Settings
from tests.conftest import wait_for, worker_env

REQUESTS = 60


def healthz_count(text: str) -> float:
    m = re.search(r'^drawai_http_requests_total\{[^}]*route="/healthz"[^}]*status="200"[^}]*\} (\S+)$', text, re.M)
    return float(m.group(1)) if m else 0.0


def test_two_api_processes_report_one_total(settings: Settings, tmp_path: Path) -> None:
    port = free_port()
    metrics_dir = tmp_path / "metrics"
    env = {**worker_env(settings), "DRAWAI_API_WORKERS": "2", "DRAWAI_METRICS_DIR": str(metrics_dir)}
    cmd = [sys.executable, "-m", "drawai.cli", "api", "--host", "127.0.0.1", "--port", str(port)]
    api = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:

        def up() -> bool:
            try:
                return httpx.get(f"{url}/readyz", timeout=2).status_code in (200, 503)
            except httpx.HTTPError:
                return False

        wait_for(up, 90, "the API")
        before = healthz_count(httpx.get(f"{url}/metrics", timeout=10).text)
        for _ in range(REQUESTS):  # a new connection each time: the kernel spreads them over both processes
            with httpx.Client(base_url=url, timeout=10) as c:
                assert c.get("/healthz").status_code == 200
        pids = {p.name.rsplit("_", 1)[-1] for p in metrics_dir.glob("counter_*.db")}
        assert len(pids) == 2, f"requests were answered by {len(pids)} process(es), expected both"
        for _ in range(6):  # whichever process answers the scrape, it reports every process's requests
            with httpx.Client(base_url=url, timeout=10) as c:
                assert healthz_count(c.get("/metrics").text) == before + REQUESTS
    finally:
        api.terminate()
        try:
            api.wait(timeout=30)
        except subprocess.TimeoutExpired:
            api.kill()
            api.wait()
