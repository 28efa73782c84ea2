"""The web console: server-rendered pages (``service/console/templates``) with a little vanilla JavaScript
(``service/console/static``), plus the two small JSON routes the pages need.

The pages are a shell: every piece of data comes through the keyed API, so the HTML and its assets are served
openly (``include_in_schema=False``). When ``DRAWAI_API_KEYS`` is set the page asks for a key once, checks it with
``GET /auth/check`` and keeps it in the tab's ``sessionStorage``. No CDN, no build step: works offline.

- ``GET /auth/check``: 204 when the request may use keyed routes (a valid key, or no keys configured), else 401/403.
- ``GET /jobs/{job_id}/samples.png``: the job's latest fixed-noise training grid (the worker writes one per epoch
  under ``jobs/<id>/samples/``); 204 while it has none yet.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response, status
from fastapi.responses import FileResponse, HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from models.platform.schemas import PRESETS, SUPPORTED_SIZES
from service import queue as jobq
from service.auth import RequireKey
from service.deps import QueueDep, SettingsDep, StoreDep
from service.errors import KEYED, responses
from service.routers.quiz import QUIZ_OFF

router = APIRouter(tags=["console"])

CONSOLE = Path(__file__).resolve().parent.parent / "console"
STATIC = CONSOLE / "static"
MEDIA = {".css": "text/css", ".js": "text/javascript", ".svg": "image/svg+xml", ".png": "image/png"}
PAGES = {  # page -> (template, title)
    "datasets": ("datasets.html", "Datasets"),
    "training": ("training.html", "Training"),
    "jobs": ("jobs.html", "Jobs"),
    "job": ("job.html", "Job"),
    "models": ("models.html", "Models"),
    "generate": ("generate.html", "Generate"),
    "quiz": ("quiz.html", "Reader test"),
}


@lru_cache(maxsize=1)
def templates() -> Environment:
    """The Jinja environment, built on first use (nothing happens at import time)."""
    return Environment(loader=FileSystemLoader(CONSOLE / "templates"), autoescape=select_autoescape(["html"]))


def page(request: Request, name: str, **context: Any) -> HTMLResponse:
    template, title = PAGES[name]
    settings = request.app.state.settings
    html = templates().get_template(template).render(page=name, title=title, quiz=settings.quiz_enabled, **context)
    return HTMLResponse(html, headers={"Cache-Control": "no-store"})


@router.get("/", include_in_schema=False)
def datasets_page(request: Request) -> HTMLResponse:
    return page(request, "datasets")


@router.get("/console/training", include_in_schema=False)
def training_page(request: Request) -> HTMLResponse:
    sizes = {arch: list(s) for arch, s in SUPPORTED_SIZES.items()}
    return page(request, "training", presets=PRESETS, sizes=sizes)


@router.get("/console/jobs", include_in_schema=False)
def jobs_page(request: Request) -> HTMLResponse:
    return page(request, "jobs")


@router.get("/console/jobs/{job_id}", include_in_schema=False)
def job_page(request: Request, job_id: str) -> HTMLResponse:
    return page(request, "job", job_id=job_id)


@router.get("/console/models", include_in_schema=False)
def models_page(request: Request) -> HTMLResponse:
    return page(request, "models")


@router.get("/console/generate", include_in_schema=False)
def generate_page(request: Request) -> HTMLResponse:
    return page(request, "generate")


@router.get("/quiz", include_in_schema=False, response_model=None)
def quiz_page(request: Request, settings: SettingsDep) -> HTMLResponse:
    if not settings.quiz_enabled:
        raise HTTPException(403, QUIZ_OFF)
    return page(request, "quiz")


@lru_cache(maxsize=1)
def static_files() -> dict[str, Path]:
    """The console's files by name, listed once (on first use): a request never lists the folder."""
    return {p.name: p for p in STATIC.iterdir() if p.is_file()}


@router.get("/console/static/{name}", include_in_schema=False)
def static(name: str) -> FileResponse:
    """The console's own CSS and JavaScript (a fixed set of files: nothing outside the folder is reachable)."""
    path = static_files().get(name)
    if path is None:
        raise HTTPException(404, f"no such console file: {name}")
    return FileResponse(path, media_type=MEDIA.get(path.suffix, "application/octet-stream"))


@router.get(
    "/auth/check",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses={204: {"description": "the key is accepted (or no keys are configured)"}, **responses(*KEYED)},
)
def auth_check(_: RequireKey) -> Response:
    """Whether this request's key would be accepted by the keyed routes: 204, else 401 (none) or 403 (wrong)."""
    return Response(status_code=status.HTTP_204_NO_CONTENT)


SAMPLES_200: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/png": {"schema": {"type": "string", "format": "binary"}}}},
    204: {"description": "the job has no training grid yet"},
}


@router.get(
    "/jobs/{job_id}/samples.png",
    response_class=Response,
    responses={**SAMPLES_200, **responses(404, 503, descriptions={404: "no such job"})},
)
def job_samples(job_id: str, queue: QueueDep, store: StoreDep) -> Response:
    """The job's latest training grid: 16 images at fixed noise, written after every epoch (the published
    generator's at the end); 204 while there is none yet."""
    jobq.fetch(queue, job_id)  # 404 for unknown jobs (and ids no job can have)
    folder = store.job_dir(job_id) / "samples"
    grids = sorted(folder.glob("epoch_*.png")) if folder.is_dir() else []
    published = folder / "published.png"
    latest = published if published.is_file() else (grids[-1] if grids else None)
    if latest is None:
        return Response(status_code=status.HTTP_204_NO_CONTENT)
    try:
        body = latest.read_bytes()
    except OSError:  # removed between the listing and the read
        return Response(status_code=status.HTTP_204_NO_CONTENT)
    headers = {"Cache-Control": "no-store", "X-DrawAI-Grid": latest.stem}
    return Response(body, media_type="image/png", headers=headers)
