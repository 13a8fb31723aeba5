"""routing.toml as the import writes it: commented TOML, checked to load before it is handed out."""

from __future__ import annotations

import re
import tempfile
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import tomli_w

from orchestrator.config import ConfigError, load_routing_config
from orchestrator.studio.details import CaptureField
from orchestrator.studio.flow import StudioImportError
from orchestrator.studio.flow_text import one_line
from orchestrator.studio.intents import Intent
from orchestrator.studio.routes import Route, TriageRoutes

_KEYPAD_KEY = re.compile(r"[0-9*#]")  # what a config intent's `keys` may hold

# What the generated config's triage section starts with (the same values as the examples).
TRIAGE_DEFAULTS = {
    "budget_seconds": 20,
    "min_confidence": 0.6,
    "max_clarifications": 2,
    "handoff_line_timeout_seconds": 8,
}


class GeneratedConfigError(AssertionError):
    """The config the importer wrote does not validate: a bug in the importer, not in the flow."""


def routing_toml(
    *,
    source: str,
    description: str,
    intents: list[Intent],
    fields: list[CaptureField],
    routes: Mapping[str, Route],
    triage_routes: TriageRoutes,
    placeholders: bool,
) -> str:
    """The config as commented TOML text, once it reads back as written and loads."""
    text, document = _routing_document(source, description, intents, fields, routes, triage_routes, placeholders)
    _check_config(text, document)
    return text


def _routing_document(
    source: str,
    description: str,
    intents: list[Intent],
    fields: list[CaptureField],
    routes: Mapping[str, Route],
    triage_routes: TriageRoutes,
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
    triage = {**TRIAGE_DEFAULTS, "fallback_route": triage_routes.fallback, "human_route": triage_routes.human}
    document: dict[str, Any] = {"triage": triage, "routes": {}, "intents": []}
    # Each table is written by tomli-w as flat key = value lines under a header of ours, so a comment can
    # go above it (tomli-w writes no comments, and would inline a short array of tables).
    parts = [
        _comment(header),
        _comment(
            [
                "budget: after this many seconds the call takes the fallback route; below min_confidence the AI asks again.",
                f"fallback_route: {triage_routes.fallback_why}",
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
            ["--- Intents: one per need the menu offers (its speech and keypress branches paired) " + "-" * 5]
        ).rstrip("\n")
    )
    keys_taken: set[str] = set()
    for intent in intents:
        table: dict[str, Any] = {"name": intent.name, "description": intent.description}
        if intent.examples:
            table["examples"] = intent.examples
        # A config key is one keypad key on one intent: multi-digit matches and keys already taken stay out.
        keys = [key for key in intent.keys if _KEYPAD_KEY.fullmatch(key) and key not in keys_taken]
        keys_taken.update(keys)
        if keys:
            table["keys"] = keys
        table["route"] = intent.route
        document["intents"].append(table)
        comments = [f"Branch to the Studio widget {intent.target}."]
        if intent.other_targets:
            comments.append(
                f"Its keypress branch led to {', '.join(intent.other_targets)}; the AI's callers go to {intent.target}."
            )
        parts.append(_comment(comments) + "[[intents]]\n" + tomli_w.dumps(table))
    if fields:
        document["fields"] = []
        parts.append(
            _comment(["--- Fields: details the old IVR asked for after the menu; the AI asks for them instead " + "-" * 3])
            .rstrip("\n")
        )
    for captured in fields:
        table = {
            "name": captured.name,
            "type": captured.type,
            "description": captured.description,
            "required_for": captured.required_for,
        }
        document["fields"].append(table)
        asked = f"Asked for by the Studio widget{'s' if len(captured.gathers) > 1 else ''} {', '.join(captured.gathers)}."
        parts.append(_comment([asked]) + "[[fields]]\n" + tomli_w.dumps(table))
    return "\n".join(parts), document


def _comment(lines: Iterable[str]) -> str:
    # TOML comments end at a newline and may not hold control characters.
    return "".join(f"# {one_line(line)}".rstrip() + "\n" for line in lines)


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
