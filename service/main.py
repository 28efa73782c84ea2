"""The FastAPI application: ``uvicorn --factory service.main:create_app``.

Nothing happens at import time; the store and the Redis connection are opened in the lifespan.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError
from rq import Queue

from models.redisconn import connect
from models.settings import Settings, get_settings
from models.store import CorruptError, NotFoundError, Store
from service.batching import DynamicBatcher, Overloaded
from service.inference import ModelHolder, choose_providers
from service.metrics import ApiMetrics, RequestMetricsMiddleware
from service.routers import datasets, generate, health, jobs
from service.routers import metrics as metrics_router
from service.routers import models as models_router

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    metrics = ApiMetrics()  # one registry per app: several apps in a process never collide

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        s = settings or get_settings()
        app.state.settings = s
        app.state.store = Store(s.home).ensure()
        app.state.redis = connect(s)
        app.state.queue = Queue(s.queue_name, connection=app.state.redis)
        holder = ModelHolder(app.state.store, choose_providers(s.onnx_provider))
        await asyncio.to_thread(holder.load_active)
        app.state.models = holder
        metrics.bind(app.state.queue, holder)
        app.state.batcher = DynamicBatcher(
            s.batch_max_size, s.batch_max_wait_ms / 1000, metrics.observe_batch, max_queued_rows=s.max_queued_rows
        )
        await app.state.batcher.start()
        watcher = asyncio.create_task(holder.watch(s.model_watch_interval_s), name="drawai-model-watcher")
        log.info("api started home=%s queue=%s model=%s", app.state.store.home, s.queue_name,
                 holder.active.version if holder.active else None)  # fmt: skip
        try:
            yield
        finally:
            watcher.cancel()
            await app.state.batcher.stop()
            app.state.redis.close()

    app = FastAPI(
        title="Draw.AI",
        summary="Train GANs on small sets of MRI slices; generate labelled synthetic slices.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.metrics = metrics
    app.add_middleware(RequestMetricsMiddleware, metrics=metrics)
    app.include_router(health.router)
    app.include_router(datasets.router)
    app.include_router(jobs.router)
    app.include_router(models_router.router)
    app.include_router(generate.router)
    app.include_router(metrics_router.router)

    @app.exception_handler(NotFoundError)
    async def _not_found(request: Request, exc: NotFoundError) -> JSONResponse:
        return JSONResponse(status_code=404, content={"detail": f"not found: {exc.args[0]}"})

    @app.exception_handler(CorruptError)
    async def _corrupt(request: Request, exc: CorruptError) -> JSONResponse:
        return JSONResponse(status_code=409, content={"detail": str(exc)})

    @app.exception_handler(Overloaded)
    async def _overloaded(request: Request, exc: Overloaded) -> JSONResponse:
        metrics.generate_rejected.inc()  # no log line: under overload it would flood the log
        headers = {"Retry-After": str(exc.retry_after_s)}
        return JSONResponse(status_code=429, content={"detail": str(exc)}, headers=headers)

    @app.exception_handler(RedisError)
    async def _redis_down(request: Request, exc: RedisError) -> JSONResponse:
        log.warning("redis unavailable: %s", exc)
        return JSONResponse(status_code=503, content={"detail": "the job queue (Redis) is unreachable; retry later"})

    return app
