"""The worker process: an RQ worker on the ``train`` queue (``drawai worker``).

This process never imports torch: each job runs in a forked work horse that imports it, so
CUDA is never initialised in a process that later forks.
"""

from __future__ import annotations

import logging

from rq import Queue, Worker
from rq.job import Job

from models.redisconn import connect
from models.settings import Settings
from models.store import Store

log = logging.getLogger(__name__)


class DrawaiWorker(Worker):
    """RQ's forking worker with a configurable heartbeat grace.

    RQ lets a running job's heartbeat lapse ``monitoring interval + 60 s`` before another worker
    treats it as abandoned and retries it; a shorter grace lets a killed job resume sooner.
    """

    heartbeat_grace_s = 60

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        ttl = super().get_heartbeat_ttl(job, working_time)
        return int(ttl - 60 + self.heartbeat_grace_s)


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
    log.info("worker %s on queue %s (burst=%s)", worker.name, settings.queue_name, burst)
    return bool(worker.work(burst=burst, logging_level="INFO"))
