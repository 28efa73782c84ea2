"""Training jobs: submit, list, show, cancel."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, status

from models.schemas import TrainSpec
from service import queue as jobq
from service.auth import KeyCheckedRoute, require_key
from service.deps import QueueDep, SettingsDep, StoreDep

# KeyCheckedRoute: the key is checked before FastAPI reads the JSON spec.
router = APIRouter(prefix="/jobs", tags=["jobs"], route_class=KeyCheckedRoute)


@router.post("/train", status_code=status.HTTP_202_ACCEPTED, dependencies=[Depends(require_key)])
def submit_training(spec: TrainSpec, store: StoreDep, queue: QueueDep, settings: SettingsDep) -> dict[str, Any]:
    """Validate the spec against its dataset and enqueue it on the ``train`` queue."""
    dataset = store.get_dataset(spec.dataset)  # 404 when unknown
    if spec.batch_size > dataset.train_images:  # training reads the train split only
        held = f", {dataset.images - dataset.train_images} held out" if dataset.split is not None else ""
        raise HTTPException(
            status_code=422,
            detail=f"batch_size {spec.batch_size} is larger than the training split of dataset {dataset.id} "
            f"({dataset.train_images} of {dataset.images} images{held})",
        )
    return jobq.view(jobq.enqueue_training(queue, spec, settings))


@router.get("")
def list_jobs(queue: QueueDep) -> list[dict[str, Any]]:
    """All jobs still remembered (finished ones for ``DRAWAI_RESULT_TTL_S``), newest first."""
    return [jobq.view(j) for j in jobq.list_jobs(queue)]


@router.get("/{job_id}")
def get_job(job_id: str, queue: QueueDep) -> dict[str, Any]:
    return jobq.view(jobq.fetch(queue, job_id))


@router.delete("/{job_id}", status_code=status.HTTP_202_ACCEPTED, dependencies=[Depends(require_key)])
def cancel_job(job_id: str, queue: QueueDep) -> dict[str, Any]:
    """Cancel a queued job at once, or ask a running one to stop at its next step."""
    try:
        return jobq.view(jobq.cancel(queue, job_id))
    except jobq.ConflictError as exc:
        raise HTTPException(status_code=409, detail=str(exc)) from None
