"""The FastAPI application: ``uvicorn --factory service.main:create_app``.

Nothing happens at import time; the store and the Redis connection are opened in the lifespan.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from rq import Queue

from models.platform.redisconn import connect
from models.platform.settings import Settings, get_settings
from models.platform.store import Store
from service import apidocs, errors, shedding
from service.batching import DynamicBatcher
from service.engines.calibration import Preferences
from service.inference import ModelHolder, choose_providers
from service.metrics import ApiMetrics, RequestMetricsMiddleware
from service.routers import console, datasets, generate, health, jobs, quiz
from service.routers import metrics as metrics_router
from service.routers import models as models_router

log = logging.getLogger(__name__)


def serving_preferences(s: Settings) -> Preferences:
    """The engine, precision and streams the settings ask for, the ONNX Runtime providers here, and this process's
    share of the cores (the API's uvicorn processes divide them)."""
    providers = tuple(choose_providers(s.onnx_provider))
    cores = max(1, len(os.sched_getaffinity(0)) // s.api_workers)
    return Preferences(s.engine, s.precision, s.infer_streams, s.calibration_budget_s, providers, cores)


def create_app(settings: Settings | None = None) -> FastAPI:
    metrics = ApiMetrics()  # one registry per app: several apps in a process never collide

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        s = settings or get_settings()
        app.state.settings = s
        app.state.store = Store(s.home).ensure()
        app.state.redis = connect(s)
        app.state.queue = Queue(s.queue_name, connection=app.state.redis)
        holder = ModelHolder(app.state.store, serving_preferences(s))
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
        docs_url=None,  # /docs and /redoc: service.apidocs, from vendored assets (no CDN)
        redoc_url=None,
    )
    app.state.metrics = metrics
    app.add_middleware(RequestMetricsMiddleware, metrics=metrics)
    app.include_router(health.router)
    app.include_router(datasets.router)
    app.include_router(jobs.router)
    app.include_router(models_router.router)
    app.include_router(generate.router)
    app.include_router(metrics_router.router)
    app.include_router(quiz.router)
    app.include_router(console.router)  # the web console at /

    apidocs.install(app)
    errors.install(app)  # the HTTP mapping of every error, and the OpenAPI's error statuses
    shedding.install(app)  # last: the outermost middleware answers an overloaded /generate before routing
    return app
