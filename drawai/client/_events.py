"""Watching a job: the events of ``GET /jobs/{id}/events`` and what a watch keeps across broken streams."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx

from drawai.client._base import DrawAIError, RetryPolicy, transport_error
from service.queue import JobView


@dataclass
class JobEvent:
    """One event of ``GET /jobs/{id}/events``: ``event`` is ``progress``, ``phase`` or ``end`` (the last one), ``id``
    its number in its stream (from 1; a reconnected watch starts a new stream), ``job`` the job's view then."""

    event: str
    id: int
    job: JobView

    @property
    def progress(self) -> dict[str, Any]:
        return self.job.progress or {}


class StreamBroken(Exception):
    """The event stream ended without ``end`` (an ``error`` event, or the connection dropped): reconnect."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class Reconnects:
    """A watch's bookkeeping across broken streams: a reopened stream starts with the job's current state, which
    is not passed on again when the watcher has seen it; the count of breaks in a row (reset when the job moves on)
    is bounded by the retry policy."""

    def __init__(self, policy: RetryPolicy, base_url: str) -> None:
        self.policy, self.base_url = policy, base_url
        self.breaks = 0
        self.last: JobView | None = None

    def fresh(self, event: JobEvent) -> bool:
        """Whether to pass ``event`` on (not the repeat of a known state that opens a reopened stream)."""
        if event.event == "progress" and event.job == self.last:
            return False
        if event.job != self.last:
            self.breaks = 0
        self.last = event.job
        return True

    def broke(self, exc: StreamBroken | httpx.TransportError) -> float:
        """The wait before reopening the stream; ``DrawAIError`` once the policy's attempts are spent."""
        self.breaks += 1
        if self.breaks >= self.policy.attempts:
            if isinstance(exc, StreamBroken):
                raise DrawAIError(503, exc.detail) from None
            raise transport_error(exc, self.base_url) from None
        return min(self.policy.backoff_s * 2 ** (self.breaks - 1), self.policy.max_wait_s)


def job_event(event: str, data: str, event_id: str | None) -> JobEvent:
    """A parsed event; ``StreamBroken`` for an ``error`` event (Redis failed while the server watched the job)."""
    if event == "error":
        body = json.loads(data)
        raise StreamBroken(str(body.get("detail", body)) if isinstance(body, dict) else str(body))
    return JobEvent(event, int(event_id or 0), JobView.model_validate_json(data))
