"""The command line as a user runs it: ``drawai up`` and ``drawai demo`` in real processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from PIL import Image

from models.platform.redisconn import free_port
from models.platform.settings import Settings


def env_for(settings: Settings) -> dict[str, str]:
    return {**os.environ, "DRAWAI_HOME": str(settings.home), "DRAWAI_REDIS_URL": str(settings.redis_url)}


def processes_of(home: Path) -> list[int]:
    """Pids of live processes started for this DRAWAI_HOME (read from their environment)."""
    needle = f"DRAWAI_HOME={home}".encode()
    pids = []
    for env in Path("/proc").glob("[0-9]*/environ"):
        try:
            if needle in env.read_bytes().split(b"\0") and int(env.parent.name) != os.getpid():
                pids.append(int(env.parent.name))
        except (OSError, ValueError):
            continue
    return pids


def test_up_serves_and_stops_cleanly_on_sigterm(settings: Settings) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "drawai.cli", "up", "--port", str(port)],
        env=env_for(settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            raise AssertionError("drawai up did not answer")
        assert httpx.get(f"http://127.0.0.1:{port}/jobs", timeout=5).json()["data"] == []
        assert len(processes_of(settings.home)) >= 3  # drawai up, its worker, its API
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
        leftovers = processes_of(settings.home)
    finally:
        proc.kill()
        for pid in processes_of(settings.home):  # never leak a worker into other tests
            os.kill(pid, signal.SIGKILL)
    assert proc.returncode == 0, out.decode()
    assert leftovers == [], "drawai up left processes running"
    log = out.decode()
    assert "worker: log in" in log and "api: log in" in log and "stack stopped" in log
    try:
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
        raise AssertionError("the API still answers after the stack stopped")
    except httpx.ConnectError:
        pass
    assert (settings.home / "logs" / "worker.log").is_file()


def test_demo_end_to_end(settings: Settings, tmp_path: Path) -> None:
    """The main job on real MRI slices, shortened to 2 epochs: every output is written."""
    out = tmp_path / "demo"
    cmd = [sys.executable, "-m", "drawai.cli", "demo", "--epochs", "2", "--out", str(out), "--port", str(free_port())]
    try:
        r = subprocess.run(
            cmd,
            env=env_for(settings),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert processes_of(settings.home) == [], "the demo left processes running"
    finally:
        for pid in processes_of(settings.home):
            os.kill(pid, signal.SIGKILL)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "45 real axial T1 slices" in r.stdout and "model v1 trained and active" in r.stdout
    assert "36 training, 9 held out for the quality report, 12 kept out beside the held-out slabs" in r.stdout
    pngs = sorted((out / "images").glob("*.png"))
    assert len(pngs) == 16
    manifest = json.loads((out / "images" / "manifest.json").read_text())
    assert manifest["model_version"] == "v1" and [i["seed"] for i in manifest["images"]] == list(range(16))
    img = Image.open(pngs[0])
    assert img.mode == "L" and img.size == (64, 64) and img.text["Synthetic"] == "true"
    assert Image.open(out / "grid.png").size[0] > 4 * 64
    assert (out / "training_samples.png").is_file()
    assert "quality of v1" in r.stdout and "c2st_auc" in r.stdout and "memorization" in r.stdout
    page = (out / "report.html").read_text()
    assert "Draw.AI quality report: model v1" in page and page.count("data:image/png;base64,") >= 6
