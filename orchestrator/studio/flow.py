"""The flow model: a Studio flow definition read into typed widgets and transitions, or refused.

The input is the JSON Studio exports, or a Flow resource with that JSON under `definition` (the flow's
SID beside it). Bad input of any kind ends in `StudioImportError` with a one-line reason.
"""

from __future__ import annotations

import json
import re
from collections import deque
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from orchestrator.config import format_key_path
from orchestrator.studio.flow_text import one_line

GATHER = "gather-input-on-call"
SAY_PLAY = "say-play"
SET_VARIABLES = "set-variables"
SPLIT = "split-based-on"
TRIGGER = "trigger"

# Widget types and their transition events (protocols/twilio.md section 3.1).
WIDGET_EVENTS: dict[str, frozenset[str]] = {
    TRIGGER: frozenset(
        {"incomingMessage", "incomingCall", "incomingConversationMessage", "incomingRequest", "incomingParent"}
    ),
    GATHER: frozenset({"keypress", "speech", "timeout"}),
    SPLIT: frozenset({"noMatch", "match"}),
    "send-to-flex": frozenset({"callComplete", "failedToEnqueue", "callFailure"}),
    "enqueue-call": frozenset({"callComplete", "failedToEnqueue", "callFailure"}),
    "connect-call-to": frozenset({"callCompleted", "hangup"}),
    SAY_PLAY: frozenset({"audioComplete"}),
    SET_VARIABLES: frozenset({"next"}),
    "run-function": frozenset({"success", "fail"}),
    "make-http-request": frozenset({"success", "failed"}),
    "add-twiml-redirect": frozenset({"return", "timeout", "fail"}),
    "record-voicemail": frozenset({"recordingComplete", "noAudio", "hangup"}),
    "make-outgoing-call-v2": frozenset({"answered", "busy", "noAnswer", "failed"}),
    "run-subflow": frozenset({"completed", "failed"}),
    "fork-stream": frozenset({"next"}),
}

FLOW_SID = re.compile(r"FW[0-9a-fA-F]{32}")


class StudioImportError(Exception):
    """A flow that cannot be imported. `str()` is one line saying why."""

    def __init__(self, reason: str) -> None:
        self.reason = one_line(reason)
        super().__init__(self.reason)


class _Lenient(BaseModel):
    # Studio adds keys over time; only the ones read here are checked.
    model_config = ConfigDict(extra="allow", strict=True)


class Condition(_Lenient):
    friendly_name: str = ""
    type: str = ""
    value: str | int | float | bool | None = None


class Transition(_Lenient):
    event: str
    next: str | None = None
    conditions: list[dict[str, Any]] = []  # read one by one: a bad condition is skipped, not refused


class State(_Lenient):
    """A widget, as the definition's `states` list holds it."""

    name: str
    type: str
    transitions: list[Transition] = []
    properties: dict[str, Any] = {}

    def next_on(self, event: str) -> str | None:
        """Where the first transition on `event` that leads anywhere goes."""
        return next((t.next for t in self.transitions if t.event == event and t.next), None)


class _Definition(_Lenient):
    states: list[State]
    initial_state: str | None = None


@dataclass(frozen=True)
class Flow:
    raw: dict[str, Any]  # the definition exactly as parsed: the patched flow is a copy of it
    states: dict[str, State]
    order: list[str]  # widget names in file order
    trigger: str
    entry: str  # the widget the Trigger's incomingCall leads to
    flow_sid: str | None  # from a Flow resource wrapper ({"sid": "FW…", "definition": {…}})

    def first_action(self, start: str, *, through: frozenset[str] = frozenset({SAY_PLAY})) -> str | None:
        """The first widget from `start` on that does something: past Say/Play widgets (and any other
        widget type in `through`) that have one way on. None when the way ends or loops."""
        seen, name = set(), start
        while name in self.states and self.states[name].type in through:
            seen.add(name)
            nexts = {t.next for t in self.states[name].transitions if t.next}
            if len(nexts) != 1:
                return None
            (name,) = nexts
            if name in seen:
                return None
        return name if name in self.states else None

    def reachable(self, start: str, *, avoid: str | None = None, blocked: Collection[str] = ()) -> list[str]:
        """Widgets reachable from `start` (included) in breadth-first order, not going on through `avoid`
        and not going into `blocked`."""
        seen, queue, order = {start, *blocked}, deque([start]), []
        while queue:
            name = queue.popleft()
            order.append(name)
            if name == avoid:
                continue
            for transition in self.states[name].transitions:
                target = transition.next
                if target in self.states and target not in seen:
                    seen.add(target)
                    queue.append(target)
        return order


def parse_flow(definition_text: str) -> Flow:
    try:
        data = json.loads(definition_text)
    except json.JSONDecodeError as error:
        raise StudioImportError(f"not JSON: {error.msg} at line {error.lineno}, column {error.colno}") from None
    except RecursionError:
        raise StudioImportError("not usable JSON: nested too deeply") from None
    try:
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise StudioImportError("the JSON holds text that is not valid Unicode (a lone surrogate escape)") from None
    except (RecursionError, ValueError):
        raise StudioImportError("not usable JSON: nested too deeply") from None

    flow_sid = None
    if isinstance(data, dict) and "states" not in data and isinstance(data.get("definition"), dict):
        # A Flow resource (REST API or CLI output): the definition is inside, with the flow's SID beside it.
        sid = data.get("sid")
        flow_sid = sid if isinstance(sid, str) and FLOW_SID.fullmatch(sid) else None
        data = data["definition"]
    if not isinstance(data, dict):
        raise StudioImportError(
            f'not a Studio flow definition: the JSON is {_json_kind(data)}, not an object with "states"'
        )
    if "states" not in data:
        raise StudioImportError('not a Studio flow definition: no "states" list')
    try:
        definition = _Definition.model_validate(data)
    except ValidationError as error:
        raise StudioImportError(f"not a valid Studio flow definition: {_first_problem(error)}") from None

    states: dict[str, State] = {}
    for index, state in enumerate(definition.states):
        if state.name in states:
            raise StudioImportError(
                f"not a valid Studio flow definition: states[{index}]: duplicate widget name {state.name!r}"
            )
        states[state.name] = state

    trigger = _find_trigger(definition, states)
    entry = states[trigger].next_on("incomingCall")
    if entry is None:
        raise StudioImportError(
            f"the Trigger {trigger!r} has no incomingCall transition to a widget: the flow does not take calls"
        )
    if entry not in states:
        raise StudioImportError(f"the Trigger's incomingCall leads to {entry!r}, which is not a widget of the flow")
    return Flow(raw=data, states=states, order=list(states), trigger=trigger, entry=entry, flow_sid=flow_sid)


def _find_trigger(definition: _Definition, states: Mapping[str, State]) -> str:
    initial = states.get(definition.initial_state or "")
    if initial is not None and initial.type == TRIGGER:
        return initial.name
    for state in definition.states:
        if state.type == TRIGGER:
            return state.name
    raise StudioImportError('no Trigger widget (type "trigger"): the flow has no entry point')


def _first_problem(error: ValidationError) -> str:
    errors = error.errors()
    first = errors[0]
    where = format_key_path(tuple(first["loc"])) or "the definition"
    problem = "missing" if first["type"] == "missing" else first["msg"][:1].lower() + first["msg"][1:]
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {problem}{more}"


def _json_kind(value: Any) -> str:
    kinds = {list: "a list", str: "a string", bool: "a boolean", type(None): "null", int: "a number", float: "a number"}
    return kinds.get(type(value), "not an object")
