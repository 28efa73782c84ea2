"""Prometheus metrics of the API: requests, generation, inference batches, jobs, the active model.

Every app gets its own ``CollectorRegistry`` (``ApiMetrics.registry``), so several apps in one
process (tests) never collide and ``/metrics`` shows only this app's series. Request metrics come
from a pure ASGI middleware that never touches response bodies; their ``route`` label is the
route *template* (``/jobs/{job_id}``), never the raw path, and ``unmatched`` for unknown paths,
so the label set stays bounded whatever clients send.

``drawai_jobs``, ``drawai_queue_depth``, ``drawai_workers`` and ``drawai_active_model_info`` are
computed at scrape time by custom collectors. A collector that fails (Redis down) is skipped and
logged; ``/metrics`` still answers.

With several uvicorn worker processes (``DRAWAI_API_WORKERS``), ``drawai api`` sets
prometheus_client's multiprocess folder before they start: counters and histograms are then
written to files there, and a scrape of any process sums every process's values
(``MultiProcessCollector``), so rates stay right whichever process answers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, values
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from service import queue as jobq

if TYPE_CHECKING:
    from rq import Queue
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from service.inference import ModelHolder

log = logging.getLogger(__name__)

JOB_STATUSES = ("queued", "started", "finished", "failed", "canceled")
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
INFERENCE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
UNMATCHED = "unmatched"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class JobsCollector(Collector):
    """``drawai_jobs{status}``: the jobs the API lists, by status; all five statuses always present."""

    def __init__(self, queue: Callable[[], Queue | None]) -> None:
        self._queue = queue

    def collect(self) -> Iterable[Metric]:
        queue = self._queue()
        if queue is None:  # before the lifespan has opened the queue
            return []
        try:
            counts = dict.fromkeys(JOB_STATUSES, 0)
            for job in jobq.list_jobs(queue):
                status = jobq.status_of(job)
                if status in counts:
                    counts[status] += 1
        except Exception as exc:  # Redis down: skip this metric, never fail the scrape
            log.warning("metrics: cannot read jobs, drawai_jobs skipped: %s", exc)
            return []
        family = GaugeMetricFamily("drawai_jobs", "Training jobs known to the API, by status.", labels=["status"])
        for name, n in counts.items():
            family.add_metric([name], n)
        return [family]


WORKER_STATES = ("idle", "busy", "suspended", "started")


class QueueCollector(Collector):
    """``drawai_queue_depth{queue}`` (jobs waiting in each RQ queue) and ``drawai_workers{state}``."""

    def __init__(self, queue: Callable[[], Queue | None]) -> None:
        self._queue = queue

    def collect(self) -> Iterable[Metric]:
        from rq import Queue, Worker

        queue = self._queue()
        if queue is None:
            return []
        try:
            queues = {q.name: q for q in Queue.all(connection=queue.connection)}
            queues.setdefault(queue.name, queue)  # the training queue is listed even before its first job
            depths = {name: q.count for name, q in sorted(queues.items())}
            states = dict.fromkeys(WORKER_STATES, 0)
            for w in Worker.all(connection=queue.connection):
                state = str(w.get_state())
                states[state] = states.get(state, 0) + 1
        except Exception as exc:  # Redis down
            log.warning("metrics: cannot read queues, drawai_queue_depth and drawai_workers skipped: %s", exc)
            return []
        depth = GaugeMetricFamily("drawai_queue_depth", "Jobs waiting in each RQ queue.", labels=["queue"])
        for name, n in depths.items():
            depth.add_metric([name], n)
        workers = GaugeMetricFamily("drawai_workers", "RQ workers registered in Redis, by state.", labels=["state"])
        for state, n in states.items():
            workers.add_metric([state], n)
        return [depth, workers]


class ActiveModelCollector(Collector):
    """``drawai_active_model_info{version,provider,engine,precision,streams} 1`` and ``drawai_active_model_loaded``
    (1 or 0)."""

    def __init__(self, models: Callable[[], ModelHolder | None]) -> None:
        self._models = models

    def collect(self) -> Iterable[Metric]:
        holder = self._models()
        active = holder.active if holder is not None else None
        loaded = GaugeMetricFamily("drawai_active_model_loaded", "1 when this process serves an active model, else 0.")
        loaded.add_metric([], 1 if active is not None else 0)
        out: list[Metric] = [loaded]
        if active is not None:
            info = GaugeMetricFamily(
                "drawai_active_model_info",
                "The model version this process serves, the engine, precision and streams calibration chose, and the "
                "device it runs on (always 1).",
                labels=["version", "provider", "engine", "precision", "streams"],
            )
            serving = active.serving
            info.add_metric(
                [active.version, active.provider, serving.engine, serving.precision, str(serving.streams)], 1
            )
            out.append(info)
        return out


class ApiMetrics:
    """This app's registry and the metrics recorded by the middleware, the batcher and the routes."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.queue: Queue | None = None
        self.models: ModelHolder | None = None
        r = self.registry
        self.http_requests = Counter(
            "drawai_http_requests", "HTTP requests answered, by method, route template and status.",
            ["method", "route", "status"], registry=r,
        )  # fmt: skip
        self.http_request_duration = Histogram(
            "drawai_http_request_duration_seconds", "Time to answer an HTTP request, by method and route template.",
            ["method", "route"], registry=r,
        )  # fmt: skip
        self.images_generated = Counter(
            "drawai_images_generated", "Synthetic images returned by POST /generate, by model version.",
            ["model_version"], registry=r,
        )  # fmt: skip
        self.generate_rejected = Counter(
            "drawai_generate_rejected", "POST /generate requests answered 429 (DRAWAI_MAX_QUEUED_ROWS reached).",
            registry=r,
        )  # fmt: skip
        self.batch_size = Histogram(
            "drawai_generation_batch_size", "Latent rows per batched inference call.",
            buckets=BATCH_SIZE_BUCKETS, registry=r,
        )  # fmt: skip
        self.inference_duration = Histogram(
            "drawai_inference_duration_seconds", "Time of one batched ONNX Runtime inference call.",
            buckets=INFERENCE_BUCKETS, registry=r,
        )  # fmt: skip
        # Computed at scrape time; in multiprocess mode they join the files' values on a fresh registry.
        self.scrape_collectors: list[Collector] = [
            JobsCollector(lambda: self.queue),
            QueueCollector(lambda: self.queue),
            ActiveModelCollector(lambda: self.models),
        ]
        for collector in self.scrape_collectors:
            r.register(collector)

    def bind(self, queue: Queue, models: ModelHolder) -> None:
        """Give the scrape-time collectors what the lifespan opened."""
        self.queue, self.models = queue, models

    def observe_batch(self, rows: int, seconds: float) -> None:
        """The ``DynamicBatcher`` observer: one call per inference batch."""
        self.batch_size.observe(rows)
        self.inference_duration.observe(seconds)

    def record_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """One answered HTTP request (``route``: the route template, or ``unmatched``)."""
        method = method if method in _METHODS else "other"
        self.http_requests.labels(method=method, route=route, status=str(status)).inc()
        self.http_request_duration.labels(method=method, route=route).observe(seconds)

    def count_images(self, model_version: str, count: int) -> None:
        self.images_generated.labels(model_version=model_version).inc(count)


def route_template(scope: Scope) -> str:
    """The template of the route the router matched (``/jobs/{job_id}``), or ``unmatched``."""
    route = scope.get("route")
    if route is None:
        return UNMATCHED
    template = getattr(route, "path_format", None) or getattr(route, "path", None)
    return template if isinstance(template, str) and template else UNMATCHED


class RequestMetricsMiddleware:
    """Pure ASGI middleware: counts and times every HTTP request; bodies pass through untouched."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # an exception escaping the app becomes a 500 in ServerErrorMiddleware
        t0 = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self._record(scope, status, time.perf_counter() - t0)

    def _record(self, scope: Scope, status: int, seconds: float) -> None:
        self.metrics.record_request(scope.get("method", "GET"), route_template(scope), status, seconds)


def multiprocess_mode() -> bool:
    """Whether prometheus_client keeps values in multiprocess files (it decides once, at import)."""
    return values.ValueClass is not values.MutexValue


def exposition(metrics: ApiMetrics) -> tuple[bytes, str]:
    """The body and content type of ``GET /metrics``: this process's registry, or every process's values."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    if not multiprocess_mode():
        return generate_latest(metrics.registry), CONTENT_TYPE_LATEST
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    for collector in metrics.scrape_collectors:
        registry.register(collector)
    return generate_latest(registry), CONTENT_TYPE_LATEST
