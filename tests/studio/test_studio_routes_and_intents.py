"""The menu mapped: Split branches to intents, the widgets they lead to to routes, and what is noted."""

from __future__ import annotations

from pathlib import Path

from orchestrator.config.routing import FlexRoute, SipRoute, StudioRoute, VoicemailRoute
from orchestrator.studio import Finding
from tests.studio.studio_flows import (
    FLOW_SID,
    WORKFLOW_SID,
    flex,
    gather,
    import_error,
    import_text,
    loaded_config,
    menu_flow,
    say,
    split,
    state,
    widget_format_problems,
)


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
