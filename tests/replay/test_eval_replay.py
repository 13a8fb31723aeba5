"""Replaying past calls through the engine interface and the call machine: the offline engine in text
mode, and Realtime (the protocol-faithful fake) in a text-only session."""
from __future__ import annotations

import json

import pytest

from bridge.openai_realtime.client import RealtimeSettings
from orchestrator.config.routing import load_routing_config
from orchestrator.engines.offline.engine import OfflineConnector
from orchestrator.engines.offline.intent_model import IntentModel
from orchestrator.engines.realtime import RealtimeConnector
from orchestrator.engines.tools import agent_instructions, realtime_tools
from orchestrator.replay.corpus import Corpus, CorpusCall, CorpusTurn
from orchestrator.replay.scoring import scorable_calls, score
from orchestrator.replay.text_replay import caller_turns, replay_calls
from orchestrator.testing.fake_realtime import Scenario, after_response_create, on, run_fake_realtime, speak
from tests.live_call_support import ACME, propose


def past_call(call_id: str, *lines: str, intent: str, task: dict | None = None, start_ms: int = 1000) -> CorpusCall:
    turns = tuple(CorpusTurn("caller", text, None, start_ms + 3000 * i, 1000) for i, text in enumerate(lines))
    return CorpusCall(call_id, turns, intent, None, task, None, {}, 1)


ACME_CONFIG = load_routing_config(ACME)


def offline_connector() -> OfflineConnector:
    return OfflineConnector(ACME_CONFIG, IntentModel.fit(ACME_CONFIG), None)


def test_only_the_caller_turns_of_the_first_30_seconds_are_replayed():
    call = CorpusCall("c", (
        CorpusTurn("agent", "hello, acme plumbing", None, 0, 1000),
        CorpusTurn("caller", "[noise] my basement is flooding", None, 2000, 1000),
        CorpusTurn("caller", "also my bill is wrong", None, 31000, 1000),
    ), "emergency", None, None, None, {}, 1)
    assert caller_turns(call) == ["my basement is flooding"]


async def test_offline_replay_decides_as_a_live_call_would():
    calls = [
        past_call("clear", "I think I was charged twice on my invoice", intent="billing"),
        # The emergency route needs a name, a number and an address the past caller never gave.
        past_call("needs_details", "my basement is flooding", intent="emergency"),
        past_call("unclear", "hello", "um well", "yes", "okay", intent="schedule"),
    ]
    outcomes = {o.call_id: o for o in await replay_calls(offline_connector(), ACME_CONFIG, calls)}
    assert outcomes["clear"].intent == "billing" and outcomes["clear"].decision.route == "billing_desk"
    assert outcomes["clear"].decide_ms is not None and outcomes["clear"].turns_sent == 1
    assert outcomes["needs_details"].proposed_intent == "emergency"
    # The past caller ran out of words while asked for details: the machine decides as at a live call's
    # budget. Urgent and trusted, so its own Flex queue, with what the person must ask named.
    needs_details = outcomes["needs_details"].decision
    assert needs_details.reason == "budget_expired" and needs_details.route == "emergency_desk"
    assert needs_details.routed_on_intent and "callback_number" in needs_details.missing_fields
    assert outcomes["needs_details"].intent == "emergency"
    assert outcomes["needs_details"].decide_ms == pytest.approx(ACME_CONFIG.triage_policy().budget_s * 1000, abs=50)
    # Guessed with low confidence three times: two clarifications (Acme allows two), then the fallback.
    assert outcomes["unclear"].intent == "(fallback: low_confidence)"

    summary = score(calls, list(outcomes.values()), ACME_CONFIG, engine="offline", mode="text", min_parity=0.9,
                    skipped={}).to_json()
    assert summary["calls"] == 3 and summary["parity"] == round(2 / 3, 4)
    assert summary["proposal_parity"] == round(2 / 3, 4)
    assert {d["call_id"] for d in summary["disagreements"]} == {"unclear"}
    assert summary["passed"] is False


async def test_flex_parity_compares_the_task_our_decision_enqueues_with_the_past_one():
    billing_workflow = "WW77927f36a49d594244217cbcbcae9cee"
    calls = [
        past_call("same", "I have a question about my invoice", intent="billing",
                  task={"intent": "billing", "workflow_sid": billing_workflow, "priority": 30}),
        past_call("other_priority", "I have a question about my invoice", intent="billing",
                  task={"intent": "billing", "workflow_sid": billing_workflow, "priority": 99}),
    ]
    outcomes = await replay_calls(offline_connector(), ACME_CONFIG, calls)
    flex = score(calls, outcomes, ACME_CONFIG, engine="offline", mode="text", min_parity=0.9, skipped={}).to_json()["flex"]
    assert flex["compared"] == 2 and flex["same_task"] == 1
    assert flex["mismatches"][0]["call_id"] == "other_priority"
    assert flex["mismatches"][0]["checks"] == {"intent": True, "caller_id": True, "workflow": True, "priority": False}


async def test_realtime_replay_uses_a_text_only_session_and_sends_the_caller_words_as_text():
    scenario = Scenario(steps=[
        on(after_response_create(), propose("schedule", 0.92)),
        on(after_response_create(), speak(transcript="Could I have your name and address?")),
    ])
    async with run_fake_realtime(scenario) as fake:
        connector = RealtimeConnector(
            RealtimeSettings(url=fake.url, api_key="sk-test", connect_timeout_s=2, configure_timeout_s=2),
            instructions=agent_instructions(ACME_CONFIG), tools=realtime_tools(ACME_CONFIG),
        )
        calls = [past_call("r1", "can someone come and look at my dripping tap next week", intent="schedule")]
        [outcome] = await replay_calls(connector, ACME_CONFIG, calls)
        session = fake.last_session
    # Acme's schedule route needs a name and an address: the machine asks, the past call has no more turns.
    assert outcome.proposed_intent == "schedule" and outcome.proposed_confidence == 0.92
    # At the budget (and its one extension for details) the call goes to a person, who asks for them.
    assert outcome.problem is None and outcome.decision.route == "front_desk"
    assert outcome.intent == "(person: budget_expired, missing address, caller_name)"
    update = session.events_of_type("session.update")[0].data["session"]
    assert update["output_modalities"] == ["text"] and update["audio"]["input"]["turn_detection"] is None
    items = [e.data["item"] for e in session.events_of_type("conversation.item.create")]
    assert items[0]["content"] == [{"type": "input_text", "text": "can someone come and look at my dripping tap next week"}]
    assert session.violations == [] and session.audio_frames_received == 0
    # The machine's request for details went to the model as a line, and was answered in text.
    assert any(e.data.get("response", {}).get("metadata") == {"tag": "ask_details"}
               for e in session.events_of_type("response.create"))
    assert session.closed_by == "client"


async def test_an_engine_that_refuses_is_a_problem_of_that_call_not_a_crash():
    async with run_fake_realtime(Scenario(refuse_status=503)) as fake:
        connector = RealtimeConnector(
            RealtimeSettings(url=fake.url, api_key="sk-test", connect_timeout_s=2, configure_timeout_s=2),
            instructions="x", tools=[],
        )
        [outcome] = await replay_calls(connector, ACME_CONFIG, [past_call("x", "hi", intent="billing")])
    assert outcome.decision is None and outcome.problem.startswith("engine unavailable")
    assert outcome.intent.startswith("(no decision: engine unavailable")


def test_calls_with_intents_outside_the_config_are_counted_apart():
    corpus = Corpus([past_call("a", "hi", intent="billing"), past_call("b", "hi", intent="mortgage"),
                     CorpusCall("c", (CorpusTurn("caller", "hi", None, 0, 1),), None, None, None, None, {}, 3)],
                    [], None)
    calls, skipped = scorable_calls(corpus, ACME_CONFIG)
    assert [c.call_id for c in calls] == ["a"]
    assert skipped == {"intent not in the config": 1, "no expected intent": 1}
    assert json.dumps(skipped)


async def test_parity_is_reported_per_language_when_the_corpus_names_it():
    from dataclasses import replace

    calls = [
        replace(past_call("en1", "I have a question about my invoice", intent="billing"), language="en-US"),
        replace(past_call("en2", "my basement is flooding", intent="emergency"), language="en-US"),
        replace(past_call("es1", "I have a question about my invoice", intent="billing"), language="es-US"),
    ]
    outcomes = await replay_calls(offline_connector(), ACME_CONFIG, calls)
    figures = score(calls, outcomes, ACME_CONFIG, engine="offline", mode="text", min_parity=0.9, skipped={}).to_json()
    assert figures["per_language"] == {"en-US": {"calls": 2, "parity": 1.0}, "es-US": {"calls": 1, "parity": 1.0}}
    unlabelled = [past_call("x", "I have a question about my invoice", intent="billing")]
    plain = score(unlabelled, await replay_calls(offline_connector(), ACME_CONFIG, unlabelled), ACME_CONFIG,
                  engine="offline", mode="text", min_parity=0.9, skipped={}).to_json()
    assert "per_language" not in plain
