"""End to end with the fake Realtime: callers in other languages. The language is detected (the model
records it), the agent's lines follow it, it travels in the Flex task and the Studio return, a language
Studio chose is kept, and a language the front desk does not serve goes to a person."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ElementTree
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from orchestrator.config.routing import load_routing_config
from orchestrator.engines.offline.engine import OfflineConnector, load_intent_model, load_offline_speech
from orchestrator.engines.tools import RECORD_DETAILS
from orchestrator.testing.fake_realtime import Scenario, UserSpeech, after_audio_frames, call_function, on
from orchestrator.testing.twilio_caller import fetch_call_record
from tests.live_call_support import EXAMPLES, FrontDesk, front_desk, greeting, handoff_line, propose

BILINGUAL = EXAMPLES / "bilingual_plumbing.toml"
CONFIG = load_routing_config(BILINGUAL)
SPANISH = "es-US"


def enqueue_of(twiml: str | None) -> tuple[str | None, dict[str, Any]]:
    enqueue = ElementTree.fromstring(twiml or "<Response/>").find("Enqueue")
    assert enqueue is not None, twiml
    return enqueue.get("workflowSid"), json.loads(enqueue.find("Task").text)


def response_instructions(desk: FrontDesk) -> list[str]:
    """The instructions of every response.create our server sent (the lines it asked the model to say)."""
    return [
        (event.data.get("response") or {}).get("instructions") or ""
        for event in desk.fake.last_session.events_of_type("response.create")
    ]


def spanish_caller(intent: str, language: str = SPANISH, details: dict[str, str] | None = None) -> Scenario:
    heard = UserSpeech(transcript="hola, tengo una pregunta sobre mi factura")
    return Scenario(steps=[
        greeting(),
        on(after_audio_frames(10), heard, call_function(RECORD_DETAILS, {"language": language, **(details or {})})),
        on(after_audio_frames(5), propose(intent)),
        handoff_line(),
    ])


async def test_a_spanish_caller_reaches_the_spanish_billing_workflow_with_the_language_on_the_task(tmp_path):
    async with front_desk(tmp_path, spanish_caller("billing"), config_path=BILINGUAL) as desk:
        result = await desk.call()
        workflow, attributes = enqueue_of(result.final_twiml)
        assert workflow == CONFIG.route_for("billing_desk", SPANISH).workflow_sid
        assert workflow != CONFIG.routes["billing_desk"].workflow_sid
        assert attributes["language"] == SPANISH and attributes["intent"] == "billing"
        # Once the language was known, the handoff line was asked for in Spanish.
        spanish_handoff = CONFIG.lines_for(SPANISH).handoff
        assert spanish_handoff != CONFIG.lines.handoff
        assert any(spanish_handoff in text for text in response_instructions(desk))
        record = await fetch_call_record(desk.server.base_url, result.call_sid, desk.server.auth_token)
        assert record["passes"][0]["decision"]["captured"]["language"] == SPANISH
        desk.assert_nothing_of_the_call_remains()


async def test_a_caller_in_a_language_not_served_goes_to_the_human_route_with_the_language(tmp_path):
    async with front_desk(tmp_path, spanish_caller("billing", language="fr-FR"), config_path=BILINGUAL) as desk:
        result = await desk.call()
        workflow, attributes = enqueue_of(result.final_twiml)
        human = CONFIG.routes[CONFIG.triage.human_route]
        assert workflow == human.workflow_sid
        assert attributes["language"] == "fr-FR" and attributes["ai_reason"] == "unsupported_language"
        # No English intent was guessed for them: the proposal came after the decision and was ignored.
        record = await fetch_call_record(desk.server.base_url, result.call_sid, desk.server.auth_token)
        assert record["passes"][0]["decision"]["reason"] == "unsupported_language"
        desk.assert_nothing_of_the_call_remains()


async def test_a_language_studio_chose_is_kept_greeted_in_and_returned_to_studio(tmp_path):
    details = {"caller_name": "Ana Ruiz", "address": "1 Calle Mayor, Springfield"}
    scenario = spanish_caller("schedule", details=details)
    studio_entry = "flow_sid=FW0123456789abcdef0123456789abcdef&node=ai_front_desk&language=es-us"
    async with front_desk(tmp_path, scenario, config_path=BILINGUAL) as desk:
        result = await desk.call(incoming_query=studio_entry)
        assert result.custom_parameters["language"] == SPANISH  # normalised to the config's code
        spanish_greeting = CONFIG.lines_for(SPANISH).greeting
        assert spanish_greeting in response_instructions(desk)[0]
        redirect = ElementTree.fromstring(result.final_twiml).find("Redirect")
        query = parse_qs(urlsplit(redirect.text).query)
        assert query["language"] == [SPANISH] and query["intent"] == ["schedule"]
        # Resume mode returns to the execution that sent the call; the flow's Split routes on intent and
        # language (the Spanish node is what the config records for the re-entry guard).
        assert redirect.text.startswith(f"https://webhooks.twilio.com/v1/Accounts/{CONFIG.twilio.account_sid}/Flows/")
        assert "FlowEvent=return" in redirect.text
        desk.assert_nothing_of_the_call_remains()


async def test_a_caller_number_from_mexico_is_greeted_in_spanish(tmp_path):
    prefix, language = next(iter(CONFIG.languages.by_caller_prefix.items()))
    async with front_desk(tmp_path, spanish_caller("billing"), config_path=BILINGUAL) as desk:
        result = await desk.call(caller=prefix + "5512345678")
        assert result.custom_parameters["language"] == language
        assert CONFIG.lines_for(language).greeting in response_instructions(desk)[0]


async def test_the_english_only_offline_engine_sends_a_known_spanish_caller_to_a_person(tmp_path):
    speech = load_offline_speech().speech
    if speech is None:
        pytest.skip("the speech extra is not installed")
    async with front_desk(tmp_path, Scenario(), config_path=BILINGUAL) as desk:
        desk.server.state.connector = OfflineConnector(CONFIG, load_intent_model(CONFIG), speech)
        result = await desk.call(incoming_query="language=es-US")
        workflow, attributes = enqueue_of(result.final_twiml)
        assert workflow == CONFIG.routes[CONFIG.triage.human_route].workflow_sid
        assert attributes["language"] == SPANISH and attributes["ai_reason"] == "unsupported_language"
        assert desk.fake.sessions == []
        desk.assert_nothing_of_the_call_remains()
