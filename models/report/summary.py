"""The headline of a quality report: one value per metric, its reference, and a plain-words reading.

Readings are rules of thumb stated against the metric's own reference, so a reader sees at once
which numbers to worry about; the numbers themselves are the result. Torch-free (the API renders
reports with it).
"""

from __future__ import annotations

from typing import Any

# memorization's reference: by construction about 1% of held-out real images fall below the
# 1st percentile of their own nearest-training distances.
MEMORIZATION_REFERENCE = 0.01


def _c2st(value: float, reference: float) -> str:
    if value <= 0.6:
        return "indistinguishable from the real slices for this classifier"
    if value <= reference + 0.05:
        return "no easier to tell from the real slices than the two real sets are from each other (they differ)"
    if value < 0.8:
        return "partly distinguishable from the real slices"
    return "easily told apart from the real slices"


def _w1(value: float, reference: float) -> str:
    if value <= 2 * reference + 0.01:
        return "the intensity distribution matches the real one"
    if value <= 0.05:
        return "the intensity distribution is close to the real one"
    return "the intensity distribution differs from the real one (see the histograms)"


def _diversity(value: float, reference: float) -> str:
    if value > reference + 0.2:
        return "much less varied than the real slices: likely mode collapse"
    if value > reference + 0.05:
        return "somewhat less varied than the real slices"
    if value < reference - 0.2:
        return "far more varied than the real slices (noise-like images?)"
    return "about as varied as the real slices"


def _memorization(value: float, reference: float) -> str:
    if value > 0.05:
        return "many synthetic slices are near-copies of training slices: a privacy risk, see the closest pairs"
    if value > 0:
        return "a few synthetic slices are near-copies of training slices: check the closest pairs"
    return "no synthetic slice is closer to a training slice than real slices are"


def _distance(value: float, reference: float) -> str:
    if reference > 0 and value <= 2 * reference:
        return "within twice the real-vs-real distance"
    if reference > 0:
        return f"{value / reference:.1f} times the real-vs-real distance"
    return "compare with the real-vs-real distance"


# metric -> (value key, reference key or None, reading)
_HEADLINES: dict[str, tuple[str, str | None, Any]] = {
    "c2st_auc": ("synthetic_vs_real", "real_vs_real", _c2st),
    "intensity_w1": ("synthetic_vs_real", "real_vs_real", _w1),
    "diversity_msssim": ("synthetic", "real", _diversity),
    "memorization": ("likely_copies_fraction", None, _memorization),
    "fid": ("synthetic_vs_real", "real_vs_real", _distance),
    "kid": ("synthetic_vs_real", "real_vs_real", _distance),
}


def ordered(names: Any) -> list[str]:
    """Metric names in the report's order (the registry's), unknown ones after, alphabetically."""
    known = list(_HEADLINES)
    return sorted(names, key=lambda n: (known.index(n) if n in known else len(known), n))


def summarize(metrics: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``{metric: {"value", "reference", "reading"}}``, or ``{"computed": False, "reason"}`` for skipped ones.

    In the report's order (``ordered``), whatever order ``metrics`` came in (report.json sorts its keys).
    """
    out: dict[str, dict[str, Any]] = {}
    for name in ordered(metrics):
        values = metrics[name]
        if not values.get("computed", True):
            out[name] = {"computed": False, "reason": values.get("reason", "")}
            continue
        if name not in _HEADLINES:
            continue
        value_key, reference_key, reading = _HEADLINES[name]
        value = float(values[value_key])
        reference = float(values[reference_key]) if reference_key else MEMORIZATION_REFERENCE
        out[name] = {"computed": True, "value": value, "reference": reference, "reading": reading(value, reference)}
    return out
