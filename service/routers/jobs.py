"""Training jobs: submit, list, show, cancel."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, status

from models.platform.schemas import TrainSpec
from service import queue as jobq
from service.auth import KeyCheckedRoute, require_key
from service.deps import QueueDep, SettingsDep, StoreDep
from service.errors import KEYED, responses
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
