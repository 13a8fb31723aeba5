"""One call per route and per failure path, effect by effect."""
from __future__ import annotations

from machines import events as ev
from machines.call_machine import CallFlow
from machines.decision import DecisionReason
from machines.effects import (
    AnswerTool,
    CallFinished,
    CloseMedia,
    CloseRealtime,
    Line,
    PersistDecision,
    Speak,
    WakeAt,
)
from machines.policy import CallHistory
from tests.machine_fixtures import HISTORY, POLICY, FakeClock

EMERGENCY_DETAILS = {"caller_name": "Ada", "callback_number": "+15550100"}


def start(history: CallHistory = HISTORY):
    clock = FakeClock()
    flow = CallFlow(POLICY, clock)
    return flow, flow.start_call("CA_path", history), clock


def in_capture(history: CallHistory = HISTORY):
    flow, call, clock = start(history)
    call.handle(ev.RealtimeOpened())
    call.handle(ev.GreetingPlayed())
    return flow, call, clock


def finish_teardown(call) -> list:
    """Plays the runner: the handoff line ends, then Realtime closes, then the Media Stream."""
    effects = call.handle(ev.HandoffPlayed())
    effects += call.handle(ev.RealtimeClosed())
    effects += call.handle(ev.MediaClosed())
    return effects


def test_start_asks_for_a_wake_up_at_the_end_of_the_budget() -> None:
    _, call, clock = start()
    assert call.start() == [WakeAt(clock.now + POLICY.budget_s)]


def test_greeting_is_spoken_once_realtime_is_open_then_capture_begins() -> None:
    _, call, _ = start()
    assert call.handle(ev.RealtimeOpened()) == [Speak(Line.GREETING)]
    assert call.handle(ev.GreetingPlayed()) == []
    assert call.state == "capture"


def test_flex_route_with_its_fields_is_dispatched_and_torn_down_in_order() -> None:
    _, call, clock = in_capture()
    call.handle(ev.DetailsCaptured(EMERGENCY_DETAILS, "t1"))
    clock.advance(3)
    effects = call.handle(ev.IntentProposed("emergency", 0.9, "pipe burst", "t2"))
    decision = call.decision
    assert decision is not None
    assert (decision.route, decision.route_kind, decision.reason) == ("emergency_desk", "flex", DecisionReason.ACCEPTED)
    assert decision.captured == EMERGENCY_DETAILS and decision.decided_after_s == 3
    assert effects == [
        AnswerTool("t2", "accepted", "emergency_desk"),
        PersistDecision(decision),
        Speak(Line.HANDOFF),
        WakeAt(clock.now + POLICY.handoff_line_timeout_s),
    ]
    assert finish_teardown(call) == [CloseRealtime(), CloseMedia(decision), CallFinished("flex")]
    assert call.state == "ended"


def test_studio_route_not_yet_visited_is_accepted() -> None:
    _, call, _ = in_capture()
    call.handle(ev.IntentProposed("survey", 0.8, "", None))
    assert call.decision.route == "survey_node" and call.decision.reason is DecisionReason.ACCEPTED


def test_resolved_call_ends_with_outcome_resolve() -> None:
    _, call, _ = in_capture()
    call.handle(ev.IntentProposed("opening_hours", 0.95))
    assert finish_teardown(call)[-1] == CallFinished("resolve")


def test_confidence_exactly_at_the_minimum_is_accepted() -> None:
    _, call, _ = in_capture()
    call.handle(ev.IntentProposed("billing", POLICY.min_confidence))
    assert call.decision.reason is DecisionReason.ACCEPTED


def test_missing_fields_are_asked_for_then_the_route_is_accepted() -> None:
    _, call, _ = in_capture()
    effects = call.handle(ev.IntentProposed("emergency", 0.9, "", "t1"))
    assert effects == [
        AnswerTool("t1", "clarify", "missing_fields: callback_number, caller_name"),
        Speak(Line.ASK_DETAILS, ("callback_number", "caller_name")),
    ]
    assert call.state == "capture" and call.decision is None
    call.handle(ev.DetailsCaptured(EMERGENCY_DETAILS))
    call.handle(ev.IntentProposed("emergency", 0.9))
    assert call.decision.route == "emergency_desk"


def test_low_confidence_is_clarified_up_to_the_cap_then_falls_back() -> None:
    _, call, _ = in_capture()
    for _ in range(POLICY.max_clarifications):
        assert Speak(Line.CLARIFY) in call.handle(ev.IntentProposed("billing", 0.2))
    call.handle(ev.IntentProposed("billing", 0.2))
    assert (call.decision.route, call.decision.reason) == ("voicemail", DecisionReason.LOW_CONFIDENCE)


def test_unknown_intent_is_clarified_then_falls_back_as_unknown() -> None:
    _, call, _ = in_capture()
    for _ in range(POLICY.max_clarifications + 1):
        call.handle(ev.IntentProposed("pizza", 0.99))
    assert call.decision.reason is DecisionReason.UNKNOWN_INTENT


def test_budget_expiry_takes_the_fallback_and_a_late_proposal_is_ignored() -> None:
    _, call, clock = in_capture()
    clock.advance(POLICY.budget_s)
    effects = call.handle(ev.IntentProposed("billing", 0.9, "", "late"))
    assert (call.decision.route, call.decision.reason) == ("voicemail", DecisionReason.BUDGET_EXPIRED)
    assert not call.decision.routed_on_intent
    assert AnswerTool("late", "ignored", "the call has already been handed on") in effects
    assert "absorbed" in call.trail[-1].note


def test_proposing_the_visited_studio_node_goes_to_the_human_route() -> None:
    _, call, _ = in_capture()
    call.handle(ev.DetailsCaptured({"caller_name": "Bo"}))
    call.handle(ev.IntentProposed("schedule", 0.9))
    decision = call.decision
    assert (decision.route, decision.reason, decision.proposed_route) == (
        "front_desk", DecisionReason.REENTRY_REFUSED, "schedule_visit")


def test_proposing_the_entry_node_goes_to_the_human_route() -> None:
    _, call, _ = in_capture()
    call.handle(ev.IntentProposed("back_to_menu", 0.9))
    assert call.decision.route == "front_desk" and call.decision.proposed_route == "main_menu"


def test_a_fresh_call_may_enter_the_same_studio_node() -> None:
    _, call, _ = in_capture(CallHistory())
    call.handle(ev.DetailsCaptured({"caller_name": "Bo"}))
    call.handle(ev.IntentProposed("schedule", 0.9))
    assert call.decision.route == "schedule_visit"


def test_realtime_refused_at_start_hands_the_call_to_the_fallback_at_once() -> None:
    _, call, _ = start()
    effects = call.handle(ev.EngineFailed("refused"))
    assert [type(e) for e in effects] == [PersistDecision, CloseMedia]
    assert call.decision.reason is DecisionReason.ENGINE_FAILED
    assert call.handle(ev.MediaClosed()) == [CallFinished("voicemail")]


def test_realtime_dropping_mid_call_is_an_engine_failure() -> None:
    _, call, _ = in_capture()
    effects = call.handle(ev.RealtimeClosed())
    assert [type(e) for e in effects] == [PersistDecision, CloseMedia]
    assert call.decision.reason is DecisionReason.ENGINE_FAILED


def test_engine_error_mid_call_closes_realtime_before_media() -> None:
    _, call, _ = in_capture()
    effects = call.handle(ev.EngineFailed("error_event"))
    assert [type(e) for e in effects] == [PersistDecision, CloseRealtime]
    assert call.handle(ev.RealtimeClosed()) == [CloseMedia(call.decision)]


def test_handoff_line_that_never_finishes_times_out_into_teardown() -> None:
    _, call, clock = in_capture()
    call.handle(ev.IntentProposed("billing", 0.9))
    clock.advance(POLICY.handoff_line_timeout_s)
    assert call.handle(ev.TimerFired()) == [CloseRealtime()]
    assert call.state == "teardown"


def test_hang_up_in_each_state_ends_the_call_without_handing_it_back() -> None:
    def hang_up_in(state: str):
        _, call, _ = in_capture()
        if state == "greeting":
            _, call, _ = start()
            call.handle(ev.RealtimeOpened())
        if state == "dispatch":
            call.handle(ev.IntentProposed("billing", 0.9))
        effects = call.handle(ev.CallerHungUp())
        effects += call.handle(ev.RealtimeClosed())
        return call, effects

    for state in ("greeting", "capture", "dispatch"):
        call, effects = hang_up_in(state)
        assert call.state == "ended", state
        assert not any(isinstance(e, CloseMedia) for e in effects), state
        assert effects[0] == CloseRealtime()
    assert hang_up_in("capture")[1][-1] == CallFinished("abandoned")


def test_late_and_repeated_events_are_absorbed_into_the_trail() -> None:
    _, call, _ = in_capture()
    call.handle(ev.IntentProposed("billing", 0.9))
    call.handle(ev.DetailsCaptured({"caller_name": "late"}, "t9"))
    assert "absorbed" in call.trail[-1].note
    finish_teardown(call)
    for event in (ev.CallerHungUp(), ev.CallerHungUp(), ev.GreetingPlayed(), ev.IntentProposed("billing", 1.0)):
        assert call.handle(event) == []
        assert call.trail[-1].note.startswith("absorbed")
    assert call.faults == 0 and call.decision.captured.get("caller_name") is None


def test_dispose_leaves_no_call_attached() -> None:
    flow, call, _ = start()
    for _ in range(1000):
        flow.dispose(flow.start_call("CA_x"))
    flow.dispose(call)
    assert flow.active_calls == 0


def test_states_passed_through_within_one_event_are_on_the_path() -> None:
    _, call, _ = in_capture()
    call.handle(ev.EngineFailed("boom"))  # capture → dispatch → teardown in one event (no handoff line)
    call.handle(ev.RealtimeClosed())
    call.handle(ev.MediaClosed())
    assert call.states_visited == ["greeting", "capture", "dispatch", "teardown", "ended"]

    _, call, _ = in_capture()
    call.handle(ev.IntentProposed("billing", 0.9, "", "t1"))  # classify lasts no longer than the event
    assert call.states_visited == ["greeting", "capture", "classify", "dispatch"]
