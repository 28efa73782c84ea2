"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError

from service.deps import RedisDep, StoreDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


@router.get("/readyz")
def readyz(redis: RedisDep, store: StoreDep) -> JSONResponse:
    """Redis reachable and the store writable."""
    reasons = []
    try:
        redis.ping()
    except RedisError as exc:
        reasons.append(f"redis unreachable: {exc}")
    if not store.home.is_dir():
        reasons.append(f"store missing: {store.home}")
    body = {
        "status": "ready" if not reasons else "not ready",
        "reasons": reasons,
        "active_model": store.active_version(),
    }
    return JSONResponse(status_code=200 if not reasons else 503, content=body)
