"""Routes: what each widget the menu leads to becomes in routing.toml, and the triage's fallback and human routes.

Send to Flex and Enqueue Call (by workflow) → `flex`, Connect Call To a SIP address → `sip`, Record
Voicemail → `voicemail`, any other widget → `studio` resume there. What a route cannot carry is noted.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from orchestrator.config import RESERVED_TASK_ATTRIBUTES
from orchestrator.studio.flow import TRIGGER, Flow, State
from orchestrator.studio.flow_text import one_line, short, snake_case, templated, unique
from orchestrator.studio.menu import Menu
from orchestrator.studio.report import Finding, Findings

VOICEMAIL_MAX_LENGTH_LIMIT = 14400  # Twilio's <Record maxLength> limit
STUDIO_RECORD_DEFAULT_MAX_LENGTH = 3600  # Record Voicemail's default when the widget sets none
TASK_DEFAULT_TIMEOUT = 86400  # Send to Flex / Enqueue Call default (24 h) when the widget sets none
TASK_MAX_TIMEOUT = 1209600  # two weeks, Send to Flex's maximum
TASK_MAX_PRIORITY = 2**31 - 1
DEFAULT_VOICEMAIL_PROMPT = "Please leave your name, number and a short message after the tone, and we'll call you back."

_WORKFLOW_SID = re.compile(r"WW[0-9a-fA-F]{32}")
_WIDGET_NAME = re.compile(r"[^\s/]+")  # what routing_config accepts as a Studio node

# What a route named for an intent is called after, by what it does.
_ROUTE_SUFFIX = {"flex": "desk", "sip": "line", "voicemail": "voicemail", "studio": "studio"}

# A route's table, the comment lines above it in routing.toml, and what the report says it became.
RouteDraft: TypeAlias = tuple[dict[str, Any], list[str], str]


@dataclass
class Route:
    name: str
    table: dict[str, Any]
    comments: list[str]
    widget: str | None  # the Studio widget it stands for (None: made up by the importer)


@dataclass(frozen=True)
class TriageRoutes:
    fallback_widget: str | None  # where the old menu sent the callers it could not place
    fallback: str
    fallback_why: str
    human: str


@dataclass
class RouteMapper:
    flow: Flow
    menu: Menu
    flow_sid: str
    flow_sid_is_placeholder: bool
    findings: Findings
    routes: dict[str, Route] = field(default_factory=dict)  # by route name
    route_of_widget: dict[str, str] = field(default_factory=dict)
    workflow_placeholders: int = 0

    def route_for(self, widget: str, *, purpose: str | None = None) -> str | None:
        """The route standing for a branch target, made on first use; None when it cannot be one.

        It is named after what it does for `purpose` (an intent's name): `taxi_desk` (Flex), `taxi_line`
        (SIP), `taxi_voicemail`, `taxi_studio` (back into the flow); without one, after the widget."""
        if widget in self.route_of_widget:
            return self.route_of_widget[widget]
        state = self.flow.states[widget]
        if state.type == TRIGGER:
            self.findings.note(
                Finding.DEAD_END, widget, "a branch leads to the Trigger, which no call can resume at: not mapped"
            )
            return None
        makers: dict[str, Callable[[State], RouteDraft | None]] = {
            "send-to-flex": self._send_to_flex,
            "enqueue-call": self._enqueue_call,
            "connect-call-to": self._connect_call_to,
            "record-voicemail": self._record_voicemail,
        }
        made = makers.get(state.type, self._resume)(state)
        if made is None:
            return None
        table, comments, summary = made
        if purpose is not None:
            base = f"{purpose}_{_ROUTE_SUFFIX[table['kind']]}"
        elif widget == self.menu.gather:
            base = "old_menu"
        else:
            base = snake_case(widget, fallback="route")
        name = unique(base, self.routes)
        self.routes[name] = Route(name, table, comments, widget)
        self.route_of_widget[widget] = name
        self.findings.done(Finding.ROUTE, name, f"Studio widget `{widget}` ({state.type}) → {summary}")
        return name

    def resumed_routes(self) -> set[str]:
        """The routes that hand the call back to the flow (Studio resume)."""
        return {r.name for r in self.routes.values() if r.table["kind"] == "studio"}

    def flex_widgets(self) -> list[str]:
        """The widgets that became Flex routes (the AI enqueues their calls itself)."""
        return [r.widget for r in self.routes.values() if r.table["kind"] == "flex" and r.widget]

    # The triage's routes ----------------------------------------------------------------------

    def triage_routes(self) -> TriageRoutes:
        """The fallback route (where the old menu sent callers it could not place) and the human route."""
        gather = self.menu.gather
        fallback_widget = self._fallback_target()
        fallback = self.route_for(fallback_widget) if fallback_widget is not None else None
        human = self._human_route()
        if fallback is None:
            fallback = human
            fallback_why = "the menu sends unmatched callers nowhere, so the human route takes them."
            self.findings.done(Finding.FALLBACK, human, fallback_why)
        else:
            what = "back to the old menu" if fallback_widget == gather else f"to the widget {fallback_widget}"
            fallback_why = f"callers the menu could not place went {what} (noMatch / timeout)."
            self.findings.done(
                Finding.FALLBACK, fallback, f"{fallback_why} The AI sends callers it cannot place there too"
            )
        timeout_target = next((t.next for t in self.flow.states[gather].transitions if t.event == "timeout"), None)
        if timeout_target is not None and timeout_target != fallback_widget:
            self.findings.note(
                Finding.REVIEW,
                gather,
                f"the Gather's timeout led to {timeout_target}; with the AI a silent caller takes the fallback route"
                f" `{fallback}` instead ({timeout_target} stays on the legacy path)",
            )
        return TriageRoutes(fallback_widget, fallback, fallback_why, human)

    def _fallback_target(self) -> str | None:
        """Where Studio sends callers the menu could not place: the splits' noMatch, else the Gather's timeout."""
        states = self.flow.states
        targets = list(dict.fromkeys(t for _, t in self.menu.no_match if t is not None and t in states))
        if len(targets) > 1:
            self.findings.note(
                Finding.REVIEW,
                self.menu.gather,
                f"the menu's splits send unmatched callers to different widgets ({', '.join(targets)}): the fallback uses {targets[0]}",
            )
        if targets:
            return targets[0]
        gather = states[self.menu.gather]
        return next((t.next for t in gather.transitions if t.event == "timeout" and t.next in states), None)

    def _human_route(self) -> str:
        """A route to a person: the least urgent Flex route, else SIP, else voicemail (made up if need be)."""
        by_kind: dict[str, list[Route]] = {}
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
            name = unique("voicemail", self.routes)
            chosen = Route(
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
        self.findings.done(
            Finding.HUMAN_ROUTE,
            chosen.name,
            f"{why}; the re-entry guard sends calls there, so pick another if a person should take them",
        )
        return chosen.name

    # One route per widget type ----------------------------------------------------------------

    def _resume(self, state: State, why: str = "") -> RouteDraft | None:
        if not _WIDGET_NAME.fullmatch(state.name):
            self.findings.note(
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

    def _resume_instead(self, state: State, what: str, why: str) -> RouteDraft | None:
        """A studio resume for a widget whose own route kind cannot carry what it does."""
        self.findings.note(Finding.NOT_CARRIED, state.name, f"{what}: mapped to a studio resume instead. {why}")
        return self._resume(state, why)

    def _send_to_flex(self, state: State) -> RouteDraft | None:
        comments = [f"Studio widget {state.name} (Send to Flex)."]
        table = self._flex_table(state, "workflow", "attributes", comments)
        self._not_carried(state, ["channel"], "the AI enqueues on the workflow's voice channel", show_value=True)
        self._not_carried(
            state, ["waitUrl", "waitUrlMethod"], "hold music is not configurable on our Flex routes", show_value=True
        )
        return table, comments, _flex_summary(table)

    def _enqueue_call(self, state: State) -> RouteDraft | None:
        props = state.properties
        if "workflow_sid" not in props and "queue_name" in props:
            why = (
                "It enqueues to the TaskRouter queue named "
                f"{short(props['queue_name'])}, and our Flex routes need a workflow SID, so the flow does it."
            )
            return self._resume_instead(state, "Enqueue Call by queue name", why)
        comments = [f"Studio widget {state.name} (Enqueue Call)."]
        table = self._flex_table(state, "workflow_sid", "task_attributes", comments)
        self._not_carried(state, ["wait_url", "wait_url_method"], "hold music is not configurable on our Flex routes")
        return table, comments, _flex_summary(table)

    def _connect_call_to(self, state: State) -> RouteDraft | None:
        props = state.properties
        noun = props.get("noun")
        uri = props.get("sip_endpoint") or props.get("to")
        if noun == "sip" and isinstance(uri, str) and re.match(r"sips?:\S", uri) and not templated(uri):
            if props.get("sip_username") or props.get("sip_password"):
                why = "Our SIP routes carry no credentials, so the flow dials it."
                return self._resume_instead(state, "SIP call with a username/password", why)
            return (
                {"kind": "sip", "uri": uri.strip()},
                [f"Studio widget {state.name} (Connect Call To SIP)."],
                f"sip `{uri.strip()}`",
            )
        target = short(uri) if uri is not None else "nothing"
        why = (
            f"It connects to {noun or 'an unnamed noun'} {target}; our config dials SIP addresses only,"
            " so the call goes back to this widget, which dials as before."
        )
        return self._resume_instead(state, "Connect Call To", why)

    def _record_voicemail(self, state: State) -> RouteDraft | None:
        raw = state.properties.get("max_length")
        length = _int_value(raw)
        if raw is None:
            length = STUDIO_RECORD_DEFAULT_MAX_LENGTH
            self.findings.note(Finding.REVIEW, state.name, f"no max_length: Studio's default {length} s is used")
        elif length is None or not 1 <= length <= VOICEMAIL_MAX_LENGTH_LIMIT:
            length = STUDIO_RECORD_DEFAULT_MAX_LENGTH
            self.findings.note(
                Finding.NOT_CARRIED,
                state.name,
                f"max_length {short(raw)} is not 1 to {VOICEMAIL_MAX_LENGTH_LIMIT} seconds: {length} s is used",
            )
        table: dict[str, Any] = {"kind": "voicemail", "max_length": length}
        prompt = self._prompt_before(state.name)
        if prompt:
            table["prompt"] = prompt
        self._not_carried(
            state,
            ["transcribe", "trim", "play_beep", "finish_on_key", "timeout"],
            "our voicemail route records with Twilio's defaults",
        )
        return table, [f"Studio widget {state.name} (Record Voicemail)."], f"voicemail, up to {length} s"

    # Parts of routes --------------------------------------------------------------------------

    def _not_carried(self, state: State, keys: Iterable[str], why: str, *, show_value: bool = False) -> None:
        """A note for each of the widget's properties in `keys` that the route has no place for."""
        for key in keys:
            if key in state.properties:
                value = f" = {short(state.properties[key])}" if show_value else ""
                self.findings.note(Finding.NOT_CARRIED, state.name, f"{state.name}.properties.{key}{value}: {why}")

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
                and not templated(say)
            ):
                return one_line(say)
        return None

    def _flex_table(self, state: State, workflow_key: str, attributes_key: str, comments: list[str]) -> dict[str, Any]:
        """The flex route of a widget that enqueues (the two widget types name their properties differently)."""
        table: dict[str, Any] = {"kind": "flex", "workflow_sid": self._workflow_sid(state, workflow_key, comments)}
        table["priority"] = self._task_number(state, "priority", 0, TASK_MAX_PRIORITY, minimum=0)
        table["timeout"] = self._task_number(state, "timeout", TASK_DEFAULT_TIMEOUT, TASK_MAX_TIMEOUT, minimum=1)
        attributes = self._task_attributes(state, attributes_key)
        if attributes:
            table["attributes"] = attributes
        return table

    def _workflow_sid(self, state: State, key: str, comments: list[str]) -> str:
        value = state.properties.get(key)
        if isinstance(value, str) and _WORKFLOW_SID.fullmatch(value.strip()):
            return value.strip()
        self.workflow_placeholders += 1
        placeholder = "WW" + f"{self.workflow_placeholders:032x}"
        shown = short(value) if value is not None else "nothing"
        finding = Finding.TEMPLATED_SID if isinstance(value, str) and templated(value) else Finding.NOT_CARRIED
        comments.append(f"PLACEHOLDER workflow_sid: the flow had {shown} here; put the real WW… SID in.")
        self.findings.note(
            finding,
            state.name,
            f"{state.name}.properties.{key} is {shown}: routing.toml has the placeholder {placeholder}",
        )
        return placeholder

    def _task_number(self, state: State, key: str, default: int, maximum: int, *, minimum: int) -> int:
        raw = state.properties.get(key)
        if raw is None:
            if key == "timeout":
                self.findings.note(
                    Finding.REVIEW, state.name, f"no task timeout: Studio's default {default} s (24 h) is used"
                )
            return default
        number = _int_value(raw)
        if number is None or not minimum <= number <= maximum:
            self.findings.note(
                Finding.NOT_CARRIED,
                state.name,
                f"{state.name}.properties.{key} = {short(raw)} is not a whole number from {minimum} to {maximum}: {default} is used",
            )
            return default
        return number

    def _task_attributes(self, state: State, key: str) -> dict[str, Any]:
        raw = state.properties.get(key)
        if raw is None or raw == "":
            return {}
        where = f"{state.name}.properties.{key}"
        try:
            attributes = json.loads(raw) if isinstance(raw, str) else raw
        except (json.JSONDecodeError, RecursionError):
            self.findings.note(
                Finding.NOT_CARRIED,
                state.name,
                f"{where} is not JSON (Liquid that builds JSON?): no attributes carried over",
            )
            return {}
        if not isinstance(attributes, dict):
            self.findings.note(
                Finding.NOT_CARRIED, state.name, f"{where} is not a JSON object: no attributes carried over"
            )
            return {}
        kept: dict[str, Any] = {}
        for name, value in attributes.items():
            if name in RESERVED_TASK_ATTRIBUTES:
                self.findings.note(
                    Finding.NOT_CARRIED,
                    state.name,
                    f"task attribute {name!r} ({short(value)}): the orchestrator sets it on every task itself",
                )
            elif templated(json.dumps(value, ensure_ascii=False)):
                self.findings.note(
                    Finding.NOT_CARRIED,
                    state.name,
                    f"task attribute {name!r} = {short(value)} is a template Studio fills in; the config's attributes are fixed values",
                )
            else:
                clean = _toml_value(value)
                if clean is None:
                    self.findings.note(
                        Finding.NOT_CARRIED,
                        state.name,
                        f"task attribute {name!r} = {short(value)} has no TOML form (null?)",
                    )
                else:
                    kept[name] = clean
        return kept


def _flex_summary(table: Mapping[str, Any]) -> str:
    extra = f", attributes {json.dumps(table['attributes'], ensure_ascii=False)}" if table.get("attributes") else ""
    return f"flex {table['workflow_sid']} priority {table['priority']}, timeout {table['timeout']} s{extra}"


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
