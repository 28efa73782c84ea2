"""The utility test's section of the quality report page, as an HTML fragment (torch-free).

Rendered from the ``utility`` section that ``models.quality.utility.utility_test`` returns (or its
``skipped_section``), in the style of ``models.report.page``: Jinja2 with autoescape on, the same table,
``num``, ``muted`` and ``note`` classes, so class names and reasons cannot inject markup.
"""

from __future__ import annotations

from typing import Any

from jinja2 import Environment, select_autoescape

HEADING = "Does synthetic data help a classifier?"
METRIC_LABELS = {
    "auroc": "AUROC",
    "balanced_accuracy": "balanced accuracy",
    "f1_minority": "F1 of the minority class",
}
VERDICT_COLOURS = {"helped": "#1b7a2f", "hurt": "#a00", "no clear effect": "#555"}

_TEMPLATE = """<section class="utility">
<h2>{{ heading }}</h2>
{% if s.skipped %}
<p class="muted">Not tested: {{ s.why }}</p>
{% else %}
<p style="font-size:1.15em; border-left: 4px solid {{ colour }}; padding: .4em .8em">
 <strong>{{ s.summary }}</strong></p>
{% if s.caution %}<p class="note">{{ s.caution }}</p>{% endif %}
<p class="muted">The same small classifier is trained three ways and always tested on the real held-out
 slices: (a) on the real training slices only, (b) on them plus synthetic slices that balance the classes,
 (c) on synthetic slices only. The verdict reads the change from (a) to (b) in the F1 of the minority
 class{% if s.minority %} ({{ s.minority }}){% endif %}.</p>
<table>
 <tr><th>trained on</th>{% for m in metrics %}<th>{{ labels.get(m, m) }}</th>{% endfor %}</tr>
 {% for arm, row in arms %}
 <tr><td>{{ row.get("label", arm) }}</td>
 {% for m in metrics %}<td class="num">{{ pm(row.get(m)) }}</td>{% endfor %}</tr>
 {% endfor %}
</table>
<p class="muted">Mean ± standard deviation over {{ s.seeds_run }} classifier seeds{% if s.auroc %};
 AUROC: {{ s.auroc }}{% endif %}.</p>
<h3>Effect of adding synthetic slices: (b) − (a)</h3>
<table>
 <tr><th>metric</th><th>mean difference</th><th>{{ confidence }} interval</th><th>per seed</th></tr>
 {% for m, d in differences %}
 <tr><td>{{ labels.get(m, m) }}</td><td class="num">{{ signed(d.mean) }}</td>
  <td class="num">{{ signed(d.low) }} to {{ signed(d.high) }}</td>
  <td class="num">{{ per_seed(d.get("per_seed", [])) }}</td></tr>
 {% endfor %}
</table>
<h3>Slices per class</h3>
<table>
 <tr><th>class</th><th>real training slices</th><th>real held-out slices</th><th>synthetic added in (b)</th>
 <th>synthetic in (c)</th></tr>
 {% for name in names %}
 <tr><td>{{ name }}{% if name == s.minority %} <span class="muted">(minority)</span>{% endif %}</td>
  <td class="num">{{ train.get(name, "") }}</td><td class="num">{{ heldout.get(name, "") }}</td>
  <td class="num">{{ added.get(name, "") }}</td><td class="num">{{ alone.get(name, "") }}</td></tr>
 {% endfor %}
</table>
<p class="muted">Classifier: {{ s.classifier }}. {{ s.seeds_run }} of {{ s.seeds_planned }} seeds ran
{% if s.stopped_by_budget %} (stopped by the time budget){% endif %} in {{ "%.1f"|format(s.seconds or 0) }} s;
 seed k of every arm starts from the same weights.</p>
<p class="note">The held-out slices are real: no synthetic slice is ever tested on. With few held-out slices
 the intervals are wide; an interval that spans 0 means this test cannot tell, not that there is no effect.</p>
{% endif %}
</section>
"""


def _pm(value: dict[str, Any] | None) -> str:
    if not value or value.get("mean") is None:
        return "–"
    return f"{value['mean']:.2f} ± {value.get('sd', 0.0):.2f}"


def _signed(value: float | None) -> str:
    return "–" if value is None else f"{value:+.2f}".replace("-", "−")


def render_utility(section: dict[str, Any]) -> str:
    """The HTML fragment (a ``<section>``) of a utility test result or of a skipped one."""
    env = Environment(autoescape=select_autoescape(default=True, default_for_string=True))
    counts = section.get("counts", {})
    train = counts.get("train", {})
    confidence = section.get("confidence", 0.95)
    return env.from_string(_TEMPLATE).render(
        heading=HEADING,
        s=section,
        colour=VERDICT_COLOURS.get(section.get("verdict", ""), "#555"),
        metrics=list(METRIC_LABELS),
        labels=METRIC_LABELS,
        arms=list(section.get("arms", {}).items()),
        differences=list(section.get("difference", {}).items()),
        confidence=f"{confidence * 100:.0f} %",
        names=list(train),
        train=train,
        heldout=counts.get("heldout", {}),
        added=section.get("synthetic_added", {}),
        alone=section.get("synthetic_only", {}),
        pm=_pm,
        signed=_signed,
        per_seed=lambda values: ", ".join(_signed(v) for v in values),
    )
