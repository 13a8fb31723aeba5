"""Reading an export of Studio executions as a call corpus, so `orchestrator eval` can replay them.

Each execution becomes one call with one caller turn: what the caller answered the Gather (its
`SpeechResult`, or its `Digits` kept as text such as "1", with `meta["input"]` "speech" or "dtmf"), and
`expected_route` = the widget the flow went to after the Split that read that answer. Mapping routes to
intents is the caller's business (it knows the routing config).

The layout of a real export is unverified (Twilio documents no export format), so the reader is
tolerant. It accepts:

- the file: a JSON array of executions; a JSON object with an `executions` array (a REST list page,
  other keys ignored); a single execution object; or JSON Lines, one execution a line.
- an execution: `sid` (or `execution_sid` / `executionSid`), the `FN…` sid, required;
  `context`, as an object or a JSON string, either the context itself or the Execution Context
  resource around it (`{"context": {...}, "execution_sid": …}`); optional `steps`, a list or a
  `{"steps": [...]}` page, each step `{transitioned_from, transitioned_to, name?, date_created?}`
  (camelCase spellings too), in the order they happened unless each has a `date_created`.
- in the context: `widgets.<gather>.SpeechResult` / `Digits` / `Confidence`; `trigger.call.CallSid` and
  `From` (the call id falls back to the Gather's own `CallSid`, then to the execution sid).

The route: the last step leaving the Gather (a caller asked again answers the last time) leads to the
Split; the first later step leaving the Split leads to the route. Every Split in a chain is walked
through (a Digits Split whose noMatch leads to a Speech Split): the Splits are the ones `splits` names,
else the widgets left by a `match` or `noMatch` step (a Split's events), else the one widget right after
the Gather. With `splits`, a Gather that leads straight to a widget has that widget as its route. A call
whose route cannot be found is still read, with `expected_route` None and the reason in
`meta["route_unknown"]`.

With `flow` (the flow's JSON file), the calls are read as `studio import` sees that flow: its menu names
the Gather and the Splits; a call's `expected_intent` is the imported intent whose branches led where the
flow went, and its `expected_route` the widget that intent routes to (a keypress branch paired with a
speech branch went to `pressed_taxi`, the intent routes to `said_taxi`; the widget the flow took stays in
`meta["flow_route"]`); and what the caller answered the Gathers that became capture fields (name, pickup
address…) follows as more caller turns, in the order the flow asked, as the AI would hear it.

Bad entries never raise: each becomes a `CorpusProblem` with its line number (JSON Lines) or its
position in the array (counting from 1). Only a file that cannot be read at all, or whose JSON is not
executions, raises `CorpusError`.
"""
from __future__ import annotations

import email.utils
import math
import os
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import orjson
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from orchestrator.config import first_validation_problem
from orchestrator.replay import (
    CALLER_ROLE,
    Corpus,
    CorpusCall,
    CorpusError,
    CorpusProblem,
    CorpusTurn,
    read_input_file,
)
from orchestrator.studio.flow import StudioImportError, parse_flow
from orchestrator.studio.importer import import_flow
from orchestrator.studio.menu import find_menu

SPEECH_INPUT = "speech"
DTMF_INPUT = "dtmf"
_KEYPRESS_EVENT = "keypress"  # the Gather's transition when the caller pressed keys
_SPLIT_EVENTS = ("match", "noMatch")


# --- The entry schema (pydantic names the bad key) -----------------------------------------------

class _Step(BaseModel):
    model_config = ConfigDict(extra="ignore")

    transitioned_from: str | None = Field(None, validation_alias=AliasChoices("transitioned_from", "transitionedFrom"))
    transitioned_to: str | None = Field(None, validation_alias=AliasChoices("transitioned_to", "transitionedTo"))
    name: str | None = None  # the event that caused the transition
    date_created: str | None = Field(None, validation_alias=AliasChoices("date_created", "dateCreated"))


class _Execution(BaseModel):
    model_config = ConfigDict(extra="ignore")

    sid: Annotated[str, Field(strict=True, min_length=1)] = Field(
        validation_alias=AliasChoices("sid", "execution_sid", "executionSid")
    )
    context: Any = None  # checked by `_context`, which names what is wrong in plain words
    steps: list[_Step] = []
    flow_sid: str | None = Field(None, validation_alias=AliasChoices("flow_sid", "flowSid"))

    @field_validator("steps", mode="before")
    @classmethod
    def _unwrap_steps_page(cls, value: Any) -> Any:
        if isinstance(value, dict) and "steps" in value:
            return value["steps"]
        return value


class _BadEntry(Exception):
    """One execution that cannot become a call; the message is the problem's reason."""


# --- Reading -------------------------------------------------------------------------------------

def read_studio_executions(
    path: str | os.PathLike[str],
    *,
    gather: str | None = None,
    splits: Collection[str] | None = None,
    flow: str | os.PathLike[str] | None = None,
) -> Corpus:
    """Read every execution of a Studio export as a call; unusable entries are reported in `problems`.

    `gather` names the Gather widget whose answer is the caller's turn; None picks, per execution, the
    one widget that has a `SpeechResult` or `Digits`. `splits` names the flow's Split widgets; None
    tells them by their steps' events. `flow`, the flow's JSON file, gives both (its menu's) and the
    widgets paired into one intent.
    """
    facts = _flow_facts(Path(flow)) if flow is not None else None
    if facts is not None:
        gather, splits = gather or facts.gather, splits if splits is not None else facts.splits
    file = Path(path)
    content = read_input_file(file, "executions")
    corpus = Corpus(calls=[], problems=[], path=file)
    for number, entry in _entries(file, content, corpus.problems):
        try:
            corpus.calls.append(_call_from_entry(entry, number, gather, splits, facts))
        except _BadEntry as bad:
            corpus.problems.append(CorpusProblem(number, str(bad)))
    return corpus


@dataclass(frozen=True)
class _FlowFacts:
    """What `studio import` makes of the flow the executions ran in."""

    gather: str
    splits: list[str]
    intents: dict[str, tuple[str, str]]  # a widget the menu led to → (the intent, the widget it routes to)
    detail_gathers: list[str]  # the Gathers whose answers became capture fields


def _flow_facts(flow: Path) -> _FlowFacts:
    try:
        text = read_input_file(flow, "flow").decode("utf-8-sig")
        menu = find_menu(parse_flow(text))
        imported = import_flow(text, source=str(flow))
    except UnicodeDecodeError:
        raise CorpusError(f"{flow}: not UTF-8 text") from None
    except StudioImportError as error:
        raise CorpusError(f"{flow}: {error}") from None
    intents = {
        widget: (intent.name, intent.target)
        for intent in imported.intents
        for widget in (intent.target, *intent.other_targets)
    }
    gathers = list(dict.fromkeys(g for field in imported.fields for g in field.gathers))
    return _FlowFacts(menu.gather, menu.splits, intents, gathers)


def _entries(file: Path, content: bytes, problems: list[CorpusProblem]) -> list[tuple[int, Any]]:
    """(number, decoded entry) for each execution; lines that are not JSON go to `problems`."""
    try:
        whole: Any = orjson.loads(content)
    except orjson.JSONDecodeError:
        whole = None  # not one JSON document: JSON Lines (or broken; each line says which)
    else:
        if isinstance(whole, dict) and "executions" in whole:
            whole = whole["executions"]
            if not isinstance(whole, list):
                raise CorpusError(f"{file}: executions: expected a list (got {type(whole).__name__})")
        if isinstance(whole, dict):
            return [(1, whole)]
        if isinstance(whole, list):
            return list(enumerate(whole, start=1))
        raise CorpusError(f"{file}: expected executions, a list of them or JSON Lines (got {type(whole).__name__})")

    entries = []
    for line_number, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entries.append((line_number, orjson.loads(line)))
        except orjson.JSONDecodeError as exc:
            problems.append(CorpusProblem(line_number, f"not valid JSON ({exc})"))
    return entries


def _call_from_entry(
    entry: Any, number: int, gather: str | None, splits: Collection[str] | None, facts: _FlowFacts | None
) -> CorpusCall:
    if not isinstance(entry, dict):
        raise _BadEntry(f"not a JSON object (got {type(entry).__name__})")
    try:
        execution = _Execution.model_validate(entry)
    except ValidationError as exc:
        raise _BadEntry(first_validation_problem(exc, nowhere="execution")) from None
    try:
        return _call_from_execution(execution, number, gather, splits, facts)
    except _BadEntry as bad:
        raise _BadEntry(f"{execution.sid}: {bad}") from None


def _call_from_execution(
    execution: _Execution, number: int, gather: str | None, splits: Collection[str] | None, facts: _FlowFacts | None
) -> CorpusCall:
    context = _context(execution.context)
    widgets = context.get("widgets")
    if not isinstance(widgets, dict):
        raise _BadEntry("context has no widgets object")
    gather_name = gather if gather is not None else _only_answered_widget(widgets)
    answer = widgets.get(gather_name)
    if not isinstance(answer, dict):
        raise _BadEntry(f"widgets.{gather_name}: not in the context (the call never reached it)")
    speech, digits = _text(answer.get("SpeechResult")), _text(answer.get("Digits"))
    if not speech and not digits:
        raise _BadEntry(f"widgets.{gather_name}: no SpeechResult or Digits (the caller said nothing)")

    steps = _in_order(execution.steps)
    gather_step = _last_leaving(steps, gather_name)
    pressed_keys = gather_step is not None and gather_step.name == _KEYPRESS_EVENT
    use_digits = bool(digits) and (not speech or pressed_keys)
    words = digits if use_digits else speech

    call_fields = _object_at(context, "trigger", "call")
    caller = _text(call_fields.get("From"))
    call_id = _text(call_fields.get("CallSid")) or _text(answer.get("CallSid")) or execution.sid
    meta: dict[str, Any] = {
        "execution_sid": execution.sid,
        "gather": gather_name,
        "input": DTMF_INPUT if use_digits else SPEECH_INPUT,
    }
    if caller:
        meta["caller"] = caller
    if execution.flow_sid:
        meta["flow_sid"] = execution.flow_sid
    if not use_digits and (confidence := _number(answer.get("Confidence"))) is not None:
        meta["asr_confidence"] = confidence
    route, route_unknown = _route_after(steps, gather_name, gather_step, splits)
    if route_unknown:
        meta["route_unknown"] = route_unknown
    answers = [words]
    intent = None
    if facts is not None:
        answers += _detail_answers(widgets, steps, facts.detail_gathers)
        if route in facts.intents:
            meta["flow_route"] = route
            intent, route = facts.intents[route]

    return CorpusCall(
        call_id=call_id,
        # The Gathers' results are the only record of the answers: both what was said and what was heard.
        turns=tuple(CorpusTurn(CALLER_ROLE, text, text, None, None) for text in answers),
        expected_intent=intent,
        expected_route=route,
        task_attributes=None,
        audio=None,
        meta=meta,
        line_number=number,
    )


def _detail_answers(widgets: dict[str, Any], steps: list[_Step], gathers: list[str]) -> list[str]:
    """What the caller last answered each of these Gathers, in the order the call left them."""
    position = {step.transitioned_from: index for index, step in enumerate(steps)}  # the last time
    answered = []
    for gather in sorted(gathers, key=lambda g: position.get(g, len(steps))):
        fields = widgets.get(gather)
        if isinstance(fields, dict) and (text := _text(fields.get("SpeechResult")) or _text(fields.get("Digits"))):
            answered.append(text)
    return answered


def _context(raw: Any) -> dict[str, Any]:
    if raw is None:
        raise _BadEntry("no context (export each execution's Context too)")
    if isinstance(raw, str):
        try:
            raw = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise _BadEntry(f"context: not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise _BadEntry(f"context: not a JSON object (got {type(raw).__name__})")
    inner = raw.get("context")
    if "widgets" not in raw and isinstance(inner, dict):
        return inner  # the Execution Context resource: {account_sid, context, execution_sid, …}
    return raw


def _only_answered_widget(widgets: dict[str, Any]) -> str:
    answered = sorted(
        name for name, fields in widgets.items()
        if isinstance(fields, dict) and (_text(fields.get("SpeechResult")) or _text(fields.get("Digits")))
    )
    if not answered:
        raise _BadEntry("no widget has a SpeechResult or Digits (the caller said nothing?)")
    if len(answered) > 1:
        raise _BadEntry(f"several widgets have a SpeechResult or Digits ({', '.join(answered)}): choose one with gather")
    return answered[0]


def _in_order(steps: list[_Step]) -> list[_Step]:
    """Steps by `date_created` when every one has a readable date (a stable sort: ties keep file order)."""
    dates = [_moment(step.date_created) for step in steps]
    if steps and all(date is not None for date in dates):
        return [step for _, step in sorted(zip(dates, steps, strict=True), key=lambda pair: pair[0])]
    return list(steps)


def _moment(text: str | None) -> datetime | None:
    """ISO 8601 (Studio v2) or RFC 2822 (older Twilio APIs); a date without a zone is taken as UTC."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        try:
            moment = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _last_leaving(steps: list[_Step], widget: str) -> _Step | None:
    leaving = [step for step in steps if step.transitioned_from == widget]
    return leaving[-1] if leaving else None


def _route_after(
    steps: list[_Step], gather: str, gather_step: _Step | None, splits: Collection[str] | None
) -> tuple[str | None, str | None]:
    """(route, None) or (None, why it is unknown)."""
    if not steps:
        return None, "no steps in the export"
    if gather_step is None or not gather_step.transitioned_to:
        return None, f"no step leaves the Gather {gather!r}"
    current_step, widget = gather_step, gather_step.transitioned_to
    passed = {gather}
    while True:
        following = _next_step_leaving(steps, current_step, widget)
        if not _is_split(widget, following, right_after_gather=current_step is gather_step, splits=splits):
            break
        if widget in passed:
            return None, f"the flow loops back to {widget!r}"
        passed.add(widget)
        if following is None or not following.transitioned_to:
            return None, f"the execution ended at the Split {widget!r}"
        current_step, widget = following, following.transitioned_to
    if widget == gather:
        return None, f"the Split sent the caller back to the Gather {gather!r}"
    return widget, None


def _is_split(
    widget: str, leaving: _Step | None, *, right_after_gather: bool, splits: Collection[str] | None
) -> bool:
    if splits is not None:
        return widget in splits
    if leaving is not None and leaving.name in _SPLIT_EVENTS:
        return True  # only a Split leaves on match or noMatch
    return right_after_gather  # assumed: one Split reads the Gather's answer


def _next_step_leaving(steps: list[_Step], after: _Step, widget: str) -> _Step | None:
    position = next(index for index, step in enumerate(steps) if step is after)
    later = next((step for step in steps[position + 1:] if step.transitioned_from == widget), None)
    if later is not None:
        return later
    # Steps listed newest first and undated: without a second pass through the widget order is moot.
    leaving = [step for step in steps if step.transitioned_from == widget]
    return leaving[0] if len(leaving) == 1 else None


def _object_at(data: dict[str, Any], *keys: str) -> dict[str, Any]:
    for key in keys:
        value = data.get(key)
        if not isinstance(value, dict):
            return {}
        data = value
    return data


def _text(value: Any) -> str:
    """A context value as stripped text; Studio may store numbers (Digits) as JSON numbers."""
    if isinstance(value, bool) or value is None:
        return ""
    if isinstance(value, (str, int)):
        return str(value).strip()
    return ""


def _number(value: Any) -> float | None:
    """Confidence arrives as a string ("0.92") or a number."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None
