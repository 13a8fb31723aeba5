"""End to end, one call per route kind: simulated Twilio caller → server → fake Realtime, over loopback.

Each test asserts the TwiML served at the action URL, that the Realtime socket closed before the Media
Stream and before the action URL was answered, and that nothing of the call remains afterwards.
"""
from __future__ import annotations

import json
import xml.etree.ElementTree as ElementTree
from urllib.parse import parse_qs, urlsplit

import httpx

from bridge.twilio.mulaw import tone
from orchestrator.engines.tools import RECORD_DETAILS
from orchestrator.testing.fake_realtime import (
    Scenario,
    after_audio_frames,
    after_response_create,
    call_function,
    on,
    speak,
)
from orchestrator.testing.twilio_caller import PressDigit, Say, Wait, WaitForAgent, fetch_call_record
from tests.live_call_support import (
    DETAILS,
    assert_closed_in_order,
    every_route_config,
    front_desk,
    greeting,
    handoff_line,
    metric,
    propose,
    signed_headers,
    triage_scenario,
    with_triage,
)

ACME_ACCOUNT = "AC6918b3f30d86a2b7b27af58bbe029f87"


def parse(twiml: str | None) -> ElementTree.Element:
    assert twiml is not None
    return ElementTree.fromstring(twiml)


async def test_flex_route_enqueues_the_live_call_with_structured_task_attributes(tmp_path):
    async with front_desk(tmp_path, triage_scenario("emergency", details=DETAILS)) as desk:
        result = await desk.call(caller="+14155550123")
        assert_closed_in_order(desk, result)

        enqueue = parse(result.final_twiml).find("Enqueue")
        assert enqueue is not None and enqueue.get("workflowSid") == "WW37efa99795cd582f2f4c31893159fe53"
        task = enqueue.find("Task")
        assert task.get("priority") == "100" and task.get("timeout") == "600"
        attributes = json.loads(task.text)
        assert attributes["type"] == "inbound"
        assert attributes["from"] == "+14155550123"
        assert attributes["call_sid"] == result.call_sid
        assert attributes["intent"] == "emergency"
        assert attributes["name"] == "Ann Lee"
        assert attributes["summary"] == "caller needs help"
        assert attributes["ai_confidence"] == 0.9
        assert attributes["captured"] == DETAILS
        assert attributes["callback_number"] == "+14155552671"
        assert attributes["skill"] == "emergency"

        # The engine spoke the handoff line before the call moved on, and heard what became of its tools.
        session = desk.realtime_session_of(result)
        outputs = [e.data["item"] for e in session.events_of_type("conversation.item.create")]
        assert [json.loads(o["output"])["status"] for o in outputs] == ["recorded", "accepted"]
        requests = session.events_of_type("response.create")
        assert requests[0].data["response"]["metadata"] == {"tag": "greeting"}
        assert requests[-1].data["response"]["metadata"] == {"tag": "handoff"}
        (handoff_played,) = [mark for mark in result.marks if mark.name.startswith("line-handoff")]
        assert not handoff_played.cleared and handoff_played.at <= session.closed_at  # heard before teardown
        assert desk.fake.violations == [] and result.violations == []

        record = await fetch_call_record(desk.server.base_url, result.call_sid, desk.server.auth_token)
        (first,) = record["passes"]
        assert first["decision"]["route"] == "emergency_desk" and first["answered_route"] == "emergency_desk"
        assert first["outcome"]["state_path"][-3:] == ["dispatch", "teardown", "ended"]
        assert "classify" in first["outcome"]["state_path"]
        assert metric(desk, "dispatch_decisions_total", kind="flex", reason="accepted") == 1
        desk.assert_nothing_of_the_call_remains()


async def test_the_handoff_line_is_known_when_the_engine_does_not_echo_metadata(tmp_path):
    # A proxy or deployment that drops `metadata`: the response.created after our response.create is ours.
    async with front_desk(tmp_path, triage_scenario("emergency", details=DETAILS, drop_metadata=True)) as desk:
        result = await desk.call(caller="+14155550123")
        assert_closed_in_order(desk, result)
        assert parse(result.final_twiml).find("Enqueue") is not None

        session = desk.realtime_session_of(result)
        created = session.sent_of_type("response.created")
        assert created and all(event["response"]["metadata"] is None for event in created)
        (handoff_played,) = [mark for mark in result.marks if mark.name.startswith("line-handoff")]
        assert not handoff_played.cleared
        # The call moved on when the line was heard, not after the 8 s handoff-line timeout.
        assert result.action_answered_at - result.media_opened_at < 4.0
        assert desk.fake.violations == [] and result.violations == []


async def test_studio_resume_redirects_back_into_the_execution_with_the_captured_values(tmp_path):
    details = {"caller_name": "Bo Chen", "address": "9 Elm Rd"}
    async with front_desk(tmp_path, triage_scenario("schedule", details=details)) as desk:
        result = await desk.call()
        assert_closed_in_order(desk, result)

        redirect = parse(result.final_twiml).find("Redirect")
        url = urlsplit(redirect.text)
        assert redirect.get("method") == "POST"
        assert (url.scheme, url.netloc) == ("https", "webhooks.twilio.com")
        assert url.path == f"/v1/Accounts/{ACME_ACCOUNT}/Flows/FW5670575a869e4a142814c71a1217f9f0"
        query = {key: values[0] for key, values in parse_qs(url.query).items()}
        assert query["FlowEvent"] == "return"
        assert query["intent"] == "schedule" and query["route"] == "schedule_visit"
        assert query["caller_name"] == "Bo Chen" and query["address"] == "9 Elm Rd"

        record = await fetch_call_record(desk.server.base_url, result.call_sid, desk.server.auth_token)
        assert record["visited_nodes"] == ["FW5670575a869e4a142814c71a1217f9f0/schedule_visit"]
        desk.assert_nothing_of_the_call_remains()


async def test_studio_fresh_starts_an_execution_and_serves_the_data_to_the_flow(tmp_path):
    config = every_route_config(tmp_path)
    scenario = triage_scenario("feedback")
    async with front_desk(tmp_path, scenario, config_path=config, handoff_token="flow-secret") as desk:
        result = await desk.call()
        assert_closed_in_order(desk, result)

        redirect = parse(result.final_twiml).find("Redirect")
        assert redirect.text == (
            f"https://webhooks.twilio.com/v1/Accounts/{ACME_ACCOUNT}/Flows/FW0123456789abcdef0123456789abcdef"
            "?Trigger=incomingCall"
        )

        url = f"{desk.server.base_url}/calls/{result.call_sid}/handoff"
        async with httpx.AsyncClient() as http:
            refused = await http.get(url)
            wrong = await http.get(url, headers={"Authorization": "Bearer nope"})
            by_token = await http.get(url, headers={"Authorization": "Bearer flow-secret"})
            by_signature = await http.get(url, headers=signed_headers(url, desk.server.auth_token))
            unknown = await http.get(
                url.replace(result.call_sid, "CA" + "f" * 32), headers={"Authorization": "Bearer flow-secret"}
            )
        assert refused.status_code == 403 and wrong.status_code == 403
        assert by_token.status_code == 200 and by_signature.json() == by_token.json()
        handoff = by_token.json()
        assert handoff["call_sid"] == result.call_sid and handoff["pass"] == 1
        assert handoff["intent"] == "feedback" and handoff["route"] == "feedback_survey"
        assert unknown.status_code == 404
        desk.assert_nothing_of_the_call_remains()


async def test_resolve_route_answers_then_hangs_up_without_a_spoken_handoff(tmp_path):
    async with front_desk(tmp_path, triage_scenario("opening_hours")) as desk:
        result = await desk.call()
        assert_closed_in_order(desk, result)

        root = parse(result.final_twiml)
        assert [child.tag for child in root] == ["Say", "Hangup"]
        assert root.find("Say").text.startswith("We're open Monday to Friday")
        # The route's TwiML speaks for itself: no "putting you through" was asked of the engine.
        requests = desk.realtime_session_of(result).events_of_type("response.create")
        assert all(r.data.get("response", {}).get("metadata") != {"tag": "handoff"} for r in requests)
        desk.assert_nothing_of_the_call_remains()


async def test_voicemail_route_records_and_the_recording_action_hangs_up(tmp_path):
    # "unknown" with low confidence: the machine asks twice, then gives up to the fallback (voicemail).
    scenario = triage_scenario("unknown")
    async with front_desk(tmp_path, scenario, config_path=_no_clarification(tmp_path)) as desk:
        result = await desk.call()
        assert_closed_in_order(desk, result)

        root = parse(result.final_twiml)
        assert [child.tag for child in root] == ["Say", "Record", "Hangup"]
        record_action = root.find("Record").get("action")
        assert record_action == f"{desk.server.public_url}/voice/recorded"
        async with httpx.AsyncClient() as http:
            params = {"CallSid": result.call_sid, "RecordingUrl": "https://api.twilio.com/rec/RE1"}
            answered = await http.post(record_action, data=params,
                                       headers=signed_headers(record_action, desk.server.auth_token, params))
            unsigned = await http.post(record_action, data=params)
        assert answered.status_code == 200 and [c.tag for c in parse(answered.text)] == ["Hangup"]
        assert unsigned.status_code == 403

        record = await fetch_call_record(desk.server.base_url, result.call_sid, desk.server.auth_token)
        assert record["passes"][0]["decision"]["reason"] == "unknown_intent"
        desk.assert_nothing_of_the_call_remains()


async def test_sip_route_dials_the_sip_uri(tmp_path):
    async with front_desk(tmp_path, triage_scenario("sales"), config_path=every_route_config(tmp_path)) as desk:
        result = await desk.call()
        assert_closed_in_order(desk, result)

        dial = parse(result.final_twiml).find("Dial")
        assert dial.get("answerOnBridge") == "true"
        assert dial.find("Sip").text == "sip:sales@pbx.example.com"
        desk.assert_nothing_of_the_call_remains()


def _no_clarification(tmp_path):
    return with_triage(tmp_path, max_clarifications=0)


async def test_low_confidence_gets_one_clarifying_line_then_the_clear_answer_is_routed(tmp_path):
    scenario = Scenario(steps=[
        greeting(),
        on(after_audio_frames(10), propose("billing", confidence=0.3)),
        on(after_response_create(), speak(ms=300, transcript="Is this about a bill?")),  # the clarify line
        on(after_audio_frames(10), propose("billing", confidence=0.95)),  # the caller's answer
        handoff_line(),
    ])
    async with front_desk(tmp_path, scenario) as desk:
        result = await desk.call()
        session = desk.realtime_session_of(result)
        requests = [r.data.get("response", {}) for r in session.events_of_type("response.create")]
        tags = [r.get("metadata", {}).get("tag") if r.get("metadata") else None for r in requests]
        assert tags[0] == "greeting" and "clarify" in tags and tags[-1] == "handoff"
        clarify = requests[tags.index("clarify")]
        assert desk.config.lines.clarify in clarify["instructions"]
        outputs = [json.loads(e.data["item"]["output"])["status"] for e in session.events_of_type("conversation.item.create")]
        assert outputs == ["clarify", "accepted"]
        assert json.loads(parse(result.final_twiml).find("Enqueue/Task").text)["intent"] == "billing"
        desk.assert_nothing_of_the_call_remains()


async def test_missing_required_details_are_asked_for_by_name_before_the_route_is_taken(tmp_path):
    scenario = Scenario(steps=[
        greeting(),
        on(after_audio_frames(10), propose("emergency", confidence=0.95)),
        on(after_response_create(), speak(ms=300, transcript="Could I take your name and address?")),
        on(after_audio_frames(10), call_function(RECORD_DETAILS, DETAILS)),  # the caller's answer
        on(after_response_create(), propose("emergency", confidence=0.95)),
        handoff_line(),
    ])
    async with front_desk(tmp_path, scenario) as desk:
        result = await desk.call()
        session = desk.realtime_session_of(result)
        requests = [r.data.get("response", {}) for r in session.events_of_type("response.create")]
        ask = [r for r in requests if (r.get("metadata") or {}).get("tag") == "ask_details"]
        assert len(ask) == 1
        for field in ("caller_name", "address"):
            assert field in ask[0]["instructions"]
        # The callback number is the caller's own (From), pre-filled: the caller is asked once to confirm it.
        assert "- callback_number: " in ask[0]["instructions"] and "known from caller ID" in ask[0]["instructions"]
        attributes = json.loads(parse(result.final_twiml).find("Enqueue/Task").text)
        assert attributes["intent"] == "emergency" and attributes["captured"] == DETAILS
        desk.assert_nothing_of_the_call_remains()


async def test_an_emergency_caller_who_gives_no_number_is_put_through_with_their_caller_id(tmp_path):
    # The caller gives their name and address, never a number: the callback number is their own (From),
    # pre-filled unconfirmed, and the call reaches the emergency queue with a person to confirm it.
    given = {"caller_name": DETAILS["caller_name"], "address": DETAILS["address"]}
    scenario = Scenario(steps=[
        greeting(),
        on(after_audio_frames(10), call_function(RECORD_DETAILS, given)),
        on(after_response_create(), propose("emergency", confidence=0.95)),
        handoff_line(),
    ])
    async with front_desk(tmp_path, scenario) as desk:
        result = await desk.call(caller="+14155550123")
        attributes = json.loads(parse(result.final_twiml).find("Enqueue/Task").text)
        assert attributes["intent"] == "emergency"
        assert attributes["captured"]["callback_number"] == "+14155550123"
        assert attributes["unconfirmed_fields"] == ["callback_number"]
        desk.assert_nothing_of_the_call_remains()


async def test_a_caller_who_presses_the_old_menus_key_goes_where_that_key_went(tmp_path):
    # Acme's old menu had "press 3 for billing": the key proposes billing at full confidence; the model
    # proposes nothing itself.
    scenario = Scenario(steps=[greeting(), handoff_line()])
    async with front_desk(tmp_path, scenario) as desk:
        result = await desk.call([WaitForAgent(quiet_ms=300), PressDigit("3"), Wait(1500)])
        attributes = json.loads(parse(result.final_twiml).find("Enqueue/Task").text)
        assert attributes["intent"] == "billing" and attributes["ai_confidence"] == 1.0
        desk.assert_nothing_of_the_call_remains()


async def test_a_number_typed_on_the_keypad_while_it_is_asked_fills_it_confirmed(tmp_path):
    # The emergency needs a name, a number and an address; the caller types the number when it is asked (the
    # keys are not a menu choice then), the agent thanks them and asks for the rest; the number the caller
    # typed, not the one they call from, reaches the Flex task, with nothing left to confirm.
    scenario = Scenario(steps=[
        greeting(),
        on(after_audio_frames(10), propose("emergency", confidence=0.95)),
        on(after_response_create(), speak(ms=300, transcript="Could I take a few details? Your number first.")),
        on(after_response_create(), speak(ms=300, transcript="Thank you, I have that. Your name and address?")),
        on(after_audio_frames(10), call_function(RECORD_DETAILS, {k: v for k, v in DETAILS.items()
                                                                  if k != "callback_number"})),
        on(after_response_create(), propose("emergency", confidence=0.95)),
        handoff_line(),
    ])
    keys = [PressDigit(digit) for digit in "4155550199#"]
    async with front_desk(tmp_path, scenario) as desk:
        result = await desk.call(
            [Say(tone(800)), WaitForAgent(quiet_ms=300), *keys, WaitForAgent(quiet_ms=300), Say(tone(800)),
             Wait(3000)],
            caller="+14155550123",
        )
        session = desk.realtime_session_of(result)
        tags = [(r.data.get("response", {}).get("metadata") or {}).get("tag")
                for r in session.events_of_type("response.create")]
        assert "keypad_thanks" in tags
        attributes = json.loads(parse(result.final_twiml).find("Enqueue/Task").text)
        assert attributes["intent"] == "emergency"
        assert attributes["captured"]["callback_number"] == "+14155550199"
        assert attributes["unconfirmed_fields"] == []
        desk.assert_nothing_of_the_call_remains()
