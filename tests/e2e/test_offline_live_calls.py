"""End to end, the offline engine on live calls: a call it answers alone (bank config), and the failover
from Realtime (fake) at the two moments it can fail: refused at the start, dropped mid-call. The caller
really talks (Piper text-to-speech, µ-law 8 kHz) and the engine really listens (VAD, Whisper tiny.en)."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ElementTree
from functools import lru_cache
from typing import Any

import pytest

from bridge.twilio.mulaw import silence
from orchestrator.config.routing import RoutingConfig, load_routing_config
from orchestrator.engines.offline.engine import OfflineConnector, load_intent_model, load_offline_speech
from orchestrator.engines.tools import RECORD_DETAILS
from orchestrator.testing.fake_realtime import (
    Drop,
    Scenario,
    SendError,
    UserSpeech,
    after_audio_frames,
    call_function,
    on,
)
from orchestrator.testing.twilio_caller import Say, Wait, WaitForAgent, fetch_call_record
from tests.live_call_support import EXAMPLES, FrontDesk, assert_closed_in_order, front_desk, greeting, metric

BANK = EXAMPLES / "harper_valley_bank.toml"
ACME_BILLING_WORKFLOW = "WW77927f36a49d594244217cbcbcae9cee"
VOICEMAIL = ["Say", "Record", "Hangup"]  # Acme's fallback route

SPEECH = load_offline_speech()
needs_speech = pytest.mark.skipif(SPEECH.speech is None, reason=f"offline speech: {SPEECH.problem}")


@lru_cache(maxsize=32)
def spoken(text: str) -> bytes:
    """The caller saying `text` (µ-law 8 kHz), with a little silence before and after."""
    assert SPEECH.speech is not None
    return silence(200) + SPEECH.speech.synthesizer.synthesize(text) + silence(900)


def caller_says(*lines: str) -> list[Any]:
    steps: list[Any] = [WaitForAgent(quiet_ms=500)]
    for line in lines:
        steps += [Say(spoken(line), line), WaitForAgent(quiet_ms=500)]
    return steps


def offline_failover(config: RoutingConfig) -> OfflineConnector:
    return OfflineConnector(config, load_intent_model(config), SPEECH.speech)


def enqueue_of(twiml: str | None) -> tuple[str | None, dict[str, Any]]:
    enqueue = ElementTree.fromstring(twiml or "<Response/>").find("Enqueue")
    assert enqueue is not None, twiml
    return enqueue.get("workflowSid"), json.loads(enqueue.find("Task").text)


def tags(twiml: str | None) -> list[str]:
    return [child.tag for child in ElementTree.fromstring(twiml or "<Response/>")]


async def pass_record(desk: FrontDesk, call_sid: str) -> dict[str, Any]:
    record = await fetch_call_record(desk.server.base_url, call_sid, desk.server.auth_token)
    assert record is not None
    return record["passes"][0]


def refused_scenario() -> Scenario:
    return Scenario(refuse_status=503)


@needs_speech
async def test_refused_at_the_start_the_offline_engine_takes_the_call_to_the_right_route(tmp_path):
    async with front_desk(tmp_path, refused_scenario(), failover=offline_failover) as desk:
        result = await desk.call(caller_says("I have a question about my invoice, I think I was charged twice."))
        workflow, attributes = enqueue_of(result.final_twiml)
        assert workflow == ACME_BILLING_WORKFLOW and attributes["intent"] == "billing"
        assert result.media_closed_by == "server" and result.media_closed_at <= result.action_answered_at
        record = await pass_record(desk, result.call_sid)
        assert record["decision"]["reason"] == "accepted"
        assert any(note.startswith("failover to offline: engine_unavailable") for note in record["outcome"]["notes"])
        # The caller heard the offline engine: greeting, then the handoff line.
        assert result.audio_received_ms > 1500 and result.violations == []
        assert metric(desk, "engine_failovers_total") == 1
        desk.assert_nothing_of_the_call_remains()


@needs_speech
async def test_dropped_mid_call_the_offline_engine_goes_on_with_what_realtime_captured(tmp_path):
    # Realtime greets, hears the caller's need and name, records the name, then its socket dies.
    heard = UserSpeech(transcript="hi this is ann lee, I think I was charged twice on my last bill")
    scenario = Scenario(steps=[
        greeting(),
        on(after_audio_frames(15), heard, call_function(RECORD_DETAILS, {"caller_name": "Ann Lee"})),
        on(after_audio_frames(40), Drop()),
    ])
    steps = [WaitForAgent(quiet_ms=500), Say(spoken("Hi, this is Ann Lee. I think I was charged twice."), "need"),
             WaitForAgent(quiet_ms=800, timeout_ms=20000)]
    async with front_desk(tmp_path, scenario, failover=offline_failover) as desk:
        result = await desk.call(steps)
        workflow, attributes = enqueue_of(result.final_twiml)
        # The offline engine classified what Realtime had heard, and the name Realtime captured went on.
        assert workflow == ACME_BILLING_WORKFLOW and attributes["intent"] == "billing"
        assert attributes["caller_name"] == "Ann Lee"
        session = desk.realtime_session_of(result)
        assert session.closed_by == "server" and session.close_code == 1006
        record = await pass_record(desk, result.call_sid)
        assert record["decision"]["reason"] == "accepted"
        assert record["outcome"]["state_path"] == ["greeting", "capture", "classify", "dispatch", "teardown", "ended"]
        assert any(note.startswith("failover to offline: engine_dropped") for note in record["outcome"]["notes"])
        desk.assert_nothing_of_the_call_remains()


@needs_speech
async def test_a_fatal_error_mid_call_also_fails_over_and_the_caller_is_asked_again(tmp_path):
    # Nothing heard yet when Realtime errors: the offline engine asks the caller to say it again.
    scenario = Scenario(steps=[greeting(), on(after_audio_frames(5), SendError("server_error", "boom"))])
    steps = caller_says("Sorry, I wanted to ask about a refund on my bill.")
    async with front_desk(tmp_path, scenario, failover=offline_failover) as desk:
        result = await desk.call(steps)
        workflow, attributes = enqueue_of(result.final_twiml)
        assert workflow == ACME_BILLING_WORKFLOW and attributes["intent"] == "billing"
        record = await pass_record(desk, result.call_sid)
        assert any(note.startswith("failover to offline: engine_error: server_error") for note in record["outcome"]["notes"])
        assert_closed_in_order(desk, result)
        desk.assert_nothing_of_the_call_remains()


async def test_without_failover_or_in_text_mode_a_refused_call_takes_the_fallback_route(tmp_path):
    # Text mode (no speech models): the offline engine refuses live calls, so the fallback route it is.
    def text_mode(config: RoutingConfig) -> OfflineConnector:
        return OfflineConnector(config, load_intent_model(config), None, text_mode_reason="testing text mode")

    async with front_desk(tmp_path, refused_scenario(), failover=text_mode) as desk:
        result = await desk.call()
        assert tags(result.final_twiml) == VOICEMAIL
        record = await pass_record(desk, result.call_sid)
        assert record["decision"]["reason"] == "engine_failed"
        assert metric(desk, "engine_unavailable_total") == 2  # Realtime, then the offline engine
        desk.assert_nothing_of_the_call_remains()


@needs_speech
async def test_the_offline_engine_alone_routes_a_bank_caller_to_the_card_queue(tmp_path):
    config = load_routing_config(BANK)
    card_route = next(intent.route for intent in config.intents if intent.name == "replace_card")
    workflow_sid = config.routes[card_route].workflow_sid
    async with front_desk(tmp_path, Scenario(), config_path=BANK) as desk:
        desk.server.state.connector = offline_failover(config)  # as `serve` does with no OpenAI key
        result = await desk.call(caller_says("Hi, I lost my credit card and I need a new one."))
        workflow, attributes = enqueue_of(result.final_twiml)
        assert workflow == workflow_sid and attributes["intent"] == "replace_card"
        assert desk.fake.sessions == []  # Realtime was never asked
        desk.assert_nothing_of_the_call_remains()


@needs_speech
async def test_a_caller_talking_over_the_greeting_stops_it_and_is_heard(tmp_path):
    config = load_routing_config(BANK)
    async with front_desk(tmp_path, refused_scenario(), config_path=BANK, failover=offline_failover) as desk:
        # The caller does not wait for the greeting to end: barge-in, as with Realtime. (At twice real time,
        # so that the greeting has surely started playing 2 s into the call.)
        steps = [Wait(2000), Say(spoken("I lost my credit card and I need a new one."), "need"),
                 WaitForAgent(quiet_ms=500)]
        result = await desk.call(steps, speed=2.0)
        assert result.clears >= 1 and result.audio_cleared_ms > 0
        assert metric(desk, "barge_ins_total") >= 1
        workflow, attributes = enqueue_of(result.final_twiml)
        card_route = next(intent.route for intent in config.intents if intent.name == "replace_card")
        assert workflow == config.routes[card_route].workflow_sid and attributes["intent"] == "replace_card"
        desk.assert_nothing_of_the_call_remains()


@needs_speech
async def test_a_need_no_intent_serves_is_clarified_once_then_goes_to_the_fallback_before_the_budget(tmp_path):
    config = load_routing_config(EXAMPLES / "acme_plumbing.toml")
    async with front_desk(tmp_path, Scenario()) as desk:
        desk.server.state.connector = offline_failover(config)  # as `serve` does with no OpenAI key
        result = await desk.call(caller_says("I'd like to buy a new sofa for my lounge.", "Just a sofa, please."))
        assert tags(result.final_twiml) == VOICEMAIL
        record = await pass_record(desk, result.call_sid)
        decision = record["decision"]
        assert decision["reason"] == "unknown_intent" and decision["intent"] == "unknown"
        assert decision["decided_after_s"] < config.triage.budget_seconds
        assert desk.fake.sessions == []
        desk.assert_nothing_of_the_call_remains()
