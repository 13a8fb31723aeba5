"""The TwiML answered at the `<Connect action>` URL, one shape per route kind, read back as XML."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from machines.decision import DecisionReason, DispatchDecision
from orchestrator.call.dispatch_twiml import (
    RECORDING_ACTION_PATH,
    CallFacts,
    dispatch_twiml,
    fallback_twiml,
    legacy_twiml,
)
from orchestrator.config.routing import (
    RoutingConfig,
    SipRoute,
    StudioRoute,
    TwilioSettings,
    load_routing_config,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "acme_plumbing.toml"
ACME_ACCOUNT = "AC6918b3f30d86a2b7b27af58bbe029f87"
REQUEST_ACCOUNT = "AC00000000000000000000000000000001"
ACME_FLOW = "FW5670575a869e4a142814c71a1217f9f0"
PUBLIC_URL = "https://frontdesk.example.com/"

CALL = CallFacts(
    call_sid="CA11111111111111111111111111111111",
    caller="+15551234567",
    called="+15557654321",
    account_sid=REQUEST_ACCOUNT,
)
CAPTURED = {"caller_name": "Ann O'Neil", "callback_number": "+15550001111", "address": "1 Elm St, Springfield"}


@pytest.fixture(scope="module")
def acme() -> RoutingConfig:
    return load_routing_config(EXAMPLE)


def decided(route: str, kind: str, **more) -> DispatchDecision:
    return DispatchDecision(route=route, route_kind=kind, reason=DecisionReason.ACCEPTED, **more)


def parse(xml: str) -> ET.Element:
    root = ET.fromstring(xml)
    assert root.tag == "Response"
    return root


def verbs(root: ET.Element) -> list[str]:
    return [child.tag for child in root]


def task_attributes(decision: DispatchDecision, config: RoutingConfig) -> dict:
    return json.loads(parse(dispatch_twiml(decision, config, CALL, public_url=PUBLIC_URL)).find("Enqueue/Task").text)


def with_routes(config: RoutingConfig, **routes) -> RoutingConfig:
    return config.model_copy(update={"routes": {**config.routes, **routes}})


def studio_query(root: ET.Element) -> tuple[str, dict[str, list[str]]]:
    assert verbs(root) == ["Redirect"]
    redirect = root.find("Redirect")
    assert redirect.get("method") == "POST"
    url = urlsplit(redirect.text)
    assert (url.scheme, url.netloc) == ("https", "webhooks.twilio.com")
    return url.path, parse_qs(url.query, strict_parsing=True)


# --- Flex --------------------------------------------------------------------------------------


def test_flex_enqueues_with_task_attributes(acme):
    decision = decided(
        "emergency_desk", "flex", intent="emergency", confidence=0.934, summary="Burst pipe in the kitchen.",
        captured=CAPTURED,
    )
    root = parse(dispatch_twiml(decision, acme, CALL, public_url=PUBLIC_URL))

    assert verbs(root) == ["Enqueue"]
    enqueue = root.find("Enqueue")
    assert enqueue.get("workflowSid") == "WW37efa99795cd582f2f4c31893159fe53"
    task = enqueue.find("Task")
    assert (task.get("priority"), task.get("timeout")) == ("100", "600")
    attributes = json.loads(task.text)
    assert attributes["type"] == "inbound"
    assert attributes["from"] == "+15551234567"
    assert attributes["call_sid"] == CALL.call_sid
    assert attributes["name"] == "Ann O'Neil"
    assert attributes["intent"] == "emergency"
    assert attributes["summary"] == "Burst pipe in the kitchen."
    assert attributes["priority"] == 100
    assert attributes["ai_confidence"] == 0.93
    assert attributes["ai_reason"] == "accepted"
    assert attributes["arm"] == "ai"
    assert attributes["captured"] == CAPTURED
    assert {name: attributes[name] for name in CAPTURED} == CAPTURED  # flattened too
    assert (attributes["skill"], attributes["queue_hint"]) == ("emergency", "on_call_engineers")
    assert "language" not in attributes


def test_flex_task_json_is_compact_and_sorted(acme):
    decision = decided("billing_desk", "flex", intent="billing", confidence=0.8)
    task = parse(dispatch_twiml(decision, acme, CALL, public_url=PUBLIC_URL)).find("Enqueue/Task")
    attributes = json.loads(task.text)
    assert task.text == json.dumps(attributes, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    assert task.get("priority") == "30"
    assert attributes["name"] == CALL.caller  # no caller_name captured: the number
    assert attributes["captured"] == {}


def test_flex_task_names_the_fields_the_caller_could_not_give_and_those_to_confirm(acme):
    decision = replace(
        decided("emergency_desk", "flex", intent="emergency", confidence=0.97,
                captured={"caller_name": "Ann", "callback_number": "+15551234567"}),
        reason=DecisionReason.BUDGET_EXPIRED, missing_fields=("address",), unconfirmed_fields=("callback_number",),
    )
    attributes = task_attributes(decision, acme)
    assert (attributes["missing_fields"], attributes["unconfirmed_fields"]) == (["address"], ["callback_number"])
    assert attributes["ai_reason"] == "budget_expired" and attributes["skill"] == "emergency"

    gone = replace(decision, route="gone_since_reload")  # the human route keeps what the agent must ask
    attributes = task_attributes(gone, acme)
    assert (attributes["skill"], attributes["missing_fields"]) == ("front_desk", ["address"])

    complete = decided("billing_desk", "flex", intent="billing", confidence=0.9)
    attributes = task_attributes(complete, acme)
    assert (attributes["missing_fields"], attributes["unconfirmed_fields"]) == ([], [])


def test_flex_language_and_arm_come_from_the_call(acme):
    call = CallFacts(CALL.call_sid, CALL.caller, CALL.called, CALL.account_sid, arm="canary", language="es")
    xml = dispatch_twiml(decided("billing_desk", "flex"), acme, call, public_url=PUBLIC_URL)
    task = parse(xml).find("Enqueue/Task")
    attributes = json.loads(task.text)
    assert (attributes["arm"], attributes["language"]) == ("canary", "es")
    assert attributes["intent"] is None and attributes["ai_confidence"] is None


def test_captured_fields_never_replace_reserved_attributes(acme):
    captured = {"from": "+19999999999", "name": "Mallory", "skill": "hijack", "caller_name": "Bob"}
    task = parse(
        dispatch_twiml(decided("emergency_desk", "flex", captured=captured), acme, CALL, public_url=PUBLIC_URL)
    ).find("Enqueue/Task")
    attributes = json.loads(task.text)
    assert attributes["from"] == CALL.caller
    assert attributes["name"] == "Bob"
    assert attributes["skill"] == "emergency"  # the route's attribute wins over a captured value
    assert attributes["captured"] == captured  # still all there for the agent


def test_flex_special_characters_survive_the_round_trip(acme):
    tricky = {"caller_name": 'Zoë "Z" <O\'Brien> & Sons', "address": "Straße 5 & 6, 東京 </Task>"}
    decision = decided("billing_desk", "flex", captured=tricky, summary='He said "a < b & c"')
    task = parse(dispatch_twiml(decision, acme, CALL, public_url=PUBLIC_URL)).find("Enqueue/Task")
    attributes = json.loads(task.text)
    assert attributes["captured"] == tricky
    assert attributes["name"] == tricky["caller_name"]
    assert attributes["summary"] == 'He said "a < b & c"'


# --- Studio ------------------------------------------------------------------------------------


def test_studio_resume_returns_to_the_waiting_execution(acme):
    decision = decided(
        "schedule_visit", "studio", intent="schedule", confidence=0.87, summary="Dripping tap, wants Tuesday.",
        captured={"caller_name": "Ann", "address": "1 Elm St", "preferred_date": ""},
    )
    path, query = studio_query(parse(dispatch_twiml(decision, acme, CALL, public_url=PUBLIC_URL)))

    assert path == f"/v1/Accounts/{ACME_ACCOUNT}/Flows/{ACME_FLOW}"  # the config's account wins
    assert query == {
        "FlowEvent": ["return"],
        "arm": ["ai"],
        "intent": ["schedule"],
        "route": ["schedule_visit"],
        "confidence": ["0.87"],
        "summary": ["Dripping tap, wants Tuesday."],
        "reason": ["accepted"],
        "caller_name": ["Ann"],
        "address": ["1 Elm St"],
    }  # the empty preferred_date is left out


def test_studio_special_characters_survive_the_round_trip(acme):
    tricky = {"caller_name": 'Zoë "Z" <O\'Brien> & Sons', "address": "Straße 5 & 6, 東京 #2?x=1"}
    decision = decided("schedule_visit", "studio", intent="schedule", captured=tricky, summary="a&b=c <d>")
    xml = dispatch_twiml(decision, acme, CALL, public_url=PUBLIC_URL)
    _, query = studio_query(parse(xml))

    assert query["caller_name"] == [tricky["caller_name"]]
    assert query["address"] == [tricky["address"]]
    assert query["summary"] == ["a&b=c <d>"]
    assert "confidence" not in query  # unknown confidence is skipped, not "None"


def test_studio_summary_is_truncated(acme):
    decision = decided("schedule_visit", "studio", intent="schedule", summary="word " * 500)
    _, query = studio_query(parse(dispatch_twiml(decision, acme, CALL, public_url=PUBLIC_URL)))
    assert len(query["summary"][0]) <= 200
    assert query["summary"][0].endswith("…")


def test_studio_uses_the_request_account_when_the_config_has_none(acme):
    config = acme.model_copy(update={"twilio": TwilioSettings()})
    xml = dispatch_twiml(decided("schedule_visit", "studio"), config, CALL, public_url=PUBLIC_URL)
    path, _ = studio_query(parse(xml))
    assert path == f"/v1/Accounts/{REQUEST_ACCOUNT}/Flows/{ACME_FLOW}"


def test_studio_fresh_starts_a_new_execution(acme):
    flow = "FWabcdefabcdefabcdefabcdefabcdefab"
    config = with_routes(acme, legacy_ivr=StudioRoute(kind="studio", flow_sid=flow, mode="fresh"))
    decision = decided("legacy_ivr", "studio", intent="schedule", captured=CAPTURED)
    path, query = studio_query(parse(dispatch_twiml(decision, config, CALL, public_url=PUBLIC_URL)))
    assert path == f"/v1/Accounts/{ACME_ACCOUNT}/Flows/{flow}"
    assert query == {"Trigger": ["incomingCall"]}  # the data, arm included, is at /calls/{CallSid}/handoff


# --- Resolve, voicemail, SIP -------------------------------------------------------------------


def test_resolve_says_the_answer_then_hangs_up(acme):
    root = parse(dispatch_twiml(decided("opening_hours", "resolve"), acme, CALL, public_url=PUBLIC_URL))
    assert verbs(root) == ["Say", "Hangup"]
    assert root.find("Say").text == acme.routes["opening_hours"].answer
    assert root.find("Say").text.startswith("We're open Monday to Friday")


def test_voicemail_prompts_records_and_hangs_up(acme):
    root = parse(dispatch_twiml(decided("voicemail", "voicemail"), acme, CALL, public_url=PUBLIC_URL))
    assert verbs(root) == ["Say", "Record", "Hangup"]
    assert root.find("Say").text.startswith("Please leave your name")
    record = root.find("Record")
    assert (record.get("maxLength"), record.get("playBeep")) == ("120", "true")
    # An explicit action: without one Twilio re-requests the <Connect action> URL (a loop).
    assert record.get("action") == "https://frontdesk.example.com" + RECORDING_ACTION_PATH


def test_sip_dials_with_answer_on_bridge(acme):
    config = with_routes(acme, pbx=SipRoute(kind="sip", uri="sip:desk@pbx.example.com;transport=tls"))
    root = parse(dispatch_twiml(decided("pbx", "sip"), config, CALL, public_url=PUBLIC_URL))
    assert verbs(root) == ["Dial"]
    dial = root.find("Dial")
    assert dial.get("answerOnBridge") == "true"
    assert [sip.text for sip in dial.findall("Sip")] == ["sip:desk@pbx.example.com;transport=tls"]


# --- No decision, stale decision ---------------------------------------------------------------


def test_fallback_without_decision_is_acme_voicemail(acme):
    xml = fallback_twiml(acme, CALL, public_url=PUBLIC_URL)
    assert xml.strip()
    assert verbs(parse(xml)) == ["Say", "Record", "Hangup"]


def test_fallback_to_flex_says_no_decision(acme):
    config = acme.model_copy(update={"triage": acme.triage.model_copy(update={"fallback_route": "front_desk"})})
    task = parse(fallback_twiml(config, CALL, public_url=PUBLIC_URL)).find("Enqueue/Task")
    attributes = json.loads(task.text)
    assert attributes["ai_reason"] == "no_decision"
    assert (attributes["from"], attributes["name"]) == (CALL.caller, CALL.caller)


def test_unknown_route_falls_back_to_the_human_route(acme):
    decision = decided("gone_since_reload", "flex", intent="billing", confidence=0.9, captured=CAPTURED)
    root = parse(dispatch_twiml(decision, acme, CALL, public_url=PUBLIC_URL))
    enqueue = root.find("Enqueue")
    assert enqueue.get("workflowSid") == "WW145f0063e82132d8795bc84716172e7c"  # front_desk
    attributes = json.loads(enqueue.find("Task").text)
    assert attributes["ai_reason"] == "route_missing"
    assert (attributes["intent"], attributes["captured"]) == ("billing", CAPTURED)
    assert attributes["skill"] == "front_desk"


def test_studio_without_any_account_sid_goes_to_the_human_route(acme):
    config = acme.model_copy(update={"twilio": TwilioSettings()})
    call = CallFacts(CALL.call_sid, CALL.caller, CALL.called, account_sid="")
    root = parse(dispatch_twiml(decided("schedule_visit", "studio"), config, call, public_url=PUBLIC_URL))
    assert verbs(root) == ["Enqueue"]
    assert json.loads(root.find("Enqueue/Task").text)["ai_reason"] == "no_account_sid"


# --- The rollout arm ---------------------------------------------------------------------------


def test_the_arm_travels_on_the_studio_return_and_the_flex_task(acme):
    call = CallFacts(CALL.call_sid, CALL.caller, CALL.called, CALL.account_sid, arm="legacy")
    studio = dispatch_twiml(decided("schedule_visit", "studio"), acme, call, public_url=PUBLIC_URL)
    assert studio_query(parse(studio))[1]["arm"] == ["legacy"]
    flex = dispatch_twiml(decided("billing_desk", "flex"), acme, call, public_url=PUBLIC_URL)
    task = parse(flex).find("Enqueue/Task")
    assert json.loads(task.text)["arm"] == "legacy"


def test_a_legacy_call_from_studio_goes_straight_back_to_its_flow(acme):
    flow = "FWabcdefabcdefabcdefabcdefabcdefab"
    path, query = studio_query(parse(legacy_twiml(acme, CALL, public_url=PUBLIC_URL, resume_flow_sid=flow)))
    assert path == f"/v1/Accounts/{ACME_ACCOUNT}/Flows/{flow}"
    assert query == {"FlowEvent": ["return"], "arm": ["legacy"]}


def test_a_legacy_call_to_our_number_gets_the_legacy_route_default_the_fallback(acme):
    assert verbs(parse(legacy_twiml(acme, CALL, public_url=PUBLIC_URL))) == ["Say", "Record", "Hangup"]
    config = acme.model_copy(update={"rollout": acme.rollout.model_copy(update={"legacy_route": "front_desk"})})
    call = CallFacts(CALL.call_sid, CALL.caller, CALL.called, CALL.account_sid, arm="legacy")
    task = parse(legacy_twiml(config, call, public_url=PUBLIC_URL)).find("Enqueue/Task")
    attributes = json.loads(task.text)
    assert (attributes["ai_reason"], attributes["arm"], attributes["intent"]) == ("legacy", "legacy", None)


def test_a_legacy_call_from_studio_without_any_account_sid_gets_the_legacy_route(acme):
    config = acme.model_copy(update={"twilio": TwilioSettings()})
    call = CallFacts(CALL.call_sid, CALL.caller, CALL.called, account_sid="", arm="legacy")
    root = parse(legacy_twiml(config, call, public_url=PUBLIC_URL, resume_flow_sid=ACME_FLOW))
    assert verbs(root) == ["Say", "Record", "Hangup"]
