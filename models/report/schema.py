"""The shape of ``report.json`` (written by ``models.quality.evaluation``, served by ``GET /models/{v}/report``).

Torch-free. Each section stays an open mapping: a metric's values differ by metric, and a newer report
may carry more fields than this schema names (they are kept).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class QualityReport(BaseModel):
    model_config = ConfigDict(extra="allow")

    format: int = Field(description="the report format's version")
    created: str
    model: dict[str, Any] = Field(description="the version evaluated: architecture, sizes, dataset, job, epochs")
    data: dict[str, Any] = Field(description="the real, training and synthetic images compared, with their sources")
    metrics: dict[str, dict[str, Any]] = Field(
        description="per metric: computed, its values next to the real-vs-real reference, seconds (or the reason)"
    )
    meanings: dict[str, str] = Field(description="per metric, what it measures and how to read it")
    summary: dict[str, Any] = Field(description="the headline: one value, its reference and a reading per metric")
    closest_pairs: list[dict[str, Any]] = Field(default_factory=list)
    epochs: list[dict[str, Any]] = Field(default_factory=list)
    plots: dict[str, str] = Field(default_factory=dict, description="plot name -> path relative to the report")
    collapsed: bool | None = Field(default=None, description="mode collapse by the diversity check (None: unknown)")
    notes: list[str] = Field(default_factory=list)
    seconds: dict[str, float] = Field(default_factory=dict)
