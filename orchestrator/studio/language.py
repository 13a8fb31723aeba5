"""The caller's language as the flow holds it before the menu, so the redirect can pass it to our server.

A Set Variables widget the call passes before the menu that sets a variable named for the language
(`language`, `caller_language`, `lang`, `locale`…) holds it in `{{flow.variables.<key>}}`; a Split there on a
value named so (`{{flow.variables.lang}}`, `{{trigger.call.…Language}}`) holds it in its input. Our server
reads `language` on the webhook as a BCP-47 code (en-US, es): other values are ignored there, so the
report says when the flow's values are not codes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from orchestrator.config import canonical_language_code
from orchestrator.studio.flow import SET_VARIABLES, SPLIT, Flow
from orchestrator.studio.flow_text import short
from orchestrator.studio.menu import Menu
from orchestrator.studio.report import Finding, Findings

_NAMES_LANGUAGE = re.compile(r"(?i)lang|locale")
_LIQUID_VALUE = re.compile(r"\s*\{\{\s*([\w.]+)\s*\}\}\s*")


@dataclass(frozen=True)
class CallerLanguage:
    expression: str  # the Liquid that holds it, e.g. "{{flow.variables.caller_language}}"
    held_by: list[str]  # the widgets that set or read it


def caller_language(flow: Flow, menu: Menu, findings: Findings) -> CallerLanguage | None:
    """Where the flow keeps the caller's language before its menu; None when it keeps none."""
    before = [name for name in flow.reachable(flow.entry, avoid=menu.gather) if name != menu.gather]
    setters: dict[str, list[tuple[str, object]]] = {}  # variable → (widget, value)
    for name in before:
        state = flow.states[name]
        variables = state.properties.get("variables")
        if state.type == SET_VARIABLES and isinstance(variables, list):
            for variable in variables:
                key = variable.get("key") if isinstance(variable, dict) else None
                if isinstance(key, str) and re.fullmatch(r"\w+", key) and _NAMES_LANGUAGE.search(key):
                    setters.setdefault(key, []).append((name, variable.get("value")))
    if setters:
        key, set_by = next(iter(setters.items()))
        found = CallerLanguage("{{flow.variables." + key + "}}", [name for name, _ in set_by])
        values = [value for _, value in set_by]
    else:
        splits = [
            (name, found[1])
            for name in before
            if flow.states[name].type == SPLIT
            and isinstance(read := flow.states[name].properties.get("input"), str)
            and (found := _LIQUID_VALUE.fullmatch(read))
            and _NAMES_LANGUAGE.search(found[1].rsplit(".", 1)[-1])
        ]
        if not splits:
            return None
        name, variable = splits[0]
        found = CallerLanguage("{{" + variable + "}}", [name])
        values = [c.get("value") for t in flow.states[name].transitions for c in t.conditions if isinstance(c, dict)]
    findings.done(
        Finding.LANGUAGE,
        ", ".join(found.held_by),
        f"the caller's language is in {found.expression}: the redirect passes it to our server as `language`",
    )
    not_codes = [v for v in values if isinstance(v, str) and "{" not in v and canonical_language_code(v) is None]
    if not_codes:
        findings.note(
            Finding.LANGUAGE,
            ", ".join(found.held_by),
            f"{found.expression} holds {', '.join(short(v) for v in not_codes)}, not language codes such as en-US:"
            " our server ignores those (and tells the language from the caller's number or speech); set codes instead",
        )
    return found
