"""The worker process: an RQ worker on the ``train`` queue (``drawai worker``).

This process never imports torch: each job runs in a forked work horse that imports it, so
CUDA is never initialised in a process that later forks. It serves its own ``/metrics`` and
``/healthz`` (``worker.metrics``) on ``DRAWAI_WORKER_METRICS_PORT``.
"""

from __future__ import annotations

import logging
import time
from typing import Any
from wsgiref.simple_server import WSGIServer

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq import Queue, Worker
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus

from models.redisconn import connect
from models.settings import Settings
from models.store import Store
from worker.metrics import WorkerMetrics, serve

log = logging.getLogger(__name__)


def outcome_of(job: Job) -> str:
    """``finished``, ``canceled`` or ``failed`` (a failed run that RQ will retry counts as failed)."""
    try:
        job.refresh()
        status = job.get_status()
    except (NoSuchJobError, RedisError):
        return "failed"
    if job.meta.get("canceled") or status in (JobStatus.STOPPED, JobStatus.CANCELED):
        return "canceled"
    return "finished" if status == JobStatus.FINISHED else "failed"


class DrawaiWorker(Worker):
    """RQ's forking worker with a configurable heartbeat grace, and job durations for its metrics.

    RQ lets a running job's heartbeat lapse ``monitoring interval + 60 s`` before another worker
    treats it as abandoned and retries it; a shorter grace lets a killed job resume sooner.
    """

    heartbeat_grace_s = 60
    metrics: WorkerMetrics | None = None
    metrics_server: WSGIServer | None = None

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        ttl = super().get_heartbeat_ttl(job, working_time)
        return int(ttl - 60 + self.heartbeat_grace_s)

    def maintain_heartbeats(self, job: Job, execution: Any) -> None:
        """RQ's heartbeats while the horse works; a Redis outage is waited out, never fatal.

        RQ would let the exception end the worker, and with it the training in progress. The horse
        keeps training (and checkpointing) through the outage; heartbeats resume when Redis is back.
        """
        try:
            super().maintain_heartbeats(job, execution)
        except (RedisConnectionError, RedisTimeoutError) as exc:
            log.warning(
                "job %s: Redis unreachable (%s); training goes on, heartbeats resume when it is back", job.id, exc
            )

    def execute_job(self, job: Job, queue: Queue) -> None:
        """Run the job in a work horse (RQ), then record how long it took and how it ended."""
        started = time.monotonic()
        try:
            super().execute_job(job, queue)
        finally:
            if self.metrics is not None:
                self.metrics.observe_job(outcome_of(job), time.monotonic() - started)

    def main_work_horse(self, job: Job, queue: Queue) -> None:
        """In the forked horse: let go of the parent's metrics socket first, then work."""
        if self.metrics_server is not None:
            self.metrics_server.socket.close()
        super().main_work_horse(job, queue)


def start_metrics(worker: DrawaiWorker, settings: Settings) -> None:
    """Serve the worker's metrics when a port is set; a port already taken is logged, never fatal."""
    worker.metrics = WorkerMetrics(worker.get_current_job, lambda: worker.name)
    if not settings.worker_metrics_port:
        return

    def healthy() -> bool:
        try:
            return bool(worker.connection.ping())
        except (RedisError, OSError):
            return False

    port, host = settings.worker_metrics_port, settings.worker_metrics_host
    try:
        worker.metrics_server = serve(worker.metrics, healthy, port, host)
    except OSError as exc:
        log.warning("worker metrics not served on %s:%d: %s", host, port, exc)


def make_worker(settings: Settings, name: str | None = None) -> DrawaiWorker:
    conn = connect(settings)
    Store(settings.home).ensure()
    worker = DrawaiWorker(
        [Queue(settings.queue_name, connection=conn)],
        connection=conn,
        name=name,
        job_monitoring_interval=settings.job_monitoring_interval_s,
        maintenance_interval=settings.worker_maintenance_interval_s,
    )
    worker.heartbeat_grace_s = settings.job_heartbeat_grace_s
    return worker


def run_worker(settings: Settings, burst: bool = False, name: str | None = None) -> bool:
    """Work the queue until stopped (or, with ``burst``, until it is empty). Returns whether any job ran."""
    worker = make_worker(settings, name)
    start_metrics(worker, settings)
    log.info("worker %s on queue %s (burst=%s)", worker.name, settings.queue_name, burst)
    try:
        return bool(worker.work(burst=burst, logging_level="INFO"))
    finally:
        if worker.metrics_server is not None:
            worker.metrics_server.shutdown()
            worker.metrics_server.server_close()
