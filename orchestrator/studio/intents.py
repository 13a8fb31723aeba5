"""Intents: one per need the menu offers (pairing.py), named, described and exemplified from the menu.

An intent is named from what the menu says: its branches' friendly names, the words its Splits matched,
the word the prompt asks callers to say for its key, or what the prompt offers for the key ("Press 1 for
English" → `english`); from its widget's name only when the menu has no words for it, and numbered only
when nothing else is known (both flagged in the report). Its examples are the matched words and the
prompt's offers; its keys are the digits its keypress branches matched.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from orchestrator.studio.flow import Condition, Flow
from orchestrator.studio.flow_text import (
    name_words,
    one_line,
    short,
    snake_case,
    templated,
    unique,
)
from orchestrator.studio.menu import Branch, Menu, condition_values
from orchestrator.studio.pairing import SAY_WORD, Need, pair_branches
from orchestrator.studio.report import Finding, Findings
from orchestrator.studio.routes import RouteMapper

_NAME_WORDS = 4  # an intent name is a few words, not the prompt's whole sentence


@dataclass
class Intent:
    name: str
    description: str
    examples: list[str]
    route: str
    target: str  # the widget the intent routes to (where its speech branch led)
    keys: list[str]  # the keypad keys its keypress branches matched
    other_targets: list[str]  # where its other branches led (paired keypress branches)


def map_intents(flow: Flow, menu: Menu, routes: RouteMapper, findings: Findings) -> list[Intent]:
    """The menu's intents, in branch order; branches that lead nowhere usable are noted, not intents."""
    prompt = flow.states[menu.gather].properties.get("say")
    prompt_lines = _sentences(prompt) if isinstance(prompt, str) else []
    intents: list[Intent] = []
    for need in pair_branches(flow, menu, findings):
        taken = {intent.name for intent in intents}
        intent = _intent(need, prompt_lines, taken, routes, findings, number=len(intents) + 1)
        if intent is not None:
            intents.append(intent)
    return intents


def _intent(
    need: Need, prompt_lines: list[str], taken: set[str], routes: RouteMapper, findings: Findings, *, number: int
) -> Intent | None:
    words: list[str] = []
    keys: list[str] = []
    for branch in need.branches:
        for condition in branch.conditions:
            for value in _condition_values(branch, condition, findings):
                (keys if branch.kind == "digits" else words).append(value)
        if not branch.conditions:
            findings.note(Finding.REVIEW, branch.split, f"branch to {branch.target} has no readable condition")
    words, keys = _dedupe(words), _dedupe(keys)
    menu_lines = _dedupe(
        line for key in keys for line in prompt_lines if re.search(rf"(?i)\bpress\s+{re.escape(key)}\b", line)
    )
    phrases = [p for key in keys for line in menu_lines if (p := _menu_phrase(line, key))]
    title, named_from = _title(need, words, keys, menu_lines, phrases)
    name = unique(snake_case(title, fallback="intent") if title else f"intent_{number}", taken)
    route = routes.route_for(need.target, purpose=name)
    if route is None:
        return None
    if named_from is None:
        findings.note(
            Finding.NAME,
            name,
            f"numbered: neither the menu nor the widget {need.target} says what callers want here; rename it",
        )
    elif named_from.startswith("the widget"):
        findings.note(Finding.NAME, name, f"named after {named_from}: the menu has no words for it; check the name")
    examples = _dedupe(words + phrases)
    description = _describe(title or name, words, keys, menu_lines)
    splits = ", ".join(sorted({b.split for b in need.branches}))
    paired = "".join(f"; paired {how}" for how in need.paired)
    findings.done(
        Finding.INTENT,
        name,
        f"from {splits}{paired}: words {_list_or_none(words)}, keys {_list_or_none(keys)} → route `{route}`"
        + (f" (named from {named_from})" if named_from else ""),
    )
    return Intent(name, description, examples, route, need.target, keys, need.targets[1:])


def _title(
    need: Need, words: list[str], keys: list[str], menu_lines: list[str], phrases: list[str]
) -> tuple[str, str | None]:
    """What names the intent, and where that came from (None: nothing did)."""
    for friendly_name in need.friendly_names():
        if meaning := name_words(friendly_name):
            return " ".join(meaning[:_NAME_WORDS]), f"the branch name {friendly_name!r}"
    for word in words:
        if not word.isdigit() and len(word.split()) <= _NAME_WORDS:
            return word, f"the word {word!r} its Split matched"
    for key in keys:
        for line in menu_lines:
            for clause in re.split(r"[,;]", line):
                if re.search(rf"(?i)\bpress\s+{re.escape(key)}\b", clause) and (said := SAY_WORD.findall(clause)):
                    return said[0], f'the prompt\'s "say {said[0]}"'
    for phrase in phrases:
        meaning = name_words(phrase)
        if meaning:
            return " ".join(meaning[:_NAME_WORDS]), f"the prompt's offer {phrase!r}"
    for target in need.targets:
        if meaning := name_words(target):
            return " ".join(meaning[:_NAME_WORDS]), f"the widget name {target!r}"
    return "", None


def _condition_values(branch: Branch, condition: Condition, findings: Findings) -> list[str]:
    label = f"{branch.split}: condition {condition.friendly_name or condition.type!r}"
    values = condition_values(condition)
    if values is None:
        findings.note(
            Finding.REVIEW,
            branch.split,
            f"{label} is of type {condition.type or '(none)'!r} {short('' if condition.value is None else str(condition.value))}: no example phrases from it; check the intent's description",
        )
        return []
    kept = [v for v in values if not templated(v)]
    if len(kept) < len(values):
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
    after = re.search(rf"(?i)\bpress\s+{d}\s+(?:or\s+say\s+.*?\s+)?(?:for|to)\s+([^,.;!?]+)", line)
    before = re.search(rf"(?i)^(?:for|to)\s+(.+),\s*(?:say\b.*?\bor\s+)?press\s+{d}\b", line)
    found = after or before
    phrase = " ".join(found[1].split()) if found else ""
    return phrase if phrase and not templated(phrase) else None


def _describe(title: str, words: list[str], keys: list[str], menu_lines: list[str]) -> str:
    readable = " ".join(snake_case(title, fallback="intent").split("_")).capitalize()
    parts = []
    if words:
        parts.append(f"callers who say {_join_or(words)}")
    if keys:
        parts.append(f"{'or ' if words else 'callers who '}press {_join_or(keys)} in the old menu")
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
