"""The machine's language guard: a caller in a language the front desk does not serve (or the engine cannot
speak) goes to the human route at once, with the language kept; a served language changes nothing."""
from __future__ import annotations

from dataclasses import replace

from machines import events as ev
from machines.call_machine import CallFlow
from machines.decision import DecisionReason
from machines.effects import AnswerTool, PersistDecision
from machines.policy import CallHistory
from tests.machine_fixtures import POLICY, FakeClock

BILINGUAL = replace(POLICY, supported_languages=frozenset({"en-US", "es-US"}))


def capturing_call(policy=BILINGUAL):
    machine = CallFlow(policy, FakeClock()).start_call("CA" + "2" * 32)
    machine.handle(ev.RealtimeOpened())
    machine.handle(ev.GreetingPlayed())
    return machine


def test_a_served_language_is_recorded_and_the_triage_goes_on():
    machine = capturing_call()
    effects = machine.handle(ev.DetailsCaptured({"language": "es-US"}, "t1"))
    assert machine.state == "capture" and machine.captured == {"language": "es-US"}
    assert effects == [AnswerTool("t1", "recorded", "language")]


def test_a_language_not_served_goes_to_the_human_route_before_any_intent():
    machine = capturing_call()
    effects = machine.handle(ev.DetailsCaptured({"language": "fr-FR"}, "t1"))
    assert machine.state == "dispatch"
    decision = machine.decision
    assert decision.route == POLICY.human_route and decision.reason is DecisionReason.UNSUPPORTED_LANGUAGE
    assert decision.captured["language"] == "fr-FR" and decision.intent is None
    assert isinstance(effects[0], AnswerTool) and effects[0].outcome == "handed_to_fallback"
    assert any(isinstance(effect, PersistDecision) for effect in effects)
    # A proposal that comes after is ignored: no English intent is guessed for this caller.
    machine.handle(ev.IntentProposed("billing", 0.95, "", "t2"))
    assert machine.decision.reason is DecisionReason.UNSUPPORTED_LANGUAGE


def test_without_languages_configured_any_language_is_just_a_detail():
    machine = capturing_call(POLICY)
    machine.handle(ev.DetailsCaptured({"language": "fr-FR"}))
    assert machine.state == "capture"


def test_an_engine_that_cannot_speak_the_language_sends_the_caller_to_a_person_even_if_the_desk_serves_it():
    machine = CallFlow(BILINGUAL, FakeClock()).start_call("CA" + "3" * 32)
    machine.handle(ev.DetailsCaptured({"language": "es-US"}))  # known from Studio before the engine opened
    machine.handle(ev.LanguageNotServed("es-US"))
    # No engine is open yet, so there is no handoff line to wait for: straight on to teardown.
    assert machine.states_visited == ["greeting", "dispatch", "teardown"] and machine.decision.reason is DecisionReason.UNSUPPORTED_LANGUAGE
    assert machine.decision.captured == {"language": "es-US"}


def test_the_reentry_guard_checks_the_node_of_the_callers_language():
    spanish_node = "FW0/schedule_visit_es"
    schedule = replace(POLICY.routes["schedule_visit"], studio_node_by_language={"es-US": spanish_node})
    policy = replace(BILINGUAL, routes={**POLICY.routes, "schedule_visit": schedule})
    history = CallHistory(visited_nodes=frozenset({spanish_node}))
    for language, expected in (("es-US", DecisionReason.REENTRY_REFUSED), ("en-US", DecisionReason.ACCEPTED)):
        machine = CallFlow(policy, FakeClock()).start_call("CA" + "4" * 32, history)
        machine.handle(ev.RealtimeOpened())
        machine.handle(ev.GreetingPlayed())
        machine.handle(ev.DetailsCaptured({"language": language, "caller_name": "Ana"}))
        machine.handle(ev.IntentProposed("schedule", 0.9))
        assert machine.decision.reason is expected, language
