"""Intents: one per widget the menu's branches lead to, named, described and exemplified from the menu.

Speech and keypress branches that lead to the same widget are one intent. Its examples are the words the
Splits matched and what the Gather's prompt offers for its keys ("Press 1 for English" → "English").
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from orchestrator.studio.flow import Condition, Flow
from orchestrator.studio.flow_text import one_line, short, snake_case, templated, unique
from orchestrator.studio.menu import Branch, Menu
from orchestrator.studio.report import Finding, Findings
from orchestrator.studio.routes import RouteMapper

# Studio names a condition "If value equal_to 1" unless the author renames it: no intent name in that.
_GENERATED_CONDITION_NAME = re.compile(r"(?i)^\s*if value\b")
_TEXT_CONDITIONS = ("equal_to", "contains", "starts_with")


@dataclass
class Intent:
    name: str
    description: str
    examples: list[str]
    route: str
    target: str  # the widget the menu's branches led to
    digits: list[str]


def map_intents(flow: Flow, menu: Menu, routes: RouteMapper, findings: Findings) -> list[Intent]:
    """The menu's intents, in branch order; branches that lead nowhere usable are noted, not intents."""
    gather = menu.gather
    by_target: dict[str, list[Branch]] = {}
    for branch in menu.branches:
        label = branch.label()
        if branch.target is None:
            findings.note(
                Finding.DEAD_END,
                branch.split,
                f"branch {label} has no next widget (the call ends there): not an intent",
            )
        elif branch.target == gather:
            findings.note(
                Finding.LOOP, branch.split, f"branch {label} leads back to {gather} (the menu again): not an intent"
            )
        elif branch.target not in flow.states:
            findings.note(
                Finding.BROKEN_LINK,
                branch.split,
                f"branch {label} leads to {branch.target!r}, which is not a widget: not an intent",
            )
        else:
            by_target.setdefault(branch.target, []).append(branch)
    prompt = flow.states[gather].properties.get("say")
    prompt_lines = _sentences(prompt) if isinstance(prompt, str) else []
    intents: list[Intent] = []
    for target, branches in by_target.items():
        route = routes.route_for(target)
        if route is None:
            continue
        taken = {intent.name for intent in intents}
        intents.append(_intent(target, branches, route, prompt_lines, taken, findings))
    return intents


def _intent(
    target: str, branches: list[Branch], route: str, prompt_lines: list[str], taken: set[str], findings: Findings
) -> Intent:
    names = [
        c.friendly_name.strip()
        for b in branches
        for c in b.conditions
        if c.friendly_name.strip() and not _GENERATED_CONDITION_NAME.match(c.friendly_name)
    ]
    title = names[0] if names else target
    name = unique(snake_case(title, fallback="intent"), taken)
    words: list[str] = []
    digits: list[str] = []
    for branch in branches:
        for condition in branch.conditions:
            for value in _condition_values(branch, condition, findings):
                if branch.kind == "digits":
                    digits.append(value)
                else:
                    words.append(value)
        if not branch.conditions:
            findings.note(Finding.REVIEW, branch.split, f"branch to {target} has no readable condition")
    words, digits = _dedupe(words), _dedupe(digits)
    menu_lines = [line for d in digits for line in prompt_lines if re.search(rf"(?i)\bpress\s+{re.escape(d)}\b", line)]
    phrases = [p for d in digits for line in menu_lines if (p := _menu_phrase(line, d))]
    examples = _dedupe(words + phrases)
    description = _describe(title, words, digits, _dedupe(menu_lines))
    kinds = sorted({b.kind for b in branches})
    merged = " (speech and keypress branches merged)" if len(kinds) > 1 else ""
    findings.done(
        Finding.INTENT,
        name,
        f"from {', '.join(sorted({b.split for b in branches}))}{merged}: "
        f"words {_list_or_none(words)}, keys {_list_or_none(digits)} → route `{route}`",
    )
    return Intent(name, description, examples, route, target, digits)


def _condition_values(branch: Branch, condition: Condition, findings: Findings) -> list[str]:
    value = "" if condition.value is None else str(condition.value)
    label = f"{branch.split}: condition {condition.friendly_name or condition.type!r}"
    if condition.type in _TEXT_CONDITIONS:
        values = [value]
    elif condition.type == "matches_any_of":
        values = value.split(",")
    else:
        findings.note(
            Finding.REVIEW,
            branch.split,
            f"{label} is of type {condition.type or '(none)'!r} {short(value)}: no example phrases from it; check the intent's description",
        )
        return []
    values = [" ".join(v.split()) for v in values]
    kept = [v for v in values if v and not templated(v)]
    if len(kept) < len([v for v in values if v]):
        findings.note(
            Finding.PLACEHOLDER, branch.split, f"{label} has template values; only the plain ones became examples"
        )
    return kept


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
    return phrase if phrase and not templated(phrase) else None


def _describe(title: str, words: list[str], digits: list[str], menu_lines: list[str]) -> str:
    readable = " ".join(snake_case(title, fallback="intent").split("_")).capitalize()
    parts = []
    if words:
        parts.append(f"callers who say {_join_or(words)}")
    if digits:
        parts.append(f"{'or ' if words else 'callers who '}press {_join_or(digits)} in the old menu")
    text = f"{readable}: {', '.join(parts)}" if parts else f"{readable}"
    if menu_lines:
        text += " (menu: " + " ".join(f'"{line}"' for line in menu_lines) + ")"
    return one_line(text.rstrip(".") + ".")


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


def _list_or_none(items: list[str]) -> str:
    return ", ".join(items) if items else "none"
