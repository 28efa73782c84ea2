"""Liveness and readiness.

``/healthz`` answers 200 while the process runs. ``/readyz`` answers 200 only when Redis answers
and an active model is loaded (with the ONNX Runtime provider it really runs on), else 503 with
the reasons, so a load balancer sends generation traffic only to processes that can serve it.
"""

from __future__ import annotations

import asyncio
from typing import Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from redis import Redis
from redis.exceptions import RedisError

from service.deps import ModelsDep, RedisDep, StoreDep
from service.engines.calibration import Serving

router = APIRouter(tags=["health"])

REDIS_PING_TIMEOUT_S = 2.0
NO_MODEL = "no active model: train one with POST /jobs/train (or activate one with POST /models/{version}/activate)"


class Health(BaseModel):
    status: Literal["ok"]


class ServedModel(BaseModel):
    version: str
    provider: str  # where it really runs: an ONNX Runtime provider, or openvino:CPU
    serving: Serving  # engine, precision, streams, and the calibration that chose them


class Readiness(BaseModel):
    """``/readyz``; when not ready (503), ``reasons`` lists why and ``detail`` joins them (the error shape)."""

    status: Literal["ready", "not ready"]
    reasons: list[str] | None = None
    detail: str | None = None
    redis: Literal["ok", "unreachable"]
    model: ServedModel | None
    warnings: list[str] | None = None


class NotReady(Readiness):
    status: Literal["not ready"]
    reasons: list[str]
    detail: str = Field(description="the reasons, joined")


@router.get("/healthz")
def healthz() -> Health:
    """The process is alive."""
    return Health(status="ok")


async def _ping(redis: Redis) -> str | None:
    """None when Redis answers, else why not (bounded: a hung connection must not hang the probe)."""
    try:
        await asyncio.wait_for(asyncio.to_thread(redis.ping), REDIS_PING_TIMEOUT_S)
    except TimeoutError:
        return f"redis unreachable: no answer within {REDIS_PING_TIMEOUT_S:g} s"
    except (RedisError, OSError) as exc:
        return f"redis unreachable: {exc}"
    return None


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={
        200: {"description": "ready: Redis answers and a model is loaded"},
        503: {"model": NotReady, "description": "not ready, with the reasons"},
    },
)
async def readyz(redis: RedisDep, store: StoreDep, models: ModelsDep) -> JSONResponse:
    """Redis reachable and an active model loaded (version, and the engine, precision and streams serving it)."""
    reasons: list[str] = []
    redis_problem = await _ping(redis)
    if redis_problem is not None:
        reasons.append(redis_problem)
    if not store.home.is_dir():
        reasons.append(f"store missing: {store.home}")
    active = models.active
    if active is None:
        if models.load_error:
            reasons.append(f"active model failed to load: {models.load_error}")
        elif (version := store.active_version()) is None:
            reasons.append(NO_MODEL)
        else:
            reasons.append(f"active model {version} is not loaded yet")
    model = None
    if active is not None:
        model = {"version": active.version, "provider": active.provider, "serving": active.serving.model_dump()}
    body: dict[str, object] = {"status": "ready" if not reasons else "not ready"}
    if reasons:
        body["reasons"] = reasons
        body["detail"] = "; ".join(reasons)
    body["redis"] = "ok" if redis_problem is None else "unreachable"
    body["model"] = model
    if active is not None and models.load_error:  # serving the previous version; the new one failed
        body["warnings"] = [f"newly activated model failed to load: {models.load_error}"]
    return JSONResponse(status_code=200 if not reasons else 503, content=body)
