"""The patched flow: a TwiML Redirect to our voice webhook in the Gather's place, and new Splits after it.

The redirect's `return` leads to a Split on `{{widgets.<redirect>.arm}}` (callers the rollout keeps on the
legacy arm go to the old Gather; any other value goes on) and then to a Split on
`{{widgets.<redirect>.intent}}`, one branch per intent to the widget the old menu led to. Its `timeout`
and `fail` lead to the old Gather, which stays (the legacy path). The caller's language, when the flow
holds it before the menu, goes along on the redirect's URL.

An intent whose path asks for details the AI captured (details.py) branches instead to Splits on the
returned values (`{{widgets.<redirect>.<field>}}`, one a field): with every one given, the call skips those
Gathers and goes on in copies of the widgets that read their answers, which read the returned values;
with one missing, it takes the old path from its start. Transitions into the Gather from widgets before
it now lead to the redirect; every other original widget is kept as it was, byte for byte.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from orchestrator.studio.details import SkippedPath
from orchestrator.studio.flow import SPLIT, Flow, State
from orchestrator.studio.flow_text import unique
from orchestrator.studio.intents import Intent

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

_NEW_WIDGETS_LEFT = 450  # how far left of the Gather the new widgets are drawn in Studio's editor
_NEW_WIDGETS_APART = 230
_COPIES_RIGHT = 500  # how far right of the widget it copies a copy is drawn


@dataclass(frozen=True)
class NewWidgets:
    redirect: str
    arm_split: str
    intent_split: str
    field_splits: list[str] = field(default_factory=list)  # Splits on the fields the AI returned
    copies: dict[str, str] = field(default_factory=dict)  # copy → the original widget it reads the fields for

    def __iter__(self) -> Iterator[str]:
        yield from (self.redirect, self.arm_split, self.intent_split, *self.field_splits, *self.copies)


@dataclass(frozen=True)
class PatchedFlow:
    definition: dict[str, Any]
    added: NewWidgets
    repointed: list[str]  # widgets whose transitions to the Gather now lead to the redirect
    loops: list[tuple[str, str]]  # (widget, event) still leading to the Gather: reached through it


def patch_flow(
    flow: Flow,
    gather: str,
    intents: list[Intent],
    no_match: str | None,
    flow_sid: str,
    public_url: str,
    *,
    skipped_paths: Sequence[SkippedPath] = (),
    language: str | None = None,
) -> PatchedFlow:
    """The flow with the redirect and its Splits in front of the Gather (`public_url`: our base URL;
    `language`: the Liquid expression holding the caller's language, passed on the redirect's URL)."""
    patched = copy.deepcopy(flow.raw)
    names = set(flow.states)
    redirect = unique(REDIRECT_WIDGET_NAME, names)
    arm_split = unique(ARM_SPLIT_NAME, names | {redirect})
    intent_split = unique(INTENT_SPLIT_NAME, names | {redirect, arm_split})
    taken = names | {redirect, arm_split, intent_split}
    intent_input = "{{widgets." + redirect + ".intent}}"
    arm_input = "{{widgets." + redirect + ".arm}}"

    # Transitions into the Gather from widgets reached before it move to the redirect; those from
    # widgets reached through it (menu loops) keep the old menu, so the legacy path stays as it was.
    before = set(flow.reachable(flow.entry, avoid=gather)) - {gather} | {flow.trigger}
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
    x -= _NEW_WIDGETS_LEFT
    url = f"{public_url}{VOICE_WEBHOOK_PATH}?{urlencode({'flow_sid': flow_sid, 'node': redirect})}"
    if language is not None:
        url += f"&language={language}"  # Liquid: Studio fills it in when the redirect runs
    redirect_state = {
        "name": redirect,
        "type": "add-twiml-redirect",
        "transitions": [
            {"next": arm_split, "event": "return"},
            {"next": gather, "event": "timeout"},
            {"next": gather, "event": "fail"},
        ],
        "properties": {
            "offset": {"x": x, "y": y},
            "method": "POST",
            "url": url,
            "timeout": str(REDIRECT_TIMEOUT_SECONDS),
        },
    }
    arm_split_state = {
        "name": arm_split,
        "type": SPLIT,
        "transitions": [
            {"next": intent_split, "event": "noMatch"},
            _equal_to_branch(gather, arm_input, LEGACY_ARM),
        ],
        "properties": {"input": arm_input, "offset": {"x": x, "y": y + _NEW_WIDGETS_APART}},
    }
    entries = {intent.name: intent.target for intent in intents}
    split_states: list[dict[str, Any]] = []
    copy_states: list[dict[str, Any]] = []
    copies: dict[str, str] = {}
    originals = {state["name"]: state for state in flow.raw["states"]}
    for path in skipped_paths:
        renamed = {}
        for name in path.copies:
            renamed[name] = unique(f"{name}_ai", taken)
            taken.add(renamed[name])
            copies[renamed[name]] = name
        copy_states += [_reading_copy(originals[name], renamed, redirect, path.answers) for name in path.copies]
        splits = []
        for name in path.fields:
            splits.append(unique(f"{redirect}_has_{name}", taken))
            taken.add(splits[-1])
        following = [*splits[1:], renamed.get(path.resume, path.resume)]
        for split_name, field_name, next_widget in zip(splits, path.fields, following, strict=True):
            offset = {"x": x, "y": y + (3 + len(split_states)) * _NEW_WIDGETS_APART}
            given = "{{widgets." + redirect + "." + field_name + "}}"
            split_states.append(_given_split(split_name, given, f"{field_name} given", next_widget, path.start, offset))
        entries[path.intent] = splits[0]
    no_match_transition: dict[str, Any] = {"event": "noMatch"}
    if no_match is not None:
        no_match_transition = {"next": no_match, "event": "noMatch"}
    intent_split_state = {
        "name": intent_split,
        "type": SPLIT,
        "transitions": [no_match_transition]
        + [_equal_to_branch(entries[intent.name], intent_input, intent.name) for intent in intents],
        "properties": {"input": intent_input, "offset": {"x": x, "y": y + 2 * _NEW_WIDGETS_APART}},
    }
    gather_index = flow.order.index(gather)
    new_states = [redirect_state, arm_split_state, intent_split_state, *split_states, *copy_states]
    raw_states[gather_index + 1 : gather_index + 1] = new_states
    field_splits = [state["name"] for state in split_states]
    return PatchedFlow(patched, NewWidgets(redirect, arm_split, intent_split, field_splits, copies), repointed, loops)


def _given_split(
    name: str, split_input: str, label: str, given: str, missing: str, offset: dict[str, float]
) -> dict[str, Any]:
    """A Split to `given` when `split_input` is not blank, else to `missing`."""
    condition = {"friendly_name": label, "arguments": [split_input], "type": "is_not_blank", "value": "Is Not Blank"}
    return {
        "name": name,
        "type": SPLIT,
        "transitions": [
            {"next": missing, "event": "noMatch"},
            {"next": given, "event": "match", "conditions": [condition]},
        ],
        "properties": {"input": split_input, "offset": offset},
    }


def _reading_copy(
    original: Mapping[str, Any], renamed: Mapping[str, str], redirect: str, answers: Mapping[str, list[str]]
) -> dict[str, Any]:
    """A copy of a widget that reads the fields the AI returned where it read a skipped Gather's answer,
    reads the copies of the widgets copied with it, and leads to those copies."""
    replacements = [
        (
            re.compile(r"widgets\s*\.\s*" + re.escape(gather) + r"\s*\.\s*(?:SpeechResult|Digits)\b"),
            ' | append: " " | append: '.join(f"widgets.{redirect}.{name}" for name in fields),
        )
        for gather, fields in answers.items()
    ] + [
        (re.compile(r"widgets\s*\.\s*" + re.escape(before) + r"\s*\."), f"widgets.{after}.")
        for before, after in renamed.items()
    ]

    def rewrite(value: Any) -> Any:
        if isinstance(value, str):
            for pattern, replacement in replacements:
                value = pattern.sub(lambda _, replacement=replacement: replacement, value)
            return value
        if isinstance(value, list):
            return [rewrite(item) for item in value]
        if isinstance(value, dict):
            return {key: rewrite(item) for key, item in value.items()}
        return value

    state = rewrite(copy.deepcopy(dict(original)))
    state["name"] = renamed[original["name"]]
    for transition in state.get("transitions", []):
        if transition.get("next") in renamed:
            transition["next"] = renamed[transition["next"]]
    properties = state.setdefault("properties", {})
    offset = properties.get("offset")
    if isinstance(offset, dict) and (x := _coordinate(offset.get("x"))) is not None:
        properties["offset"] = {**offset, "x": x + _COPIES_RIGHT}
    return state


def _equal_to_branch(target: str, split_input: str, value: str) -> dict[str, Any]:
    """A Split's `match` transition to `target` when `split_input` equals `value` (named after it)."""
    return {
        "next": target,
        "event": "match",
        "conditions": [{"friendly_name": value, "arguments": [split_input], "type": "equal_to", "value": value}],
    }


def _offset(state: State) -> tuple[float, float]:
    """Where the widget is drawn in Studio's editor."""
    offset = state.properties.get("offset")
    if isinstance(offset, dict):
        x, y = _coordinate(offset.get("x")), _coordinate(offset.get("y"))
        if x is not None and y is not None:
            return x, y
    return 0, 0


def _coordinate(value: Any) -> float | None:
    finite = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return value if finite else None
