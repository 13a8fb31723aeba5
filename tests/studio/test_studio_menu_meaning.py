"""What the import understands of a menu: one intent per need (keys and words paired), names from what the
menu says, the details the old IVR asked for as capture fields (and skipped for the AI's callers), and the
caller's language on the redirect. Every original widget stays byte-identical."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from orchestrator.config.routing import FlexRoute, SipRoute, StudioRoute, describe_config
from orchestrator.studio import Finding, ImportResult
from tests.studio.menu_shapes import (
    OTHER_WORKFLOW_SID,
    keys_only_flow,
    language_choice_flow,
    looping_menu_flow,
    nested_menus_flow,
    says_before_actions_flow,
    set_variable,
    taxi_flow,
)
from tests.studio.studio_flows import (
    definition,
    fixture_files,
    flex,
    gather,
    import_text,
    loaded_config,
    returned_to,
    split,
    states_by_name,
    trigger,
    widget_format_problems,
)

SHAPES = {
    "taxi": taxi_flow,
    "nested menus": nested_menus_flow,
    "a menu that loops back": looping_menu_flow,
    "keys only": keys_only_flow,
    "a menu behind a language choice": language_choice_flow,
    "Say widgets between Split and action": says_before_actions_flow,
}


def intents_of(result: ImportResult) -> dict[str, tuple[list[str], list[str]]]:
    """intent → (its keys, its examples), in the config's order."""
    return {intent.name: (intent.keys, intent.examples) for intent in result.intents}


def assert_originals_kept(original: dict[str, Any], result: ImportResult) -> None:
    """Every original widget is byte-identical, but those whose transitions into the menu now lead to the
    redirect (and nothing else about them changed)."""
    after = states_by_name(result.patched_flow)
    redirect = result.added_widgets[0]
    for before in original["states"]:
        if before["name"] in result.changed_widgets:
            expected = copy.deepcopy(before)
            for transition in expected["transitions"]:
                if transition.get("next") == result.report.gather:
                    transition["next"] = redirect
            before = expected
        assert json.dumps(after[before["name"]]) == json.dumps(before), before["name"]
    assert set(after) == {s["name"] for s in original["states"]} | set(result.added_widgets)
    assert widget_format_problems(result.patched_flow) == []


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_every_shape_imports_a_config_that_checks_and_keeps_every_original_widget(shape, tmp_path: Path) -> None:
    flow = shape()
    result = import_text(flow)
    assert_originals_kept(flow, result)
    config = loaded_config(result, tmp_path)  # what `orchestrator check-config` loads
    assert describe_config(config)
    assert [intent.name for intent in config.intents] == [intent.name for intent in result.intents]
    assert [field.name for field in config.fields] == [field.name for field in result.fields]


@pytest.mark.parametrize("path", fixture_files(), ids=lambda path: path.name)
def test_no_fixture_intent_is_named_after_a_widget_or_numbered(path: Path, tmp_path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    flow = json.loads(text)
    widgets = {state["name"] for state in flow.get("definition", flow)["states"]}
    try:
        result = import_text(text)
    except Exception as error:  # the Flex templates have no menu (their own test says so)
        assert "no Gather" in str(error)
        return
    assert Finding.NAME not in result.report.findings()
    assert not {intent.name for intent in result.intents} & widgets
    assert not any(intent.name.startswith("intent_") for intent in result.intents)
    assert_originals_kept(flow.get("definition", flow), result)
    loaded_config(result, tmp_path)


def test_the_fixtures_import_as_these_intents_keys_and_fields() -> None:
    expected = {
        "acme_plumbing_ivr.json": (
            {"emergency": ["1"], "schedule": ["2"], "billing": ["3"]},
            {"caller_name": ("text", ["schedule_studio"]), "callback_number": ("phone", ["schedule_studio"])},
        ),
        "live_translation_language_ivr.json": (
            {"english": ["1"], "french": ["3"], "spanish": ["2"], "mandarin": ["4"], "hindi": ["5"]},
            {},
        ),
    }
    files = {path.name: path for path in fixture_files()}
    if not files:
        pytest.skip("shared fixtures not present")
    for name, (intents, fields) in expected.items():
        result = import_text(files[name].read_text(encoding="utf-8"))
        assert {intent.name: intent.keys for intent in result.intents} == intents, name
        assert {f.name: (f.type, f.required_for) for f in result.fields} == fields, name


# --- The taxi menu ---------------------------------------------------------------------------------


@pytest.fixture
def taxi() -> tuple[dict[str, Any], ImportResult]:
    flow = taxi_flow()
    return flow, import_text(flow)


def test_the_taxi_menu_is_two_intents_with_their_keys_and_words(taxi, tmp_path: Path) -> None:
    _, result = taxi
    intents = intents_of(result)
    assert list(intents) == ["taxi", "payment"]
    assert intents["taxi"][0] == ["1"] and {"taxi", "cab", "ride", "hire a new taxi"} <= set(intents["taxi"][1])
    assert intents["payment"][0] == ["2"] and {"payment", "pay", "bill"} <= set(intents["payment"][1])
    config = loaded_config(result, tmp_path)
    routes = {intent.name: config.routes[intent.route] for intent in config.intents}
    # Each intent goes where its speech branch led: what a caller who said it heard.
    assert isinstance(routes["taxi"], StudioRoute) and routes["taxi"].node == "said_taxi"
    assert isinstance(routes["payment"], FlexRoute) and routes["payment"].workflow_sid == OTHER_WORKFLOW_SID
    assert [intent.route for intent in config.intents] == ["taxi_studio", "payment_desk"]  # named for what they do
    # The old menu's keys are the config's keys: a caller who presses 1 is proposed taxi.
    assert {intent.name: intent.keys for intent in config.intents} == {"taxi": ["1"], "payment": ["2"]}


def test_the_report_says_how_keys_and_words_were_paired(taxi) -> None:
    _, result = taxi
    details = {item.subject: item.detail for item in result.report.mapped if item.finding is Finding.INTENT}
    assert "paired keys 1 (pressed_taxi) with the words of said_taxi: both lead to ask_name" in details["taxi"]
    assert (
        'paired keys 2 (pressed_payment) with the words of said_payment: the prompt says "Press 2 or say payment'
        in details["payment"]
    )


def test_the_taxi_details_are_capture_fields_of_the_taxi_route(taxi, tmp_path: Path) -> None:
    _, result = taxi
    fields = {field.name: field for field in loaded_config(result, tmp_path).fields}
    assert list(fields) == ["caller_name", "pickup_address", "pickup_time"]
    assert all(field.type == "text" and field.required_for == ["taxi_studio"] for field in fields.values())
    assert "What is the pickup address?" in (fields["pickup_address"].description or "")
    # The confirmations ("I heard … Press 1 if that is right") ask for nothing new.
    assert {g for f in result.fields for g in f.gathers} == {"ask_name", "ask_address", "ask_time"}


def test_a_taxi_caller_the_ai_brings_back_with_every_detail_skips_the_questions(taxi) -> None:
    flow, result = taxi
    assert_originals_kept(flow, result)
    assert result.changed_widgets == ("Trigger",)
    redirect = result.added_widgets[0]
    patched = result.patched_flow
    details = {"caller_name": "Sam Jones", "pickup_address": "12 High Street", "pickup_time": "7 am"}
    assert returned_to(patched, redirect, {"intent": "taxi", **details}) == "book_taxi_ai"
    for missing in details:
        partial = {name: value for name, value in details.items() if name != missing}
        assert returned_to(patched, redirect, {"intent": "taxi", **partial}) == "said_taxi"  # the old path, whole
    assert returned_to(patched, redirect, {"intent": "payment", **details}) == "said_payment"
    assert returned_to(patched, redirect, {"arm": "legacy", "intent": "taxi", **details}) == "main_menu"

    states = states_by_name(patched)
    booking = states["book_taxi_ai"]
    assert [p["value"] for p in booking["properties"]["parameters"]] == [
        "{{widgets.ai_front_desk.caller_name}}",
        "{{ widgets.ai_front_desk.pickup_address }}",
        "{{widgets.ai_front_desk.pickup_time}}",
    ]
    assert {t["event"]: t["next"] for t in booking["transitions"]} == {
        "success": "taxi_booked_ai",
        "failed": "taxi_agents",
    }
    assert states["taxi_booked_ai"]["properties"]["say"] == (
        "Thanks {{widgets.ai_front_desk.caller_name}}, your taxi is booked for {{widgets.ai_front_desk.pickup_time}}."
    )
    # The legacy path still asks, confirms and books with the original widgets.
    assert states["check_ask_time"]["transitions"][1]["next"] == "book_taxi"


def test_the_report_lists_each_skipped_gather_with_the_widgets_that_read_it(taxi) -> None:
    _, result = taxi
    skipped = [item for item in result.report.mapped if item.finding is Finding.SKIP]
    by_subject = {item.subject: item.detail for item in skipped}
    assert "book_taxi (copied as book_taxi_ai), taxi_booked (copied as taxi_booked_ai)" in by_subject["ask_name"]
    assert "book_taxi (copied as book_taxi_ai);" in by_subject["ask_address"]
    assert "confirm_ask_time" in by_subject["ask_name, ask_address, ask_time"]
    assert "with one missing it takes the old path from said_taxi" in by_subject["ask_name, ask_address, ask_time"]


def test_a_detail_no_later_widget_reads_is_a_field_but_its_gather_stays() -> None:
    flow = taxi_flow()
    states = states_by_name(flow)
    states["book_taxi"]["properties"]["parameters"] = []
    states["taxi_booked"]["properties"]["say"] = "Thanks, your taxi is booked."
    result = import_text(flow)
    assert [f.name for f in result.fields] == ["caller_name", "pickup_address", "pickup_time"]
    assert result.added_widgets == ("ai_front_desk", "ai_front_desk_arm", "ai_front_desk_intent")
    notes = {item.subject for item in result.report.not_mapped if item.finding is Finding.SKIP}
    assert notes == {"ask_name", "ask_address", "ask_time"}
    assert_originals_kept(flow, result)


def test_a_gather_asking_two_details_is_read_back_as_both() -> None:
    flow = taxi_flow()
    states = states_by_name(flow)
    states["ask_name"]["properties"]["say"] = "Please say your full name and the best number to call you back."
    result = import_text(flow)
    assert {f.name: f.type for f in result.fields}["callback_number"] == "phone"
    booking = states_by_name(result.patched_flow)["book_taxi_ai"]
    assert booking["properties"]["parameters"][0]["value"] == (
        '{{widgets.ai_front_desk.caller_name | append: " " | append: widgets.ai_front_desk.callback_number}}'
    )


# --- The other shapes ------------------------------------------------------------------------------


def test_nested_menus_the_top_menu_is_the_intents_and_the_sub_menu_asks_for_nothing(tmp_path: Path) -> None:
    result = import_text(nested_menus_flow())
    assert intents_of(result) == {"sales": (["1"], ["sales"]), "support": (["2"], ["support"])}
    config = loaded_config(result, tmp_path)
    assert config.routes[config.intents[0].route].node == "sales_menu"  # the old sub-menu takes it from there
    assert result.fields == ()
    assert any(i.finding is Finding.OTHER_GATHER and i.subject == "sales_menu" for i in result.report.not_mapped)


def test_a_menu_that_loops_back_makes_no_intent_of_its_repeat_key() -> None:
    result = import_text(looping_menu_flow())
    assert list(intents_of(result)) == ["hours", "appointment"]
    assert intents_of(result)["hours"][0] == ["1"]
    loops = {(i.subject, i.detail.split(":")[0]) for i in result.report.not_mapped if i.finding is Finding.LOOP}
    assert ("by_keys", "branch 'repeat' leads back to menu (the menu again)") in loops
    assert result.changed_widgets == ("welcome",)


def test_keys_only_names_come_from_the_prompt_then_the_widget_then_a_number(tmp_path: Path) -> None:
    result = import_text(keys_only_flow())
    assert {name: keys for name, (keys, _) in intents_of(result).items()} == {
        "emergencies": ["1"],
        "billing": ["2"],
        "support": ["3"],
        "intent_4": ["4"],
    }
    flagged = {item.subject: item.detail for item in result.report.not_mapped if item.finding is Finding.NAME}
    assert flagged.keys() == {"support", "intent_4"}
    assert "send_call_to_support" in flagged["support"] and flagged["intent_4"].startswith("numbered")
    config = loaded_config(result, tmp_path)
    assert config.routes["support_line"] == SipRoute(kind="sip", uri="sip:help@pbx.example.com")
    assert [intent.route for intent in config.intents] == [
        "emergencies_desk", "billing_desk", "support_line", "intent_4_studio",
    ]


def test_a_menu_behind_a_language_choice_is_the_menu_and_the_language_goes_on_the_redirect() -> None:
    flow = language_choice_flow()
    result = import_text(flow)
    assert result.report.gather == "main_menu"
    assert intents_of(result) == {"billing": (["1"], ["bill"]), "support": (["2"], ["help"])}
    assert sorted(result.changed_widgets) == ["set_english", "set_spanish"]  # they led to the menu
    states = states_by_name(result.patched_flow)
    assert states["choose_language"] == states_by_name(flow)["choose_language"]
    url = states["ai_front_desk"]["properties"]["url"]
    assert url.endswith("&language={{flow.variables.language}}")
    assert parse_qs(urlsplit(url).query)["language"] == ["{{flow.variables.language}}"]
    assert Finding.LANGUAGE in {item.finding for item in result.report.mapped}
    assert not any(item.finding is Finding.LANGUAGE for item in result.report.not_mapped)  # en-US, es-MX: codes


def test_language_values_that_are_not_codes_are_passed_and_reported() -> None:
    flow = language_choice_flow()
    states = states_by_name(flow)
    states["set_english"] = set_variable("set_english", "caller_language", "english", "main_menu")
    states["set_spanish"] = set_variable("set_spanish", "caller_language", "spanish", "main_menu")
    flow["states"] = list(states.values())
    result = import_text(flow)
    assert states_by_name(result.patched_flow)["ai_front_desk"]["properties"]["url"].endswith(
        "&language={{flow.variables.caller_language}}"
    )
    [note] = [item for item in result.report.not_mapped if item.finding is Finding.LANGUAGE]
    assert "'english', 'spanish'" in note.detail and "en-US" in note.detail


def test_a_split_on_the_language_before_the_menu_is_passed() -> None:
    flow = definition(
        trigger("by_language"),
        split(
            "by_language",
            "{{trigger.parent.parameters.language}}",
            [("Spanish", "equal_to", "menu", "es-MX")],
            no_match="menu",
        ),
        gather("menu", speech="words", say="Say billing."),
        split("words", "{{widgets.menu.SpeechResult}}", [("billing", "contains", "desk", "bill")], no_match="menu"),
        flex("desk"),
    )
    result = import_text(flow)
    url = states_by_name(result.patched_flow)["ai_front_desk"]["properties"]["url"]
    assert url.endswith("&language={{trigger.parent.parameters.language}}")


def test_say_widgets_between_split_and_action_pair_keys_and_words_by_where_they_lead(tmp_path: Path) -> None:
    result = import_text(says_before_actions_flow())
    assert {name: keys for name, (keys, _) in intents_of(result).items()} == {"order": ["1"], "return": ["2"]}
    config = loaded_config(result, tmp_path)
    order = config.routes[config.intents[0].route]
    assert isinstance(order, StudioRoute) and order.node == "orders_line"  # the speech branch's line first
    details = {item.subject: item.detail for item in result.report.mapped if item.finding is Finding.INTENT}
    assert "both lead to orders_desk" in details["order"]
    assert [intent.other_targets for intent in result.intents] == [["keys_orders_line"], ["keys_returns_line"]]


def test_keys_and_words_with_only_their_names_in_common_are_paired() -> None:
    flow = definition(
        trigger("menu"),
        gather("menu", speech="words", keypress="keys", say="How can I help?"),
        split("keys", "{{widgets.menu.Digits}}", [("1", "equal_to", "pressed_taxi", "1")], no_match="menu"),
        split(
            "words",
            "{{widgets.menu.SpeechResult}}",
            [("said taxi", "contains", "said_taxi", "cab"), ("said bill", "contains", "said_payment", "bill")],
            no_match="menu",
        ),
        flex("pressed_taxi"),
        flex("said_taxi"),
        flex("said_payment"),
    )
    result = import_text(flow)
    assert {name: keys for name, (keys, _) in intents_of(result).items()} == {"taxi": ["1"], "bill": []}
    details = {item.subject: item.detail for item in result.report.mapped if item.finding is Finding.INTENT}
    assert "both are named for taxi" in details["taxi"]


def test_keys_that_could_pair_with_two_needs_stay_their_own_intent() -> None:
    flow = definition(
        trigger("menu"),
        gather("menu", speech="words", keypress="keys", say="How can I help?"),
        split("keys", "{{widgets.menu.Digits}}", [("desk", "equal_to", "front_desk_keys", "0")], no_match="menu"),
        split(
            "words",
            "{{widgets.menu.SpeechResult}}",
            [("sales", "contains", "sales_desk", "buy"), ("support", "contains", "support_desk", "help")],
            no_match="menu",
        ),
        flex("front_desk_keys"),
        flex("sales_desk"),
        flex("support_desk"),
    )
    result = import_text(flow)
    assert [intent.name for intent in result.intents] == ["desk", "sales", "support"]
