"""The blind reader test of a model version (``models.platform.quiz_store``): state, slices, answers, results.

Off unless ``DRAWAI_QUIZ_ENABLED=true`` (403 with a detail saying so): it shows real held-out slices of the
model's dataset. Every route needs a key when ``DRAWAI_API_KEYS`` is set, reads included. A slice's PNG carries
nothing but its pixels (no provenance chunks, no header saying what it is), real slices at the model's size.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response, status
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from models.platform.errors import ConflictError, NotFoundError
from models.platform.grids import png_bytes, to_uint8
from models.platform.quiz_store import (
    FooledItem,
    Interval,
    QuizItem,
    QuizStore,
    ReaderResult,
    fooled_items,
    pooled,
    quiz_pool,
    reader_order,
    reader_results,
)
from models.platform.sampling import latents
from models.platform.schemas import ModelManifest
from models.platform.settings import Settings
from models.platform.store import Store
from service.auth import KeyCheckedRoute, require_key
from service.deps import BatcherDep, ModelsDep, StoreDep
from service.errors import KEYED, responses
from service.inference import ModelLoadError

QUIZ_OFF = (
    "the reader test is disabled: it shows real held-out slices, so it must be enabled on purpose "
    "(DRAWAI_QUIZ_ENABLED=true)"
)
READER = r"^[\w][\w .@-]{0,63}$"  # letters (any script), digits, space, . _ @ -
DESCRIPTIONS = {
    403: "the API key is not valid, or the reader test is disabled (DRAWAI_QUIZ_ENABLED is not true)",
    404: "no such model version, or no such slice position",
    409: "the slice was answered already; the model's dataset has no held-out slices (or is gone); a damaged file",
}


async def require_quiz(request: Request) -> None:
    """403 unless ``DRAWAI_QUIZ_ENABLED=true``."""
    settings: Settings = request.app.state.settings
    if not settings.quiz_enabled:
        raise HTTPException(403, QUIZ_OFF)


# The key first (401/403), then whether the quiz is on: KeyCheckedRoute runs the key check before a body is read.
router = APIRouter(
    prefix="/models/{version}/quiz",
    tags=["quiz"],
    route_class=KeyCheckedRoute,
    dependencies=[Depends(require_key), Depends(require_quiz)],
)
ReaderQuery = Annotated[str, Query(min_length=1, max_length=64, pattern=READER, description="the reader's name")]
Position = Annotated[int, Path(ge=0, le=10_000, description="the slice's place in this reader's order, from 0")]


class QuizState(BaseModel):
    """Where a reader stands in a version's quiz."""

    version: str
    reader: str
    total: int = Field(description="slices in the quiz: half real held-out, half synthetic")
    answered: int
    next: int | None = Field(description="the first position not answered yet; None when done")
    image_size: int


class AnswerIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reader: str = Field(min_length=1, max_length=64, pattern=READER)
    position: int = Field(ge=0, le=10_000)
    answer: Literal["real", "synthetic"]


class QuizResults(BaseModel):
    """Each reader's accuracy (95 % Wilson interval), every answer pooled, the synthetic slices that fooled most.

    An accuracy near 0.5 means the readers could not tell synthetic slices from real ones."""

    version: str
    total: int
    readers: list[ReaderResult]
    pooled: Interval
    fooled: list[FooledItem]


@dataclass(frozen=True)
class Quiz:
    manifest: ModelManifest
    dataset: str
    pool: list[QuizItem]


def _quiz(store: Store, version: str) -> Quiz:
    """The version's quiz slices; 409 when its dataset is gone or holds nothing out."""
    manifest = store.get_manifest(version)  # 404
    try:
        info = store.get_dataset(manifest.dataset)
        _, labels = store.load_dataset(manifest.dataset, split="heldout")
    except NotFoundError:
        raise ConflictError(f"model {version}'s dataset {manifest.dataset} is no longer in the store") from None
    if len(labels) == 0:
        raise ConflictError(f"model {version}'s dataset {manifest.dataset} has no held-out slices to show")
    return Quiz(manifest, manifest.dataset, quiz_pool(version, np.asarray(labels), sorted(info.classes)))


def _state(quiz: Quiz, qs: QuizStore, reader: str) -> QuizState:
    done = {a.position for a in qs.answers(reader)}
    todo = next((i for i in range(len(quiz.pool)) if i not in done), None)
    return QuizState(version=quiz.manifest.version, reader=reader, total=len(quiz.pool), answered=len(done),
                     next=todo, image_size=quiz.manifest.image_size)  # fmt: skip


def _item(quiz: Quiz, reader: str, position: int) -> QuizItem:
    order = reader_order(quiz.pool, quiz.manifest.version, reader)
    if position >= len(order):
        raise HTTPException(404, f"the quiz has {len(order)} slices: positions 0 to {len(order) - 1}")
    return order[position]


@router.get("", responses=responses(*KEYED, 404, 409, 422, descriptions=DESCRIPTIONS))
def quiz_state(version: str, reader: ReaderQuery, store: StoreDep) -> QuizState:
    """How many slices this reader has answered, and the next one to show."""
    quiz = _quiz(store, version)
    return _state(quiz, QuizStore(store, version), reader)


def _real_png(store: Store, quiz: Quiz, row: int) -> bytes:
    images, _ = store.load_dataset(quiz.dataset, split="heldout")
    size = quiz.manifest.image_size
    image = Image.fromarray(np.asarray(images[row]), mode="L")
    if image.size != (size, size):  # as training resized the reals: area when shrinking
        shrink = image.size[0] > size
        image = image.resize((size, size), Image.Resampling.BOX if shrink else Image.Resampling.BILINEAR)
    return png_bytes(image)


async def _synthetic_png(models: ModelsDep, batcher: BatcherDep, quiz: Quiz, item: QuizItem) -> bytes:
    try:
        loaded = await asyncio.to_thread(models.get, quiz.manifest.version)
    except ModelLoadError as exc:
        raise ConflictError(str(exc)) from None
    names = {label.name: label.index for label in quiz.manifest.labels or []}
    labels = np.array([names.get(item.label or "", 0)], np.int64) if names else None
    with batcher.admit(1):
        images = await batcher.infer(loaded, latents(loaded.latent_dim, [item.index]), labels)
    return png_bytes(Image.fromarray(to_uint8(images[0, 0]), mode="L"))


PNG_200: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/png": {"schema": {"type": "string", "format": "binary"}}}}
}


@router.get(
    "/items/{position}.png",
    response_class=Response,
    responses={**PNG_200, **responses(*KEYED, 404, 409, 422, 429, descriptions=DESCRIPTIONS)},
)
async def quiz_slice(
    version: str, position: Position, reader: ReaderQuery, store: StoreDep, models: ModelsDep, batcher: BatcherDep
) -> Response:
    """The slice at ``position`` of this reader's order: its pixels only, nothing says whether it is real."""
    quiz = await asyncio.to_thread(_quiz, store, version)
    item = _item(quiz, reader, position)
    if item.kind == "real":
        body = await asyncio.to_thread(_real_png, store, quiz, item.index)
    else:
        body = await _synthetic_png(models, batcher, quiz, item)
    return Response(body, media_type="image/png", headers={"Cache-Control": "no-store"})


@router.post(
    "/answers",
    status_code=status.HTTP_201_CREATED,
    responses=responses(*KEYED, 400, 404, 409, 422, descriptions=DESCRIPTIONS),
)
def answer(version: str, body: AnswerIn, store: StoreDep) -> QuizState:
    """Record a reader's answer about one slice (once: a second answer to it is a 409); the reader's new state."""
    quiz = _quiz(store, version)
    item = _item(quiz, body.reader, body.position)
    qs = QuizStore(store, version)
    qs.record(body.reader, body.position, item, body.answer)
    return _state(quiz, qs, body.reader)


@router.get("/results", responses=responses(*KEYED, 404, 409, descriptions=DESCRIPTIONS))
def results(version: str, store: StoreDep) -> QuizResults:
    """Every reader's accuracy with its 95 % interval, the pooled accuracy, the synthetic slices that fooled most."""
    quiz = _quiz(store, version)
    answers = QuizStore(store, version).all_answers()
    return QuizResults(version=version, total=len(quiz.pool), readers=reader_results(answers, len(quiz.pool)),
                       pooled=pooled(answers), fooled=fooled_items(answers))  # fmt: skip
