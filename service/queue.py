"""The API's side of the RQ queue: enqueue training, read job state, cancel. Torch-free."""

from __future__ import annotations

import time
from typing import Any

from rq import Queue, Retry
from rq.exceptions import NoSuchJobError
from rq.job import Job
from rq.job import JobStatus as RQStatus

from models.schemas import CANCEL_KEY_FMT, JOBS_INDEX_KEY, TRAIN_FUNC, JobProgress, TrainSpec
from models.settings import Settings
from models.store import NotFoundError

# RQ's states folded into the API's five.
_STATUS = {
    RQStatus.QUEUED: "queued",
    RQStatus.SCHEDULED: "queued",  # waiting for a retry
    RQStatus.DEFERRED: "queued",
    RQStatus.CREATED: "queued",
    RQStatus.STARTED: "started",
    RQStatus.FINISHED: "finished",
    RQStatus.FAILED: "failed",
    RQStatus.STOPPED: "canceled",
    RQStatus.CANCELED: "canceled",
}
ACTIVE = {"queued", "started"}


class ConflictError(Exception):
    """The request conflicts with the current state (HTTP 409)."""


def enqueue_training(queue: Queue, spec: TrainSpec, settings: Settings) -> Job:
    progress = JobProgress(phase="queued", epochs=spec.epochs)
    job = queue.enqueue(
        TRAIN_FUNC,
        kwargs={"spec": spec.model_dump()},
        job_timeout=settings.job_timeout_s,
        result_ttl=settings.result_ttl_s,
        failure_ttl=settings.result_ttl_s,
        retry=Retry(max=settings.job_retries) if settings.job_retries > 0 else None,
        meta={"dataset": spec.dataset, "progress": progress.model_dump()},
        description=f"train {spec.architecture} {spec.image_size}px on {spec.dataset}",
    )
    queue.connection.zadd(JOBS_INDEX_KEY, {job.id: time.time()})
    return job


def fetch(queue: Queue, job_id: str) -> Job:
    try:
        return Job.fetch(job_id, connection=queue.connection)
    except NoSuchJobError:
        raise NotFoundError(job_id) from None


def status_of(job: Job) -> str:
    if job.meta.get("canceled"):
        return "canceled"
    rq_status = job.get_status(refresh=False)
    return _STATUS.get(rq_status, str(rq_status)) if rq_status is not None else "queued"


def _iso(t: Any) -> str | None:
    return t.isoformat() if t is not None else None


def _error(job: Job) -> str | None:
    if job.meta.get("error"):
        return str(job.meta["error"])
    if job.get_status(refresh=False) != RQStatus.FAILED:
        return None
    result = job.latest_result()
    text = (result.exc_string if result is not None else None) or ""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "failed"


def view(job: Job) -> dict[str, Any]:
    """The job as ``GET /jobs/{id}`` shows it."""
    meta = job.meta
    return {
        "id": job.id,
        "status": status_of(job),
        "dataset": meta.get("dataset"),
        "spec": (job.kwargs or {}).get("spec"),
        "progress": meta.get("progress"),
        "created_at": _iso(job.created_at),
        "enqueued_at": _iso(job.enqueued_at),
        "started_at": _iso(job.started_at),
        "ended_at": _iso(job.ended_at),
        "error": _error(job),
        "model_version": meta.get("model_version"),
        "cancel_requested": bool(meta.get("cancel_requested")),
        "retries_left": job.retries_left,
    }


def list_jobs(queue: Queue) -> list[Job]:
    conn = queue.connection
    raw: list[bytes] = conn.zrevrange(JOBS_INDEX_KEY, 0, -1)  # type: ignore[assignment]
    ids = [i.decode() for i in raw]
    jobs = Job.fetch_many(ids, connection=conn)
    gone = [i for i, j in zip(ids, jobs, strict=True) if j is None]
    if gone:
        conn.zrem(JOBS_INDEX_KEY, *gone)  # expired after result_ttl
    return [j for j in jobs if j is not None]


def jobs_using_dataset(queue: Queue, dataset_id: str) -> list[str]:
    """Ids of queued or running jobs that train on ``dataset_id``."""
    return [j.id for j in list_jobs(queue) if j.meta.get("dataset") == dataset_id and status_of(j) in ACTIVE]


def cancel(queue: Queue, job_id: str) -> Job:
    """Cancel a queued job at once; ask a running one to stop (its ``abort_fn`` sees the flag)."""
    job = fetch(queue, job_id)
    status = status_of(job)
    if status not in ACTIVE:
        raise ConflictError(f"job {job_id} is already {status}")
    if job.get_status(refresh=False) == RQStatus.STARTED:
        queue.connection.set(CANCEL_KEY_FMT.format(job_id=job_id), 1, ex=7 * 24 * 3600)
        job.meta["cancel_requested"] = True
        job.save_meta()
    else:
        job.cancel()
        job.meta["canceled"] = True
        job.save_meta()
    job.refresh()
    return job
