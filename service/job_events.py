"""``GET /jobs/{id}/events``: a job's progress as Server-Sent Events, read from Redis until the job ends.

Every event's ``data`` is the JSON of the job's ``JobView`` (what ``GET /jobs/{id}`` answers) and its ``id`` a
counter from 1. The first event is a ``progress`` with the current state; then, each time the view changes, a
``phase`` (only when ``progress.phase`` or ``status`` changed) followed by a ``progress``; once the job has ended
(finished, failed or canceled), an ``end`` with the final view, and the stream closes. A ``: keep-alive`` comment
goes out after ``DRAWAI_SSE_KEEPALIVE_S`` seconds without an event. When Redis stops answering, or the job's record
expires, an ``error`` event (``{"detail": ...}``) ends the stream: a stream never ends in a traceback.

The job is read every ``DRAWAI_SSE_POLL_INTERVAL_S`` seconds in a thread (redis-py is blocking); the loop stops as
soon as the client disconnects (Starlette cancels the stream; the loop also checks between reads).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi.sse import ServerSentEvent
from redis.exceptions import RedisError
from rq import Queue

from models.platform.errors import NotFoundError
from service import queue as jobq
from service.errors import REDIS_DOWN

log = logging.getLogger(__name__)

ENDED = frozenset({"finished", "failed", "canceled"})
KEEP_ALIVE = "keep-alive"
GONE = "the job's record expired or was removed while it was watched"


def read_view(queue: Queue, job_id: str) -> jobq.JobView:
    """The job as ``GET /jobs/{id}`` shows it (``NotFoundError`` when unknown). Blocking: run it in a thread."""
    return jobq.view(jobq.fetch(queue, job_id))


def _phase(view: jobq.JobView) -> tuple[str, Any]:
    return view.status, (view.progress or {}).get("phase")


async def job_events(
    queue: Queue,
    first: jobq.JobView,
    *,
    poll_s: float,
    keepalive_s: float,
    disconnected: Callable[[], Awaitable[bool]],
) -> AsyncIterator[ServerSentEvent]:
    """The events of the job whose current view is ``first``, until it ends, Redis fails or the client leaves."""
    ids = itertools.count(1)

    def event(kind: str, data: Any) -> ServerSentEvent:
        return ServerSentEvent(event=kind, data=data, id=str(next(ids)))

    view = first
    yield event("progress", view)
    quiet_since = time.monotonic()
    while view.status not in ENDED:
        await asyncio.sleep(poll_s)
        if await disconnected():
            return
        try:
            latest = await asyncio.to_thread(read_view, queue, first.id)
        except RedisError as exc:
            log.warning("events of job %s: redis unavailable: %s", first.id, exc)
            yield event("error", {"detail": REDIS_DOWN})
            return
        except NotFoundError:
            yield event("error", {"detail": GONE})
            return
        if latest != view:
            if _phase(latest) != _phase(view):
                yield event("phase", latest)
            yield event("progress", latest)
            view, quiet_since = latest, time.monotonic()
        elif time.monotonic() - quiet_since >= keepalive_s:
            yield ServerSentEvent(comment=KEEP_ALIVE)
            quiet_since = time.monotonic()
    yield event("end", view)
