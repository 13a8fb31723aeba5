"""`orchestrator studio import`: Studio flows (the shared fixtures and edge cases) → config, patched flow, report."""

from __future__ import annotations

import argparse
import copy
import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.config.routing import (
    FlexRoute,
    SipRoute,
    StudioRoute,
    VoicemailRoute,
    load_routing_config,
)
from orchestrator.studio.importer import (
    Finding,
    ImportResult,
    StudioImportError,
    add_studio_arguments,
    import_flow,
    write_import,
)

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


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Overrides in the developer's shell must not change the configs these tests load."""
    for name in list(os.environ):
        if name.upper().startswith("ORCHESTRATOR_"):
            monkeypatch.delenv(name)


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
    the redirect's `return`, then split after split (equal_to conditions on those values), to the first
    widget that is not a split."""
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
            if condition["type"] == "equal_to" and value == condition["value"]:
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


# --- The shared fixtures -----------------------------------------------------------------------


def fixture_files() -> list[Path]:
    if not FIXTURES.is_dir():
        return []
    return sorted(FIXTURES.glob("*.json"))


@pytest.mark.parametrize("path", fixture_files(), ids=lambda path: path.name)
def test_every_fixture_imports_with_a_report_or_fails_with_one_line(path: Path, tmp_path: Path, capsys) -> None:
    code = run_command(
        "studio",
        "import",
        str(path),
        "--out",
        str(tmp_path / "out"),
        "--flow-sid",
        FLOW_SID,
        "--public-url",
        PUBLIC_URL,
    )
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    if code == 0:
        assert {p.name for p in (tmp_path / "out").iterdir()} == OUTPUT_FILES
        assert "## Mapped" in out and "## Not mapped, or to review" in out
        patched = json.loads((tmp_path / "out" / "flow.patched.json").read_text(encoding="utf-8"))
        assert widget_format_problems(patched) == []
        load_routing_config(tmp_path / "out" / "routing.toml")
    else:
        assert code == 2
        assert err.startswith(f"error: {path}: ") and err.count("\n") == 1
        assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("path", fixture_files(), ids=lambda path: path.name)
def test_every_fixture_routes_the_legacy_arm_to_its_original_gather(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    try:
        result = import_text(text, flow_sid=FLOW_SID)
    except StudioImportError as error:  # the Flex templates: no menu, nothing patched
        assert "no Gather" in str(error)
        return
    redirect, arm_split, intent_split = result.added_widgets
    patched, gather = result.patched_flow, result.report.gather
    assert returned_to(patched, redirect, {"arm": "legacy", "intent": "anything"}) == gather
    assert returned_to(patched, redirect, {"arm": "legacy"}) == gather
    states = states_by_name(patched)
    assert states[arm_split]["properties"]["input"] == "{{widgets." + redirect + ".arm}}"
    for intent_branch in (t for t in states[intent_split]["transitions"] if t["event"] == "match"):
        intent = intent_branch["conditions"][0]["value"]
        # The AI's callers (and a server that sends no arm) reach the intent's widget, as before.
        assert returned_to(patched, redirect, {"arm": "ai", "intent": intent}) == intent_branch["next"]
        assert returned_to(patched, redirect, {"intent": intent}) == intent_branch["next"]
    original = states_by_name(json.loads(text))
    for name in original:
        if name not in result.changed_widgets:
            assert json.dumps(states[name]) == json.dumps(original[name]), name


def test_the_fixture_flows_without_a_gather_are_refused_as_such(tmp_path: Path) -> None:
    for name in ("flex_template_callback.json", "flex_template_schedule.json"):
        if not (FIXTURES / name).exists():
            pytest.skip("shared fixtures not present")
        assert "no Gather" in import_error((FIXTURES / name).read_text(encoding="utf-8"))


@pytest.fixture
def acme() -> tuple[dict[str, Any], ImportResult]:
    if not ACME.exists():
        pytest.skip("shared fixtures not present")
    text = ACME.read_text(encoding="utf-8")
    return json.loads(text), import_text(text, flow_sid=FLOW_SID)


def test_acme_menu_becomes_the_emergency_schedule_and_billing_intents(acme, tmp_path: Path) -> None:
    _, result = acme
    config = loaded_config(result, tmp_path)
    intents = {intent.name: intent for intent in config.intents}
    assert list(intents) == ["emergency", "schedule", "billing"]

    emergency = config.routes[intents["emergency"].route]
    assert isinstance(emergency, FlexRoute)
    assert (emergency.workflow_sid, emergency.priority, emergency.timeout) == (
        "WW00000000000000000000000000000001",
        100,
        3600,
    )
    # The flow's task attributes are all ones the orchestrator sets itself (type, name, intent).
    assert emergency.attributes == {}

    schedule = config.routes[intents["schedule"].route]
    assert isinstance(schedule, StudioRoute)
    assert (schedule.flow_sid, schedule.mode, schedule.node) == (FLOW_SID, "resume", "schedule_name")

    billing = config.routes[intents["billing"].route]
    assert isinstance(billing, FlexRoute)
    assert (billing.workflow_sid, billing.priority, billing.timeout) == ("WW00000000000000000000000000000003", 30, 3600)

    # noMatch loops back to the menu: the AI's fallback hands the caller to the old menu.
    fallback = config.routes[config.triage.fallback_route]
    assert isinstance(fallback, StudioRoute) and fallback.node == "main_menu" and fallback.mode == "resume"
    assert config.routes[config.triage.human_route].kind in ("flex", "sip", "voicemail")


def test_acme_speech_words_and_menu_prompt_become_examples_and_digits_stay_in_the_description(
    acme, tmp_path: Path
) -> None:
    _, result = acme
    intents = {intent.name: intent for intent in loaded_config(result, tmp_path).intents}
    assert {"emergency", "burst", "no water"} <= set(intents["emergency"].examples)
    assert "book a visit" in intents["schedule"].examples  # "To book a visit, say schedule or press 2."
    assert {"invoice", "refund"} <= set(intents["billing"].examples)
    assert "press 1" in intents["emergency"].description
    assert not any(example.isdigit() for intent in intents.values() for example in intent.examples)


def test_acme_patched_flow_puts_the_redirect_arm_and_intent_splits_in_front_of_the_old_menu(acme) -> None:
    original, result = acme
    patched = result.patched_flow
    assert widget_format_problems(patched) == []
    states = states_by_name(patched)

    incoming = next(t for t in states["Trigger"]["transitions"] if t["event"] == "incomingCall")
    redirect = states[incoming["next"]]
    assert redirect["type"] == "add-twiml-redirect"
    url = urlsplit(redirect["properties"]["url"])
    assert f"{url.scheme}://{url.netloc}{url.path}" == f"{PUBLIC_URL}/voice/incoming"
    assert parse_qs(url.query) == {"flow_sid": [FLOW_SID], "node": [redirect["name"]]}
    assert redirect["properties"]["method"] == "POST"
    events = {t["event"]: t.get("next") for t in redirect["transitions"]}
    assert events["timeout"] == events["fail"] == "main_menu"

    arm_split = states[events["return"]]
    assert arm_split["type"] == "split-based-on"
    assert arm_split["properties"]["input"] == "{{widgets." + redirect["name"] + ".arm}}"
    legacy = [t for t in arm_split["transitions"] if t["event"] == "match"]
    assert [(t["conditions"][0]["type"], t["conditions"][0]["value"], t["next"]) for t in legacy] == [
        ("equal_to", "legacy", "main_menu")
    ]
    intent_split = states[next(t["next"] for t in arm_split["transitions"] if t["event"] == "noMatch")]
    assert intent_split["type"] == "split-based-on"
    assert intent_split["properties"]["input"] == "{{widgets." + redirect["name"] + ".intent}}"
    branches = {t["conditions"][0]["value"]: t["next"] for t in intent_split["transitions"] if t["event"] == "match"}
    assert branches == {"emergency": "emergency_to_flex", "schedule": "schedule_name", "billing": "billing_to_flex"}
    assert all(t["conditions"][0]["type"] == "equal_to" for t in intent_split["transitions"] if t["event"] == "match")
    assert next(t["next"] for t in intent_split["transitions"] if t["event"] == "noMatch") == "main_menu"
    assert states["main_menu"] == states_by_name(original)["main_menu"]  # the legacy menu stays


def test_acme_every_widget_but_the_trigger_is_byte_identical(acme) -> None:
    original, result = acme
    assert result.changed_widgets == ("Trigger",)
    after = states_by_name(result.patched_flow)
    for before in original["states"]:
        if before["name"] != "Trigger":
            assert json.dumps(after[before["name"]]) == json.dumps(before), before["name"]
    trigger_before = copy.deepcopy(states_by_name(original)["Trigger"])
    next(t for t in trigger_before["transitions"] if t["event"] == "incomingCall")["next"] = "ai_front_desk"
    assert json.dumps(after["Trigger"]) == json.dumps(trigger_before)
    assert {k: v for k, v in result.patched_flow.items() if k != "states"} == {
        k: v for k, v in original.items() if k != "states"
    }


def test_acme_report_names_the_loops_the_second_gather_and_the_dropped_attributes(acme) -> None:
    _, result = acme
    items = result.report.not_mapped
    assert {item.subject for item in items if item.finding is Finding.LOOP} == {"route_digits", "route_speech"}
    assert {item.subject for item in items if item.finding is Finding.OTHER_GATHER} == {"schedule_name"}
    assert any(item.finding is Finding.NOT_CARRIED and "'intent'" in item.detail for item in items)
    assert Finding.FLOW_SID not in result.report.findings()  # --flow-sid was given


def test_acme_files_and_diagrams_are_written(acme, tmp_path: Path) -> None:
    original, result = acme
    written = write_import(result, tmp_path / "out")
    assert {path.name for path in written} == OUTPUT_FILES
    before = (tmp_path / "out" / "flow.before.mmd").read_text(encoding="utf-8")
    after = (tmp_path / "out" / "flow.after.mmd").read_text(encoding="utf-8")
    assert before.startswith("flowchart TD\n") and after.startswith("flowchart TD\n")
    for widget in original["states"]:
        assert f'["{widget["name"]}<br/>' in before and f'["{widget["name"]}<br/>' in after
    assert "ai_front_desk" not in before and "ai_front_desk_intent" in after
    assert "class w2,w3,w4 added" in after  # the three new widgets, drawn next to the menu they replace
    report = (tmp_path / "out" / "IMPORT_REPORT.md").read_text(encoding="utf-8")
    assert report.startswith("# Studio import of test.json")


def test_live_translation_fixture_maps_digits_to_studio_nodes_and_makes_up_a_human_route(tmp_path: Path) -> None:
    path = FIXTURES / "live_translation_language_ivr.json"
    if not path.exists():
        pytest.skip("shared fixtures not present")
    result = import_text(path.read_text(encoding="utf-8"))
    config = loaded_config(result, tmp_path)
    intents = {intent.name: intent for intent in config.intents}
    # Studio's generated condition names ("If value equal_to 1") give way to the target widget's name.
    assert set(intents) == {
        f"set_language_{language}" for language in ("english", "spanish", "french", "mandarin", "hindi")
    }
    english = config.routes[intents["set_language_english"].route]
    assert isinstance(english, StudioRoute) and english.node == "set_language_english"
    assert "English" in intents["set_language_english"].examples  # "Press 1 for English"
    assert config.routes[config.triage.fallback_route] == english  # noMatch went to English too
    assert isinstance(config.routes[config.triage.human_route], VoicemailRoute)
    assert Finding.FLOW_SID in result.report.findings()
    assert english.flow_sid == "FW" + "0" * 32
    assert "# PLACEHOLDER flow_sid" in result.routing_toml


# --- Edge cases ----------------------------------------------------------------------------------


def test_a_small_menu_maps_flex_attributes_and_resume_routes(tmp_path: Path) -> None:
    result = import_text(menu_flow(), flow_sid=FLOW_SID)
    assert "flags" not in {item.subject for item in result.report.not_mapped}  # concurrent calls are on
    config = loaded_config(result, tmp_path)
    intents = {intent.name: intent for intent in config.intents}
    sales = config.routes[intents["sales"].route]
    assert isinstance(sales, FlexRoute)
    assert (sales.workflow_sid, sales.priority, sales.timeout, sales.attributes) == (
        WORKFLOW_SID,
        20,
        600,
        {"skill": "sales"},
    )
    assert intents["sales"].examples == ["sales", "buy", "pricing"]
    support = config.routes[intents["support"].route]
    assert isinstance(support, StudioRoute) and support.node == "support_line"
    assert config.routes[config.triage.fallback_route] == StudioRoute(
        kind="studio", flow_sid=FLOW_SID, mode="resume", node="goodbye"
    )
    assert config.triage.human_route == intents["sales"].route


def test_speech_and_keypress_branches_to_one_widget_merge_into_one_intent(tmp_path: Path) -> None:
    flow = menu_flow(menu=gather("menu", speech="by_speech", keypress="by_digits", say="For sales, press 1."))
    flow["states"].append(
        split(
            "by_digits",
            "{{ widgets.menu.Digits }}",
            [
                ("If value equal_to 1", "equal_to", "sales_desk", "1"),
                ("If value equal_to 2", "equal_to", "support_line", "2"),
            ],
            no_match="goodbye",
        )
    )
    intents = {intent.name: intent for intent in loaded_config(import_text(flow), tmp_path).intents}
    assert list(intents) == ["sales", "support"]
    assert "sales" in intents["sales"].examples and "press 1" in intents["sales"].description


def test_chained_splits_and_liquid_filters_are_followed(tmp_path: Path) -> None:
    # speech → split on "sales" words, whose noMatch is a second split on the same SpeechResult.
    flow = menu_flow(
        by_speech=split(
            "by_speech",
            "{{widgets.menu.SpeechResult | downcase}}",
            [
                ("sales", "matches_any_of", "sales_desk", "sales,buy"),
            ],
            no_match="by_speech_more",
        )
    )
    flow["states"].append(
        split(
            "by_speech_more",
            "{{widgets.menu.SpeechResult}}",
            [
                ("support", "contains", "support_line", "help"),
            ],
            no_match="goodbye",
        )
    )
    config = loaded_config(import_text(flow), tmp_path)
    assert [intent.name for intent in config.intents] == ["sales", "support"]
    assert config.routes[config.triage.fallback_route].node == "goodbye"


def test_a_flow_without_a_gather_is_refused() -> None:
    assert "no Gather" in import_error(definition(trigger("desk"), flex("desk")))


def test_a_gather_with_no_split_after_it_is_refused() -> None:
    reason = import_error(definition(trigger("ask"), gather("ask", speech="desk"), flex("desk")))
    assert "no Gather is followed by a Split" in reason and "ask" in reason


def test_a_gather_no_call_reaches_is_refused_and_named() -> None:
    flow = menu_flow()
    flow["states"][0] = trigger("goodbye")
    assert "unreachable: menu" in import_error(flow)


def test_two_gathers_use_the_first_menu_and_report_the_other(tmp_path: Path) -> None:
    flow = menu_flow(support_line=gather("support_line", speech="goodbye", say="Describe the problem."))
    result = import_text(flow)
    config = loaded_config(result, tmp_path)
    assert config.routes[config.intents[1].route].node == "support_line"
    assert [item.subject for item in result.report.not_mapped if item.finding is Finding.OTHER_GATHER] == [
        "support_line"
    ]
    assert states_by_name(result.patched_flow)["support_line"] == states_by_name(flow)["support_line"]


def test_a_loop_back_to_the_gather_keeps_the_old_menu_and_is_reported() -> None:
    flow = menu_flow(goodbye=say("goodbye", next_widget="menu", text="Sorry, let's try again."))
    result = import_text(flow)
    assert any(item.finding is Finding.LOOP and item.subject == "goodbye" for item in result.report.not_mapped)
    states = states_by_name(result.patched_flow)
    assert states["goodbye"]["transitions"][0]["next"] == "menu"  # the loop stays on the legacy menu
    assert next(t["next"] for t in states["Trigger"]["transitions"] if t["event"] == "incomingCall") == "ai_front_desk"


def test_a_widget_reached_before_the_gather_is_repointed_to_the_redirect() -> None:
    flow = menu_flow()
    flow["states"][0] = trigger("welcome")
    flow["states"].append(say("welcome", next_widget="menu", text="Welcome."))
    result = import_text(flow)
    states = states_by_name(result.patched_flow)
    assert states["welcome"]["transitions"][0]["next"] == "ai_front_desk"
    assert json.dumps(states["Trigger"]) == json.dumps(flow["states"][0])
    assert widget_format_problems(result.patched_flow) == []


def test_an_unknown_widget_is_reported_and_kept_byte_identical(tmp_path: Path) -> None:
    odd = {
        "name": "support_line",
        "type": "capture-payments",
        "transitions": [{"event": "success"}],
        "properties": {"payment_amount": "10", "offset": {"x": 1, "y": 2}},
    }
    flow = menu_flow(support_line=odd)
    result = import_text(flow)
    assert any(
        item.finding is Finding.UNKNOWN_WIDGET and item.subject == "support_line" for item in result.report.not_mapped
    )
    assert json.dumps(states_by_name(result.patched_flow)["support_line"]) == json.dumps(odd)
    config = loaded_config(result, tmp_path)
    assert config.routes[config.intents[1].route].node == "support_line"  # resumable like any other widget


def test_placeholders_and_templated_sids_are_reported_and_replaced_by_marked_placeholders(tmp_path: Path) -> None:
    flow = menu_flow(
        sales_desk=flex(
            "sales_desk",
            workflow="${WORKFLOW_SID}",
            waitUrl="https://${DOMAIN}/wait",
            attributes='{"skill": "sales", "caller": "{{trigger.call.From}}", "tag": "${TAG}"}',
        )
    )
    result = import_text(flow)
    findings = result.report.not_mapped
    assert any(item.finding is Finding.TEMPLATED_SID and "${WORKFLOW_SID}" in item.detail for item in findings)
    assert any(item.finding is Finding.PLACEHOLDER and "${DOMAIN}" in item.detail for item in findings)
    sales = next(route for route in loaded_config(result, tmp_path).routes.values() if isinstance(route, FlexRoute))
    assert sales.workflow_sid.startswith("WW0000") and sales.attributes == {"skill": "sales"}
    assert "# PLACEHOLDER workflow_sid" in result.routing_toml


@pytest.mark.parametrize(
    "text, expected",
    [
        ("{not json", "not JSON"),
        ("", "not JSON"),
        ("[1, 2]", "the JSON is a list"),
        ('"a flow"', "the JSON is a string"),
        ('{"description": "x"}', 'no "states" list'),
        ('{"states": {"Trigger": {}}}', "states: input should be a valid list"),
        ('{"states": [{"name": "Trigger"}]}', "states[0].type: missing"),
        ('{"states": [{"name": "a", "type": "say-play"}]}', "no Trigger"),
        (
            '{"states": [{"name": "Trigger", "type": "trigger", "transitions": [{"event": "incomingMessage"}]}]}',
            "no incomingCall",
        ),
        (
            '{"states": [{"name": "Trigger", "type": "trigger", "transitions": [{"event": "incomingCall", "next": "x"}]}]}',
            "not a widget",
        ),
        ('{"states": [{"name": "a", "type": "trigger"}, {"name": "a", "type": "say-play"}]}', "duplicate widget name"),
        ('{"states": [{"name": "Trigger", "type": "trigger", "transitions": [{"next": "a"}]}]}', "event: missing"),
        ('{"s": "\\ud800", "states": []}', "not valid Unicode"),
        ("[" * 100000, "nested too deeply"),
    ],
)
def test_malformed_input_gives_a_one_line_reason(text: str, expected: str) -> None:
    assert expected in import_error(text)


def test_transitions_without_next_are_dead_ends_not_intents(tmp_path: Path) -> None:
    flow = menu_flow(
        by_speech=split(
            "by_speech",
            "{{widgets.menu.SpeechResult}}",
            [
                ("sales", "matches_any_of", "sales_desk", "sales"),
                ("goodbye", "equal_to", None, "bye"),
            ],
            no_match=None,
        )
    )
    result = import_text(flow)
    config = loaded_config(result, tmp_path)
    assert [intent.name for intent in config.intents] == ["sales"]
    assert any(item.finding is Finding.DEAD_END for item in result.report.not_mapped)
    # noMatch led nowhere, so unplaced callers get what the Gather's timeout led to.
    assert config.routes[config.triage.fallback_route].node == "goodbye"
    assert widget_format_problems(result.patched_flow) == []


def test_a_menu_whose_branches_all_end_the_call_is_refused() -> None:
    flow = menu_flow(
        by_speech=split(
            "by_speech",
            "{{widgets.menu.SpeechResult}}",
            [("again", "equal_to", "menu", "repeat"), ("bye", "equal_to", None, "bye")],
            no_match=None,
        )
    )
    assert "no intents" in import_error(flow)


def test_a_split_on_another_variable_is_reported() -> None:
    flow = menu_flow(menu=gather("menu", speech="by_speech", keypress="by_caller"))
    flow["states"].append(
        split("by_caller", "{{trigger.call.From}}", [("vip", "equal_to", "sales_desk", "+15550001")], "goodbye")
    )
    result = import_text(flow)
    assert any(item.finding is Finding.OTHER_SPLIT and item.subject == "by_caller" for item in result.report.not_mapped)


def test_connect_call_to_sip_number_enqueue_and_voicemail_targets(tmp_path: Path) -> None:
    reads = "{{widgets.menu.SpeechResult}}"
    flow = menu_flow(
        by_speech=split(
            "by_speech",
            reads,
            [
                ("pbx", "equal_to", "to_pbx", "office"),
                ("mobile", "equal_to", "to_mobile", "mobile"),
                ("queue", "equal_to", "to_queue", "queue"),
                ("message", "equal_to", "take_message", "message"),
            ],
            no_match="goodbye",
        )
    )
    flow["states"] += [
        state(
            "to_pbx",
            "connect-call-to",
            [{"event": "callCompleted"}],
            noun="sip",
            sip_endpoint="sip:desk@pbx.example.com",
        ),
        state("to_mobile", "connect-call-to", [{"event": "callCompleted"}], noun="number", to="+15551230000"),
        state(
            "to_queue",
            "enqueue-call",
            [{"event": "callComplete"}],
            workflow_sid=WORKFLOW_SID,
            priority=5,
            timeout=300,
            task_attributes='{"team": "ops", "extra": null}',
        ),
        state("take_message", "record-voicemail", [{"event": "recordingComplete"}], max_length=90),
        say("message_prompt", next_widget="take_message", text="Leave a message."),
    ]
    result = import_text(flow)
    config = loaded_config(result, tmp_path)
    route = {intent.name: config.routes[intent.route] for intent in config.intents}
    assert route["pbx"] == SipRoute(kind="sip", uri="sip:desk@pbx.example.com")
    assert isinstance(route["mobile"], StudioRoute) and route["mobile"].node == "to_mobile"
    assert any("our config dials SIP addresses only" in item.detail for item in result.report.not_mapped)
    assert isinstance(route["queue"], FlexRoute) and (route["queue"].priority, route["queue"].timeout) == (5, 300)
    assert route["queue"].attributes == {"team": "ops"}
    assert route["message"] == VoicemailRoute(kind="voicemail", max_length=90, prompt="Leave a message.")


def test_a_flow_resource_wrapper_gives_the_flow_sid(tmp_path: Path) -> None:
    wrapped = {"sid": FLOW_SID, "friendly_name": "IVR", "definition": menu_flow()}
    result = import_text(wrapped)
    config = loaded_config(result, tmp_path)
    assert config.routes[config.triage.fallback_route].flow_sid == FLOW_SID
    assert Finding.FLOW_SID not in result.report.findings()


def test_bad_options_are_refused() -> None:
    assert "'FW' followed by 32 hex" in import_error(menu_flow(), flow_sid="FW123")
    with pytest.raises(StudioImportError, match="public URL"):
        import_flow(json.dumps(menu_flow()), source="x", public_url="desk.example.com")


def test_a_flow_that_refuses_concurrent_calls_is_told_to_allow_them() -> None:
    flow = menu_flow()
    flow["flags"] = {"allow_concurrent_calls": False}
    result = import_text(flow)
    assert any(item.subject == "flags" and "81002" in item.detail for item in result.report.not_mapped)


def test_a_diagram_draws_transitions_to_missing_widgets_once() -> None:
    flow = menu_flow(goodbye=say("goodbye", next_widget="nowhere"))
    flow["states"].append(say("also_lost", next_widget="nowhere"))
    result = import_text(flow)
    assert result.before_mermaid.count('["nowhere<br/>(no such widget)"]') == 1
    assert any(item.finding is Finding.BROKEN_LINK for item in result.report.not_mapped)


def test_an_environment_override_that_breaks_the_imported_config_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCHESTRATOR_TRIAGE__FALLBACK_ROUTE", "nowhere")
    assert "$ORCHESTRATOR_TRIAGE__FALLBACK_ROUTE" in import_error(menu_flow())


def test_widget_names_that_clash_with_the_new_widgets_get_a_suffix() -> None:
    flow = menu_flow(goodbye=say("ai_front_desk"))
    flow["states"][2] = split(
        "by_speech",
        "{{widgets.menu.SpeechResult}}",
        [("sales", "equal_to", "sales_desk", "sales")],
        no_match="ai_front_desk",
    )
    states = states_by_name(import_text(flow).patched_flow)
    assert states["ai_front_desk"]["type"] == "say-play"
    assert states["ai_front_desk_2"]["type"] == "add-twiml-redirect"


def test_command_errors_exit_2_with_one_line(tmp_path: Path, capsys) -> None:
    missing = tmp_path / "missing.json"
    assert run_command("studio", "import", str(missing), "--out", str(tmp_path / "out")) == 2
    assert capsys.readouterr().err.startswith(f"error: {missing}")
    binary = tmp_path / "flow.json"
    binary.write_bytes(b"\xff\xfe\x00")
    assert run_command("studio", "import", str(binary), "--out", str(tmp_path / "out")) == 2
    assert capsys.readouterr().err == f"error: {binary}: not UTF-8 text\n"


def test_command_writes_the_files_and_prints_the_report(tmp_path: Path, capsys) -> None:
    flow = tmp_path / "flow.json"
    flow.write_text(json.dumps(menu_flow()), encoding="utf-8")
    assert run_command("studio", "import", str(flow), "--out", str(tmp_path / "out"), "--public-url", PUBLIC_URL) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"# Studio import of {flow}") and f"wrote {tmp_path / 'out' / 'routing.toml'}" in out


# --- Any input at all --------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=20,
)
widget_names = st.sampled_from(["Trigger", "menu", "by_speech", "desk", "bye", "ai_front_desk", "a b", ""])
widget_types = st.sampled_from([*EVENTS_BY_TYPE, "capture-payments"])
events = st.sampled_from(sorted({event for events in EVENTS_BY_TYPE.values() for event in events}))
inputs = st.sampled_from(["{{widgets.menu.SpeechResult}}", "{{ widgets.menu.Digits }}", "{{trigger.call.From}}", "x"])
conditions = st.fixed_dictionaries(
    {
        "friendly_name": st.text(max_size=8),
        "type": st.sampled_from(["equal_to", "matches_any_of", "regex", "is_blank"]),
        "arguments": st.just(["{{widgets.menu.SpeechResult}}"]),
    },
    optional={"value": json_values},
)
transitions = st.fixed_dictionaries(
    {"event": events}, optional={"next": widget_names | st.none(), "conditions": st.lists(conditions, max_size=2)}
)
properties = st.fixed_dictionaries(
    {},
    optional={
        "input": inputs,
        "workflow": st.sampled_from([WORKFLOW_SID, "${WORKFLOW_SID}", "WW1"]) | json_values,
        "priority": json_values,
        "timeout": json_values,
        "attributes": st.sampled_from(['{"a": 1}', '{"type": "x"}', "{"]) | json_values,
        "noun": st.sampled_from(["sip", "number"]),
        "to": st.sampled_from(["sip:a@b", "+1555"]) | json_values,
        "max_length": json_values,
        "say": st.sampled_from(["Press 1 for sales.", "For help, press 2"]) | json_values,
        "offset": json_values,
        "workflow_sid": json_values,
        "queue_name": json_values,
        "task_attributes": json_values,
    },
)
flow_states = st.fixed_dictionaries(
    {"name": widget_names, "type": widget_types, "transitions": st.lists(transitions, max_size=4)},
    optional={"properties": properties},
)
flows = st.fixed_dictionaries({"states": st.lists(flow_states, max_size=7)}, optional={"initial_state": widget_names})


def import_or_refuse(text: str) -> None:
    try:
        result = import_flow(text, source="fuzz.json", public_url=PUBLIC_URL)
    except StudioImportError as error:
        assert str(error) and "\n" not in str(error)
    else:
        # The patch adds no format problem of its own (a damaged flow keeps the ones it had).
        original = json.loads(text)
        problems_before = set(widget_format_problems(original))
        assert set(widget_format_problems(result.patched_flow)) <= problems_before
        after = states_by_name(result.patched_flow)
        for before in original["states"]:
            if before["name"] not in result.changed_widgets:
                assert json.dumps(after[before["name"]]) == json.dumps(before)
        assert len(result.patched_flow["states"]) == len(original["states"]) + len(result.added_widgets)
        assert result.report.mapped and result.routing_toml


@settings(max_examples=150)
@given(json_values)
def test_any_json_is_imported_or_refused_with_a_reason(value: Any) -> None:
    import_or_refuse(json.dumps(value))


@settings(max_examples=300)
@given(flows)
def test_any_flow_shaped_json_is_imported_or_refused_with_a_reason(flow: dict[str, Any]) -> None:
    import_or_refuse(json.dumps(flow))


@settings(max_examples=300)
@given(st.data())
def test_a_working_menu_with_random_damage_is_imported_or_refused_with_a_reason(data: st.DataObject) -> None:
    # Random flows rarely get as far as a menu; damaging one that imports reaches every mapping step.
    flow = menu_flow(
        menu=gather(
            "menu",
            speech="by_speech",
            keypress="by_speech",
            timeout="goodbye",
            say="For sales, press 1. Press 2 for support.",
        )
    )
    for _ in range(data.draw(st.integers(1, 4))):
        target = data.draw(st.sampled_from(flow["states"]))
        where = data.draw(st.sampled_from(["properties", "transitions", "name", "type", "condition"]))
        if where == "properties":
            target["properties"][data.draw(st.sampled_from(sorted(properties.wrapped_strategy.optional)))] = data.draw(
                json_values
            )
        elif where == "transitions" and target["transitions"]:
            transition = data.draw(st.sampled_from(target["transitions"]))
            transition[data.draw(st.sampled_from(["next", "event"]))] = data.draw(widget_names | json_values)
        elif where == "condition" and any("conditions" in t for t in target["transitions"]):
            condition = next(t for t in target["transitions"] if "conditions" in t)["conditions"][0]
            condition[data.draw(st.sampled_from(["value", "type", "friendly_name", "arguments"]))] = data.draw(
                json_values
            )
        elif where in ("name", "type"):
            target[where] = data.draw(widget_names if where == "name" else widget_types)
    import_or_refuse(json.dumps(flow))


@settings(max_examples=100)
@given(st.text(max_size=40))
def test_any_text_is_imported_or_refused_with_a_reason(text: str) -> None:
    import_or_refuse(text)
