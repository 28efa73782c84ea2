"""Training jobs: submit, list, show, watch (Server-Sent Events), cancel."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.sse import EventSourceResponse, ServerSentEvent

from models.platform.schemas import TrainSpec
from service import queue as jobq
from service.auth import KeyCheckedRoute, require_key
from service.deps import QueueDep, SettingsDep, StoreDep
from service.errors import KEYED, responses
from service.job_events import job_events, read_view
from service.paging import Page, Paging

# KeyCheckedRoute: the key is checked before FastAPI reads the JSON spec.
router = APIRouter(prefix="/jobs", tags=["jobs"], route_class=KeyCheckedRoute)

UNFIT = (
    "invalid spec, or one that its dataset cannot train: batch_size over the training split; conditional training on "
    "one class, or with a class under its share of a batch"
)
NO_JOB = {404: "no such job (or an id no job can have)"}


@router.post(
    "/train",
    status_code=status.HTTP_202_ACCEPTED,
    dependencies=[Depends(require_key)],
    responses=responses(
        *KEYED, 400, 404, 409, 422, 503, descriptions={404: "no such dataset", 409: "damaged dataset", 422: UNFIT}
    ),
)
def submit_training(spec: TrainSpec, store: StoreDep, queue: QueueDep, settings: SettingsDep) -> jobq.JobView:
    """Validate the spec against its dataset and enqueue it on the ``train`` queue."""
    dataset = store.get_dataset(spec.dataset)  # 404 when unknown
    problem = spec.check_dataset(dataset)  # batch larger than the training split; conditional on too few classes
    if problem is not None:
        raise HTTPException(status_code=422, detail=problem)
    return jobq.view(jobq.enqueue_training(queue, spec, settings))


@router.get("", responses=responses(422, 503))
def list_jobs(queue: QueueDep, paging: Paging) -> Page[jobq.JobView]:
    """The jobs still remembered (finished ones for ``DRAWAI_RESULT_TTL_S``), newest first, a page at a time."""
    return paging.of([jobq.view(j) for j in jobq.list_jobs(queue)])


async def _current_view(job_id: str, queue: QueueDep) -> jobq.JobView:
    """The job's view, read before a stream starts: an unknown id is a 404 (and Redis down a 503), not a stream."""
    return await asyncio.to_thread(read_view, queue, job_id)


EVENTS = (
    "A stream (text/event-stream) of events whose data is the job's JSON (as GET /jobs/{id}): `progress` first "
    "and on every change, `phase` before a progress that changes the phase or status, `end` once the job has "
    "ended (then the stream closes), `error` ({detail}) if Redis fails meanwhile; `: keep-alive` comments."
)


# Declared before GET /jobs/{job_id}: the OpenAPI lists it first, so a client walking the document in reverse
# (the fuzz test) cancels a queued job before it watches it.
@router.get(
    "/{job_id}/events",
    response_class=EventSourceResponse,
    responses={200: {"description": EVENTS}, **responses(404, 503, descriptions=NO_JOB)},
)
async def watch_job(
    request: Request, first: Annotated[jobq.JobView, Depends(_current_view)], queue: QueueDep, settings: SettingsDep
) -> AsyncIterator[ServerSentEvent]:
    """The job's progress as Server-Sent Events until it ends (finished, failed or canceled)."""
    events = job_events(
        queue,
        first,
        poll_s=settings.sse_poll_interval_s,
        keepalive_s=settings.sse_keepalive_s,
        disconnected=request.is_disconnected,
    )
    async for event in events:
        yield event


@router.get("/{job_id}", responses=responses(404, 503, descriptions=NO_JOB))
def get_job(job_id: str, queue: QueueDep) -> jobq.JobView:
    return jobq.view(jobq.fetch(queue, job_id))


@router.delete(
    "/{job_id}",
    status_code=status.HTTP_202_ACCEPTED,
    dependencies=[Depends(require_key)],
    responses=responses(*KEYED, 404, 409, 503, descriptions={**NO_JOB, 409: "the job has already ended"}),
)
def cancel_job(job_id: str, queue: QueueDep) -> jobq.JobView:
    """Cancel a queued job at once, or ask a running one to stop at its next step."""
    return jobq.view(jobq.cancel(queue, job_id))  # ConflictError -> 409 (service.errors)
