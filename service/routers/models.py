"""Model versions: list, manifest, sample grid, quality report, activation (hot swap)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import FileResponse, HTMLResponse
from pydantic import BaseModel, ConfigDict, Field

from models.platform.errors import CorruptError, NotFoundError
from models.platform.schemas import ModelIdentity, ModelManifest
from models.platform.store import REPORT_JSON, Store
from models.report.page import render
from models.report.schema import QualityReport
from service.auth import require_key
from service.deps import ModelsDep, StoreDep
from service.engines.calibration import Serving
from service.errors import KEYED, responses
from service.inference import ModelLoadError
from service.paging import Page, Paging

router = APIRouter(prefix="/models", tags=["models"])

FOUND = responses(404, 409, descriptions={404: "no such model version (or file)", 409: "damaged model.json"})
PNG: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/png": {"schema": {"type": "string", "format": "binary"}}}}
}


class ModelSummary(ModelIdentity):
    """One version in ``GET /models``."""

    model_config = ConfigDict(extra="ignore", protected_namespaces=())

    active: bool
    report: bool = Field(description="whether it has a quality report")


class ModelView(ModelManifest):
    """``GET /models/{version}``: the manifest (``model.json``, less an old version's loss history) and whether
    it is active; fields of newer manifests are kept as stored."""

    active: bool
    serving: Serving | None = Field(
        default=None, description="how this API process serves it (engine, precision, streams, calibration), if loaded"
    )


class Activation(BaseModel):
    """``POST /models/{version}/activate``: the version now active here, and how it is served."""

    version: str
    active: bool
    provider: str
    serving: Serving


def _summary(m: ModelManifest, active: str | None) -> ModelSummary:
    identity = m.model_dump(include=set(ModelIdentity.model_fields))
    return ModelSummary(**identity, active=m.version == active, report=bool(m.quality and "report" in m.quality))


@router.get("", responses=responses(422))
def list_models(store: StoreDep, paging: Paging) -> Page[ModelSummary]:
    """The model versions, oldest first, with which one is active, a page at a time."""
    active = store.active_version()
    return paging.of([_summary(m, active) for m in store.list_models()])


@router.get("/{version}", responses=FOUND)
def get_model(version: str, store: StoreDep, models: ModelsDep) -> ModelView:
    """The version's manifest (``model.json``), whether it is active, and how this process serves it if loaded."""
    manifest = store.get_manifest(version)
    loaded = models.loaded(version)
    return ModelView(
        **manifest.model_dump(exclude={"loss_history"}),
        active=store.active_version() == version,
        serving=loaded.serving if loaded is not None else None,
    )


@router.get("/{version}/samples.png", response_class=FileResponse, responses={**PNG, **FOUND})
def get_samples(version: str, store: StoreDep) -> FileResponse:
    store.get_manifest(version)  # 404 for unknown versions
    path = store.model_dir(version) / "samples.png"
    if not path.is_file():
        raise NotFoundError(f"{version}/samples.png")
    return FileResponse(path, media_type="image/png")


def _report(store: Store, version: str) -> tuple[dict[str, Any], Path]:
    """The version's report.json and its folder; 404 saying why when there is none."""
    manifest = store.get_manifest(version)  # 404 for unknown versions
    folder = store.model_dir(version)
    path = folder / REPORT_JSON
    if not path.is_file():
        quality = manifest.quality or {}
        if "error" in quality:
            why = f"its evaluation failed ({quality['error']})"
        else:
            why = "it was published before quality reports existed"
        raise HTTPException(
            404, f"model {version} has no quality report: {why}; run `drawai evaluate --model {version}`"
        )
    try:
        return json.loads(path.read_bytes()), folder
    except ValueError:
        raise CorruptError(f"model {version}: {REPORT_JSON} is not valid JSON") from None


@router.get("/{version}/report", responses=FOUND)
def get_report(version: str, store: StoreDep) -> QualityReport:
    """The quality report (``report.json``): every metric with its real-vs-real reference, and the summary."""
    report, _ = _report(store, version)
    try:
        return QualityReport.model_validate(report)
    except ValueError:
        raise CorruptError(f"model {version}: {REPORT_JSON} is not a quality report") from None


@router.get("/{version}/report.html", response_class=HTMLResponse, responses=FOUND)
def get_report_html(version: str, store: StoreDep) -> HTMLResponse:
    """The quality report as one self-contained page: metric table, loss curves, samples, histograms, pairs."""
    report, folder = _report(store, version)
    return HTMLResponse(render(report, folder))


@router.post(
    "/{version}/activate",
    dependencies=[Depends(require_key)],
    responses=responses(*KEYED, 404, 409, descriptions={409: "the version cannot be loaded; the active one is kept"}),
)
async def activate(version: str, models: ModelsDep) -> Activation:
    """Load and verify the version, then make it active in every API process (no restart)."""
    try:
        model = await asyncio.to_thread(models.activate, version)
    except ModelLoadError as exc:
        raise HTTPException(409, f"refused: {exc}; the active model is unchanged") from None
    return Activation(version=model.version, active=True, provider=model.provider, serving=model.serving)
