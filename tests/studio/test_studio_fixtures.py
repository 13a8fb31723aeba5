"""`orchestrator studio import` on the shared fixtures (../shared/fixtures/studio; skipped without them)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from orchestrator.config.routing import FlexRoute, StudioRoute, VoicemailRoute, load_routing_config
from orchestrator.studio import Finding, ImportResult, StudioImportError, write_import
from tests.studio.studio_flows import (
    ACME,
    FIXTURES,
    FLOW_SID,
    OUTPUT_FILES,
    PUBLIC_URL,
    fixture_files,
    import_error,
    import_text,
    loaded_config,
    returned_to,
    run_command,
    states_by_name,
    widget_format_problems,
)


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
    redirect, arm_split, intent_split, *_ = result.added_widgets
    patched, gather = result.patched_flow, result.report.gather
    assert returned_to(patched, redirect, {"arm": "legacy", "intent": "anything"}) == gather
    assert returned_to(patched, redirect, {"arm": "legacy"}) == gather
    states = states_by_name(patched)
    assert states[arm_split]["properties"]["input"] == "{{widgets." + redirect + ".arm}}"
    for intent_branch in (t for t in states[intent_split]["transitions"] if t["event"] == "match"):
        intent = intent_branch["conditions"][0]["value"]
        entry = intent_branch["next"]
        if entry in result.added_widgets:  # a Split on a detail the AI captured: without it, the old path
            entry = next(t["next"] for t in states[entry]["transitions"] if t["event"] == "noMatch")
        # The AI's callers (and a server that sends no arm) reach the intent's widget, as before.
        assert returned_to(patched, redirect, {"arm": "ai", "intent": intent}) == entry
        assert returned_to(patched, redirect, {"intent": intent}) == entry
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
    # schedule_name asks for the caller's name and number: a Split on them goes first, to schedule_name without them.
    assert branches == {
        "emergency": "emergency_to_flex",
        "schedule": "ai_front_desk_has_caller_name",
        "billing": "billing_to_flex",
    }
    assert next(t["next"] for t in states["ai_front_desk_has_caller_name"]["transitions"] if t["event"] == "noMatch") == (
        "schedule_name"
    )
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
    # The new widgets, drawn next to the menu they replace.
    assert f"class {','.join(f'w{2 + n}' for n in range(len(result.added_widgets)))} added" in after
    report = (tmp_path / "out" / "IMPORT_REPORT.md").read_text(encoding="utf-8")
    assert report.startswith("# Studio import of test.json")


def test_live_translation_fixture_maps_digits_to_studio_nodes_and_makes_up_a_human_route(tmp_path: Path) -> None:
    path = FIXTURES / "live_translation_language_ivr.json"
    if not path.exists():
        pytest.skip("shared fixtures not present")
    result = import_text(path.read_text(encoding="utf-8"))
    config = loaded_config(result, tmp_path)
    intents = {intent.name: intent for intent in config.intents}
    # Studio's generated condition names ("If value equal_to 1") give way to what the prompt offers for the key.
    assert list(intents) == ["english", "french", "spanish", "mandarin", "hindi"]
    assert Finding.NAME not in result.report.findings()
    english = config.routes[intents["english"].route]
    assert isinstance(english, StudioRoute) and english.node == "set_language_english"
    assert "English" in intents["english"].examples  # "Press 1 for English"
    assert config.routes[config.triage.fallback_route] == english  # noMatch went to English too
    assert isinstance(config.routes[config.triage.human_route], VoicemailRoute)
    assert Finding.FLOW_SID in result.report.findings()
    assert english.flow_sid == "FW" + "0" * 32
    assert "# PLACEHOLDER flow_sid" in result.routing_toml
