"""The API's side of the RQ queue: enqueue training, read job state, cancel. Torch-free."""

from __future__ import annotations

import re
import time
from typing import Any

from pydantic import BaseModel, Field
from rq import Queue, Retry
from rq.exceptions import NoSuchJobError
from rq.job import Job
from rq.job import JobStatus as RQStatus

from models.platform.errors import ConflictError, NotFoundError
from models.platform.schemas import CANCEL_KEY_FMT, JOBS_INDEX_KEY, TRAIN_FUNC, JobProgress, JobStatus, TrainSpec
from models.platform.settings import Settings

# RQ's states folded into the API's five (every RQ state is here: the API never shows a sixth).
_STATUS: dict[RQStatus, JobStatus] = {
    RQStatus.QUEUED: "queued",
    RQStatus.SCHEDULED: "queued",  # waiting for a retry
    RQStatus.DEFERRED: "queued",
    RQStatus.CREATED: "queued",
    RQStatus.RATE_LIMITED: "queued",  # RQ 3: waiting for a rate limit
    RQStatus.READY_TO_ENQUEUE: "queued",
    RQStatus.STARTED: "started",
    RQStatus.FINISHED: "finished",
    RQStatus.FAILED: "failed",
    RQStatus.STOPPED: "canceled",
    RQStatus.CANCELED: "canceled",
}
ACTIVE = {"queued", "started"}
# What RQ accepts as a job id (it raises ValueError for anything else, and reads "a:b" as job "a"); longer
# ids than any RQ makes are refused too. An id that does not fit names no job: 404, before RQ sees it.
JOB_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")


class JobView(BaseModel):
    """A training job, as ``GET /jobs/{id}`` (and ``POST /jobs/train``, ``DELETE /jobs/{id}``) show it."""

    id: str
    status: JobStatus
    dataset: str | None = Field(description="the dataset it trains on")
    spec: dict[str, Any] | None = Field(description="the training spec, as validated (TrainSpec)")
    progress: dict[str, Any] | None = Field(
        description="phase, epoch/epochs, step/steps, d_loss, g_loss, images_per_s, eta_s, resumed_from_step, "
        "detail (JobProgress), as the worker last reported it"
    )
    created_at: str | None
    enqueued_at: str | None
    started_at: str | None
    ended_at: str | None
    error: str | None = Field(description="the last line of the failure, when it failed")
    model_version: str | None = Field(description="the version it published, once finished")
    cancel_requested: bool
    retries_left: int | None


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
    """The job; ``NotFoundError`` for unknown ids and for ids RQ could not have made."""
    if not JOB_ID.fullmatch(job_id):
        raise NotFoundError(job_id)
    try:
        return Job.fetch(job_id, connection=queue.connection)
    except NoSuchJobError:
        raise NotFoundError(job_id) from None


def status_of(job: Job) -> JobStatus:
    if job.meta.get("canceled"):
        return "canceled"
    rq_status = job.get_status(refresh=False)
    return _STATUS[RQStatus(rq_status)] if rq_status is not None else "queued"


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


def view(job: Job) -> JobView:
    """The job as ``GET /jobs/{id}`` shows it."""
    meta = job.meta
    return JobView(
        id=job.id,
        status=status_of(job),
        dataset=meta.get("dataset"),
        spec=(job.kwargs or {}).get("spec"),
        progress=meta.get("progress"),
        created_at=_iso(job.created_at),
        enqueued_at=_iso(job.enqueued_at),
        started_at=_iso(job.started_at),
        ended_at=_iso(job.ended_at),
        error=_error(job),
        model_version=meta.get("model_version"),
        cancel_requested=bool(meta.get("cancel_requested")),
        retries_left=job.retries_left,
    )


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
