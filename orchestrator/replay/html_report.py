"""The HTML report of an eval: one self-contained file (inline CSS and SVG, nothing fetched) that opens
offline and can be attached to a migration ticket.

It reads the JSON summary (`orchestrator eval --summary`), not the eval's classes, so it renders any
summary written by any version that keeps the required keys: `parity`, `calls`, `per_intent`,
`confusion`, `disagreements`. Optional figures (engine, mode, min_parity, time to decision, Flex parity,
per language, skipped calls) are shown when present. Caller words and intent names are untrusted text:
Jinja's autoescaping escapes every value that goes into the page, the SVG included.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Annotated, Any

import orjson
from jinja2 import Environment, StrictUndefined
from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError

from orchestrator.config import first_validation_problem


class EvalReportError(ValueError):
    """The summary cannot be drawn (a required key is missing or has the wrong type), or not written."""


# --- The summary schema (pydantic names the bad key) ---------------------------------------------

_Share = Annotated[float, Field(ge=0.0, le=1.0)]
_Count = Annotated[int, Field(ge=0)]
_Milliseconds = Annotated[float, Field(ge=0.0)]


class _IntentFigures(BaseModel):
    model_config = ConfigDict(extra="ignore")
    precision: _Share
    recall: _Share
    support: _Count


class _Disagreement(BaseModel):
    model_config = ConfigDict(extra="allow")  # per-call extras (route, reason, …) become columns
    call_id: str
    expected: str
    predicted: str
    confidence: float | None = None
    words: str = ""


class _FlexParity(BaseModel):
    model_config = ConfigDict(extra="allow")  # per-aspect counts (same intent, workflow, …) if any
    compared: _Count
    same_task: _Count
    mismatches: list[dict[str, JsonValue]] = []


class _Summary(BaseModel):
    model_config = ConfigDict(extra="ignore")
    parity: _Share
    calls: _Count
    per_intent: dict[str, _IntentFigures]
    confusion: dict[str, dict[str, _Count]]
    disagreements: list[_Disagreement]
    engine: str | None = None
    mode: str | None = None
    min_parity: _Share | None = None
    passed: bool | None = None
    proposal_parity: _Share | None = None  # what the engine proposed, before the machine's guards
    no_decision: _Count | None = None
    fallbacks: dict[str, _Count] = {}
    min_confidence: float | None = None
    below_min_confidence: _Count | None = None
    parity_when_confident: _Share | None = None
    decide_ms_p50: _Milliseconds | None = None
    decide_ms_p95: _Milliseconds | None = None
    time_to_decision_ms: dict[str, _Milliseconds] | None = None
    flex: _FlexParity | None = None
    per_language: dict[str, dict[str, JsonValue]] | None = None
    skipped: dict[str, _Count] = {}


# --- Rendering -----------------------------------------------------------------------------------

def render_eval_html(summary: dict[str, Any], *, title: str) -> str:
    """The whole report as one HTML document."""
    figures = _validated(summary)
    return _TEMPLATE.render(
        title=title,
        headline=_headline(figures),
        skipped=figures.skipped,
        fallbacks=figures.fallbacks,
        per_intent=[
            {"intent": intent, "precision": row.precision, "recall": row.recall, "support": row.support}
            for intent, row in figures.per_intent.items()
        ],
        matrix=_confusion_picture(figures.confusion) if figures.confusion else None,
        flex=_flex_view(figures.flex) if figures.flex is not None else None,
        latency=_latency_rows(figures),
        per_language=_table_view(
            [{"language": language, **row} for language, row in figures.per_language.items()]
        ) if figures.per_language else None,
        disagreements=_table_view([_words_last(row.model_dump()) for row in figures.disagreements]),
    )


def write_eval_html(summary: dict[str, Any], path: str | os.PathLike[str], *, title: str) -> None:
    page = render_eval_html(summary, title=title)
    file = Path(path)
    try:
        file.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise EvalReportError(f"{file}: cannot write the report ({exc.strerror or exc})") from None


def _validated(summary: Any) -> _Summary:
    if not isinstance(summary, dict):
        raise EvalReportError(f"summary: expected a JSON object (got {type(summary).__name__})")
    try:
        return _Summary.model_validate(summary)
    except ValidationError as exc:
        raise EvalReportError(first_validation_problem(exc, prefix=("summary",))) from None


def _headline(figures: _Summary) -> dict[str, Any]:
    passed = figures.passed
    if passed is None and figures.min_parity is not None:
        passed = figures.parity >= figures.min_parity
    details = []
    if figures.engine:
        details.append(("engine", figures.engine))
    if figures.mode:
        details.append(("mode", figures.mode))
    if figures.min_parity is not None:
        details.append(("minimum parity", _percent(figures.min_parity)))
    if figures.below_min_confidence is not None and figures.min_confidence is not None:
        details.append(("below the minimum confidence", f"{figures.below_min_confidence} (< {figures.min_confidence:g})"))
    if figures.parity_when_confident is not None:
        details.append(("parity when confident", _percent(figures.parity_when_confident)))
    if figures.proposal_parity is not None:
        details.append(("proposal parity (before the guards)", _percent(figures.proposal_parity)))
    if figures.no_decision is not None:
        details.append(("calls without a decision", str(figures.no_decision)))
    return {"parity": _percent(figures.parity), "calls": figures.calls, "passed": passed, "details": details}


def _latency_rows(figures: _Summary) -> list[tuple[str, str]]:
    if figures.time_to_decision_ms:
        points = figures.time_to_decision_ms
    else:
        points = {name: value for name, value in (("p50", figures.decide_ms_p50), ("p95", figures.decide_ms_p95))
                  if value is not None}
    ordered = sorted(points.items(), key=lambda point: _percentile_rank(point[0]))
    return [(name, f"{value:,.2f} ms") for name, value in ordered]


def _percentile_rank(name: str) -> float:
    """"p50" < "p90" < "p99.9" < "max"; other names last, in their order."""
    if name == "max":
        return 101.0
    try:
        return float(name.removeprefix("p"))
    except ValueError:
        return 102.0


def _flex_view(flex: _FlexParity) -> dict[str, Any]:
    """The share of same tasks, and per aspect (intent, workflow, …) how many listed mismatches it caused."""
    differed: dict[str, int] = {}
    for mismatch in flex.mismatches:
        checks = mismatch.get("checks")
        for aspect, same in (checks.items() if isinstance(checks, dict) else ()):
            differed[aspect] = differed.get(aspect, 0) + (same is False)
    rows = [{key: value for key, value in _flattened(mismatch).items() if key != "same"}
            for mismatch in flex.mismatches]
    return {
        "compared": flex.compared,
        "same_task": flex.same_task,
        "share": _share_of(flex.same_task, flex.compared),
        "differed": [(aspect.replace("_", " "), count) for aspect, count in differed.items()],
        "listed": len(flex.mismatches),
        "mismatches": _table_view(rows),
    }


def _words_last(row: dict[str, Any]) -> dict[str, Any]:
    """The caller's words are the widest column: after the short ones."""
    words = row.pop("words")
    return {**row, "words": words}


def _flattened(row: dict[str, Any]) -> dict[str, Any]:
    """One level of nesting as "outer.inner" columns ({"checks": {"intent": false}} -> "checks.intent")."""
    flat: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{inner}": item for inner, item in value.items()})
        else:
            flat[key] = value
    return flat


def _table_view(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Columns in first-seen order, less those empty in every row; cells as display text (escaped later)."""
    columns: list[str] = []
    for row in rows:
        columns.extend(key for key, value in row.items() if key not in columns and value not in (None, ""))
    return {
        "columns": columns,
        "rows": [[_cell(column, row.get(column)) for column in columns] for row in rows],
    }


def _cell(column: str, value: Any) -> dict[str, Any]:
    """{"text", "number"}: numbers are right-aligned."""
    if isinstance(value, bool):
        return {"text": "yes" if value else "no", "number": False}
    if isinstance(value, float):
        text = _percent(value) if column in ("parity", "precision", "recall") else f"{value:.3g}"
        return {"text": text, "number": True}
    if isinstance(value, int):
        return {"text": str(value), "number": True}
    if value is None:
        return {"text": "", "number": False}
    if isinstance(value, (dict, list)):
        return {"text": orjson.dumps(value).decode(), "number": False}
    return {"text": str(value), "number": False}


def _percent(share: float) -> str:
    return f"{share:.1%}"


def _share_of(count: int, total: int) -> str:
    return f"{count / total:.1%}" if total else "–"


# --- The confusion matrix as an SVG heatmap ------------------------------------------------------

_LABEL_CHARS = 28  # longer intent names are cut (the cell's tooltip keeps the full name)
_CHAR_WIDTH = 0.6  # of the font size, for a sans-serif; only sizes the margins
_GRID_TARGET_PX = 880


def _confusion_picture(confusion: dict[str, dict[str, int]]) -> dict[str, Any]:
    """Geometry and colours of the heatmap: rows expected, columns predicted, one cell per pair."""
    labels = sorted(set(confusion) | {predicted for row in confusion.values() for predicted in row})
    size = max(16, min(48, _GRID_TARGET_PX // len(labels)))
    font = max(9, min(14, round(size * 0.45)))
    shown = [label if len(label) <= _LABEL_CHARS else label[: _LABEL_CHARS - 1] + "…" for label in labels]
    label_px = math.ceil(max(len(text) for text in shown) * font * _CHAR_WIDTH) + 8
    slant_px = math.ceil(label_px * math.sqrt(0.5))  # column labels are turned 45°
    axis_px = font + 14
    left, top = axis_px + label_px, axis_px + slant_px
    grid = size * len(labels)
    highest = max((count for row in confusion.values() for count in row.values()), default=0) or 1

    cells = []
    for row_index, expected in enumerate(labels):
        for column_index, predicted in enumerate(labels):
            count = confusion.get(expected, {}).get(predicted, 0)
            shade = count / highest
            cells.append({
                "x": left + column_index * size, "y": top + row_index * size,
                "fill": _shade(shade, correct=expected == predicted) if count else "#f4f5f7",
                "count": count, "ink": "#ffffff" if shade > 0.55 else "#1d2433",
                "expected": expected, "predicted": predicted,
            })
    return {
        "width": left + grid + slant_px, "height": top + grid + 8,
        "left": left, "top": top, "size": size, "font": font, "grid": grid,
        "axis_font": font + 1, "axis_px": axis_px,
        "rows": [{"y": top + i * size + size / 2, "text": text, "full": label}
                 for i, (text, label) in enumerate(zip(shown, labels))],
        "columns": [{"x": left + i * size + size / 2, "text": text, "full": label}
                    for i, (text, label) in enumerate(zip(shown, labels))],
        "cells": cells, "highest": highest, "labels": len(labels),
    }


_CORRECT_RGB = (31, 95, 168)  # blue: the old system and the triage agree
_WRONG_RGB = (192, 57, 43)  # red: they disagree
_PAPER_RGB = (238, 242, 247)


def _shade(share: float, *, correct: bool) -> str:
    """Paper at no calls, the full colour at the busiest cell; a floor keeps one call visible."""
    strength = 0.15 + 0.85 * share
    ink = _CORRECT_RGB if correct else _WRONG_RGB
    red, green, blue = (round(paper + (colour - paper) * strength) for paper, colour in zip(_PAPER_RGB, ink))
    return f"#{red:02x}{green:02x}{blue:02x}"


_TEMPLATE_TEXT = """\
<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }}</title>
<style>
  :root { color-scheme: light; --ink: #1d2433; --muted: #5b6475; --line: #dfe3ea; --good: #1e7b45; --bad: #b3261e; }
  body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--ink);
         margin: 0 auto; padding: 24px 32px 48px; max-width: 1280px; }
  h1 { font-size: 22px; margin: 0 0 8px; }
  h2 { font-size: 17px; margin: 32px 0 8px; border-bottom: 1px solid var(--line); padding-bottom: 4px; }
  .headline { font-size: 18px; margin: 4px 0 8px; }
  .parity { font-size: 34px; font-weight: 700; margin-right: 6px; }
  .verdict { display: inline-block; padding: 2px 10px; border-radius: 12px; color: #fff; font-weight: 600;
             font-size: 14px; vertical-align: middle; margin-left: 8px; }
  .verdict.pass { background: var(--good); } .verdict.fail { background: var(--bad); }
  dl.details { display: grid; grid-template-columns: max-content auto; gap: 2px 16px; margin: 8px 0; }
  dl.details dt { color: var(--muted); } dl.details dd { margin: 0; }
  table { border-collapse: collapse; margin: 8px 0; font-size: 14px; }
  th, td { border-bottom: 1px solid var(--line); padding: 4px 10px; text-align: left; vertical-align: top; }
  th { color: var(--muted); font-weight: 600; }
  td.number, th.number { text-align: right; font-variant-numeric: tabular-nums; }
  td.words { max-width: 560px; overflow-wrap: anywhere; }
  .bar { display: inline-block; height: 8px; background: #1f5fa8; border-radius: 2px; vertical-align: middle;
         margin-left: 6px; }
  .muted { color: var(--muted); }
  .matrix svg { max-width: 100%; height: auto; }
  .legend { display: flex; gap: 18px; align-items: center; font-size: 13px; color: var(--muted); margin: 4px 0; }
  .swatch { display: inline-block; width: 90px; height: 10px; border-radius: 2px; vertical-align: middle; margin: 0 6px; }
  .swatch.correct { background: linear-gradient(90deg, #d6e1ed, #1f5fa8); }
  .swatch.wrong { background: linear-gradient(90deg, #e8d5d6, #c0392b); }
</style>
</head>
<body>
<header>
  <h1>{{ title }}</h1>
  <p class="headline"><span class="parity">{{ headline.parity }}</span> intent parity on {{ headline.calls }} calls
  {%- if headline.passed is not none %}
    <span class="verdict {{ 'pass' if headline.passed else 'fail' }}">{{ 'pass' if headline.passed else 'fail' }}</span>
  {%- endif %}</p>
  {% if headline.details %}
  <dl class="details">
    {% for name, value in headline.details %}<dt>{{ name }}</dt><dd>{{ value }}</dd>{% endfor %}
  </dl>
  {% endif %}
  {% if fallbacks %}
  <p class="muted">Not dispatched on the intent:
    {% for reason, count in fallbacks.items() %}{{ count }} ({{ reason }}){{ "; " if not loop.last }}{% endfor %}</p>
  {% endif %}
  {% if skipped %}
  <p class="muted">Not scored:
    {% for reason, count in skipped.items() %}{{ count }} ({{ reason }}){{ "; " if not loop.last }}{% endfor %}</p>
  {% endif %}
</header>

<section>
  <h2>Per intent</h2>
  {% if per_intent %}
  <table>
    <thead><tr><th>intent</th><th class="number">precision</th><th class="number">recall</th><th class="number">calls</th></tr></thead>
    <tbody>
    {% for row in per_intent %}
      <tr><td>{{ row.intent }}</td>
        <td class="number">{{ "%.2f"|format(row.precision) }}<span class="bar" style="width: {{ (row.precision * 60)|round(1) }}px"></span></td>
        <td class="number">{{ "%.2f"|format(row.recall) }}<span class="bar" style="width: {{ (row.recall * 60)|round(1) }}px"></span></td>
        <td class="number">{{ row.support }}</td></tr>
    {% endfor %}
    </tbody>
  </table>
  {% else %}<p class="muted">No calls were scored.</p>{% endif %}
</section>

<section class="matrix">
  <h2>Confusion matrix</h2>
  {% if matrix %}
  <p class="legend"><span>rows: what the old system did; columns: what the triage decided</span>
    <span>agree<span class="swatch correct"></span></span><span>disagree<span class="swatch wrong"></span></span>
    <span>darkest = {{ matrix.highest }} calls</span></p>
  <svg width="{{ matrix.width }}" height="{{ matrix.height }}"
       viewBox="0 0 {{ matrix.width }} {{ matrix.height }}" role="img"
       aria-label="Confusion matrix of {{ matrix.labels }} intents: rows expected, columns predicted"
       font-family="system-ui, -apple-system, Segoe UI, Roboto, sans-serif">
    <text x="{{ matrix.left + matrix.grid / 2 }}" y="{{ matrix.axis_font + 2 }}" text-anchor="middle"
          font-size="{{ matrix.axis_font }}" font-weight="600" fill="#5b6475">predicted</text>
    <text transform="translate({{ matrix.axis_font + 2 }} {{ matrix.top + matrix.grid / 2 }}) rotate(-90)"
          text-anchor="middle" font-size="{{ matrix.axis_font }}" font-weight="600" fill="#5b6475">expected</text>
    {% for row in matrix.rows %}
    <text x="{{ matrix.left - 6 }}" y="{{ row.y }}" text-anchor="end" dominant-baseline="central"
          font-size="{{ matrix.font }}" fill="#1d2433"><title>{{ row.full }}</title>{{ row.text }}</text>
    {% endfor %}
    {% for column in matrix.columns %}
    <text transform="translate({{ column.x }} {{ matrix.top - 6 }}) rotate(-45)" font-size="{{ matrix.font }}"
          fill="#1d2433"><title>{{ column.full }}</title>{{ column.text }}</text>
    {% endfor %}
    {% for cell in matrix.cells %}
    <rect class="cell" x="{{ cell.x }}" y="{{ cell.y }}" width="{{ matrix.size }}" height="{{ matrix.size }}"
          fill="{{ cell.fill }}" stroke="#ffffff" stroke-width="1"><title>expected {{ cell.expected }}, predicted {{ cell.predicted }}: {{ cell.count }} calls</title></rect>
    {% if cell.count %}<text x="{{ cell.x + matrix.size / 2 }}" y="{{ cell.y + matrix.size / 2 }}" text-anchor="middle"
          dominant-baseline="central" font-size="{{ matrix.font }}" fill="{{ cell.ink }}" pointer-events="none">{{ cell.count }}</text>{% endif %}
    {% endfor %}
  </svg>
  {% else %}<p class="muted">No calls were scored.</p>{% endif %}
</section>

{% if flex %}
<section>
  <h2>Flex parity</h2>
  {% if flex.compared %}
  <p>Flex would have seen the same task (intent, workflow, priority, caller ID present) on
    <strong>{{ flex.share }}</strong> of the calls compared ({{ flex.same_task }} of {{ flex.compared }}).</p>
  {% else %}<p class="muted">Not compared: no call in the corpus has the Flex task the old system made.</p>{% endif %}
  {% if flex.differed %}
  <table>
    <thead><tr><th>differed on</th><th class="number">calls{% if flex.listed < flex.compared - flex.same_task %} (of the {{ flex.listed }} listed){% endif %}</th></tr></thead>
    <tbody>{% for aspect, count in flex.differed %}<tr><td>{{ aspect }}</td><td class="number">{{ count }}</td></tr>{% endfor %}</tbody>
  </table>
  {% endif %}
  {% if flex.mismatches.rows %}
  <h3>Calls where the task would differ</h3>
  {{ data_table(flex.mismatches) }}
  {% endif %}
</section>
{% endif %}

{% if latency %}
<section>
  <h2>Time to decision</h2>
  <table>
    <thead><tr><th>percentile</th><th class="number">time</th></tr></thead>
    <tbody>{% for name, value in latency %}<tr><td>{{ name }}</td><td class="number">{{ value }}</td></tr>{% endfor %}</tbody>
  </table>
</section>
{% endif %}

{% if per_language %}
<section>
  <h2>Per language</h2>
  {{ data_table(per_language) }}
</section>
{% endif %}

<section>
  <h2>Disagreements</h2>
  {% if disagreements.rows %}
  {{ data_table(disagreements) }}
  {% else %}<p class="muted">None: every scored call got the intent the old system recorded.</p>{% endif %}
</section>
</body>
</html>
"""

_MACROS_TEXT = """\
{% macro data_table(table) -%}
<table>
  <thead><tr>{% for column in table.columns %}<th>{{ column.replace("_", " ") }}</th>{% endfor %}</tr></thead>
  <tbody>
  {% for row in table.rows %}
    <tr>{% for cell in row %}<td{% if cell.number %} class="number"{% elif table.columns[loop.index0] == "words" %} class="words"{% endif %}>{{ cell.text }}</td>{% endfor %}</tr>
  {% endfor %}
  </tbody>
</table>
{%- endmacro %}
"""

_ENVIRONMENT = Environment(autoescape=True, undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
_TEMPLATE = _ENVIRONMENT.from_string(_MACROS_TEXT + _TEMPLATE_TEXT)
