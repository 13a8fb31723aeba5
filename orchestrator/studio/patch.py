"""The patched flow: a TwiML Redirect to our voice webhook in the Gather's place, and two new Splits after it.

The redirect's `return` leads to a Split on `{{widgets.<redirect>.arm}}` (callers the rollout keeps on the
legacy arm go to the old Gather; any other value goes on) and then to a Split on
`{{widgets.<redirect>.intent}}`, one branch per intent to the widget the old menu led to. Its `timeout`
and `fail` lead to the old Gather, which stays (the legacy path). Transitions into the Gather from
widgets before it now lead to the redirect; every other widget is kept as it was, byte for byte.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, NamedTuple
from urllib.parse import urlencode

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


class NewWidgets(NamedTuple):
    redirect: str
    arm_split: str
    intent_split: str


@dataclass(frozen=True)
class PatchedFlow:
    definition: dict[str, Any]
    added: NewWidgets
    repointed: list[str]  # widgets whose transitions to the Gather now lead to the redirect
    loops: list[tuple[str, str]]  # (widget, event) still leading to the Gather: reached through it


def patch_flow(
    flow: Flow, gather: str, intents: list[Intent], no_match: str | None, flow_sid: str, public_url: str
) -> PatchedFlow:
    """The flow with the redirect and the two Splits in front of the Gather (`public_url`: our base URL)."""
    patched = copy.deepcopy(flow.raw)
    names = set(flow.states)
    redirect = unique(REDIRECT_WIDGET_NAME, names)
    arm_split = unique(ARM_SPLIT_NAME, names | {redirect})
    intent_split = unique(INTENT_SPLIT_NAME, names | {redirect, arm_split})
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
            "url": f"{public_url}{VOICE_WEBHOOK_PATH}?{urlencode({'flow_sid': flow_sid, 'node': redirect})}",
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
    no_match_transition: dict[str, Any] = {"event": "noMatch"}
    if no_match is not None:
        no_match_transition = {"next": no_match, "event": "noMatch"}
    intent_split_state = {
        "name": intent_split,
        "type": SPLIT,
        "transitions": [no_match_transition]
        + [_equal_to_branch(intent.target, intent_input, intent.name) for intent in intents],
        "properties": {"input": intent_input, "offset": {"x": x, "y": y + 2 * _NEW_WIDGETS_APART}},
    }
    gather_index = flow.order.index(gather)
    raw_states[gather_index + 1 : gather_index + 1] = [redirect_state, arm_split_state, intent_split_state]
    return PatchedFlow(patched, NewWidgets(redirect, arm_split, intent_split), repointed, loops)


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
