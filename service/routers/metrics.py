"""``GET /metrics``: this API process's Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response

from service.deps import MetricsDep
from service.metrics import exposition

router = APIRouter(tags=["metrics"])


@router.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
def metrics(metrics: MetricsDep) -> Response:
    """Prometheus text exposition. A sync route: the jobs collector reads Redis off the event loop."""
    body, content_type = exposition(metrics)
    return Response(body, media_type=content_type)
