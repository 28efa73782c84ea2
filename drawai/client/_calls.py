"""Every route of the API as a ``Call``: the one description that ``Client`` and ``AsyncClient`` both send."""

from __future__ import annotations

from collections.abc import Mapping
from typing import IO, Any

from drawai.client._base import TIMEOUT, Call, job_path, model, none, page_call, quote_segment, raw, train_body
from models.platform.schemas import DatasetInfo
from models.report.schema import QualityReport
from service.paging import Page
from service.queue import JobView
from service.routers.health import Health, Readiness
from service.routers.models import Activation, ModelSummary, ModelView

NOT_READY = frozenset({503})  # GET /readyz answers 503 with the reasons: an answer, not an error


def health() -> Call[Health]:
    return Call("GET", "/healthz", model(Health))


def ready() -> Call[Readiness]:
    return Call("GET", "/readyz", model(Readiness), accept=NOT_READY)


# Datasets


def upload(filename: str, f: IO[bytes], name: str | None) -> Call[DatasetInfo]:
    data = {"name": name} if name else None
    return Call("POST", "/datasets", model(DatasetInfo), files={"file": (filename, f)}, data=data, timeout=TIMEOUT)


def import_dataset(path: str, name: str | None) -> Call[DatasetInfo]:
    body = {"path": path, **({"name": name} if name else {})}
    return Call("POST", "/datasets/import", model(DatasetInfo), json=body, timeout=TIMEOUT)


def list_datasets(limit: int, offset: int) -> Call[Page[DatasetInfo]]:
    return page_call("/datasets", DatasetInfo, limit, offset)


def get_dataset(dataset_id: str) -> Call[DatasetInfo]:
    return Call("GET", f"/datasets/{quote_segment(dataset_id)}", model(DatasetInfo))


def delete_dataset(dataset_id: str) -> Call[None]:
    return Call("DELETE", f"/datasets/{quote_segment(dataset_id)}", none)


def preview(dataset_id: str, per_class: int) -> Call[bytes]:
    return Call("GET", f"/datasets/{quote_segment(dataset_id)}/preview.png", raw, params={"per_class": per_class})


# Jobs


def train(dataset: str, preset: str | None, fields: Mapping[str, Any]) -> Call[JobView]:
    return Call("POST", "/jobs/train", model(JobView), json=train_body(dataset, preset, fields))


def list_jobs(limit: int, offset: int) -> Call[Page[JobView]]:
    return page_call("/jobs", JobView, limit, offset)


def get_job(job_id: str) -> Call[JobView]:
    return Call("GET", job_path(job_id), model(JobView))


def cancel_job(job_id: str) -> Call[JobView]:
    return Call("DELETE", job_path(job_id), model(JobView))


# Models


def list_models(limit: int, offset: int) -> Call[Page[ModelSummary]]:
    return page_call("/models", ModelSummary, limit, offset)


def get_model(version: str) -> Call[ModelView]:
    return Call("GET", f"/models/{quote_segment(version)}", model(ModelView))


def activate(version: str) -> Call[Activation]:
    return Call("POST", f"/models/{quote_segment(version)}/activate", model(Activation), timeout=TIMEOUT)


def report(version: str) -> Call[QualityReport]:
    return Call("GET", f"/models/{quote_segment(version)}/report", model(QualityReport))


def report_html(version: str) -> Call[str]:
    return Call("GET", f"/models/{quote_segment(version)}/report.html", lambda r: r.text)


def samples(version: str) -> Call[bytes]:
    return Call("GET", f"/models/{quote_segment(version)}/samples.png", raw)
