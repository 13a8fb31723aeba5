"""Studio flows written for the import's tests, and the checks the tests make on what it writes."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

from orchestrator.commands.studio import add_studio_arguments
from orchestrator.config.routing import load_routing_config
from orchestrator.studio import ImportResult, StudioImportError, import_flow, write_import

FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "studio"
ACME = FIXTURES / "acme_plumbing_ivr.json"
FLOW_SID = "FW0123456789abcdef0123456789abcdef"
WORKFLOW_SID = "WW0123456789abcdef0123456789abcdef"
PUBLIC_URL = "https://desk.example.com"
OUTPUT_FILES = {"routing.toml", "flow.patched.json", "flow.before.mmd", "flow.after.mmd", "IMPORT_REPORT.md"}

# Widget types and transition events, from the table in ../shared/protocols/twilio.md section 3.1
# (written out again here so the check does not lean on the importer's own table).
EVENTS_BY_TYPE = {
    "trigger": {"incomingMessage", "incomingCall", "incomingConversationMessage", "incomingRequest", "incomingParent"},
    "gather-input-on-call": {"keypress", "speech", "timeout"},
    "split-based-on": {"noMatch", "match"},
    "send-to-flex": {"callComplete", "failedToEnqueue", "callFailure"},
    "enqueue-call": {"callComplete", "failedToEnqueue", "callFailure"},
    "connect-call-to": {"callCompleted", "hangup"},
    "say-play": {"audioComplete"},
    "set-variables": {"next"},
    "run-function": {"success", "fail"},
    "make-http-request": {"success", "failed"},
    "add-twiml-redirect": {"return", "timeout", "fail"},
    "record-voicemail": {"recordingComplete", "noAudio", "hangup"},
    "make-outgoing-call-v2": {"answered", "busy", "noAnswer", "failed"},
    "run-subflow": {"completed", "failed"},
    "fork-stream": {"next"},
}


def widget_format_problems(flow: dict[str, Any]) -> list[str]:
    """Where a flow definition breaks Studio's widget format (known widget types only)."""
    problems = []
    names = [state["name"] for state in flow["states"]]
    if len(names) != len(set(names)):
        problems.append("duplicate widget names")
    if flow.get("initial_state") not in names:
        problems.append("initial_state is not a widget")
    for state in flow["states"]:
        name, kind = state["name"], state["type"]
        if not isinstance(state.get("properties"), dict):
            problems.append(f"{name}: no properties")
        allowed = EVENTS_BY_TYPE.get(kind)
        for transition in state.get("transitions", []):
            event = transition["event"]
            if allowed is not None and event not in allowed:
                problems.append(f"{name}: event {event!r} is not one of {kind}")
            if "next" in transition and transition["next"] not in names:
                problems.append(f"{name}: {event} leads to unknown widget {transition['next']!r}")
            if kind == "split-based-on" and event == "match":
                for condition in transition.get("conditions") or [None]:
                    if not (
                        isinstance(condition, dict)
                        and {"friendly_name", "arguments", "type", "value"} <= set(condition)
                    ):
                        problems.append(f"{name}: match without a full condition")
        if kind == "split-based-on" and [t["event"] for t in state.get("transitions", [])].count("noMatch") != 1:
            problems.append(f"{name}: a split needs exactly one noMatch")
        if kind == "add-twiml-redirect":
            props = state["properties"]
            timeout = props.get("timeout", "14400")
            if not (
                props.get("url")
                and props.get("method") in ("GET", "POST")
                and isinstance(timeout, str)
                and timeout.isdigit()
                and int(timeout) <= 14400
            ):
                problems.append(f"{name}: redirect needs url, method and a timeout of 0-14400 s")
    return problems


def run_command(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="orchestrator")
    add_studio_arguments(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    return args.run(args)


def import_text(definition: Any, **options: Any) -> ImportResult:
    text = definition if isinstance(definition, str) else json.dumps(definition)
    return import_flow(text, source="test.json", public_url=PUBLIC_URL, **options)


def import_error(definition: Any, **options: Any) -> str:
    with pytest.raises(StudioImportError) as caught:
        import_text(definition, **options)
    reason = str(caught.value)
    assert reason and "\n" not in reason
    return reason


def returned_to(flow: dict[str, Any], redirect: str, values: dict[str, str]) -> str | None:
    """Where Studio takes the call when the redirect returns with `values` as its `{{widgets.<redirect>.*}}`:
    the redirect's `return`, then split after split (equal_to and is_not_blank conditions on those values),
    to the first widget that is not a split."""
    states = {state["name"]: state for state in flow["states"]}
    widget = next(t.get("next") for t in states[redirect]["transitions"] if t["event"] == "return")
    seen = set()
    while widget in states and states[widget]["type"] == "split-based-on" and widget not in seen:
        seen.add(widget)
        transitions = states[widget]["transitions"]
        following = next(t.get("next") for t in transitions if t["event"] == "noMatch")
        for transition in transitions:
            if transition["event"] != "match":
                continue
            condition = transition["conditions"][0]
            (argument,) = condition["arguments"]
            assert argument.startswith("{{widgets." + redirect + ".") and argument.endswith("}}"), argument
            value = values.get(argument[len("{{widgets." + redirect + ".") : -2], "")
            if (condition["type"] == "equal_to" and value == condition["value"]) or (
                condition["type"] == "is_not_blank" and value.strip()
            ):
                following = transition["next"]
                break
        widget = following
    return widget


def loaded_config(result: ImportResult, tmp_path: Path):
    write_import(result, tmp_path)
    return load_routing_config(tmp_path / "routing.toml")


def states_by_name(flow: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {state["name"]: state for state in flow["states"]}


# --- Flows written for the edge cases ----------------------------------------------------------


def state(name: str, kind: str, transitions: list[dict[str, Any]], **properties: Any) -> dict[str, Any]:
    return {
        "name": name,
        "type": kind,
        "transitions": transitions,
        "properties": {"offset": {"x": 0, "y": 0}, **properties},
    }


def trigger(first: str | None) -> dict[str, Any]:
    call = {"event": "incomingCall", **({"next": first} if first else {})}
    return state("Trigger", "trigger", [{"event": "incomingMessage"}, call])


def gather(
    name: str,
    *,
    speech: str | None = None,
    keypress: str | None = None,
    timeout: str | None = None,
    say: str = "How can we help?",
) -> dict[str, Any]:
    events = {"keypress": keypress, "speech": speech, "timeout": timeout}
    return state(
        name,
        "gather-input-on-call",
        [{"event": event, **({"next": target} if target else {})} for event, target in events.items()],
        say=say,
    )


def split(
    name: str, reads: str, branches: list[tuple[str, str, str | None, str]], no_match: str | None
) -> dict[str, Any]:
    """branches: (friendly name, condition type, target, value)."""
    transitions: list[dict[str, Any]] = [{"event": "noMatch", **({"next": no_match} if no_match else {})}]
    for friendly_name, kind, target, value in branches:
        transitions.append(
            {
                "event": "match",
                **({"next": target} if target else {}),
                "conditions": [{"friendly_name": friendly_name, "arguments": [reads], "type": kind, "value": value}],
            }
        )
    return state(name, "split-based-on", transitions, input=reads)


def flex(name: str, workflow: str = WORKFLOW_SID, **properties: Any) -> dict[str, Any]:
    return state(
        name,
        "send-to-flex",
        [{"event": "callComplete"}, {"event": "failedToEnqueue"}, {"event": "callFailure"}],
        workflow=workflow,
        channel="TC0123456789abcdef0123456789abcdef",
        **properties,
    )


def say(name: str, next_widget: str | None = None, text: str = "Goodbye.") -> dict[str, Any]:
    return state(
        name, "say-play", [{"event": "audioComplete", **({"next": next_widget} if next_widget else {})}], say=text
    )


def definition(*states: dict[str, Any]) -> dict[str, Any]:
    return {
        "description": "test flow",
        "states": list(states),
        "initial_state": "Trigger",
        "flags": {"allow_concurrent_calls": True},
    }


def menu_flow(**changes: Any) -> dict[str, Any]:
    """A small menu: speech split to sales (Flex) or support (a Say widget), noMatch to goodbye."""
    states = [
        trigger("menu"),
        gather("menu", speech="by_speech", timeout="goodbye"),
        split(
            "by_speech",
            "{{widgets.menu.SpeechResult}}",
            [
                ("sales", "matches_any_of", "sales_desk", "sales,buy,pricing"),
                ("support", "contains", "support_line", "help"),
            ],
            no_match="goodbye",
        ),
        flex("sales_desk", priority="20", timeout="600", attributes='{"skill": "sales"}'),
        say("support_line", text="Our support line is open all day."),
        say("goodbye"),
    ]
    for name, replacement in changes.items():
        index = next(i for i, s in enumerate(states) if s["name"] == name)
        states[index] = replacement
    return definition(*states)


def fixture_files() -> list[Path]:
    if not FIXTURES.is_dir():
        return []
    return sorted(FIXTURES.glob("*.json"))
