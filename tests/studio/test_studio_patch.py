"""The patched flow: the redirect in front of the Gather, what is repointed or kept, and its diagrams."""

from __future__ import annotations

import json
from pathlib import Path

from orchestrator.studio import Finding
from tests.studio.studio_flows import (
    import_text,
    loaded_config,
    menu_flow,
    say,
    split,
    states_by_name,
    trigger,
    widget_format_problems,
)


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
