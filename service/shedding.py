"""Load shedding for ``POST /generate``: under overload, the 429 is answered before routing.

When the batcher is full (``DRAWAI_MAX_QUEUED_ROWS``), most requests of an overloaded API are
refusals; each one used to pay for the whole stack (routing, dependencies, validation, the handler,
the exception handler, one access-log line) on the event loop that also dispatches the accepted
requests' batches. ``ShedOverload`` is a pure ASGI middleware, outermost, that answers those
refusals itself: a ``POST /generate`` whose key is accepted (or that needs none) and whose ``count``
is valid gets the same 429 (``Overloaded``'s sentence as ``detail``, ``Retry-After``) that the route
would have given, counted in ``drawai_generate_rejected_total`` and ``drawai_http_requests_total``.
Anything else (no key or a wrong key, a bad ``count``, a request that fits) goes down the normal
path, so 401/403/422 keep their precedence and the route's own ``admit`` stays the one that
reserves rows. Refusals are not access-logged one line each (``QuietRefusals``): under overload
they would flood the log; the counter holds them.
"""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl

from starlette.requests import Request

from service.auth import key_refusal

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Receive, Scope, Send

    from service.batching import Overloaded

GENERATE = "/generate"
ACCESS_LOGGER = "uvicorn.access"


class ShedOverload:
    """Pure ASGI middleware: answers an overloaded ``POST /generate`` with 429 before anything else runs."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        refused = self._refusal(scope) if scope["type"] == "http" else None
        if refused is None:
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        body = json.dumps({"detail": str(refused)}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"retry-after", str(refused.retry_after_s).encode()),
        ]
        await send({"type": "http.response.start", "status": 429, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        metrics = scope["app"].state.metrics
        metrics.generate_rejected.inc()
        metrics.record_request("POST", GENERATE, 429, time.perf_counter() - t0)

    @staticmethod
    def _refusal(scope: Scope) -> Overloaded | None:
        if scope["path"] != GENERATE or scope["method"] != "POST":
            return None
        state = scope["app"].state
        batcher = getattr(state, "batcher", None)  # None before the lifespan has started it
        if batcher is None:
            return None
        count = _count(scope, state.settings.max_count)
        if count is None:
            return None
        refused = batcher.refusal(count)
        if refused is None or not _key_accepted(scope):
            return None
        batcher.count_refusal(count)
        return refused


def _count(scope: Scope, max_count: int) -> int | None:
    """The request's ``count`` (1 when absent; with ``labels``, their sum) when it is valid, else None (the route
    answers 422, or, for a ``labels`` list without ``count``, checks it against the model)."""
    query = parse_qsl(scope.get("query_string", b"").decode("latin-1"))
    values = [v for k, v in query if k == "count"]
    if not values:
        if any(k == "labels" for k, _ in query):
            return None  # the route reads the list (and says what is wrong with it)
        return 1
    text = values[-1].strip()
    if not text.isascii() or not text.isdigit():
        return None
    count = int(text)
    return count if 1 <= count <= max_count else None


def _key_accepted(scope: Scope) -> bool:
    """Whether the route's key check would let this request through (it needs none, or its key is valid)."""
    settings = scope["app"].state.settings
    if settings.public_generate:
        return True
    return key_refusal(Request(scope), settings) is None  # else the route answers 401/403 itself, and logs it


class QuietRefusals(logging.Filter):
    """Drops uvicorn's access-log lines of 429s on ``POST /generate`` (counted in the metrics instead)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5:  # (client, method, path, http version, status)
            _, method, path, _, status = args
            if status == 429 and method == "POST" and str(path).split("?", 1)[0] == GENERATE:
                return False
        return True


def install(app: ASGIApp) -> None:
    """Add the shedding middleware to ``app`` (call it last: it must be outermost) and quiet the access log."""
    from fastapi import FastAPI

    assert isinstance(app, FastAPI)
    app.add_middleware(ShedOverload)
    access = logging.getLogger(ACCESS_LOGGER)
    if not any(isinstance(f, QuietRefusals) for f in access.filters):
        access.addFilter(QuietRefusals())
