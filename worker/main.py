"""The worker process: an RQ worker on the ``train`` queue (``drawai worker``).

This process never imports torch: each job runs in a forked work horse that imports it, so
CUDA is never initialised in a process that later forks. It serves its own ``/metrics`` and
``/healthz`` (``worker.metrics``) on ``DRAWAI_WORKER_METRICS_PORT``.

Redis outages: the worker's connection waits out an outage of up to ``DRAWAI_REDIS_OUTAGE_GRACE_S``
in every command (``models.platform.redisconn.OutageRetry``), so no loop of RQ (dequeue, heartbeats,
maintenance, a job's finish) sees it; the work horse trains on meanwhile. Past the grace the
worker stops its horse and exits with ``EXIT_REDIS_OUTAGE``; the job, whose heartbeat has lapsed,
is retried by the next worker from its last checkpoint.
"""

from __future__ import annotations

import logging
import signal
import time
from typing import Any
from wsgiref.simple_server import WSGIServer

from redis.exceptions import RedisError
from rq import Queue, Worker
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus

from models.platform.redisconn import OutageRetry, RedisOutageExceeded, connect, fail_fast, outage_retry
from models.platform.settings import Settings
from models.platform.store import Store
from worker.metrics import WorkerMetrics, serve

log = logging.getLogger(__name__)

EXIT_REDIS_OUTAGE = 3  # `drawai worker` exit status when Redis stayed away longer than the grace


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

    @property
    def outage(self) -> OutageRetry | None:
        return outage_retry(self.connection)

    def maintain_heartbeats(self, job: Job, execution: Any) -> None:
        """RQ's heartbeats while the horse works (a Redis outage is waited out inside the connection).

        Past the outage grace the horse is stopped before the error ends the worker: the job's
        heartbeat has lapsed, so another worker will retry it, and two runs must never train at once.
        """
        try:
            super().maintain_heartbeats(job, execution)
        except RedisOutageExceeded:
            log.error("job %s: stopping its work horse; Redis has been unreachable too long", job.id)
            self.kill_horse(signal.SIGKILL)
            self.wait_for_horse()
            raise

    def clean_registries(self) -> None:
        """RQ's clean-up of abandoned jobs, except just after a Redis outage.

        Every job's heartbeat lapses while Redis is away; until the workers running them have had
        one heartbeat TTL to renew them, a lapsed heartbeat does not mean an abandoned job.
        """
        outage = self.outage
        ttl = self.job_monitoring_interval + self.heartbeat_grace_s
        if outage is not None and outage.last_outage_ended is not None:
            since = time.monotonic() - outage.last_outage_ended
            if since < ttl:
                log.info("not looking for abandoned jobs %.0f s after a Redis outage (heartbeat TTL %d s)", since, ttl)
                return
        super().clean_registries()

    def teardown(self) -> None:
        """RQ's teardown; unregistering needs Redis, which may be the reason the worker stops."""
        try:
            super().teardown()
        except RedisError as exc:
            log.warning("worker %s: could not unregister from Redis: %s", self.name, exc)

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
    """Serve the worker's metrics when a port is set; a port already taken is logged, never fatal.

    Scrapes and health checks read Redis through a fail-fast client: during an outage they answer
    at once (without the job's series; 503) instead of waiting with the worker's connection.
    """
    fast = fail_fast(worker.connection)

    def current_job() -> Job | None:
        execution = next(iter(worker.executions.values()), None)  # in memory: no Redis round trip while idle
        return Job.fetch(execution.job_id, connection=fast) if execution is not None else None

    worker.metrics = WorkerMetrics(current_job, lambda: worker.name)
    if not settings.worker_metrics_port:
        return

    def healthy() -> bool:
        try:
            return bool(fast.ping())
        except (RedisError, OSError):
            return False

    port, host = settings.worker_metrics_port, settings.worker_metrics_host
    try:
        worker.metrics_server = serve(worker.metrics, healthy, port, host)
    except OSError as exc:
        log.warning("worker metrics not served on %s:%d: %s", host, port, exc)


def make_worker(settings: Settings, name: str | None = None) -> DrawaiWorker:
    conn = connect(settings, outage_grace_s=settings.redis_outage_grace_s)
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


def run_worker(settings: Settings, burst: bool = False, name: str | None = None) -> int:
    """Work the queue until stopped (or, with ``burst``, until it is empty). Returns the exit status:
    0, or ``EXIT_REDIS_OUTAGE`` when Redis stayed unreachable past ``DRAWAI_REDIS_OUTAGE_GRACE_S``."""
    worker = make_worker(settings, name)
    start_metrics(worker, settings)
    log.info("worker %s on queue %s (burst=%s)", worker.name, settings.queue_name, burst)
    try:
        worker.work(burst=burst, logging_level="INFO")
        outage = worker.outage
        if outage is not None and outage.exceeded:
            log.error(
                "worker %s exits: Redis was unreachable for longer than DRAWAI_REDIS_OUTAGE_GRACE_S=%g s; "
                "its job, if any, is retried from its last checkpoint once Redis is back",
                worker.name,
                outage.grace_s,
            )
            return EXIT_REDIS_OUTAGE
        return 0
    finally:
        if worker.metrics_server is not None:
            worker.metrics_server.shutdown()
            worker.metrics_server.server_close()
