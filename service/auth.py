"""API keys: who may change state, and where the API may listen without them.

When ``DRAWAI_API_KEYS`` holds keys (comma-separated), every route that changes state (uploads,
imports and deletions of datasets, training jobs and their cancellation, model activation) needs
one of them, sent as ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``; ``POST /generate``
does too unless ``DRAWAI_PUBLIC_GENERATE=true``. Reads (``GET``), ``/healthz``, ``/readyz`` and
``/metrics`` stay open. No key: 401 with ``WWW-Authenticate: Bearer``; a wrong key: 403. Without
keys everything is open.

A presented key is compared with every configured key, always all of them, through SHA-256
digests and ``hmac.compare_digest``: the time taken says neither which key matched nor how long
the keys are. Keys are never logged, not even in part: a refusal logs its reason, method, path
and client address only.

Routes opt in with ``dependencies=[Depends(require_key)]`` (or ``require_generate_key``). FastAPI
reads a JSON body *before* it solves dependencies, so routers with body routes also use
``route_class=KeyCheckedRoute``, which runs those same checks before anything reads the body:
an anonymous client never gets a byte of its upload or JSON body read.

``check_listen_allowed`` is the start-up guard of ``drawai api``: it refuses a non-loopback
address when no keys are set, unless ``DRAWAI_ALLOW_ANONYMOUS=true``.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
from collections.abc import Awaitable, Callable, Coroutine
from functools import lru_cache
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi.routing import APIRoute
from pydantic import SecretStr
from starlette.responses import Response

from models.platform.settings import Settings, split_keys

log = logging.getLogger(__name__)

BEARER = "bearer"
KEY_HEADER = "x-api-key"
MISSING_DETAIL = "an API key is required: send it as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"
WRONG_DETAIL = "the API key is not valid"
LOOPBACK_NAMES = frozenset({"localhost", "localhost."})


class ListenRefused(Exception):
    """The API would listen on a non-loopback address with no API keys set; the message says what to set."""


def presented_keys(request: Request) -> list[str]:
    """The keys a request carries: the ``Authorization: Bearer`` token and the ``X-API-Key`` value (if any)."""
    found = []
    scheme, _, token = request.headers.get("authorization", "").strip().partition(" ")
    if scheme.lower() == BEARER and token.strip():
        found.append(token.strip())
    key = request.headers.get(KEY_HEADER, "").strip()
    if key:
        found.append(key)
    return found


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()


@lru_cache(maxsize=4)
def _configured_digests(api_keys: SecretStr | None) -> tuple[bytes, ...]:
    """The digests of the configured keys, computed once per setting (not on every request of /generate)."""
    return tuple(_digest(key) for key in split_keys(api_keys))


def key_matches(presented: str, digests: tuple[bytes, ...]) -> bool:
    """Whether ``presented`` is one of the keys: every digest is compared (fixed length, constant time)."""
    given = _digest(presented)
    matched = False
    for digest in digests:  # no early exit: the time does not depend on which key matched
        matched |= hmac.compare_digest(given, digest)
    return matched


def key_refusal(request: Request, settings: Settings) -> int | None:
    """401 (keys are configured, none presented), 403 (no presented key is valid), or None (allowed)."""
    keys = _configured_digests(settings.api_keys)
    if not keys:
        return None
    presented = presented_keys(request)
    if not presented:
        return 401
    accepted = False
    for key in presented:  # both headers are checked, always: a request is allowed when either holds a valid key
        accepted |= key_matches(key, keys)
    return None if accepted else 403


def check_key(request: Request, settings: Settings) -> None:
    """Raise 401 (no key) or 403 (no presented key is valid) when keys are configured; return when allowed."""
    refusal = key_refusal(request, settings)
    if refusal is None:
        return
    client = request.client.host if request.client else "-"
    if refusal == 401:
        log.info("rejected: missing key method=%s path=%s client=%s", request.method, request.url.path, client)
        raise HTTPException(status_code=401, detail=MISSING_DETAIL, headers={"WWW-Authenticate": "Bearer"})
    log.warning("rejected: wrong key method=%s path=%s client=%s", request.method, request.url.path, client)
    raise HTTPException(status_code=403, detail=WRONG_DETAIL)


async def require_key(request: Request) -> None:
    """Dependency of the routes that change state: a valid key when ``DRAWAI_API_KEYS`` is set."""
    check_key(request, request.app.state.settings)


async def require_generate_key(request: Request) -> None:
    """Dependency of ``POST /generate``: as ``require_key``, but open when ``DRAWAI_PUBLIC_GENERATE=true``."""
    settings: Settings = request.app.state.settings
    if not settings.public_generate:
        check_key(request, settings)


RequireKey = Annotated[None, Depends(require_key)]
RequireGenerateKey = Annotated[None, Depends(require_generate_key)]
KEY_CHECKS: tuple[Callable[[Request], Awaitable[None]], ...] = (require_key, require_generate_key)


class KeyCheckedRoute(APIRoute):
    """An ``APIRoute`` that runs its key checks (``require_key``/``require_generate_key`` in ``dependencies=``)
    before FastAPI reads the request body; routes without them behave exactly as an ``APIRoute``.

    They run again among the route's dependencies (cheap), so the route stays correct under any route class.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        checks = [check for check in KEY_CHECKS if any(d.dependency is check for d in self.dependencies)]
        if not checks:
            return handler

        async def checked(request: Request) -> Response:
            for check in checks:
                await check(request)
            return await handler(request)

        return checked


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (127.0.0.0/8, ::1, IPv4-mapped 127.x) or ``localhost``.

    The wildcard addresses ``0.0.0.0`` and ``::`` listen everywhere: not loopback. Other host names are
    not resolved: they count as non-loopback.
    """
    name = host.strip().lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        address = ipaddress.ip_address(name.removeprefix("[").removesuffix("]"))
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def check_listen_allowed(host: str, settings: Settings) -> None:
    """Raise ``ListenRefused`` when ``host`` is not loopback, no API keys are set and anonymous access is off."""
    if is_loopback(host) or split_keys(settings.api_keys) or settings.allow_anonymous:
        return
    raise ListenRefused(
        f"refusing to listen on {host}: no API keys are set, so anyone who reaches this address could upload, "
        "train, cancel, delete and activate. Set DRAWAI_API_KEYS to one or more comma-separated keys, or set "
        "DRAWAI_ALLOW_ANONYMOUS=true to serve without keys on purpose (or listen on 127.0.0.1)."
    )
