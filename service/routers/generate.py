"""``POST /generate``: synthetic slices from the active (or a pinned) model version."""

from __future__ import annotations

import asyncio
import secrets
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Response

from models.platform.sampling import latents
from service import encoders
from service.auth import require_generate_key
from service.deps import BatcherDep, MetricsDep, ModelsDep, SettingsDep
from service.errors import KEYED, responses
from service.inference import LoadedModel, ModelLoadError
from service.labels import LabelError, parse_labels, plan_classes

router = APIRouter(tags=["generate"])

MAX_SEED = 2**31 - 1
INLINE_LATENTS = 16  # up to this many latents are drawn on the event loop (about 10 µs each)
# One image is encoded on the event loop (a 128 px PNG about 0.1 ms): through the encoding pool, the thread hops
# cost the API 1.1 ms of CPU per count=1 request on two cores (benchmarks/generate.py, 16 clients x count=1).
INLINE_ENCODE = 1
NO_MODEL = "no model is active: train one with POST /jobs/train, or activate one with POST /models/{version}/activate"


REFUSALS = {
    401: "an API key is required (unless DRAWAI_PUBLIC_GENERATE=true)",
    404: "no such model version (model=)",
    409: "the pinned version cannot be loaded",
    422: "invalid parameters: count over DRAWAI_MAX_COUNT, format=png with count > 1, seed + count too large, "
    "a label for an unconditional model, an unknown class (the detail lists the model's classes), a malformed "
    "labels list or one whose total is not count",
    503: "no model is active",
}


@router.post(
    "/generate",
    responses={200: encoders.OPENAPI_200, **responses(*KEYED, 404, 409, 422, 429, 503, descriptions=REFUSALS)},
    dependencies=[Depends(require_generate_key)],  # open when DRAWAI_PUBLIC_GENERATE=true
)
async def generate(
    models: ModelsDep,
    batcher: BatcherDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    count: Annotated[
        int | None, Query(ge=1, description="number of images (at most DRAWAI_MAX_COUNT); default 1, or labels' sum")
    ] = None,
    seed: Annotated[int | None, Query(ge=0, le=MAX_SEED, description="image i uses seed + i")] = None,
    model: Annotated[str | None, Query(description="model version; default the active one")] = None,
    format: Annotated[Literal["png", "zip", "json", "npy", "grid"] | None, Query()] = None,
    label: Annotated[
        str | None, Query(max_length=200, description="conditional models: every image of this class")
    ] = None,
    labels: Annotated[
        str | None,
        Query(max_length=2000, description="conditional models: images per class, e.g. yes:48,no:16 (in that order)"),
    ] = None,
) -> Response:
    """Generate ``count`` images. Same seed, same model (and classes), same engine and precision: byte-identical
    output (across precisions within about one grey level). 429 when overloaded.

    A conditional model draws ``label``'s class, the classes ``labels`` asks for, or, with neither, ``count``
    spread over its classes in their training proportions; every image carries its class.
    """
    if count is not None and count > settings.max_count:
        raise HTTPException(422, f"count must be between 1 and {settings.max_count}")
    try:
        runs = parse_labels(labels) if labels is not None else None
    except LabelError as exc:
        raise HTTPException(422, str(exc)) from None
    rows = count or (sum(n for _, n in runs) if runs else 1)  # what admission counts, before the model is known
    if rows > settings.max_count:
        raise HTTPException(422, f"count must be between 1 and {settings.max_count} (labels asks for {rows})")
    fmt = format or ("png" if rows == 1 else "zip")
    if fmt == "png" and rows != 1:
        raise HTTPException(422, "format=png returns one image: use count=1, or format=zip, json, npy or grid")
    base = seed if seed is not None else secrets.randbelow(MAX_SEED - settings.max_count)
    if base + rows - 1 > MAX_SEED:
        raise HTTPException(422, f"seed + count must stay below {MAX_SEED}")
    with batcher.admit(rows):  # Overloaded (429) before any work; the rows count until the body is built
        # The active model is already loaded: no thread hop on the hot path; a pinned one may need loading.
        loaded = _resolve(models, None) if model is None else await asyncio.to_thread(_resolve, models, model)
        try:
            count, plan = plan_classes(loaded.manifest.labels, count, label, runs, settings.max_count)
        except LabelError as exc:
            raise HTTPException(422, f"model {loaded.version}: {exc}") from None
        seeds = list(range(base, base + count))
        # A few latents cost microseconds: a thread hop would cost more (and one more wake-up on a busy machine).
        z = (
            latents(loaded.latent_dim, seeds)
            if count <= INLINE_LATENTS
            else await asyncio.to_thread(latents, loaded.latent_dim, seeds)
        )
        images = await batcher.infer(loaded, z, None if plan is None else plan.indices)
        names = None if plan is None else plan.names
        engine = (loaded.serving.engine, loaded.serving.precision)
        if count <= INLINE_ENCODE:
            body = encoders.encode(images, seeds, loaded.version, fmt, names, engine)
        else:
            body = await batcher.encode(encoders.encode, images, seeds, loaded.version, fmt, names, engine)
    metrics.count_images(loaded.version, count)
    headers = {
        "X-DrawAI-Model-Version": loaded.version,
        "X-DrawAI-Seed": str(base),
        "X-DrawAI-Synthetic": "true",
        "X-DrawAI-Engine": loaded.serving.engine,
        "X-DrawAI-Precision": loaded.serving.precision,
    }
    if plan is not None:
        headers["X-DrawAI-Classes"] = plan.header
    if fmt in ("zip", "npy", "png", "grid"):
        ext = {"grid": "png"}.get(fmt, fmt)
        headers["Content-Disposition"] = f'attachment; filename="drawai-{loaded.version}-seed{base}.{ext}"'
    return Response(body, media_type=encoders.MEDIA_TYPES[fmt], headers=headers)


def _resolve(models: ModelsDep, version: str | None) -> LoadedModel:
    if version is None:
        if models.active is None:
            raise HTTPException(503, NO_MODEL)
        return models.active
    try:
        return models.get(version)  # NotFoundError -> 404
    except ModelLoadError as exc:
        raise HTTPException(409, str(exc)) from None
