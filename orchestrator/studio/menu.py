"""The menu: the first Gather an incoming call reaches that is followed by Splits on its result, and their branches.

A menu is a Gather Input On Call reachable from the Trigger's `incomingCall`, followed by Split widgets
on its `SpeechResult` or `Digits` (chains of them too).
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from orchestrator.studio.flow import (
    GATHER,
    SAY_PLAY,
    SET_VARIABLES,
    SPLIT,
    Condition,
    Flow,
    State,
    StudioImportError,
)
from orchestrator.studio.flow_text import strings, templated

MENU_EVENTS = ("speech", "keypress")
TEXT_CONDITIONS = ("equal_to", "contains", "starts_with")


@dataclass
class Branch:
    split: str
    kind: str  # "speech" or "digits"
    target: str | None
    conditions: list[Condition]

    def label(self) -> str:
        names = [c.friendly_name or f"{c.type} {c.value}" for c in self.conditions]
        return repr(names[0]) if names else "(no condition)"

    def values(self) -> list[str]:
        """The plain values its conditions match ("1", "taxi"), templates left out."""
        return [value for c in self.conditions for value in condition_values(c) or [] if not templated(value)]


def condition_values(condition: Condition) -> list[str] | None:
    """What a condition matches, one value per choice; None for a type with no plain values (regex, is_blank…)."""
    value = "" if condition.value is None else str(condition.value)
    if condition.type in TEXT_CONDITIONS:
        values = [value]
    elif condition.type == "matches_any_of":
        values = value.split(",")
    else:
        return None
    return [" ".join(v.split()) for v in values if v.strip()]


@dataclass
class Menu:
    gather: str
    splits: list[str] = field(default_factory=list)
    branches: list[Branch] = field(default_factory=list)
    no_match: list[tuple[str, str | None]] = field(default_factory=list)  # (split, target)
    direct: list[tuple[str, str]] = field(default_factory=list)  # (gather event, target) that is not a split on it
    other_gathers: list[str] = field(default_factory=list)  # reachable from the Trigger, left as they are
    # Menus before it whose every choice leads on to the same widget (a language choice): kept in front of the AI.
    passed: list[tuple[str, str]] = field(default_factory=list)  # (Gather, the widget all its choices lead to)
    unreachable_gathers: list[str] = field(default_factory=list)


def find_menu(flow: Flow) -> Menu:
    """The first menu an incoming call reaches, past menus whose choices all lead on to one widget (a
    language choice, kept in front of the AI); `StudioImportError` when the flow has none."""
    gathers = [name for name in flow.reachable(flow.entry) if flow.states[name].type == GATHER]
    unreachable = [name for name in flow.order if flow.states[name].type == GATHER and name not in gathers]
    if not gathers:
        where = (
            f" reachable from the Trigger's incomingCall (unreachable: {', '.join(unreachable)})" if unreachable else ""
        )
        raise StudioImportError(f"no Gather Input On Call widget{where}: there is no menu to replace with the AI")
    menus = [m for g in gathers if (m := menu_of(flow, g)) is not None]
    if not menus:
        raise StudioImportError(
            f"no Gather is followed by a Split on its SpeechResult or Digits (Gathers: {', '.join(gathers)}):"
            " there are no menu choices to turn into intents"
        )
    menu, passed = menus[0], []
    while (way_on := _one_way_on(flow, menu)) is not None:
        after = flow.reachable(way_on)
        done = {menu.gather, *dict(passed)}
        later = next((m for m in menus if m.gather in after and m.gather not in done), None)
        if later is None:
            break
        passed.append((menu.gather, way_on))
        menu = later
    menu.passed = passed
    menu.other_gathers = [name for name in gathers if name != menu.gather and name not in dict(passed)]
    menu.unreachable_gathers = unreachable
    return menu


def _one_way_on(flow: Flow, menu: Menu) -> str | None:
    """The widget every choice of the menu leads to past Say/Play and Set Variables widgets, if there is one:
    such a menu sets something (the caller's language) and routes nothing."""
    targets = [b.target for b in menu.branches] + [t for _, t in menu.no_match]
    through = frozenset({SAY_PLAY, SET_VARIABLES})
    actions = {flow.first_action(t, through=through) if t in flow.states else None for t in targets}
    if not menu.branches or len(actions) != 1:
        return None
    action = actions.pop()
    return action if action != menu.gather else None


def reads_gather_result(state: State, gather: str) -> bool:
    """Whether anything in the widget reads `{{widgets.<gather>.…}}`."""
    pattern = re.compile(r"widgets\s*\.\s*" + re.escape(gather) + r"\s*\.")
    return any(pattern.search(text) for _, text in strings(state.model_dump(include={"properties", "transitions"}), ""))


def menu_of(flow: Flow, gather: str) -> Menu | None:
    """The splits on the Gather's result, following chains of them; None when there is none."""
    menu = Menu(gather=gather)
    queue: deque[str] = deque()
    for transition in flow.states[gather].transitions:
        target = transition.next
        if transition.event not in MENU_EVENTS or target is None or target not in flow.states:
            continue
        if _split_kind(flow.states[target], gather):
            queue.append(target)
        else:
            menu.direct.append((transition.event, target))
    while queue:
        name = queue.popleft()
        if name in menu.splits:
            continue
        menu.splits.append(name)
        split = flow.states[name]
        kind = _split_kind(split, gather) or "speech"
        for transition in split.transitions:
            target = transition.next
            if target in flow.states and target != name and _split_kind(flow.states[target], gather):
                queue.append(target)
            elif transition.event == "noMatch":
                menu.no_match.append((name, target))
            elif transition.event == "match":
                conditions = [_condition(raw) for raw in transition.conditions]
                menu.branches.append(Branch(name, kind, target, [c for c in conditions if c is not None]))
    return menu if menu.splits else None


def _split_kind(state: State, gather: str) -> str | None:
    """Whether `state` is a Split on the Gather's result: "speech" (SpeechResult), "digits" or None."""
    if state.type != SPLIT or not isinstance(state.properties.get("input"), str):
        return None
    pattern = r"\s*\{\{\s*widgets\s*\.\s*" + re.escape(gather) + r"\s*\.\s*(SpeechResult|Digits)\s*(?:\|[^{}]*)?\}\}\s*"
    found = re.fullmatch(pattern, state.properties["input"])
    if found is None:
        return None
    return "speech" if found[1] == "SpeechResult" else "digits"


def _condition(raw: Mapping[str, Any]) -> Condition | None:
    try:
        return Condition.model_validate(raw)
    except ValidationError:
        return None
