"""Datasets: upload (``POST /datasets``), list, show, delete.

An upload is a ``.zip`` sent either as a multipart form (``curl -F file=@slices.zip -F name=mine``)
or as the raw body (``Content-Type: application/zip`` or ``application/octet-stream``, with an
optional ``?name=``). ``service.uploads`` streams it to a temp file under the store's ``tmp/``;
ingestion (``models.datasets.ingest_zip``) then runs in a worker thread, off the event loop.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from models.datasets import UploadRefused, ingest_zip
from models.schemas import DatasetInfo
from service.deps import QueueDep, SettingsDep, StoreDep
from service.queue import jobs_using_dataset
from service.uploads import MAX_NAME, NAME_FIELD, check_declared_length, dataset_name, receive_upload

log = logging.getLogger(__name__)

router = APIRouter(prefix="/datasets", tags=["datasets"])


@router.post("", status_code=status.HTTP_201_CREATED)
async def upload_dataset(
    request: Request,
    store: StoreDep,
    settings: SettingsDep,
    name: Annotated[str | None, Query(max_length=MAX_NAME, description="dataset name")] = None,
) -> DatasetInfo:
    """Upload a ``.zip`` of images (a folder per class, or flat); answers the stored dataset."""
    store.tmp_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=store.tmp_dir, prefix="upload-", suffix=".zip")
    os.close(fd)
    path = Path(tmp)
    try:
        check_declared_length(request, settings.max_upload_bytes)
        form = await receive_upload(request, path, settings.max_upload_bytes)
        given = form.fields.get(NAME_FIELD) if form is not None else None
        name_ = dataset_name(given or name, form.filename if form is not None else None)
        return await run_in_threadpool(ingest_zip, path, store, settings, name_)
    except UploadRefused as exc:
        log.info("upload refused status=%d detail=%s", exc.status_code, exc.detail)
        raise HTTPException(status_code=exc.status_code, detail=exc.detail) from None
    except ClientDisconnect:
        log.info("upload abandoned: client disconnected")
        raise HTTPException(status_code=400, detail="client disconnected during upload") from None
    finally:
        path.unlink(missing_ok=True)


@router.get("")
def list_datasets(store: StoreDep) -> list[DatasetInfo]:
    """Every stored dataset, oldest first."""
    return store.list_datasets()


@router.get("/{dataset_id}")
def get_dataset(dataset_id: str, store: StoreDep) -> DatasetInfo:
    return store.get_dataset(dataset_id)  # NotFoundError -> 404


@router.delete("/{dataset_id}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response)
def delete_dataset(dataset_id: str, store: StoreDep, queue: QueueDep) -> Response:
    """Delete a dataset; 409 while a queued or running job trains on it."""
    store.get_dataset(dataset_id)  # NotFoundError -> 404
    users = jobs_using_dataset(queue, dataset_id)
    if users:
        raise HTTPException(
            status_code=409, detail=f"dataset {dataset_id} is used by queued or running jobs: {', '.join(users)}"
        )
    store.delete_dataset(dataset_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
