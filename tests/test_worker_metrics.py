"""Metrics beyond the API's: a real worker's own /metrics while it trains, queue depth and workers by state."""

from __future__ import annotations

import math
import re
import shutil
import signal
import subprocess

import httpx
from fastapi.testclient import TestClient

from models.platform.redisconn import free_port
from models.platform.settings import Settings
from models.platform.store import Store
from tests.conftest import blobs, put_dataset, spawn_worker, wait_for
from tests.test_jobs import TINY, kill_worker


def samples(text: str, name: str) -> dict[str, float]:
    """``{label string: value}`` of one metric in Prometheus text format."""
    out = {}
    for m in re.finditer(rf"^{name}(\{{[^}}]*\}})? (\S+)$", text, re.M):
        out[m.group(1) or ""] = float(m.group(2))
    return out


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Warm shutdown (SIGTERM); a worker still busy after 30 s is killed with its work horse."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        kill_worker(proc)


def test_worker_serves_training_progress_and_job_durations(
    client: TestClient, store: Store, settings: Settings
) -> None:
    ds = put_dataset(store, blobs(32))
    job_id = client.post("/jobs/train", json={**TINY, "dataset": ds.id, "epochs": 400}).json()["id"]
    port = free_port()
    worker = spawn_worker(settings, burst=False, metrics_port=port)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _get(f"{url}/healthz") == 200, 60, "the worker's /healthz")

        def training() -> str | None:
            text = httpx.get(f"{url}/metrics", timeout=5).text
            steps = samples(text, "drawai_training_step")
            return text if steps and max(steps.values()) >= 3 else None

        text = wait_for(training, 120, "training gauges on the worker's /metrics")
        (labels,) = samples(text, "drawai_training_step")
        assert f'job_id="{job_id}"' in labels and 'worker="' in labels
        assert samples(text, "drawai_training_steps")[labels] == 400 * 4  # 32 images, batch 8
        assert samples(text, "drawai_training_epochs")[labels] == 400
        assert 0 < samples(text, "drawai_training_progress_ratio")[labels] < 1
        assert samples(text, "drawai_training_images_per_second")[labels] > 0
        losses = samples(text, "drawai_training_loss")
        assert {re.search(r'network="(\w+)"', k).group(1) for k in losses} == {"discriminator", "generator"}  # type: ignore[union-attr]
        assert all(math.isfinite(v) for v in losses.values())  # the hinge loss of G may be negative
        if shutil.which("nvidia-smi") is None:  # no GPU here: no GPU series, and no error either
            assert "drawai_gpu_memory" not in text

        # The API sees the busy worker and an empty queue.
        api = client.get("/metrics").text
        assert samples(api, "drawai_workers")['{state="busy"}'] == 1
        assert samples(api, "drawai_queue_depth")['{queue="train"}'] == 0

        assert client.delete(f"/jobs/{job_id}").status_code in (200, 202)
        wait_for(lambda: client.get(f"/jobs/{job_id}").json()["status"] == "canceled", 60, "the job to stop")

        def recorded() -> str | None:
            text = httpx.get(f"{url}/metrics", timeout=5).text
            return text if samples(text, "drawai_job_duration_seconds_count").get('{outcome="canceled"}') else None

        text = wait_for(recorded, 30, "the job's duration")
        counts = samples(text, "drawai_job_duration_seconds_count")
        assert counts == {'{outcome="finished"}': 0, '{outcome="failed"}': 0, '{outcome="canceled"}': 1}
        assert samples(text, "drawai_job_duration_seconds_sum")['{outcome="canceled"}'] > 0
        assert not samples(text, "drawai_training_step")  # idle again: no training series
        assert httpx.get(f"{url}/nope", timeout=5).status_code == 404
    finally:
        stop(worker)


def test_api_exports_queue_depth_and_workers_by_state(client: TestClient, store: Store) -> None:
    ds = put_dataset(store, blobs(16))
    for _ in range(3):
        assert client.post("/jobs/train", json={**TINY, "dataset": ds.id}).status_code == 202
    text = client.get("/metrics").text
    assert samples(text, "drawai_queue_depth") == {'{queue="train"}': 3}
    assert samples(text, "drawai_workers") == {f'{{state="{s}"}}': 0 for s in ("idle", "busy", "suspended", "started")}


def _get(url: str) -> int:
    try:
        return httpx.get(url, timeout=2).status_code
    except httpx.HTTPError:
        return 0
