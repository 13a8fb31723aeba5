"""`orchestrator studio import FLOW.json --out DIR`: a Studio flow becomes a routing config and a patched flow.

The importer reads a Studio flow definition (the JSON Studio exports, or a Flow resource with that JSON
under `definition`), finds the first caller-facing menu (a Gather Input On Call reachable from the
Trigger's `incomingCall`, followed by Split widgets on its `SpeechResult` or `Digits`), and writes:

- a routing config: one intent per menu branch (speech and DTMF branches that lead to the same widget
  are one intent), one route per branch target, the split's `noMatch` as the fallback route;
- the flow patched for resume mode (DESIGN.md section 5): a TwiML Redirect widget to our voice webhook
  takes the Gather's place, its `return` leads to a new Split on `{{widgets.<redirect>.arm}}` (callers of
  the rollout's legacy arm, `legacy`, go to the old Gather; any other value goes on) and then to a new
  Split on `{{widgets.<redirect>.intent}}`; its `timeout`/`fail` lead to the old Gather, which stays (the
  legacy path). Every other widget is kept as it was, byte for byte;
- Mermaid diagrams of the flow before and after, and a report of what was mapped and what was not.

Everything here is computation on the JSON text, except that the generated config is checked with
`load_routing_config` through a temporary file, and `write_import` / the command write the output.
Bad input of any kind ends in `StudioImportError` with a one-line reason, never another exception.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import re
import sys
import tempfile
import tomllib
import unicodedata
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import tomli_w
from pydantic import BaseModel, ConfigDict, ValidationError

from orchestrator.config.routing import (
    RESERVED_TASK_ATTRIBUTES,
    ConfigError,
    format_key_path,
    load_routing_config,
)

DEFAULT_PUBLIC_URL = "https://front-desk.example.com"
VOICE_WEBHOOK_PATH = "/voice/incoming"

REDIRECT_WIDGET_NAME = "ai_front_desk"
ARM_SPLIT_NAME = "ai_front_desk_arm"
INTENT_SPLIT_NAME = "ai_front_desk_intent"
# The value of the redirect's `arm` when the rollout sent the caller to the legacy path (dispatch_twiml.py).
LEGACY_ARM = "legacy"

# How long Studio waits for the AI to hand the call back. Our triage ends within the config's budget
# (20 s) plus the handoff line (8 s), so 600 s is a wide margin; it is far below Studio's 14400 s
# default because calls the AI sends straight to Flex, voicemail or SIP never come back, and their
# execution stays active until this timer ends (a repeat caller is refused meanwhile when
# `allow_concurrent_calls` is off, warning 81002).
REDIRECT_TIMEOUT_SECONDS = 600

# What the generated config's triage section starts with (the same values as the examples).
TRIAGE_DEFAULTS = {
    "budget_seconds": 20,
    "min_confidence": 0.6,
    "max_clarifications": 2,
    "handoff_line_timeout_seconds": 8,
}
VOICEMAIL_MAX_LENGTH_LIMIT = 14400  # Twilio's <Record maxLength> limit
STUDIO_RECORD_DEFAULT_MAX_LENGTH = 3600  # Record Voicemail's default when the widget sets none
TASK_DEFAULT_TIMEOUT = 86400  # Send to Flex / Enqueue Call default (24 h) when the widget sets none
TASK_MAX_TIMEOUT = 1209600  # two weeks, Send to Flex's maximum
TASK_MAX_PRIORITY = 2**31 - 1
DEFAULT_VOICEMAIL_PROMPT = "Please leave your name, number and a short message after the tone, and we'll call you back."

GATHER = "gather-input-on-call"
SPLIT = "split-based-on"
TRIGGER = "trigger"
MENU_EVENTS = ("speech", "keypress")

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
    "say-play": frozenset({"audioComplete"}),
    "set-variables": frozenset({"next"}),
    "run-function": frozenset({"success", "fail"}),
    "make-http-request": frozenset({"success", "failed"}),
    "add-twiml-redirect": frozenset({"return", "timeout", "fail"}),
    "record-voicemail": frozenset({"recordingComplete", "noAudio", "hangup"}),
    "make-outgoing-call-v2": frozenset({"answered", "busy", "noAnswer", "failed"}),
    "run-subflow": frozenset({"completed", "failed"}),
    "fork-stream": frozenset({"next"}),
}

_SID = {prefix: re.compile(prefix + r"[0-9a-fA-F]{32}") for prefix in ("FW", "WW")}
_PLACEHOLDER = re.compile(r"\$\{[^}]*\}")  # deployment templates (Terraform, scripts): ${WORKFLOW_SID}
_LIQUID = re.compile(r"\{\{.*?\}\}|\{%.*?%\}", re.DOTALL)
_SID_KEYS = re.compile(r"(?i)(.*_sid|sid|workflow|channel)$")
_WIDGET_NAME = re.compile(r"[^\s/]+")  # what routing_config accepts as a Studio node
# Studio names a condition "If value equal_to 1" unless the author renames it: no intent name in that.
_GENERATED_CONDITION_NAME = re.compile(r"(?i)^\s*if value\b")
_TEXT_CONDITIONS = ("equal_to", "contains", "starts_with")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


class StudioImportError(Exception):
    """A flow that cannot be imported. `str()` is one line saying why."""

    def __init__(self, reason: str) -> None:
        self.reason = _one_line(reason)
        super().__init__(self.reason)


class GeneratedConfigError(AssertionError):
    """The config the importer wrote does not validate: a bug in the importer, not in the flow."""


class Finding(StrEnum):
    """What a report item is about."""

    INTENT = "intent"
    ROUTE = "route"
    FALLBACK = "fallback"
    HUMAN_ROUTE = "human route"
    PATCH = "patched flow"
    FLOW_SID = "flow SID"
    PUBLIC_URL = "public URL"
    UNKNOWN_WIDGET = "unknown widget"
    PLACEHOLDER = "placeholder"
    TEMPLATED_SID = "templated SID"
    OTHER_GATHER = "other Gather"
    LOOP = "loop back to the Gather"
    OTHER_SPLIT = "split on another variable"
    DEAD_END = "branch that ends the call"
    NOT_CARRIED = "not carried over"
    GATHER_OUTPUT = "reads the Gather's result"
    BROKEN_LINK = "transition to a missing widget"
    REVIEW = "to review"


@dataclass(frozen=True)
class ReportItem:
    finding: Finding
    subject: str  # the widget, intent or route concerned
    detail: str


@dataclass(frozen=True)
class ImportReport:
    source: str
    gather: str
    redirect: str
    mapped: tuple[ReportItem, ...]
    not_mapped: tuple[ReportItem, ...]  # left as it was, dropped, or needing a person's review

    def findings(self) -> set[Finding]:
        return {item.finding for item in (*self.mapped, *self.not_mapped)}

    def render(self) -> str:
        """The report as Markdown (which also reads as plain text)."""
        lines = [
            f"# Studio import of {self.source}",
            "",
            (
                f"The Gather `{self.gather}` is replaced by the TwiML Redirect `{self.redirect}` (our voice webhook);"
                f" `{self.gather}` stays in the flow as the legacy path (the redirect's `timeout` and `fail`,"
                " and the callers the rollout keeps on the legacy arm)."
            ),
            "",
            "## Mapped",
            "",
            *_bullets(self.mapped),
            "",
            "## Not mapped, or to review",
            "",
            *(_bullets(self.not_mapped) or ["- nothing"]),
            "",
            "## Next steps",
            "",
            (
                "1. Review the intent descriptions and examples in `routing.toml`: they are generated from the menu's"
                " friendly names, matched words and prompt, and the AI classifies callers by them."
            ),
            (
                "2. Replace every value marked PLACEHOLDER in `routing.toml` (and the flow SID in the redirect URL of"
                " `flow.patched.json`, or import again with `--flow-sid`)."
            ),
            (
                "3. `orchestrator check-config routing.toml`, then paste `flow.patched.json` into the Studio flow"
                " (Flow JSON editor) and publish it."
            ),
            "",
        ]
        return "\n".join(lines)


@dataclass(frozen=True)
class ImportResult:
    routing_toml: str
    patched_flow: dict[str, Any]
    before_mermaid: str
    after_mermaid: str
    report: ImportReport
    added_widgets: tuple[str, ...]  # the redirect and the intent split
    # Widgets whose transitions to the Gather now lead to the redirect; every other widget is as it was.
    changed_widgets: tuple[str, ...]


# --- The flow as read ----------------------------------------------------------------------------


class _Lenient(BaseModel):
    # Studio adds keys over time; only the ones read here are checked.
    model_config = ConfigDict(extra="allow", strict=True)


class _Condition(_Lenient):
    friendly_name: str = ""
    type: str = ""
    value: str | int | float | bool | None = None


class _Transition(_Lenient):
    event: str
    next: str | None = None
    conditions: list[dict[str, Any]] = []


class _State(_Lenient):
    name: str
    type: str
    transitions: list[_Transition] = []
    properties: dict[str, Any] = {}


class _Definition(_Lenient):
    states: list[_State]
    initial_state: str | None = None


@dataclass(frozen=True)
class _Flow:
    raw: dict[str, Any]  # the definition exactly as parsed: the patched flow is a copy of it
    states: dict[str, _State]
    order: list[str]  # widget names in file order
    trigger: str
    entry: str  # the widget the Trigger's incomingCall leads to
    flow_sid: str | None  # from a Flow resource wrapper ({"sid": "FW…", "definition": {…}})


def _parse_flow(definition_text: str) -> _Flow:
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
        flow_sid = sid if isinstance(sid, str) and _SID["FW"].fullmatch(sid) else None
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

    states: dict[str, _State] = {}
    for index, state in enumerate(definition.states):
        if state.name in states:
            raise StudioImportError(
                f"not a valid Studio flow definition: states[{index}]: duplicate widget name {state.name!r}"
            )
        states[state.name] = state

    trigger = _find_trigger(definition, states)
    entry = next((t.next for t in states[trigger].transitions if t.event == "incomingCall" and t.next), None)
    if entry is None:
        raise StudioImportError(
            f"the Trigger {trigger!r} has no incomingCall transition to a widget: the flow does not take calls"
        )
    if entry not in states:
        raise StudioImportError(f"the Trigger's incomingCall leads to {entry!r}, which is not a widget of the flow")
    return _Flow(raw=data, states=states, order=list(states), trigger=trigger, entry=entry, flow_sid=flow_sid)


def _find_trigger(definition: _Definition, states: Mapping[str, _State]) -> str:
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


# --- Finding the menu ----------------------------------------------------------------------------


@dataclass
class _Branch:
    split: str
    kind: str  # "speech" or "digits"
    target: str | None
    conditions: list[_Condition]


@dataclass
class _Menu:
    gather: str
    splits: list[str]
    branches: list[_Branch]
    no_match: list[tuple[str, str | None]]  # (split, target)
    direct: list[tuple[str, str]]  # (gather event, target) that is not a split on the gather's result


def _reachable(flow: _Flow, start: str, *, avoid: str | None = None) -> list[str]:
    """Widgets reachable from `start` (included) in breadth-first order, not going on through `avoid`."""
    seen, queue, order = {start}, deque([start]), []
    while queue:
        name = queue.popleft()
        order.append(name)
        if name == avoid:
            continue
        for transition in flow.states[name].transitions:
            target = transition.next
            if target in flow.states and target not in seen:
                seen.add(target)
                queue.append(target)
    return order


def _reads_gather(state: _State, gather: str) -> str | None:
    """Whether `state` is a Split on the Gather's result: "speech" (SpeechResult), "digits" or None."""
    if state.type != SPLIT or not isinstance(state.properties.get("input"), str):
        return None
    pattern = r"\s*\{\{\s*widgets\s*\.\s*" + re.escape(gather) + r"\s*\.\s*(SpeechResult|Digits)\s*(?:\|[^{}]*)?\}\}\s*"
    found = re.fullmatch(pattern, state.properties["input"])
    if found is None:
        return None
    return "speech" if found[1] == "SpeechResult" else "digits"


def _menu_of(flow: _Flow, gather: str) -> _Menu | None:
    """The splits on the Gather's result, following chains of them; None when there is none."""
    menu = _Menu(gather=gather, splits=[], branches=[], no_match=[], direct=[])
    queue: deque[str] = deque()
    for transition in flow.states[gather].transitions:
        target = transition.next
        if transition.event not in MENU_EVENTS or target is None or target not in flow.states:
            continue
        if _reads_gather(flow.states[target], gather):
            queue.append(target)
        else:
            menu.direct.append((transition.event, target))
    while queue:
        name = queue.popleft()
        if name in menu.splits:
            continue
        menu.splits.append(name)
        split = flow.states[name]
        kind = _reads_gather(split, gather) or "speech"
        for transition in split.transitions:
            target = transition.next
            chained = target in flow.states and _reads_gather(flow.states[target], gather) is not None
            if chained and target != name:
                queue.append(target)
            elif transition.event == "noMatch":
                menu.no_match.append((name, target))
            elif transition.event == "match":
                conditions = [_condition(raw) for raw in transition.conditions]
                menu.branches.append(_Branch(name, kind, target, [c for c in conditions if c is not None]))
    return menu if menu.splits else None


def _condition(raw: Mapping[str, Any]) -> _Condition | None:
    try:
        return _Condition.model_validate(raw)
    except ValidationError:
        return None


# --- Building the config -------------------------------------------------------------------------


@dataclass
class _Route:
    name: str
    table: dict[str, Any]
    comments: list[str]
    widget: str | None  # the Studio widget it stands for (None: made up by the importer)


@dataclass
class _Intent:
    name: str
    description: str
    examples: list[str]
    route: str
    target: str
    digits: list[str]


@dataclass
class _Importer:
    flow: _Flow
    menu: _Menu
    flow_sid: str
    flow_sid_is_placeholder: bool
    mapped: list[ReportItem] = field(default_factory=list)
    not_mapped: list[ReportItem] = field(default_factory=list)
    routes: dict[str, _Route] = field(default_factory=dict)  # by route name
    route_of_widget: dict[str, str] = field(default_factory=dict)
    intents: list[_Intent] = field(default_factory=list)
    workflow_placeholders: int = 0

    def note(self, finding: Finding, subject: str, detail: str) -> None:
        self.not_mapped.append(ReportItem(finding, subject, _one_line(detail)))

    def done(self, finding: Finding, subject: str, detail: str) -> None:
        self.mapped.append(ReportItem(finding, subject, _one_line(detail)))

    # Routes ---------------------------------------------------------------------------------

    def route_for(self, widget: str) -> str | None:
        """The route standing for a branch target, made on first use; None when it cannot be one."""
        if widget in self.route_of_widget:
            return self.route_of_widget[widget]
        state = self.flow.states[widget]
        if state.type == TRIGGER:
            self.note(
                Finding.DEAD_END, widget, "a branch leads to the Trigger, which no call can resume at: not mapped"
            )
            return None
        made = {
            "send-to-flex": self._send_to_flex,
            "enqueue-call": self._enqueue_call,
            "connect-call-to": self._connect_call_to,
            "record-voicemail": self._record_voicemail,
        }.get(state.type, self._resume)(state)
        if made is None:
            return None
        table, comments, summary = made
        name = _unique(_snake_case(widget, fallback="route"), self.routes)
        self.routes[name] = _Route(name, table, comments, widget)
        self.route_of_widget[widget] = name
        self.done(Finding.ROUTE, name, f"Studio widget `{widget}` ({state.type}) → {summary}")
        return name

    def _resume(self, state: _State, why: str = "") -> tuple[dict[str, Any], list[str], str] | None:
        if not _WIDGET_NAME.fullmatch(state.name):
            self.note(
                Finding.DEAD_END,
                state.name,
                "the widget name has spaces or '/', so no call can resume at it: not mapped",
            )
            return None
        table = {"kind": "studio", "flow_sid": self.flow_sid, "mode": "resume", "node": state.name}
        comments = [f"Studio widget {state.name} ({state.type}): the call goes back into the flow there."]
        if state.name == self.menu.gather:
            comments.append("It is the old menu the AI replaces: the caller hears the legacy IVR from there.")
        if self.flow_sid_is_placeholder:
            comments.append(
                "PLACEHOLDER flow_sid: the flow JSON has no SID; put the flow's FW… SID in (or use --flow-sid)."
            )
        if why:
            comments.append(why)
        return table, comments, f"studio resume at `{state.name}`"

    def _send_to_flex(self, state: _State) -> tuple[dict[str, Any], list[str], str] | None:
        props = state.properties
        where = f"{state.name}.properties"
        comments = [f"Studio widget {state.name} (Send to Flex)."]
        table = self._flex_table(state, "workflow", "attributes", comments)
        for key, why in (
            ("channel", "the AI enqueues on the workflow's voice channel"),
            ("waitUrl", "hold music is not configurable on our Flex routes"),
            ("waitUrlMethod", "hold music is not configurable on our Flex routes"),
        ):
            if key in props:
                self.note(Finding.NOT_CARRIED, state.name, f"{where}.{key} = {_short(props[key])}: {why}")
        return table, comments, _flex_summary(table)

    def _flex_table(self, state: _State, workflow_key: str, attributes_key: str, comments: list[str]) -> dict[str, Any]:
        """The flex route of a widget that enqueues (the two widget types name their properties differently)."""
        table: dict[str, Any] = {"kind": "flex", "workflow_sid": self._workflow_sid(state, workflow_key, comments)}
        table["priority"] = self._task_number(state, "priority", 0, TASK_MAX_PRIORITY, minimum=0)
        table["timeout"] = self._task_number(state, "timeout", TASK_DEFAULT_TIMEOUT, TASK_MAX_TIMEOUT, minimum=1)
        attributes = self._task_attributes(state, attributes_key)
        if attributes:
            table["attributes"] = attributes
        return table

    def _enqueue_call(self, state: _State) -> tuple[dict[str, Any], list[str], str] | None:
        props = state.properties
        if "workflow_sid" not in props and "queue_name" in props:
            why = (
                "It enqueues to the TaskRouter queue named "
                f"{_short(props['queue_name'])}, and our Flex routes need a workflow SID, so the flow does it."
            )
            self.note(
                Finding.NOT_CARRIED, state.name, f"Enqueue Call by queue name: mapped to a studio resume instead. {why}"
            )
            return self._resume(state, why)
        comments = [f"Studio widget {state.name} (Enqueue Call)."]
        table = self._flex_table(state, "workflow_sid", "task_attributes", comments)
        for key in ("wait_url", "wait_url_method"):
            if key in props:
                self.note(
                    Finding.NOT_CARRIED,
                    state.name,
                    f"{state.name}.properties.{key}: hold music is not configurable on our Flex routes",
                )
        return table, comments, _flex_summary(table)

    def _connect_call_to(self, state: _State) -> tuple[dict[str, Any], list[str], str] | None:
        props = state.properties
        noun = props.get("noun")
        uri = props.get("sip_endpoint") or props.get("to")
        if noun == "sip" and isinstance(uri, str) and re.match(r"sips?:\S", uri) and not _templated(uri):
            if props.get("sip_username") or props.get("sip_password"):
                why = "Our SIP routes carry no credentials, so the flow dials it."
                self.note(
                    Finding.NOT_CARRIED,
                    state.name,
                    f"SIP call with a username/password: mapped to a studio resume instead. {why}",
                )
                return self._resume(state, why)
            return (
                {"kind": "sip", "uri": uri.strip()},
                [f"Studio widget {state.name} (Connect Call To SIP)."],
                f"sip `{uri.strip()}`",
            )
        target = _short(uri) if uri is not None else "nothing"
        why = (
            f"It connects to {noun or 'an unnamed noun'} {target}; our config dials SIP addresses only,"
            " so the call goes back to this widget, which dials as before."
        )
        self.note(Finding.NOT_CARRIED, state.name, f"Connect Call To: mapped to a studio resume instead. {why}")
        return self._resume(state, why)

    def _record_voicemail(self, state: _State) -> tuple[dict[str, Any], list[str], str] | None:
        raw = state.properties.get("max_length")
        length = _int_value(raw)
        if raw is None:
            length = STUDIO_RECORD_DEFAULT_MAX_LENGTH
            self.note(Finding.REVIEW, state.name, f"no max_length: Studio's default {length} s is used")
        elif length is None or not 1 <= length <= VOICEMAIL_MAX_LENGTH_LIMIT:
            length = STUDIO_RECORD_DEFAULT_MAX_LENGTH
            self.note(
                Finding.NOT_CARRIED,
                state.name,
                f"max_length {_short(raw)} is not 1 to {VOICEMAIL_MAX_LENGTH_LIMIT} seconds: {length} s is used",
            )
        table: dict[str, Any] = {"kind": "voicemail", "max_length": length}
        prompt = self._prompt_before(state.name)
        if prompt:
            table["prompt"] = prompt
        for key in ("transcribe", "trim", "play_beep", "finish_on_key", "timeout"):
            if key in state.properties:
                self.note(
                    Finding.NOT_CARRIED,
                    state.name,
                    f"{state.name}.properties.{key}: our voicemail route records with Twilio's defaults",
                )
        return table, [f"Studio widget {state.name} (Record Voicemail)."], f"voicemail, up to {length} s"

    def _prompt_before(self, widget: str) -> str | None:
        # A Say/Play whose only way on leads to the recording is its prompt ("leave a message after the tone").
        for state in self.flow.states.values():
            nexts = [t.next for t in state.transitions if t.next]
            say = state.properties.get("say")
            if (
                state.type == "say-play"
                and nexts == [widget]
                and isinstance(say, str)
                and say.strip()
                and not _templated(say)
            ):
                return _one_line(say)
        return None

    def _workflow_sid(self, state: _State, key: str, comments: list[str]) -> str:
        value = state.properties.get(key)
        if isinstance(value, str) and _SID["WW"].fullmatch(value.strip()):
            return value.strip()
        self.workflow_placeholders += 1
        placeholder = "WW" + f"{self.workflow_placeholders:032x}"
        shown = _short(value) if value is not None else "nothing"
        finding = Finding.TEMPLATED_SID if isinstance(value, str) and _templated(value) else Finding.NOT_CARRIED
        comments.append(f"PLACEHOLDER workflow_sid: the flow had {shown} here; put the real WW… SID in.")
        self.note(
            finding,
            state.name,
            f"{state.name}.properties.{key} is {shown}: routing.toml has the placeholder {placeholder}",
        )
        return placeholder

    def _task_number(self, state: _State, key: str, default: int, maximum: int, *, minimum: int) -> int:
        raw = state.properties.get(key)
        if raw is None:
            if key == "timeout":
                self.note(Finding.REVIEW, state.name, f"no task timeout: Studio's default {default} s (24 h) is used")
            return default
        number = _int_value(raw)
        if number is None or not minimum <= number <= maximum:
            self.note(
                Finding.NOT_CARRIED,
                state.name,
                f"{state.name}.properties.{key} = {_short(raw)} is not a whole number from {minimum} to {maximum}: {default} is used",
            )
            return default
        return number

    def _task_attributes(self, state: _State, key: str) -> dict[str, Any]:
        raw = state.properties.get(key)
        if raw is None or raw == "":
            return {}
        where = f"{state.name}.properties.{key}"
        try:
            attributes = json.loads(raw) if isinstance(raw, str) else raw
        except (json.JSONDecodeError, RecursionError):
            self.note(
                Finding.NOT_CARRIED,
                state.name,
                f"{where} is not JSON (Liquid that builds JSON?): no attributes carried over",
            )
            return {}
        if not isinstance(attributes, dict):
            self.note(Finding.NOT_CARRIED, state.name, f"{where} is not a JSON object: no attributes carried over")
            return {}
        kept: dict[str, Any] = {}
        for name, value in attributes.items():
            if name in RESERVED_TASK_ATTRIBUTES:
                self.note(
                    Finding.NOT_CARRIED,
                    state.name,
                    f"task attribute {name!r} ({_short(value)}): the orchestrator sets it on every task itself",
                )
            elif _templated(json.dumps(value, ensure_ascii=False)):
                self.note(
                    Finding.NOT_CARRIED,
                    state.name,
                    f"task attribute {name!r} = {_short(value)} is a template Studio fills in; the config's attributes are fixed values",
                )
            else:
                clean = _toml_value(value)
                if clean is None:
                    self.note(
                        Finding.NOT_CARRIED,
                        state.name,
                        f"task attribute {name!r} = {_short(value)} has no TOML form (null?)",
                    )
                else:
                    kept[name] = clean
        return kept

    # Intents ---------------------------------------------------------------------------------

    def build_intents(self) -> None:
        gather = self.menu.gather
        by_target: dict[str, list[_Branch]] = {}
        for branch in self.menu.branches:
            label = _branch_label(branch)
            if branch.target is None:
                self.note(
                    Finding.DEAD_END,
                    branch.split,
                    f"branch {label} has no next widget (the call ends there): not an intent",
                )
            elif branch.target == gather:
                self.note(
                    Finding.LOOP, branch.split, f"branch {label} leads back to {gather} (the menu again): not an intent"
                )
            elif branch.target not in self.flow.states:
                self.note(
                    Finding.BROKEN_LINK,
                    branch.split,
                    f"branch {label} leads to {branch.target!r}, which is not a widget: not an intent",
                )
            else:
                by_target.setdefault(branch.target, []).append(branch)
        prompt = self.flow.states[gather].properties.get("say")
        prompt_lines = _sentences(prompt) if isinstance(prompt, str) else []
        for target, branches in by_target.items():
            route = self.route_for(target)
            if route is None:
                continue
            self.intents.append(self._intent(target, branches, route, prompt_lines))

    def _intent(self, target: str, branches: list[_Branch], route: str, prompt_lines: list[str]) -> _Intent:
        names = [
            c.friendly_name.strip()
            for b in branches
            for c in b.conditions
            if c.friendly_name.strip() and not _GENERATED_CONDITION_NAME.match(c.friendly_name)
        ]
        title = names[0] if names else target
        name = _unique(_snake_case(title, fallback="intent"), {i.name for i in self.intents})
        words: list[str] = []
        digits: list[str] = []
        for branch in branches:
            for condition in branch.conditions:
                for value in self._condition_values(branch, condition):
                    if branch.kind == "digits":
                        digits.append(value)
                    else:
                        words.append(value)
            if not branch.conditions:
                self.note(Finding.REVIEW, branch.split, f"branch to {target} has no readable condition")
        words, digits = _dedupe(words), _dedupe(digits)
        menu_lines = [
            line for d in digits for line in prompt_lines if re.search(rf"(?i)\bpress\s+{re.escape(d)}\b", line)
        ]
        phrases = [p for d in digits for line in menu_lines if (p := _menu_phrase(line, d))]
        examples = _dedupe(words + phrases)
        description = _describe(title, words, digits, _dedupe(menu_lines))
        kinds = sorted({b.kind for b in branches})
        merged = " (speech and keypress branches merged)" if len(kinds) > 1 else ""
        self.done(
            Finding.INTENT,
            name,
            f"from {', '.join(sorted({b.split for b in branches}))}{merged}: "
            f"words {_list_or_none(words)}, keys {_list_or_none(digits)} → route `{route}`",
        )
        return _Intent(name, description, examples, route, target, digits)

    def _condition_values(self, branch: _Branch, condition: _Condition) -> list[str]:
        value = "" if condition.value is None else str(condition.value)
        label = f"{branch.split}: condition {condition.friendly_name or condition.type!r}"
        if condition.type in _TEXT_CONDITIONS:
            values = [value]
        elif condition.type == "matches_any_of":
            values = value.split(",")
        else:
            self.note(
                Finding.REVIEW,
                branch.split,
                f"{label} is of type {condition.type or '(none)'!r} {_short(value)}: no example phrases from it; check the intent's description",
            )
            return []
        values = [" ".join(v.split()) for v in values]
        kept = [v for v in values if v and not _templated(v)]
        if len(kept) < len([v for v in values if v]):
            self.note(
                Finding.PLACEHOLDER, branch.split, f"{label} has template values; only the plain ones became examples"
            )
        return kept

    # Fallback and human route ----------------------------------------------------------------

    def fallback_target(self) -> str | None:
        """Where Studio sends callers the menu could not place: the splits' noMatch, else the Gather's timeout."""
        targets = list(dict.fromkeys(t for _, t in self.menu.no_match if t is not None and t in self.flow.states))
        if len(targets) > 1:
            self.note(
                Finding.REVIEW,
                self.menu.gather,
                f"the menu's splits send unmatched callers to different widgets ({', '.join(targets)}): the fallback uses {targets[0]}",
            )
        if targets:
            return targets[0]
        timeout = next(
            (
                t.next
                for t in self.flow.states[self.menu.gather].transitions
                if t.event == "timeout" and t.next in self.flow.states
            ),
            None,
        )
        return timeout

    def human_route(self) -> str:
        """A route to a person: the least urgent Flex route, else SIP, else voicemail (made up if need be)."""
        by_kind: dict[str, list[_Route]] = {}
        for route in self.routes.values():
            by_kind.setdefault(route.table["kind"], []).append(route)
        if by_kind.get("flex"):
            chosen = min(by_kind["flex"], key=lambda r: r.table["priority"])  # min keeps the first of a tie
            why = "the Flex route with the lowest priority (the least specialised queue)"
        elif by_kind.get("sip"):
            chosen, why = by_kind["sip"][0], "the flow's SIP destination (it has no Flex route)"
        elif by_kind.get("voicemail"):
            chosen, why = by_kind["voicemail"][0], "the flow's voicemail (it has no Flex or SIP route)"
        else:
            name = _unique("voicemail", self.routes)
            chosen = _Route(
                name,
                {"kind": "voicemail", "max_length": 120, "prompt": DEFAULT_VOICEMAIL_PROMPT},
                [
                    "Made up by the importer: the menu reaches no Flex queue, SIP address or voicemail,",
                    "and the human route must be one of those (never a Studio node).",
                ],
                None,
            )
            self.routes[name] = chosen
            why = "a voicemail route made up by the importer: the menu reaches no Flex queue, SIP address or voicemail"
        self.done(
            Finding.HUMAN_ROUTE,
            chosen.name,
            f"{why}; the re-entry guard sends calls there, so pick another if a person should take them",
        )
        return chosen.name


# --- The patched flow ----------------------------------------------------------------------------


def _patch_flow(
    flow: _Flow, gather: str, intents: list[_Intent], no_match: str | None, flow_sid: str, public_url: str
) -> tuple[dict[str, Any], tuple[str, str, str], list[str], list[tuple[str, str]]]:
    """The flow with the redirect in front of the Gather. Returns it, the new widget names (redirect,
    arm split, intent split), the widgets whose transitions now lead to the redirect, and the loops left
    on the Gather."""
    patched = copy.deepcopy(flow.raw)
    names = set(flow.states)
    redirect = _unique(REDIRECT_WIDGET_NAME, names)
    arm_split = _unique(ARM_SPLIT_NAME, names | {redirect})
    split = _unique(INTENT_SPLIT_NAME, names | {redirect, arm_split})
    intent_input = "{{widgets." + redirect + ".intent}}"
    arm_input = "{{widgets." + redirect + ".arm}}"

    # Transitions into the Gather from widgets reached before it move to the redirect; those from
    # widgets reached through it (menu loops) keep the old menu, so the legacy path stays as it was.
    before = set(_reachable(flow, flow.entry, avoid=gather)) - {gather} | {flow.trigger}
    repointed: list[str] = []
    loops: list[tuple[str, str]] = []
    raw_states = patched["states"]
    for index, state in enumerate(flow.states.values()):
        for position, transition in enumerate(state.transitions):
            if transition.next != gather:
                continue
            if state.name in before:
                raw_states[index]["transitions"][position]["next"] = redirect
                if state.name not in repointed:
                    repointed.append(state.name)
            else:
                loops.append((state.name, transition.event))

    x, y = _offset(flow.states[gather])
    redirect_state = {
        "name": redirect,
        "type": "add-twiml-redirect",
        "transitions": [
            {"next": arm_split, "event": "return"},
            {"next": gather, "event": "timeout"},
            {"next": gather, "event": "fail"},
        ],
        "properties": {
            "offset": {"x": x - 450, "y": y},
            "method": "POST",
            "url": f"{public_url}{VOICE_WEBHOOK_PATH}?{urlencode({'flow_sid': flow_sid, 'node': redirect})}",
            "timeout": str(REDIRECT_TIMEOUT_SECONDS),
        },
    }
    arm_split_state = {
        "name": arm_split,
        "type": SPLIT,
        "transitions": [
            {"next": split, "event": "noMatch"},
            {
                "next": gather,
                "event": "match",
                "conditions": [
                    {"friendly_name": LEGACY_ARM, "arguments": [arm_input], "type": "equal_to", "value": LEGACY_ARM}
                ],
            },
        ],
        "properties": {"input": arm_input, "offset": {"x": x - 450, "y": y + 230}},
    }
    no_match_transition: dict[str, Any] = {"event": "noMatch"}
    if no_match is not None:
        no_match_transition = {"next": no_match, "event": "noMatch"}
    split_state = {
        "name": split,
        "type": SPLIT,
        "transitions": [no_match_transition]
        + [
            {
                "next": intent.target,
                "event": "match",
                "conditions": [
                    {
                        "friendly_name": intent.name,
                        "arguments": [intent_input],
                        "type": "equal_to",
                        "value": intent.name,
                    }
                ],
            }
            for intent in intents
        ],
        "properties": {"input": intent_input, "offset": {"x": x - 450, "y": y + 460}},
    }
    gather_index = flow.order.index(gather)
    raw_states[gather_index + 1 : gather_index + 1] = [redirect_state, arm_split_state, split_state]
    return patched, (redirect, arm_split, split), repointed, loops


def _offset(state: _State) -> tuple[float, float]:
    offset = state.properties.get("offset")
    if isinstance(offset, dict):
        x, y = offset.get("x"), offset.get("y")
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in (x, y)):
            return x, y
    return 0, 0


# --- Diagrams ------------------------------------------------------------------------------------


def flow_mermaid(
    definition: Mapping[str, Any], *, added: Iterable[str] = (), changed: Iterable[str] = (), legacy: Iterable[str] = ()
) -> str:
    """A Studio flow definition (already validated) as a Mermaid flowchart: widgets and their transitions."""
    states = definition["states"]
    ids = {state["name"]: f"w{index}" for index, state in enumerate(states)}
    lines = ["flowchart TD"]
    for state in states:
        lines.append(f'  {ids[state["name"]]}["{_mermaid_text(state["name"])}<br/>{_mermaid_text(state["type"])}"]')
    missing: dict[str, str] = {}
    for state in states:
        for transition in state.get("transitions", []):
            target = transition.get("next")
            if not target:
                continue
            if target not in ids and target not in missing:
                missing[target] = f"missing{len(missing)}"
                lines.append(f'  {missing[target]}["{_mermaid_text(target)}<br/>(no such widget)"]')
            label = _mermaid_text(_truncate(_edge_label(transition), 32))
            lines.append(f'  {ids[state["name"]]} -->|"{label}"| {ids.get(target) or missing[target]}')
    for css, names in (("added", added), ("changed", changed), ("legacy", legacy)):
        members = [ids[name] for name in names if name in ids]
        if members:
            lines.append(f"  class {','.join(members)} {css}")
    lines += [
        "  classDef added fill:#d9f2d9,stroke:#2e7d32,stroke-width:2px",
        "  classDef changed fill:#fff3cd,stroke:#b7791f",
        "  classDef legacy fill:#eeeeee,stroke:#777777,stroke-dasharray:4 3",
    ]
    return "\n".join(lines) + "\n"


def _edge_label(transition: Mapping[str, Any]) -> str:
    conditions = transition.get("conditions") or []
    if transition.get("event") == "match" and conditions and isinstance(conditions[0], dict):
        first = conditions[0]
        name = first.get("friendly_name")
        if isinstance(name, str) and name.strip():
            return name
        return f"{first.get('type', '')} {first.get('value', '')}"
    return str(transition.get("event", ""))


def _mermaid_text(text: str) -> str:
    # Mermaid entity codes: a quote, pipe or angle bracket would end or change the label.
    text = _one_line(text).replace("#", "#35;")
    for char, code in (('"', "#quot;"), ("|", "#124;"), ("<", "#lt;"), (">", "#gt;")):
        text = text.replace(char, code)
    return text


# --- The config text -----------------------------------------------------------------------------


def _routing_toml(
    source: str,
    description: str,
    intents: list[_Intent],
    routes: Mapping[str, _Route],
    fallback: str,
    fallback_why: str,
    human: str,
    placeholders: bool,
) -> tuple[str, dict[str, Any]]:
    """The config as commented TOML text, and the document it must parse back to."""
    header = [
        f"Routing for the AI front desk, imported from the Studio flow {source}"
        + (f" ({description})." if description else "."),
        "Written by `orchestrator studio import`; IMPORT_REPORT.md says what was mapped and what was not.",
        "The intent descriptions and examples are generated from the menu: review them, the AI classifies by them.",
    ]
    if placeholders:
        header.append("Values marked PLACEHOLDER were not in the flow: put your account's SIDs in before use.")
    header += [
        "Check it with: orchestrator check-config routing.toml",
        "Any key can be overridden from the environment, e.g. ORCHESTRATOR_TRIAGE__BUDGET_SECONDS=15.",
        "[lines] (what the AI says) and [company] keep their defaults; see examples/acme_plumbing.toml.",
    ]
    triage = {**TRIAGE_DEFAULTS, "fallback_route": fallback, "human_route": human}
    document: dict[str, Any] = {"triage": triage, "routes": {}, "intents": []}
    # Each table is written by tomli-w as flat key = value lines under a header of ours, so a comment can
    # go above it (tomli-w writes no comments, and would inline a short array of tables).
    parts = [
        _comment(header),
        _comment(
            [
                "budget: after this many seconds the call takes the fallback route; below min_confidence the AI asks again.",
                f"fallback_route: {fallback_why}",
                "human_route: where the re-entry guard sends a call (a person or voicemail, never a Studio node).",
            ]
        )
        + "[triage]\n"
        + tomli_w.dumps(triage),
    ]
    parts.append(_comment(["--- Routes: where a call can go, one per widget the menu led to " + "-" * 20]).rstrip("\n"))
    for route in routes.values():
        document["routes"][route.name] = route.table
        flat = {key: value for key, value in route.table.items() if key != "attributes"}
        text = _comment(route.comments) + f"[routes.{route.name}]\n" + tomli_w.dumps(flat)
        if route.table.get("attributes"):
            text += "\n" + tomli_w.dumps({"routes": {route.name: {"attributes": route.table["attributes"]}}})
        parts.append(text)
    parts.append(
        _comment(
            ["--- Intents: one per menu choice (speech and keypress branches to one widget are one) " + "-" * 4]
        ).rstrip("\n")
    )
    for intent in intents:
        keys = f"; keys {', '.join(intent.digits)} in the old menu" if intent.digits else ""
        table: dict[str, Any] = {"name": intent.name, "description": intent.description}
        if intent.examples:
            table["examples"] = intent.examples
        table["route"] = intent.route
        document["intents"].append(table)
        parts.append(
            _comment([f"Branch to the Studio widget {intent.target}{keys}."]) + "[[intents]]\n" + tomli_w.dumps(table)
        )
    return "\n".join(parts), document


def _comment(lines: Iterable[str]) -> str:
    # TOML comments end at a newline and may not hold control characters.
    return "".join(f"# {_one_line(line)}".rstrip() + "\n" for line in lines)


def _check_config(text: str, document: Mapping[str, Any]) -> None:
    try:
        parsed = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise GeneratedConfigError(f"the imported routing config is not TOML ({error}):\n{text}") from None
    if parsed != document:
        raise GeneratedConfigError(f"the imported routing config does not read back as written:\n{text}")
    with tempfile.TemporaryDirectory(prefix="studio-import-") as folder:
        path = Path(folder) / "routing.toml"
        path.write_text(text, encoding="utf-8")
        try:
            load_routing_config(path)
        except ConfigError as error:
            if error.source.startswith("$"):
                raise StudioImportError(
                    f"the environment changes the imported config so it no longer loads: {error}"
                ) from None
            raise GeneratedConfigError(f"the imported routing config does not validate: {error}\n{text}") from None


# --- Import --------------------------------------------------------------------------------------


def import_flow(
    definition_text: str, *, source: str, public_url: str = DEFAULT_PUBLIC_URL, flow_sid: str | None = None
) -> ImportResult:
    """Import a Studio flow definition (JSON text). Raises `StudioImportError` for any flow it cannot use.

    `source` names the flow in the report and the config's comments; `public_url` is our server's base
    URL (the redirect widget calls `{public_url}/voice/incoming`); `flow_sid` is the flow's FW… SID,
    which the JSON export does not contain (a placeholder in the right shape otherwise).
    """
    base_url = _public_base(public_url)
    if flow_sid is not None and not _SID["FW"].fullmatch(flow_sid):
        raise StudioImportError(f"the flow SID must be 'FW' followed by 32 hex characters (got {_short(flow_sid)})")
    flow = _parse_flow(definition_text)

    gathers = [name for name in _reachable(flow, flow.entry) if flow.states[name].type == GATHER]
    unreachable = [name for name in flow.order if flow.states[name].type == GATHER and name not in gathers]
    if not gathers:
        where = (
            f" reachable from the Trigger's incomingCall (unreachable: {', '.join(unreachable)})" if unreachable else ""
        )
        raise StudioImportError(f"no Gather Input On Call widget{where}: there is no menu to replace with the AI")
    menu = next((m for g in gathers if (m := _menu_of(flow, g)) is not None), None)
    if menu is None:
        raise StudioImportError(
            f"no Gather is followed by a Split on its SpeechResult or Digits (Gathers: {', '.join(gathers)}):"
            " there are no menu choices to turn into intents"
        )

    known_sid = flow_sid or flow.flow_sid
    chosen_sid = known_sid or "FW" + "0" * 32
    importer = _Importer(flow=flow, menu=menu, flow_sid=chosen_sid, flow_sid_is_placeholder=known_sid is None)
    importer.build_intents()
    if not importer.intents:
        raise StudioImportError(
            f"no branch of the menu after {menu.gather} leads to a widget a call can go to: no intents"
        )

    fallback_widget = importer.fallback_target()
    fallback_route = importer.route_for(fallback_widget) if fallback_widget is not None else None
    human = importer.human_route()
    if fallback_route is None:
        fallback_route = human
        fallback_why = "the menu sends unmatched callers nowhere, so the human route takes them."
        importer.done(Finding.FALLBACK, human, fallback_why)
    else:
        what = "back to the old menu" if fallback_widget == menu.gather else f"to the widget {fallback_widget}"
        fallback_why = f"callers the menu could not place went {what} (noMatch / timeout)."
        importer.done(
            Finding.FALLBACK, fallback_route, f"{fallback_why} The AI sends callers it cannot place there too"
        )
    timeout_target = next((t.next for t in flow.states[menu.gather].transitions if t.event == "timeout"), None)
    if timeout_target is not None and timeout_target != fallback_widget:
        importer.note(
            Finding.REVIEW,
            menu.gather,
            f"the Gather's timeout led to {timeout_target}; with the AI a silent caller takes the fallback route"
            f" `{fallback_route}` instead ({timeout_target} stays on the legacy path)",
        )

    _report_flow(importer, gathers, unreachable)
    patched, added, repointed, loops = _patch_flow(
        flow, menu.gather, importer.intents, fallback_widget, chosen_sid, base_url
    )
    redirect = added[0]
    _report_patch(importer, added, fallback_widget, repointed, loops, chosen_sid, known_sid, base_url)

    placeholders = importer.workflow_placeholders > 0 or known_sid is None
    text, document = _routing_toml(
        source,
        _one_line(str(flow.raw.get("description") or "")),
        importer.intents,
        importer.routes,
        fallback_route,
        fallback_why,
        human,
        placeholders,
    )
    _check_config(text, document)
    untouched_legacy = [menu.gather, *menu.splits]
    report = ImportReport(
        source=source,
        gather=menu.gather,
        redirect=redirect,
        mapped=tuple(importer.mapped),
        not_mapped=tuple(importer.not_mapped),
    )
    return ImportResult(
        routing_toml=text,
        patched_flow=patched,
        before_mermaid=flow_mermaid(flow.raw, legacy=untouched_legacy),
        after_mermaid=flow_mermaid(patched, added=added, changed=repointed, legacy=untouched_legacy),
        report=report,
        added_widgets=added,
        changed_widgets=tuple(repointed),
    )


def _report_flow(importer: _Importer, gathers: list[str], unreachable: list[str]) -> None:
    flow, menu = importer.flow, importer.menu
    for name in gathers:
        if name != menu.gather:
            importer.note(
                Finding.OTHER_GATHER,
                name,
                f"another Gather; only the menu {menu.gather} is replaced, this one is left as it is",
            )
    for name in unreachable:
        importer.note(Finding.OTHER_GATHER, name, "a Gather no incoming call reaches: left as it is")
    for event, target in menu.direct:
        state = flow.states[target]
        if state.type == SPLIT:
            read = _short(state.properties.get("input"))
            importer.note(
                Finding.OTHER_SPLIT,
                target,
                f"the Gather's {event} leads to this split on {read}, not on the Gather's SpeechResult or Digits: no intents from it",
            )
        else:
            importer.note(
                Finding.REVIEW,
                menu.gather,
                f"every {event} answer goes straight to {target} (no split): that path has no menu choices",
            )
    for event in MENU_EVENTS:
        if not any(t.event == event and t.next for t in flow.states[menu.gather].transitions):
            importer.note(
                Finding.REVIEW,
                menu.gather,
                f"the Gather's {event} transition leads nowhere: the old menu took no {event} answers",
            )
    for name in flow.order:
        state = flow.states[name]
        if state.type not in WIDGET_EVENTS:
            importer.note(
                Finding.UNKNOWN_WIDGET, name, f"widget type {state.type!r} is unknown to the importer: left as it is"
            )
        for transition in state.transitions:
            if transition.next is not None and transition.next not in flow.states:
                importer.note(
                    Finding.BROKEN_LINK,
                    name,
                    f"{transition.event} leads to {transition.next!r}, which is not a widget (Studio will refuse the flow)",
                )
        for path, text in _strings(state.properties, f"{name}.properties"):
            for placeholder in _PLACEHOLDER.findall(text):
                finding = Finding.TEMPLATED_SID if _SID_KEYS.match(path.rsplit(".", 1)[-1]) else Finding.PLACEHOLDER
                item = ReportItem(
                    finding, name, f"{path} holds {placeholder}: fill it in before importing the flow into Studio"
                )
                if item not in importer.not_mapped:
                    importer.not_mapped.append(item)
        if name not in (menu.gather, *menu.splits) and _reads_result(state, menu.gather):
            importer.note(
                Finding.GATHER_OUTPUT,
                name,
                f"reads {{{{widgets.{menu.gather}.…}}}}, which is empty when the call comes back from the AI:"
                " read the redirect's captured fields instead",
            )


def _report_patch(
    importer: _Importer,
    added: tuple[str, str, str],
    no_match: str | None,
    repointed: list[str],
    loops: list[tuple[str, str]],
    flow_sid: str,
    given_sid: str | None,
    base_url: str,
) -> None:
    gather = importer.menu.gather
    redirect, arm_split, split = added
    importer.done(
        Finding.PATCH,
        redirect,
        f"new TwiML Redirect to {base_url}{VOICE_WEBHOOK_PATH} (POST, timeout {REDIRECT_TIMEOUT_SECONDS} s:"
        f" far above the triage budget, and short so executions of calls the AI sent elsewhere end soon);"
        f" return → {arm_split}, timeout and fail → {gather}",
    )
    importer.done(
        Finding.PATCH,
        arm_split,
        f"new Split on {{{{widgets.{redirect}.arm}}}}: callers the rollout keeps on the legacy path"
        f" ({LEGACY_ARM}) → {gather}, the AI's callers → {split}",
    )
    ends = f"noMatch → {no_match}" if no_match else "noMatch leads nowhere (the call ends, as it did)"
    importer.done(
        Finding.PATCH,
        split,
        f"new Split on {{{{widgets.{redirect}.intent}}}}: one branch per intent to the original widget; {ends}",
    )
    importer.done(Finding.PATCH, ", ".join(repointed), f"transitions that led to {gather} now lead to {redirect}")
    for name, event in loops:
        importer.note(
            Finding.LOOP, name, f"{event} leads back to {gather}: kept (callers there get the old menu, not the AI)"
        )
    if given_sid is None:
        importer.note(
            Finding.FLOW_SID,
            "flow",
            f"the flow JSON has no SID: the placeholder {flow_sid} is in the redirect URL"
            " and the studio routes; import again with --flow-sid FW…",
        )
    if base_url == DEFAULT_PUBLIC_URL:
        importer.note(
            Finding.PUBLIC_URL,
            redirect,
            f"the redirect calls the example address {base_url}: import again with --public-url",
        )
    flags = importer.flow.raw.get("flags")
    if not (isinstance(flags, dict) and flags.get("allow_concurrent_calls") is True):
        importer.note(
            Finding.REVIEW,
            "flags",
            f"allow_concurrent_calls is off: a call the AI sends to Flex, voicemail or SIP keeps its execution waiting"
            f" on {redirect} for up to {REDIRECT_TIMEOUT_SECONDS} s, and Studio refuses the same caller meanwhile"
            " (warning 81002); turn it on",
        )
    flex = [r.widget for r in importer.routes.values() if r.table["kind"] == "flex" and r.widget]
    if flex:
        importer.note(
            Finding.REVIEW,
            ", ".join(flex),
            "the AI enqueues these calls to Flex itself (same workflow, priority and timeout), so these widgets"
            " and what follows them (e.g. failedToEnqueue) run only on the legacy path",
        )


def _reads_result(state: _State, gather: str) -> bool:
    pattern = re.compile(r"widgets\s*\.\s*" + re.escape(gather) + r"\s*\.")
    return any(
        pattern.search(text) for _, text in _strings(state.model_dump(include={"properties", "transitions"}), "")
    )


def write_import(result: ImportResult, out_dir: str | os.PathLike[str]) -> list[Path]:
    """Write routing.toml, flow.patched.json, flow.before.mmd, flow.after.mmd and IMPORT_REPORT.md."""
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "routing.toml": result.routing_toml,
        "flow.patched.json": json.dumps(result.patched_flow, indent=2, ensure_ascii=False) + "\n",
        "flow.before.mmd": result.before_mermaid,
        "flow.after.mmd": result.after_mermaid,
        "IMPORT_REPORT.md": result.report.render(),
    }
    written = []
    for name, text in files.items():
        path = folder / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


# --- The command ---------------------------------------------------------------------------------


def add_studio_arguments(subparsers: argparse._SubParsersAction) -> None:
    """Register `studio import FLOW.json --out DIR [--flow-sid FW…] [--public-url URL]`."""
    studio = subparsers.add_parser("studio", help="migrate a Twilio Studio flow to the AI front desk")
    commands = studio.add_subparsers(dest="studio_command", required=True)
    command = commands.add_parser(
        "import", help="turn a Studio flow's menu into a routing config and a flow patched for the AI"
    )
    command.add_argument("flow", type=Path, metavar="FLOW.json", help="the flow definition Studio exports")
    command.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder for the generated files")
    command.add_argument("--flow-sid", metavar="FW…", help="the flow's SID (the exported JSON does not hold it)")
    command.add_argument(
        "--public-url",
        metavar="URL",
        help=f"the URL Twilio reaches our server at (default: $ORCHESTRATOR_PUBLIC_URL, else {DEFAULT_PUBLIC_URL})",
    )
    command.set_defaults(run=run_studio_import)


def run_studio_import(args: argparse.Namespace) -> int:
    """Import, write the files and print the report: 0; or `error: <reason>` on stderr: 2."""
    public_url = args.public_url or os.environ.get("ORCHESTRATOR_PUBLIC_URL") or DEFAULT_PUBLIC_URL
    try:
        text = Path(args.flow).read_bytes().decode("utf-8-sig")
        result = import_flow(text, source=str(args.flow), public_url=public_url, flow_sid=args.flow_sid)
        written = write_import(result, args.out)
    except StudioImportError as error:
        print(f"error: {args.flow}: {error}", file=sys.stderr)
        return 2
    except UnicodeDecodeError:
        print(f"error: {args.flow}: not UTF-8 text", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"error: {error.filename or args.flow}: {error.strerror or error}", file=sys.stderr)
        return 2
    print(result.report.render())
    for path in written:
        print(f"wrote {path}")
    return 0


# --- Small helpers -------------------------------------------------------------------------------


def _public_base(url: str) -> str:
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise StudioImportError(
            f"the public URL must be an http:// or https:// base URL without a query (got {_short(url)})"
        )
    return url.rstrip("/")


def _snake_case(text: str, *, fallback: str) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", ascii_text)  # camelCase → camel_Case
    words = re.findall(r"[a-z0-9]+", spaced.lower())
    name = "_".join(words)
    if not name:
        return fallback
    return name if name[0].isalpha() else f"{fallback}_{name}"


def _unique(name: str, taken: Iterable[str]) -> str:
    taken = set(taken)
    candidate, number = name, 2
    while candidate in taken:
        candidate, number = f"{name}_{number}", number + 1
    return candidate


def _templated(text: str) -> bool:
    return bool(_PLACEHOLDER.search(text) or _LIQUID.search(text))


def _int_value(raw: Any) -> int | None:
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return raw
    if isinstance(raw, float) and raw.is_integer():
        return int(raw)
    if isinstance(raw, str) and re.fullmatch(r"\s*\d{1,12}\s*", raw):
        return int(raw)
    return None


def _toml_value(value: Any) -> Any:
    """`value` as TOML can hold it (no nulls, no NaN), or None when nothing of it is left."""
    if isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**63 else None
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, list):
        items = [_toml_value(item) for item in value]
        return [item for item in items if item is not None]
    if isinstance(value, dict):
        pairs = {key: _toml_value(item) for key, item in value.items()}
        return {key: item for key, item in pairs.items() if item is not None}
    return None


def _strings(value: Any, path: str) -> Iterator[tuple[str, str]]:
    """(key path, text) of every string inside a JSON value."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings(item, f"{path}[{index}]")


def _sentences(text: str) -> list[str]:
    return [" ".join(s.split()) for s in re.split(r"(?<=[.!?])\s+|\n+", text) if s.strip()]


def _menu_phrase(line: str, digit: str) -> str | None:
    """What a menu line offers for a key: "Press 1 for English" → "English",
    "To book a visit, say schedule or press 2." → "book a visit"."""
    d = re.escape(digit)
    after = re.search(rf"(?i)\bpress\s+{d}\s+(?:for|to)\s+([^,.;!?]+)", line)
    before = re.search(rf"(?i)^(?:for|to)\s+(.+),\s*(?:say\b.*?\bor\s+)?press\s+{d}\b", line)
    found = after or before
    phrase = " ".join(found[1].split()) if found else ""
    return phrase if phrase and not _templated(phrase) else None


def _describe(title: str, words: list[str], digits: list[str], menu_lines: list[str]) -> str:
    readable = " ".join(_snake_case(title, fallback="intent").split("_")).capitalize()
    parts = []
    if words:
        parts.append(f"callers who say {_join_or(words)}")
    if digits:
        parts.append(f"{'or ' if words else 'callers who '}press {_join_or(digits)} in the old menu")
    text = f"{readable}: {', '.join(parts)}" if parts else f"{readable}"
    if menu_lines:
        text += " (menu: " + " ".join(f'"{line}"' for line in menu_lines) + ")"
    return _one_line(text.rstrip(".") + ".")


def _join_or(items: list[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} or {items[-1]}"


def _dedupe(items: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    kept = []
    for item in items:
        if item.casefold() not in seen:
            seen.add(item.casefold())
            kept.append(item)
    return kept


def _branch_label(branch: _Branch) -> str:
    names = [c.friendly_name or f"{c.type} {c.value}" for c in branch.conditions]
    return repr(names[0]) if names else "(no condition)"


def _flex_summary(table: Mapping[str, Any]) -> str:
    extra = f", attributes {json.dumps(table['attributes'], ensure_ascii=False)}" if table.get("attributes") else ""
    return f"flex {table['workflow_sid']} priority {table['priority']}, timeout {table['timeout']} s{extra}"


def _list_or_none(items: list[str]) -> str:
    return ", ".join(items) if items else "none"


def _short(value: Any, limit: int = 60) -> str:
    """A value from the flow, quoted and cut short, for a message."""
    text = repr(value) if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return _truncate(text, limit)


def _truncate(text: str, limit: int) -> str:
    text = _one_line(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _one_line(text: str) -> str:
    return _CONTROL.sub("", " ".join(str(text).split()))


def _bullets(items: Iterable[ReportItem]) -> list[str]:
    return [f"- **{item.finding}** `{item.subject}`: {item.detail}" for item in items]
