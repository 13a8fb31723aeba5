"""The /ops page: live calls and their machine state, the rollout setting, figures per arm and a chart.

One self-contained HTML page (inline CSS, inline SVG drawn here, a few lines of inline script; nothing
fetched from elsewhere). The script asks `/ops/data.json` every 2 s and swaps in the sections this
module renders, so the page and its refreshes are drawn by the same templates. Call data and setting
values are untrusted text: Jinja's autoescaping escapes every value, the SVG included.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from jinja2 import Environment, StrictUndefined

from orchestrator.rollout import (
    CATEGORIES,
    CATEGORY_LABELS,
    ArmFigures,
    RolloutView,
    money,
    percent,
    seconds,
    when,
)

REFRESH_MS = 2000
SECTIONS = ("live", "rollout", "arms", "chart")
# One colour per call category, in CATEGORIES order: the AI's own endings green, handoffs blue, losses warm.
CATEGORY_COLOURS = {
    "resolved_by_ai": "#2e7d32",
    "handed_to_studio": "#1565c0",
    "handed_to_flex": "#42a5f5",
    "handed_to_number": "#90caf9",
    "voicemail": "#8e24aa",
    "abandoned": "#ef6c00",
    "fallback": "#c62828",
    "legacy": "#757575",
    "in_progress": "#cfd8dc",
}
_CHART_WIDTH = 640
_BAR_HEIGHT = 28
_LABEL_WIDTH = 90
_LEGEND_COLUMNS = 5


@dataclass(frozen=True, slots=True)
class LiveCall:
    call_sid: str
    number: int  # the triage pass
    state: str  # the machine's state, or "starting" before it exists
    arm: str
    caller: str  # masked
    age_s: float
    route: str | None  # the decision's route once there is one


@dataclass(frozen=True, slots=True)
class OpsSnapshot:
    generated_at: float
    window: str  # e.g. "24h", as asked
    live_calls: Sequence[LiveCall]
    rollout: RolloutView | None
    arms: Sequence[ArmFigures]
    calls_read: int
    truncated: bool  # the figures cover only the newest `calls_read` calls of the window
    errors: Sequence[str] = ()  # parts that could not be read (the rest of the page still shows)

    def to_json(self) -> dict:
        return {
            "generated_at": self.generated_at,
            "window": self.window,
            "live_calls": [
                {
                    "call_sid": call.call_sid, "pass": call.number, "state": call.state, "arm": call.arm,
                    "caller": call.caller, "age_s": call.age_s, "route": call.route,
                }
                for call in self.live_calls
            ],
            "rollout": None if self.rollout is None else self.rollout.to_json(),
            "arms": [figures.to_json() for figures in self.arms],
            "calls_read": self.calls_read,
            "truncated": self.truncated,
            "errors": list(self.errors),
            "html": ops_fragments(self),
        }


_environment = Environment(autoescape=True, undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
_environment.filters.update(percent=percent, seconds=seconds, money=money, when=when)
_environment.globals.update(labels=CATEGORY_LABELS, categories=CATEGORIES, colours=CATEGORY_COLOURS)

_LIVE = _environment.from_string("""\
<h2>Live calls <span class="count" id="live-count">{{ calls|length }}</span></h2>
{% if calls %}
<table id="live-calls">
<thead><tr><th>CallSid</th><th>pass</th><th>state</th><th>arm</th><th>caller</th><th>for</th><th>route</th></tr></thead>
<tbody>
{% for call in calls %}
<tr data-call-sid="{{ call.call_sid }}"><td class="sid">{{ call.call_sid }}</td><td>{{ call.number }}</td>
<td><span class="state state-{{ call.state }}" data-state="{{ call.state }}">{{ call.state }}</span></td>
<td>{{ call.arm }}</td><td>{{ call.caller }}</td><td>{{ call.age_s|seconds }}</td><td>{{ call.route or "–" }}</td></tr>
{% endfor %}
</tbody>
</table>
{% else %}
<p class="quiet" id="live-calls-none">No call is being triaged right now.</p>
{% endif %}
""")

_ROLLOUT = _environment.from_string("""\
<h2>Rollout</h2>
{% if rollout is none %}
<p class="quiet" id="rollout-unset">The rollout was never set: every call takes the server's default arm.</p>
{% else %}
<p class="figure"><span id="rollout-percent">{{ "–" if rollout.percent is none else "%g %%"|format(rollout.percent) }}</span>
<span class="quiet">of callers to the AI</span></p>
<p>{{ rollout.allow }} caller{{ "" if rollout.allow == 1 else "s" }} always to the AI,
{{ rollout.deny }} never. Updated {{ rollout.updated_at|when }}{% if rollout.updated_by %} by {{ rollout.updated_by }}{% endif %}.</p>
{% if rollout.brake %}
<p class="brake tripped" id="rollout-brake">Brake tripped {{ rollout.brake.tripped_at|when }}:
failure rate {{ rollout.brake.failure_rate|percent }} over {{ rollout.brake.window_calls if rollout.brake.window_calls is not none else "?" }} calls;
the AI share was {{ "?" if rollout.brake.previous_percent is none else "%g %%"|format(rollout.brake.previous_percent) }}.
{{ rollout.brake.reason }}</p>
{% else %}
<p class="brake" id="rollout-brake">Brake: not tripped.</p>
{% endif %}
{% endif %}
""")

_ARMS = _environment.from_string("""\
<h2>Per arm, last {{ window }}</h2>
{% for error in errors %}<p class="problem">{{ error }}</p>{% endfor %}
{% if truncated %}<p class="quiet">From the newest {{ calls_read }} calls of the window.</p>{% endif %}
{% if arms %}
<table id="arm-figures">
<thead><tr><th></th>{% for figures in arms %}<th data-arm="{{ figures.arm }}">{{ figures.arm }}</th>{% endfor %}</tr></thead>
<tbody>
<tr><th>calls</th>{% for f in arms %}<td>{{ f.calls }}</td>{% endfor %}</tr>
<tr><th>containment</th>{% for f in arms %}<td>{{ f.containment|percent }}</td>{% endfor %}</tr>
<tr><th>transfer rate</th>{% for f in arms %}<td>{{ f.transfer_rate|percent }}</td>{% endfor %}</tr>
<tr><th>AHT</th>{% for f in arms %}<td>{{ f.aht_s|seconds }}{% if f.handled %} <span class="quiet">({{ f.handled }})</span>{% endif %}</td>{% endfor %}</tr>
<tr><th>CSAT</th>{% for f in arms %}<td>{{ "–" if f.csat_mean is none else "%.2f"|format(f.csat_mean) }}{% if f.csat_count %} <span class="quiet">({{ f.csat_count }})</span>{% endif %}</td>{% endfor %}</tr>
<tr><th>time to decision</th>{% for f in arms %}<td>{{ f.decision_s_mean|seconds }}</td>{% endfor %}</tr>
<tr><th>engine minutes</th>{% for f in arms %}<td>{{ "%.1f"|format(f.engine_seconds / 60) }}</td>{% endfor %}</tr>
<tr><th>engine cost</th>{% for f in arms %}<td>{{ f.engine_cost|money }}</td>{% endfor %}</tr>
{% for category in categories %}
<tr class="category"><th><i style="background:{{ colours[category] }}"></i>{{ labels[category] }}</th>{% for f in arms %}<td>{{ f.categories[category] }}</td>{% endfor %}</tr>
{% endfor %}
</tbody>
</table>
{% else %}
<p class="quiet" id="arm-figures-none">No call in the last {{ window }}.</p>
{% endif %}
""")

_CHART = _environment.from_string("""\
<h2>Outcomes per arm</h2>
<svg id="outcome-chart" xmlns="http://www.w3.org/2000/svg" width="{{ width }}" height="{{ height }}" viewBox="0 0 {{ width }} {{ height }}" role="img" aria-label="Call outcomes per arm">
{% for bar in bars %}
<text x="0" y="{{ bar.y + 19 }}" class="arm-label">{{ bar.arm }} ({{ bar.calls }})</text>
{% for segment in bar.segments %}
<rect data-arm="{{ bar.arm }}" data-category="{{ segment.category }}" x="{{ segment.x }}" y="{{ bar.y }}" width="{{ segment.width }}" height="{{ bar_height }}" fill="{{ colours[segment.category] }}"><title>{{ bar.arm }}: {{ labels[segment.category] }} {{ segment.count }} ({{ segment.share|percent }})</title></rect>
{% endfor %}
{% endfor %}
{% for item in legend %}
<rect x="{{ item.x }}" y="{{ item.y }}" width="10" height="10" fill="{{ colours[item.category] }}"/>
<text x="{{ item.x + 14 }}" y="{{ item.y + 9 }}" class="legend">{{ labels[item.category] }}</text>
{% endfor %}
{% if not bars %}<text x="0" y="20" class="quiet">No call to chart yet.</text>{% endif %}
</svg>
""")

_PAGE = _environment.from_string("""\
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Front desk · ops</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5rem; color: #212121; max-width: 1100px; }
h1 { font-size: 1.4rem; margin: 0; } h2 { font-size: 1.1rem; margin: 1.2rem 0 .4rem; }
header { display: flex; justify-content: space-between; align-items: baseline; }
table { border-collapse: collapse; } th, td { padding: .25rem .6rem; border-bottom: 1px solid #e0e0e0; text-align: left; }
tbody th { font-weight: normal; color: #555; }
.sid { font-family: ui-monospace, monospace; font-size: 12px; }
.quiet { color: #757575; } .count { background: #eceff1; border-radius: 1rem; padding: 0 .5rem; }
.state { border-radius: .3rem; padding: 0 .4rem; background: #e3f2fd; }
.state-capture, .state-classify { background: #fff8e1; } .state-dispatch, .state-teardown { background: #e8f5e9; }
.figure { font-size: 2rem; margin: 0; } .brake.tripped, .problem { color: #c62828; font-weight: bold; }
.category i { display: inline-block; width: .7rem; height: .7rem; margin-right: .4rem; }
#status.stale { color: #c62828; } svg text { font-size: 12px; fill: #424242; }
.grid { display: grid; grid-template-columns: 2fr 1fr; gap: 0 2rem; }
</style>
</head>
<body data-refreshes="0">
<header><h1>Front desk · ops</h1><span id="status" class="quiet">drawn {{ generated_at|when }}</span></header>
<div class="grid">
<section id="live">{{ html.live|safe }}</section>
<section id="rollout">{{ html.rollout|safe }}</section>
</div>
<section id="arms">{{ html.arms|safe }}</section>
<section id="chart">{{ html.chart|safe }}</section>
<script nonce="{{ nonce }}">
(() => {
  const url = location.pathname.replace(/\\/$/, "") + "/data.json" + location.search;
  const status = document.getElementById("status");
  async function refresh() {
    try {
      const response = await fetch(url, {cache: "no-store", credentials: "same-origin"});
      if (!response.ok) throw new Error("HTTP " + response.status);
      const data = await response.json();
      for (const name of {{ sections|tojson }}) document.getElementById(name).innerHTML = data.html[name];
      document.body.dataset.refreshes = String(Number(document.body.dataset.refreshes) + 1);
      status.textContent = "updated " + new Date(data.generated_at * 1000).toLocaleTimeString();
      status.classList.remove("stale");
    } catch (error) {
      status.textContent = "not updated: " + error.message;
      status.classList.add("stale");
    }
    setTimeout(refresh, {{ refresh_ms }});
  }
  setTimeout(refresh, {{ refresh_ms }});
})();
</script>
</body>
</html>
""")


def ops_fragments(snapshot: OpsSnapshot) -> dict[str, str]:
    """The page's sections as HTML, by section id (what the script swaps in)."""
    return {
        "live": _LIVE.render(calls=snapshot.live_calls),
        "rollout": _ROLLOUT.render(rollout=snapshot.rollout),
        "arms": _ARMS.render(
            arms=snapshot.arms, window=snapshot.window, truncated=snapshot.truncated, calls_read=snapshot.calls_read,
            errors=snapshot.errors,
        ),
        "chart": arm_chart_svg(snapshot.arms),
    }


def ops_page(snapshot: OpsSnapshot, *, nonce: str) -> str:
    """The whole page; `nonce` is the one its Content-Security-Policy lets run."""
    return _PAGE.render(
        html=ops_fragments(snapshot), generated_at=snapshot.generated_at, sections=list(SECTIONS),
        refresh_ms=REFRESH_MS, nonce=nonce,
    )


def arm_chart_svg(arms: Sequence[ArmFigures]) -> str:
    """One stacked bar per arm: its calls by category, as shares of the arm's calls."""
    bar_width = _CHART_WIDTH - _LABEL_WIDTH
    bars = []
    for index, figures in enumerate(arms):
        segments, x = [], float(_LABEL_WIDTH)
        for category in CATEGORIES:
            count = figures.categories.get(category, 0)
            if not count or not figures.calls:
                continue
            share = count / figures.calls
            segments.append({"category": category, "count": count, "share": share, "x": round(x, 2),
                             "width": round(share * bar_width, 2)})
            x += share * bar_width
        bars.append({"arm": figures.arm, "calls": figures.calls, "y": index * (_BAR_HEIGHT + 10),
                     "segments": segments})
    shown = [category for category in CATEGORIES if any(figures.categories.get(category) for figures in arms)]
    legend_top = len(bars) * (_BAR_HEIGHT + 10) + 6
    legend = [
        {"category": category, "x": (index % _LEGEND_COLUMNS) * 128, "y": legend_top + (index // _LEGEND_COLUMNS) * 18}
        for index, category in enumerate(shown)
    ]
    rows = -(-len(legend) // _LEGEND_COLUMNS)
    height = legend_top + max(rows, 1) * 18 + 4
    return _CHART.render(bars=bars, legend=legend, width=_CHART_WIDTH, height=height, bar_height=_BAR_HEIGHT)
