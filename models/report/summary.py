"""The headline of a quality report: one value per metric, its reference, and a plain-words reading.

Readings are rules of thumb stated against the metric's own reference, so a reader sees at once
which numbers to worry about; the numbers themselves are the result. Torch-free (the API renders
reports with it).
"""

from __future__ import annotations

from typing import Any

# memorization's reference and its upper bound in reports written before the metric carried them
# (``reference_fraction``, ``reference_upper``): about 1% of held-out real images fall below the
# 1st percentile of their own nearest-training distances.
MEMORIZATION_REFERENCE = 0.01
MEMORIZATION_UPPER = 0.05


def _c2st(value: float, reference: float) -> str:
    if value <= 0.6:
        return "indistinguishable from the real slices for this classifier"
    if value <= reference + 0.05:  # the real sets themselves are told apart about as well
        differ = " (they differ)" if reference > 0.6 else ""
        return f"no easier to tell from the real slices than the two real sets are from each other{differ}"
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


def _memorization(value: float, reference: float, upper: float) -> str:
    """Read against the reference: held-out real slices themselves put about ``reference`` below the
    threshold, and a generator as novel as they are stays under ``upper`` 19 times in 20. Up to ``upper``
    reads as expected; above it, some copies; above twice that (or half the slices), many."""
    if value == 0:
        return "no synthetic slice is closer to a training slice than real slices are"
    if value <= upper:
        return (
            "as expected: no more synthetic slices this close to a training slice than held-out real slices "
            "show by chance (no sign of copying)"
        )
    if value <= min(2 * upper, 0.5):
        return (
            "more synthetic slices close to a training slice than held-out real slices: "
            "some may be near-copies, check the closest pairs"
        )
    return "many synthetic slices are near-copies of training slices: a privacy risk, see the closest pairs"


def _distance(value: float, reference: float) -> str:
    if reference > 0 and value <= 2 * reference:
        return "within twice the real-vs-real distance"
    if reference > 0:
        return f"{value / reference:.1f} times the real-vs-real distance"
    return "compare with the real-vs-real distance"


# metric -> (value key, reference key, reading)
_HEADLINES: dict[str, tuple[str, str, Any]] = {
    "c2st_auc": ("synthetic_vs_real", "real_vs_real", _c2st),
    "intensity_w1": ("synthetic_vs_real", "real_vs_real", _w1),
    "diversity_msssim": ("synthetic", "real", _diversity),
    "memorization": ("likely_copies_fraction", "reference_fraction", _memorization),
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
        if name == "memorization":
            reference = float(values.get(reference_key, MEMORIZATION_REFERENCE))
            text = _memorization(value, reference, float(values.get("reference_upper", MEMORIZATION_UPPER)))
        else:
            reference = float(values[reference_key])
            text = reading(value, reference)
        out[name] = {"computed": True, "value": value, "reference": reference, "reading": text}
    return out
