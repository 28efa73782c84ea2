"""HTTP errors in one place: the error body, what each route declares, the exception handlers, the OpenAPI.

Every error answers ``{"detail": ...}`` (``ErrorBody``): ``detail`` is a sentence for the client, except
for FastAPI's own request validation (422 for a query, path or JSON body that does not fit its schema),
where it is the list of problems (``ValidationErrorItem``: ``loc``, ``msg``, ``type``). The app's own
422s (a count over the limit, a hostile archive...) carry a sentence. That union is the one documented
shape, and the OpenAPI's 422s say so (FastAPI's default ``HTTPValidationError`` schema, a list only, is
replaced).

Routers declare what they can answer with ``responses(401, 403, 404, ...)`` (or ``KEYED`` for the two
key statuses); ``install(app)`` registers the handlers that map the domain errors of
``models.platform.errors`` (``STATUSES``: ``NotFoundError`` 404, ``ConflictError`` and ``CorruptError`` 409,
``Refused`` 422, ``TooLarge`` 413; the only place they meet HTTP), ``RedisError`` 503, and post-processes the
OpenAPI: a 422 that FastAPI adds to a route which did not declare one (a route whose only parameters are
free strings, which cannot fail validation) is dropped, so the document lists what really happens.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from redis.exceptions import RedisError

from models.platform.errors import ConflictError, DrawaiError, NotFoundError, Refused, TooLarge
from service.batching import Overloaded

log = logging.getLogger(__name__)

REDIS_DOWN = "the job queue (Redis) is unreachable; retry later"
KEYED = (401, 403)  # the statuses of routes that need an API key when DRAWAI_API_KEYS is set


class ValidationErrorItem(BaseModel):
    """One problem FastAPI found in the request (``loc`` says where: ``["query", "count"]``, ``["body", ...]``)."""

    model_config = ConfigDict(extra="allow")  # pydantic adds "input" and "ctx"

    loc: list[str | int]
    msg: str
    type: str


class ErrorBody(BaseModel):
    """Every error's body."""

    detail: str | list[ValidationErrorItem] = Field(
        description="what went wrong, as a sentence; for request validation errors (422), the list of problems"
    )


DESCRIPTIONS: dict[int, str] = {
    400: "malformed request: a body that cannot be parsed (not UTF-8, a broken multipart form), a bad Content-Length",
    401: "an API key is required (send Authorization: Bearer KEY or X-API-Key: KEY)",
    403: "the API key is not valid",
    404: "no such dataset, job or model version",
    409: "conflicts with the current state (in use, already ended, a damaged or unloadable stored file)",
    413: "over a limit (upload bytes, archive members, unpacked bytes, image pixels)",
    415: "unsupported media type",
    422: "invalid parameters or body; FastAPI's validation gives the list of problems, the app a sentence",
    429: "too many images waiting for inference: retry after Retry-After seconds",
    503: "not available now (no active model, or Redis unreachable); retry later",
}
HEADERS: dict[int, dict[str, Any]] = {
    401: {"WWW-Authenticate": {"description": "Bearer", "required": True, "schema": {"type": "string"}}},
    429: {"Retry-After": {"description": "seconds to wait", "required": True, "schema": {"type": "integer"}}},
}


def responses(*codes: int, descriptions: dict[int, str] | None = None) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` of a route that can answer ``codes``, each with the error body (and headers).

    ``descriptions`` override the default description of a status: ``responses(404, descriptions={404: "..."})``.
    """
    out: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        text = (descriptions or {}).get(code, DESCRIPTIONS[code])
        entry: dict[str, Any] = {"model": ErrorBody, "description": text}
        if code in HEADERS:
            entry["headers"] = HEADERS[code]
        out[code] = entry
    return out


STATUSES: dict[type[DrawaiError], int] = {NotFoundError: 404, ConflictError: 409, Refused: 422, TooLarge: 413}


def status_of(exc: DrawaiError) -> int:
    """The HTTP status of a domain error: that of its most specific class in ``STATUSES``."""
    return next(STATUSES[cls] for cls in type(exc).__mro__ if cls in STATUSES)


async def _domain(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DrawaiError)
    status = status_of(exc)
    detail = f"not found: {exc.detail}" if isinstance(exc, NotFoundError) else exc.detail
    if isinstance(exc, Refused):
        log.info("refused status=%d path=%s detail=%s", status, request.url.path, detail)
    return JSONResponse(status_code=status, content={"detail": detail})


async def _redis_down(request: Request, exc: Exception) -> JSONResponse:
    log.warning("redis unavailable: %s", exc)
    return JSONResponse(status_code=503, content={"detail": REDIS_DOWN})


async def _overloaded(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Overloaded)
    request.app.state.metrics.generate_rejected.inc()  # no log line: under overload it would flood the log
    headers = {"Retry-After": str(exc.retry_after_s)}
    return JSONResponse(status_code=429, content={"detail": str(exc)}, headers=headers)


async def _invalid(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return await request_validation_exception_handler(request, exc)  # {"detail": [ValidationErrorItem...]}


HANDLERS = {
    DrawaiError: _domain,
    RedisError: _redis_down,
    Overloaded: _overloaded,
    RequestValidationError: _invalid,
}


def _undeclared_422(response: dict[str, Any]) -> bool:
    schema = response.get("content", {}).get("application/json", {}).get("schema", {})
    return bool(schema.get("$ref", "").endswith("/HTTPValidationError"))


def fix_openapi(schema: dict[str, Any]) -> dict[str, Any]:
    """Drop the 422s FastAPI added to routes that did not declare one, and its list-only error schemas; say
    that errors are JSON on every route (FastAPI files them under the route's media type: text/html...)."""
    for item in schema.get("paths", {}).values():
        for operation in item.values():
            answers = operation.get("responses", {})
            if "422" in answers and _undeclared_422(answers["422"]):
                del answers["422"]
            for code, answer in answers.items():
                content = answer.get("content", {})
                if code[0] in "45" and content and "application/json" not in content:
                    answer["content"] = {"application/json": next(iter(content.values()))}
    components = schema.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    return schema


def install(app: FastAPI) -> None:
    """Register the exception handlers and the OpenAPI post-processing on ``app``."""
    for exc_class, handler in HANDLERS.items():
        app.add_exception_handler(exc_class, handler)
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        return fix_openapi(generate())  # generate() caches the document; fixing it again is a no-op

    app.openapi = openapi  # type: ignore[method-assign]
