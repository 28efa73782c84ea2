"""The worker's own Prometheus endpoint: the running job's training progress, job durations, GPU memory.

``drawai worker`` serves ``/metrics`` and ``/healthz`` on ``DRAWAI_WORKER_METRICS_PORT`` from a
daemon thread of the worker's parent process (the one that never imports torch). What it shows:

- ``drawai_training_{epoch,epochs,step,steps,progress_ratio,images_per_second}{worker,job_id}``
  and ``drawai_training_loss{worker,job_id,network}``: read at scrape time from the progress the
  running job's work horse writes to Redis (``job.meta["progress"]``); absent while idle.
- ``drawai_job_duration_seconds{outcome}``: a histogram observed by the parent when a work
  horse ends (``finished``, ``failed``, ``canceled``).
- ``drawai_gpu_memory_{used,total}_bytes{gpu}``: from NVML (``nvidia-ml-py``), which never
  initialises CUDA; absent on a machine without an NVIDIA GPU.

``/healthz`` answers 200 while Redis answers, 503 otherwise.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Histogram, make_wsgi_app
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

# Training jobs run from minutes to days.
DURATION_BUCKETS = (10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800, 86400, 172800, 604800)
OUTCOMES = ("finished", "failed", "canceled")
_PROGRESS_GAUGES = (
    ("epoch", "drawai_training_epoch", "Epoch the running job is in."),
    ("epochs", "drawai_training_epochs", "Epochs the running job trains for."),
    ("step", "drawai_training_step", "Optimizer steps the running job has taken."),
    ("steps", "drawai_training_steps", "Optimizer steps the running job takes in all."),
    ("images_per_s", "drawai_training_images_per_second", "Training throughput of the running job."),
)


class TrainingCollector(Collector):
    """The running job's progress, as its work horse last reported it (nothing while idle)."""

    def __init__(self, current_job: Callable[[], Any], worker_name: Callable[[], str]) -> None:
        self._current_job = current_job
        self._worker_name = worker_name

    def collect(self) -> Iterable[Metric]:
        try:
            job = self._current_job()
        except Exception as exc:  # Redis down: skip these series, never fail the scrape
            log.warning("metrics: cannot read the current job: %s", exc)
            return []
        if job is None:
            return []
        try:
            meta = job.get_meta(refresh=True)  # RQ caches the current Job: its meta is as of when it started
        except Exception as exc:
            log.warning("metrics: cannot read the running job's progress: %s", exc)
            return []
        progress = (meta or {}).get("progress") or {}
        labels = [self._worker_name(), job.id]
        out: list[Metric] = []
        for key, name, doc in _PROGRESS_GAUGES:
            if isinstance(progress.get(key), int | float):
                family = GaugeMetricFamily(name, doc, labels=["worker", "job_id"])
                family.add_metric(labels, float(progress[key]))
                out.append(family)
        if progress.get("steps"):
            ratio = GaugeMetricFamily(
                "drawai_training_progress_ratio", "Share of its steps the running job has taken (0-1).",
                labels=["worker", "job_id"],
            )  # fmt: skip
            ratio.add_metric(labels, float(progress.get("step") or 0) / float(progress["steps"]))
            out.append(ratio)
        loss = GaugeMetricFamily(
            "drawai_training_loss", "Last discriminator and generator loss of the running job.",
            labels=["worker", "job_id", "network"],
        )  # fmt: skip
        for key, network in (("d_loss", "discriminator"), ("g_loss", "generator")):
            if isinstance(progress.get(key), int | float):
                loss.add_metric([*labels, network], float(progress[key]))
        if loss.samples:
            out.append(loss)
        return out


class GpuCollector(Collector):
    """Memory of each NVIDIA GPU, through NVML; nothing when there is no GPU or no driver."""

    def __init__(self) -> None:
        self._nvml: Any = None
        try:
            import pynvml

            pynvml.nvmlInit()
            self._count = int(pynvml.nvmlDeviceGetCount())
            self._nvml = pynvml
            log.info("GPU metrics for %d device(s)", self._count)
        except Exception as exc:  # no package, no driver, no device
            log.info("no GPU metrics: %s", exc)

    @property
    def available(self) -> bool:
        return self._nvml is not None

    def collect(self) -> Iterable[Metric]:
        if self._nvml is None:
            return []
        used = GaugeMetricFamily("drawai_gpu_memory_used_bytes", "GPU memory in use (all processes).", labels=["gpu"])
        total = GaugeMetricFamily("drawai_gpu_memory_total_bytes", "GPU memory in all.", labels=["gpu"])
        try:
            for i in range(self._count):
                info = self._nvml.nvmlDeviceGetMemoryInfo(self._nvml.nvmlDeviceGetHandleByIndex(i))
                used.add_metric([str(i)], float(info.used))
                total.add_metric([str(i)], float(info.total))
        except Exception as exc:
            log.warning("metrics: cannot read GPU memory: %s", exc)
            return []
        return [used, total]


class WorkerMetrics:
    """The worker's registry: the collectors above and the job-duration histogram."""

    def __init__(self, current_job: Callable[[], Any], worker_name: Callable[[], str]) -> None:
        self.registry = CollectorRegistry()
        self.job_duration = Histogram(
            "drawai_job_duration_seconds", "Wall time of a training job's run in a work horse, by outcome.",
            ["outcome"], buckets=DURATION_BUCKETS, registry=self.registry,
        )  # fmt: skip
        for outcome in OUTCOMES:
            self.job_duration.labels(outcome=outcome)  # every outcome present from the start
        self.registry.register(TrainingCollector(current_job, worker_name))
        self.gpu = GpuCollector()
        self.registry.register(self.gpu)

    def observe_job(self, outcome: str, seconds: float) -> None:
        self.job_duration.labels(outcome=outcome if outcome in OUTCOMES else "failed").observe(seconds)


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # one line per scrape would flood the worker log
        pass


def serve(metrics: WorkerMetrics, healthy: Callable[[], bool], port: int, host: str = "0.0.0.0") -> WSGIServer:
    """Serve ``/metrics`` and ``/healthz`` on ``host:port`` from a daemon thread; returns the server."""
    metrics_app = make_wsgi_app(metrics.registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path == "/healthz":
            ok = healthy()
            status = "200 OK" if ok else "503 Service Unavailable"
            start_response(status, [("Content-Type", "application/json")])
            return [json.dumps({"status": "ok" if ok else "redis unreachable"}).encode()]
        if path in ("/metrics", "/"):
            return metrics_app(environ, start_response)
        start_response("404 Not Found", [("Content-Type", "application/json")])
        return [b'{"detail": "not found: use /metrics or /healthz"}']

    server = make_server(host, port, app, server_class=_Server, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="drawai-worker-metrics", daemon=True).start()
    log.info("worker metrics on http://%s:%d/metrics", host, server.server_port)
    return server
