"""Reading a Studio flow and finding its menu: what is refused (one line why) and what is followed."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.studio import Finding
from tests.studio.studio_flows import (
    FLOW_SID,
    definition,
    flex,
    gather,
    import_error,
    import_text,
    loaded_config,
    menu_flow,
    split,
    states_by_name,
    trigger,
)


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


def test_a_flow_resource_wrapper_gives_the_flow_sid(tmp_path: Path) -> None:
    wrapped = {"sid": FLOW_SID, "friendly_name": "IVR", "definition": menu_flow()}
    result = import_text(wrapped)
    config = loaded_config(result, tmp_path)
    assert config.routes[config.triage.fallback_route].flow_sid == FLOW_SID
    assert Finding.FLOW_SID not in result.report.findings()


def test_a_flow_without_a_gather_is_refused() -> None:
    assert "no Gather" in import_error(definition(trigger("desk"), flex("desk")))


def test_a_gather_with_no_split_after_it_is_refused() -> None:
    reason = import_error(definition(trigger("ask"), gather("ask", speech="desk"), flex("desk")))
    assert "no Gather is followed by a Split" in reason and "ask" in reason


def test_a_gather_no_call_reaches_is_refused_and_named() -> None:
    flow = menu_flow()
    flow["states"][0] = trigger("goodbye")
    assert "unreachable: menu" in import_error(flow)


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


def test_a_split_on_another_variable_is_reported() -> None:
    flow = menu_flow(menu=gather("menu", speech="by_speech", keypress="by_caller"))
    flow["states"].append(
        split("by_caller", "{{trigger.call.From}}", [("vip", "equal_to", "sales_desk", "+15550001")], "goodbye")
    )
    result = import_text(flow)
    assert any(item.finding is Finding.OTHER_SPLIT and item.subject == "by_caller" for item in result.report.not_mapped)


def test_two_gathers_use_the_first_menu_and_report_the_other(tmp_path: Path) -> None:
    flow = menu_flow(support_line=gather("support_line", speech="goodbye", say="Describe the problem."))
    result = import_text(flow)
    config = loaded_config(result, tmp_path)
    assert config.routes[config.intents[1].route].node == "support_line"
    assert [item.subject for item in result.report.not_mapped if item.finding is Finding.OTHER_GATHER] == [
        "support_line"
    ]
    assert states_by_name(result.patched_flow)["support_line"] == states_by_name(flow)["support_line"]
