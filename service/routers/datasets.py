"""Datasets: upload (``POST /datasets``), server-side import (``POST /datasets/import``), list, show, delete.

An upload is one file: a ``.zip`` or ``.tar``/``.tar.gz`` of images, volumes or DICOM files, or a
single NIfTI volume, DICOM file or image. It is sent either as a multipart form (``curl -F
file=@scan.nii.gz -F name=mine``) or as the raw body (``application/zip``, ``application/gzip``,
``application/x-tar``, ``application/dicom``, ``application/octet-stream``..., with optional
``?name=`` and ``?filename=``); its kind is told by magic bytes, then by the file name.
``service.uploads`` streams it to a temp file under the store's ``tmp/``; ingestion
(``models.data.ingest.ingest``) then runs in a worker thread, off the event loop.

An import reads a folder, archive or volume already on the server, under ``DRAWAI_IMPORT_DIR``
(403 when that is unset or the path resolves outside it, through ``..`` or symlinks; 404 when
nothing is there), with the same readers and limits as an upload.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from models.data.curation import preview_png
from models.data.ingest import ingest
from models.platform.errors import NotFoundError
from models.platform.schemas import DatasetInfo
from service.auth import KeyCheckedRoute, require_key
from service.deps import QueueDep, SettingsDep, StoreDep
from service.errors import KEYED, responses
from service.paging import Page, Paging
from service.queue import jobs_using_dataset
from service.uploads import (
    MAX_NAME,
    NAME_FIELD,
    UPLOAD_BODY,
    check_declared_length,
    dataset_name,
    name_for_content_type,
    receive_upload,
)

log = logging.getLogger(__name__)

# KeyCheckedRoute: the key is checked before anything reads an upload or a JSON body.
router = APIRouter(prefix="/datasets", tags=["datasets"], route_class=KeyCheckedRoute)


NO_DATASET = {404: "no such dataset"}
IMPORT_REFUSALS = {
    403: "the API key is not valid; or import is disabled (DRAWAI_IMPORT_DIR unset), or the path leads outside it",
    404: "nothing at that path in the import folder",
}
DAMAGED = {409: "the dataset's stored files are damaged"}


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    dependencies=[Depends(require_key)],
    responses=responses(*KEYED, 400, 413, 415, 422),
    openapi_extra={"requestBody": UPLOAD_BODY},  # the route reads the body itself, as it streams
)
async def upload_dataset(
    request: Request,
    store: StoreDep,
    settings: SettingsDep,
    name: Annotated[str | None, Query(max_length=MAX_NAME, description="dataset name")] = None,
    filename: Annotated[str | None, Query(max_length=255, description="the raw body's file name")] = None,
) -> DatasetInfo:
    """Upload an archive (a folder per class, or flat), a NIfTI volume, a DICOM file or an image."""
    store.tmp_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=store.tmp_dir, prefix="upload-", suffix=".upload")
    os.close(fd)
    path = Path(tmp)
    try:  # HTTPException, or a domain error (Refused, TooLarge) mapped by service.errors
        check_declared_length(request, settings.max_upload_bytes)
        form = await receive_upload(request, path, settings.max_upload_bytes)
        given = form.fields.get(NAME_FIELD) if form is not None else None
        sent_as = form.filename if form is not None else filename
        name_ = dataset_name(given or name, sent_as)
        kind_hint = sent_as or name_for_content_type(request)  # what the file is, when its bytes do not say
        return await run_in_threadpool(ingest, path, store, settings, name_, filename=kind_hint)
    except ClientDisconnect:
        log.info("upload abandoned: client disconnected")
        raise HTTPException(status_code=400, detail="client disconnected during upload") from None
    finally:
        path.unlink(missing_ok=True)


class ImportRequest(BaseModel):
    """``POST /datasets/import``: a path under ``DRAWAI_IMPORT_DIR`` (relative to it, or absolute)."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(min_length=1, max_length=4096)
    name: str | None = Field(default=None, max_length=MAX_NAME)


def _import_target(settings_dir: Path | None, requested: str) -> Path:
    """The resolved path to import; 403 when import is off or the path leads outside the folder, 404 when absent."""
    if settings_dir is None:
        raise HTTPException(403, "server-side import is disabled: set DRAWAI_IMPORT_DIR to the folder it may read")
    root = settings_dir.resolve()
    if not root.is_dir():
        raise HTTPException(403, "server-side import is unavailable: DRAWAI_IMPORT_DIR is not a folder")
    if "\x00" in requested:
        raise HTTPException(422, "path contains a NUL character")
    try:
        target = (root / requested).resolve()  # follows every symlink and "..": what would really be read
    except (OSError, RuntimeError):
        raise HTTPException(404, f"cannot resolve {requested!r} (a symlink loop?)") from None
    if not target.is_relative_to(root):
        raise HTTPException(403, f"{requested!r} resolves outside the import folder")
    if not target.exists():
        raise HTTPException(404, f"nothing at {requested!r} in the import folder")
    return target


@router.post(
    "/import",
    status_code=status.HTTP_201_CREATED,
    dependencies=[Depends(require_key)],
    responses=responses(*KEYED, 400, 404, 413, 422, descriptions=IMPORT_REFUSALS),
)
async def import_dataset(body: ImportRequest, store: StoreDep, settings: SettingsDep) -> DatasetInfo:
    """Store a folder, archive, volume or DICOM file found under ``DRAWAI_IMPORT_DIR`` as a dataset."""
    target = _import_target(settings.import_dir, body.path)  # HTTPException 403/404/422
    name = dataset_name(body.name, target.name)
    allowed = settings.import_dir.resolve() if settings.import_dir is not None else target
    return await run_in_threadpool(ingest, target, store, settings, name, filename=target.name, allowed=allowed)


@router.get("", responses=responses(422))
def list_datasets(store: StoreDep, paging: Paging) -> Page[DatasetInfo]:
    """The stored datasets, oldest first, a page at a time."""
    return paging.of(store.list_datasets())


@router.get("/{dataset_id}", responses=responses(404, 409, descriptions={**NO_DATASET, **DAMAGED}))
def get_dataset(dataset_id: str, store: StoreDep) -> DatasetInfo:
    return store.get_dataset(dataset_id)  # NotFoundError -> 404


@router.delete(
    "/{dataset_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    dependencies=[Depends(require_key)],
    responses=responses(*KEYED, 404, 409, 503, descriptions={**NO_DATASET, 409: "queued or running jobs use it"}),
)
def delete_dataset(dataset_id: str, store: StoreDep, queue: QueueDep) -> Response:
    """Delete a dataset; 409 while a queued or running job trains on it."""
    if not store.dataset_dir(dataset_id).is_dir():  # a damaged dataset can still be deleted
        raise NotFoundError(dataset_id)
    users = jobs_using_dataset(queue, dataset_id)
    if users:
        raise HTTPException(
            status_code=409, detail=f"dataset {dataset_id} is used by queued or running jobs: {', '.join(users)}"
        )
    store.delete_dataset(dataset_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/{dataset_id}/preview.png",
    response_class=Response,
    responses={
        200: {"content": {"image/png": {"schema": {"type": "string", "format": "binary"}}}},
        **responses(404, 409, 422, descriptions={**NO_DATASET, **DAMAGED}),
    },
)
def dataset_preview(
    dataset_id: str,
    store: StoreDep,
    per_class: Annotated[int, Query(ge=1, le=32, description="samples per class")] = 8,
) -> Response:
    """A contact sheet of up to ``per_class`` samples of each class: one row per class, named."""
    return Response(preview_png(store, dataset_id, per_class), media_type="image/png")  # NotFoundError -> 404
