"""The routing policy that never strands a caller, one path at a time: hard and soft fields, urgent intents,
asks per field, the unknown need, keypad keys and caller ID (the fixture's routes are described there)."""
from __future__ import annotations

from dataclasses import replace

import pytest

from machines import events as ev
from machines.call_machine import HEARD_OUT_STEP_S, CallFlow
from machines.decision import DecisionReason
from machines.effects import AnswerTool, CheckTypedEntry, Line, PersistDecision, Speak, WakeAt
from machines.policy import CallHistory
from tests.machine_fixtures import HISTORY, POLICY, VISITED_NODE, FakeClock

NUMBER = "+14155552671"


def in_capture(policy=POLICY, history: CallHistory = HISTORY):
    clock = FakeClock()
    call = CallFlow(policy, clock).start_call("CA_policy", history)
    call.handle(ev.RealtimeOpened())
    call.handle(ev.GreetingPlayed())
    return call, clock


def asks_in(effects) -> list[tuple[str, ...]]:
    return [effect.missing_fields for effect in effects
            if isinstance(effect, Speak) and effect.line is Line.ASK_DETAILS]


# --- Hard and soft fields ------------------------------------------------------------------------


def test_soft_fields_are_asked_for_before_the_route_is_taken() -> None:
    call, _ = in_capture()
    call.handle(ev.DetailsCaptured({"caller_name": "Ada"}))
    effects = call.handle(ev.IntentProposed("callback", 0.9, "", "t1"))
    assert effects == [
        AnswerTool("t1", "clarify", "missing_fields: address, callback_number"),
        Speak(Line.ASK_DETAILS, ("address", "callback_number")),
    ]
    assert call.decision is None


def test_soft_fields_asked_twice_are_named_missing_and_the_route_is_taken() -> None:
    call, _ = in_capture()
    call.handle(ev.DetailsCaptured({"caller_name": "Ada"}))
    call.handle(ev.IntentProposed("callback", 0.9))
    call.handle(ev.DetailsCaptured({"address": "1 Elm St"}))
    assert asks_in(call.handle(ev.IntentProposed("callback", 0.9))) == [("callback_number",)]
    call.handle(ev.IntentProposed("callback", 0.9, "", "t3"))
    decision = call.decision
    assert (decision.route, decision.reason, decision.missing_fields) == (
        "callback_desk", DecisionReason.ACCEPTED, ("callback_number",))


def test_soft_fields_are_not_asked_for_without_a_clarification_left() -> None:
    call, _ = in_capture(replace(POLICY, max_clarifications=0))
    call.handle(ev.DetailsCaptured({"caller_name": "Ada"}))
    effects = call.handle(ev.IntentProposed("callback", 0.9))
    assert asks_in(effects) == []
    assert (call.decision.route, call.decision.missing_fields) == ("callback_desk", ("address", "callback_number"))


def test_at_budget_expiry_a_trusted_intent_lacking_only_soft_fields_takes_its_route() -> None:
    call, clock = in_capture()
    call.handle(ev.DetailsCaptured({"caller_name": "Ada"}))
    call.handle(ev.IntentProposed("callback", 0.9))
    clock.advance(POLICY.budget_s)
    call.handle(ev.TimerFired())
    decision = call.decision
    assert (decision.route, decision.reason, decision.intent) == (
        "callback_desk", DecisionReason.BUDGET_EXPIRED, "callback")
    assert decision.missing_fields == ("address", "callback_number") and decision.proposed_route is None
    assert decision.routed_on_intent  # the brake does not count it against the AI


def test_at_budget_expiry_a_trusted_intent_lacking_a_hard_field_goes_to_a_person_not_the_fallback() -> None:
    call, clock = in_capture()
    call.handle(ev.IntentProposed("billing", 0.2))  # not trusted: no route of its own
    call.handle(ev.IntentProposed("callback", 0.9))
    clock.advance(POLICY.budget_s)
    call.handle(ev.TimerFired())
    decision = call.decision
    assert (decision.route, decision.reason, decision.proposed_route) == (
        "front_desk", DecisionReason.BUDGET_EXPIRED, "callback_desk")
    assert decision.missing_fields == ("address", "callback_number", "caller_name")
    assert decision.routed_on_intent  # a person standing in for the intent's route


def test_asking_a_trusted_intents_details_extends_the_budget_once_and_no_further() -> None:
    policy = replace(POLICY, details_budget_s=15.0)
    call, clock = in_capture(policy)
    start = call.started_at
    effects = call.handle(ev.IntentProposed("callback", 0.9))
    assert WakeAt(start + policy.budget_s + 15.0) in effects
    clock.advance(policy.budget_s + 1)
    call.handle(ev.DetailsCaptured({"address": "1 Elm St"}))
    assert call.decision is None  # still within the extended budget, the hard field still being asked
    assert not any(isinstance(e, WakeAt) for e in call.handle(ev.IntentProposed("callback", 0.9)))
    clock.advance(15.0)
    call.handle(ev.TimerFired())
    assert call.decision is not None and call.decision.reason is DecisionReason.BUDGET_EXPIRED
    assert call.decision.route == "front_desk"  # its hard field never came
    # The hard field given past the budget: what is left a person can ask for, so the call goes on at once.
    answered, clock = in_capture(policy)
    answered.handle(ev.IntentProposed("callback", 0.9))
    clock.advance(policy.budget_s + 1)
    answered.handle(ev.DetailsCaptured({"caller_name": "Ada"}))
    assert answered.decision is not None and answered.decision.route == "callback_desk"
    assert answered.decision.missing_fields == ("address", "callback_number")


def test_only_a_missing_hard_field_of_a_need_that_is_not_urgent_gets_more_time() -> None:
    policy = replace(POLICY, details_budget_s=15.0)
    soft_only, _ = in_capture(policy)
    soft_only.handle(ev.DetailsCaptured({"caller_name": "Ada"}))  # callback's hard field: only soft ones left
    assert asks_in(effects := soft_only.handle(ev.IntentProposed("callback", 0.9)))
    assert not any(isinstance(e, WakeAt) for e in effects)
    urgent, _ = in_capture(policy)
    assert asks_in(effects := urgent.handle(ev.IntentProposed("emergency", 0.9)))
    assert not any(isinstance(e, WakeAt) for e in effects)  # an urgent caller is put through at the budget


def test_an_untrusted_guess_gets_no_more_time() -> None:
    policy = replace(POLICY, details_budget_s=15.0)
    call, clock = in_capture(policy)
    assert not any(isinstance(e, WakeAt) for e in call.handle(ev.IntentProposed("callback", 0.2)))
    clock.advance(policy.budget_s)
    call.handle(ev.TimerFired())
    assert call.decision is not None and call.decision.reason is DecisionReason.BUDGET_EXPIRED


def test_at_budget_expiry_without_a_trusted_intent_the_fallback_route_is_taken() -> None:
    call, clock = in_capture()
    call.handle(ev.IntentProposed("callback", 0.3))
    clock.advance(POLICY.budget_s)
    call.handle(ev.TimerFired())
    assert (call.decision.route, call.decision.missing_fields) == ("voicemail", ())


def test_an_engine_failure_follows_the_same_policy_as_the_budget() -> None:
    call, _ = in_capture()
    call.handle(ev.DetailsCaptured({"address": "1 Elm St"}))
    call.handle(ev.IntentProposed("quote", 0.9))  # asks for preferred_date, its soft field
    call.handle(ev.EngineFailed("error_event"))
    decision = call.decision
    assert (decision.route, decision.reason, decision.missing_fields) == (
        "quote_node", DecisionReason.ENGINE_FAILED, ("preferred_date",))


def test_a_hard_field_asked_for_twice_sends_the_call_to_the_human_route() -> None:
    call, _ = in_capture()
    assert asks_in(call.handle(ev.IntentProposed("schedule", 0.9))) == [("caller_name",)]
    assert asks_in(call.handle(ev.IntentProposed("schedule", 0.9))) == [("caller_name",)]
    effects = call.handle(ev.IntentProposed("schedule", 0.9, "", "t3"))
    assert effects[0] == AnswerTool("t3", "handed_to_fallback", "missing_fields: caller_name")
    decision = call.decision
    assert (decision.route, decision.reason, decision.proposed_route, decision.missing_fields) == (
        "front_desk", DecisionReason.MISSING_FIELDS, "schedule_visit", ("caller_name",))


def test_no_field_is_asked_for_a_third_time_even_with_clarifications_left() -> None:
    call, _ = in_capture(replace(POLICY, max_clarifications=5))
    call.handle(ev.DetailsCaptured({"caller_name": "Ada"}))
    asked = []
    for _ in range(4):
        asked += asks_in(call.handle(ev.IntentProposed("callback", 0.9)))
    assert asked == [("address", "callback_number"), ("address", "callback_number")]
    assert call.decision.route == "callback_desk" and call.asks == {"address": 2, "callback_number": 2}


def test_once_a_hard_field_is_out_of_reach_the_others_are_not_asked_for() -> None:
    call, _ = in_capture(replace(POLICY, max_clarifications=5))
    call.handle(ev.IntentProposed("emergency", 0.9))  # asks callback_number and caller_name
    call.handle(ev.DetailsCaptured({"callback_number": NUMBER}))
    call.handle(ev.IntentProposed("emergency", 0.9))  # asks caller_name again
    call.handle(ev.DetailsCaptured({"callback_number": ""}))  # the caller takes it back
    effects = call.handle(ev.IntentProposed("emergency", 0.9))
    assert asks_in(effects) == [] and call.decision.route == "front_desk"


# --- Urgent intents ------------------------------------------------------------------------------


def test_an_urgent_call_whose_budget_runs_out_goes_to_its_route_when_a_person_can_take_it() -> None:
    call, clock = in_capture()
    call.handle(ev.IntentProposed("emergency", 0.95, "burst pipe"))
    call.handle(ev.DetailsCaptured({"caller_name": "Ada", "callback_number": NUMBER}))
    call.handle(ev.IntentProposed("no_such_intent", 0.1, "mumbling"))
    clock.advance(POLICY.budget_s)
    call.handle(ev.TimerFired())
    decision = call.decision
    assert (decision.route, decision.reason, decision.intent, decision.summary) == (
        "emergency_desk", DecisionReason.BUDGET_EXPIRED, "emergency", "burst pipe")


def test_an_urgent_call_whose_route_lacks_a_hard_field_goes_to_the_human_route() -> None:
    call, clock = in_capture()
    call.handle(ev.IntentProposed("emergency", 0.95, "burst pipe"))
    call.handle(ev.IntentProposed("no_such_intent", 0.1, "mumbling"))
    clock.advance(POLICY.budget_s)
    call.handle(ev.TimerFired())
    decision = call.decision
    # emergency_desk lacks its hard fields: the human route, and the decision names the urgent proposal.
    assert (decision.route, decision.reason, decision.intent, decision.summary) == (
        "front_desk", DecisionReason.BUDGET_EXPIRED, "emergency", "burst pipe")
    assert decision.missing_fields == ("callback_number", "caller_name")


def test_an_urgent_call_is_never_clarified_into_voicemail() -> None:
    call, _ = in_capture()
    call.handle(ev.DetailsCaptured({"caller_name": "Ada", "callback_number": ""}))
    call.handle(ev.IntentProposed("emergency", 0.7))
    call.handle(ev.DetailsCaptured({"callback_number": NUMBER}))
    for _ in range(3):
        call.handle(ev.IntentProposed("billing", 0.2))  # then nothing the machine can trust
    decision = call.decision
    assert (decision.route, decision.reason, decision.intent) == (
        "emergency_desk", DecisionReason.LOW_CONFIDENCE, "emergency")


def test_an_urgent_call_is_not_hung_up_on_by_another_intents_answer() -> None:
    call, _ = in_capture()
    call.handle(ev.IntentProposed("emergency", 0.9))
    call.handle(ev.IntentProposed("opening_hours", 0.95))
    decision = call.decision
    assert (decision.route, decision.reason, decision.proposed_route) == (
        "front_desk", DecisionReason.ACCEPTED, "hours")

    call, _ = in_capture()
    call.handle(ev.KeyPressed("1"))
    call.handle(ev.KeyPressed("0"))  # ignored: the details asked for are awaited
    call.handle(ev.IntentProposed("leave_message", 0.9))
    assert (call.decision.route, call.decision.proposed_route) == ("front_desk", "voicemail")


def test_an_urgent_intent_may_end_in_its_own_resolve_route() -> None:
    call, _ = in_capture()
    call.handle(ev.IntentProposed("gas_smell", 0.9))
    assert (call.decision.route, call.decision.route_kind) == ("gas_advice", "resolve")


def test_an_urgent_intent_routed_to_studio_fails_over_to_a_person() -> None:
    call, _ = in_capture()
    call.handle(ev.IntentProposed("flood", 0.9))  # asks for the address
    call.handle(ev.EngineFailed("error_event"))
    assert (call.decision.route, call.decision.reason) == ("front_desk", DecisionReason.ENGINE_FAILED)


def test_an_urgent_call_stays_urgent_when_a_later_proposal_is_accepted_elsewhere() -> None:
    call, _ = in_capture()
    call.handle(ev.IntentProposed("emergency", 0.9))
    call.handle(ev.IntentProposed("billing", 0.9))  # a person: the caller changed their mind
    assert (call.decision.route, call.decision.intent) == ("billing_desk", "billing")


def test_urgency_needs_a_trusted_proposal() -> None:
    call, clock = in_capture()
    call.handle(ev.IntentProposed("emergency", POLICY.min_confidence - 0.01))
    clock.advance(POLICY.budget_s)
    call.handle(ev.TimerFired())
    assert call.urgent_proposal is None and call.decision.route == "voicemail"


UNSURE = replace(POLICY, urgent_min_confidence=0.8)  # an urgent intent below 0.8: its need is clarified once


def test_an_urgent_intent_proposed_unsure_is_clarified_once_and_the_call_is_urgent_meanwhile() -> None:
    call, _ = in_capture(UNSURE)
    call.handle(ev.DetailsCaptured({"caller_name": "Ada", "callback_number": NUMBER}))
    effects = call.handle(ev.IntentProposed("emergency", 0.7, "water sits in the shower", "t1"))
    # Every detail of emergency_desk is there, yet the need is asked again, not taken.
    assert effects == [AnswerTool("t1", "clarify", "urgent_unsure"), Speak(Line.CLARIFY)]
    assert call.decision is None and call.state == "capture"
    assert call.urgent_proposal is not None and call.urgent_proposal.intent == "emergency"
    call.handle(ev.IntentProposed("emergency", 0.7, "it's coming through the ceiling"))  # said again: taken
    assert (call.decision.route, call.decision.reason) == ("emergency_desk", DecisionReason.ACCEPTED)


def test_the_clarified_need_of_an_unsure_urgent_intent_takes_its_own_route() -> None:
    call, _ = in_capture(UNSURE)
    call.handle(ev.DetailsCaptured({"caller_name": "Ada", "callback_number": NUMBER}))
    call.handle(ev.IntentProposed("emergency", 0.7, "the water line of my new dishwasher"))
    call.handle(ev.IntentProposed("billing", 0.95, "I need a dishwasher installed"))
    assert (call.decision.route, call.decision.reason) == ("billing_desk", DecisionReason.ACCEPTED)


def test_an_urgent_intent_proposed_sure_or_with_no_question_left_is_taken_at_once() -> None:
    for policy, confidence in ((UNSURE, 0.85), (replace(UNSURE, max_clarifications=0), 0.7), (POLICY, 0.7)):
        call, _ = in_capture(policy)
        call.handle(ev.DetailsCaptured({"caller_name": "Ada", "callback_number": NUMBER}))
        call.handle(ev.IntentProposed("emergency", confidence))
        assert (call.decision.route, call.decision.reason) == ("emergency_desk", DecisionReason.ACCEPTED), policy

    call, clock = in_capture(UNSURE)  # too late in the budget for a question to be answered
    call.handle(ev.DetailsCaptured({"caller_name": "Ada", "callback_number": NUMBER}))
    clock.advance(UNSURE.budget_s - UNSURE.clarify_needs_s + 0.1)
    call.handle(ev.IntentProposed("emergency", 0.7))
    assert (call.decision.route, call.decision.reason) == ("emergency_desk", DecisionReason.ACCEPTED)


def test_an_unsure_urgent_call_that_fails_after_its_clarification_still_reaches_a_person() -> None:
    call, clock = in_capture(UNSURE)
    call.handle(ev.IntentProposed("emergency", 0.7, "water everywhere?"))
    call.handle(ev.IntentProposed("leave_message", 0.9))  # a voicemail intent: the urgent call may not go there
    assert (call.decision.route, call.decision.proposed_route) == ("front_desk", "voicemail")

    call, clock = in_capture(UNSURE)
    call.handle(ev.IntentProposed("emergency", 0.7, "water everywhere?"))
    clock.advance(UNSURE.budget_s)
    call.handle(ev.TimerFired())
    decision = call.decision
    assert (decision.route, decision.reason, decision.intent) == ("front_desk", DecisionReason.BUDGET_EXPIRED, "emergency")


def test_an_urgent_call_refused_reentry_goes_to_its_own_route() -> None:
    call, _ = in_capture()
    call.handle(ev.DetailsCaptured({"caller_name": "Ada"}))
    call.handle(ev.IntentProposed("emergency", 0.6))  # asks for callback_number
    call.handle(ev.DetailsCaptured({"callback_number": NUMBER}))
    assert HISTORY.forbids(VISITED_NODE)
    call.handle(ev.IntentProposed("schedule", 0.9))  # its Studio node was already visited
    decision = call.decision
    assert (decision.route, decision.reason, decision.proposed_route, decision.intent) == (
        "emergency_desk", DecisionReason.REENTRY_REFUSED, "schedule_visit", "emergency")


def test_an_urgent_call_in_a_language_not_served_goes_to_its_own_route() -> None:
    call, _ = in_capture(replace(POLICY, supported_languages=frozenset({"en-US"})))
    call.handle(ev.DetailsCaptured({"caller_name": "Ada", "callback_number": NUMBER}))
    call.handle(ev.KeyPressed("1"))
    assert call.decision.route == "emergency_desk"  # accepted already

    call, _ = in_capture(replace(POLICY, supported_languages=frozenset({"en-US"})))
    call.handle(ev.DetailsCaptured({"caller_name": "Ada"}))
    call.handle(ev.IntentProposed("emergency", 0.9))
    call.handle(ev.DetailsCaptured({"language": "fr-FR", "callback_number": NUMBER}))
    decision = call.decision
    assert (decision.route, decision.reason) == ("emergency_desk", DecisionReason.UNSUPPORTED_LANGUAGE)


# --- The unknown need ----------------------------------------------------------------------------


def test_an_unknown_need_is_clarified_once_then_goes_to_the_fallback() -> None:
    call, _ = in_capture()
    assert Speak(Line.CLARIFY) in call.handle(ev.IntentProposed("no_such_intent", 0.9))
    effects = call.handle(ev.IntentProposed("no_such_intent", 0.9, "", "t2"))
    assert effects[0] == AnswerTool("t2", "handed_to_fallback", "unknown_intent")
    assert (call.decision.route, call.decision.reason) == ("voicemail", DecisionReason.UNKNOWN_INTENT)
    assert call.clarifications == 1


def test_after_the_unknown_need_is_clarified_a_vague_answer_decides_at_once() -> None:
    call, _ = in_capture()
    call.handle(ev.IntentProposed("no_such_intent", 0.2))
    call.handle(ev.IntentProposed("billing", 0.3))
    assert (call.decision.route, call.decision.reason) == ("voicemail", DecisionReason.LOW_CONFIDENCE)


def test_after_the_unknown_need_is_clarified_a_clear_answer_is_routed() -> None:
    call, _ = in_capture()
    call.handle(ev.IntentProposed("no_such_intent", 0.2))
    call.handle(ev.IntentProposed("billing", 0.9))
    assert call.decision.route == "billing_desk"


def test_low_confidence_before_an_unknown_need_keeps_its_clarifications() -> None:
    call, _ = in_capture()
    call.handle(ev.IntentProposed("billing", 0.3))
    assert Speak(Line.CLARIFY) in call.handle(ev.IntentProposed("no_such_intent", 0.3))
    call.handle(ev.IntentProposed("billing", 0.3))
    assert call.decision.reason is DecisionReason.LOW_CONFIDENCE and call.clarifications == 2


# --- Keys ----------------------------------------------------------------------------------------


def test_a_key_on_an_intent_proposes_it_with_full_confidence() -> None:
    call, _ = in_capture()
    effects = call.handle(ev.KeyPressed("3"))
    assert isinstance(effects[0], PersistDecision)
    decision = effects[0].decision
    assert (decision.route, decision.intent, decision.confidence, decision.reason) == (
        "billing_desk", "billing", 1.0, DecisionReason.ACCEPTED)
    assert call.trail[-1].note == "key 3: billing"


def test_a_key_goes_through_the_guards_like_a_spoken_proposal() -> None:
    call, _ = in_capture(history=CallHistory())
    effects = call.handle(ev.KeyPressed("2"))
    assert effects == [Speak(Line.ASK_DETAILS, ("caller_name",))]
    call, _ = in_capture()
    call.handle(ev.DetailsCaptured({"caller_name": "Ada"}))
    call.handle(ev.KeyPressed("2"))  # its Studio node was visited: a person instead
    assert (call.decision.route, call.decision.reason) == ("front_desk", DecisionReason.REENTRY_REFUSED)


def test_a_key_during_the_greeting_proposes_too() -> None:
    clock = FakeClock()
    call = CallFlow(POLICY, clock).start_call("CA_key", HISTORY)
    call.handle(ev.RealtimeOpened())
    call.handle(ev.KeyPressed("3"))
    assert call.decision.route == "billing_desk"


def test_keys_on_no_intent_late_keys_and_keys_while_details_are_awaited_are_absorbed() -> None:
    call, _ = in_capture(replace(POLICY, keyable_fields=frozenset()))  # nothing asked can be typed
    assert call.handle(ev.KeyPressed("7")) == []
    assert call.trail[-1].note == "absorbed: key 7 is on no intent"
    call.handle(ev.KeyPressed("4"))  # callback: asks for its details
    assert call.handle(ev.KeyPressed("3")) == []
    assert call.trail[-1].note == "absorbed: key 3 while details are asked for"
    call.handle(ev.DetailsCaptured({"caller_name": "Ada", "callback_number": NUMBER, "address": "1 Elm St"}))
    call.handle(ev.KeyPressed("3"))  # what was asked for is there: keys choose again
    assert call.decision.route == "billing_desk"
    assert call.handle(ev.KeyPressed("1")) == [] and call.trail[-1].note == "absorbed"


# --- Keypad entry --------------------------------------------------------------------------------


def type_keys(call, keys: str) -> list:
    effects = []
    for key in keys:
        effects += call.handle(ev.KeyPressed(key))
    return effects


def test_digits_typed_while_a_number_is_asked_are_checked_at_pound_and_captured_confirmed() -> None:
    call, _ = in_capture()
    call.handle(ev.DetailsCaptured({"address": "1 Elm St"}))
    assert asks_in(call.handle(ev.IntentProposed("callback", 0.9))) == [("callback_number", "caller_name")]
    assert call.keypad_field == "callback_number"
    effects = type_keys(call, "41*4155552671#")  # "*" starts again
    assert call.proposal.intent == "callback"  # "4" is callback's key, "1" emergency's: neither chose an intent
    assert effects[-1] == CheckTypedEntry("callback_number", "4155552671")
    assert "4155552671" not in " ".join(entry.note for entry in call.trail)  # digits stay out of the trail
    effects = call.handle(ev.TypedEntryChecked("callback_number", NUMBER))
    assert effects == [Speak(Line.KEYPAD_THANKS, ("caller_name",))]  # then the name, still asked for
    assert call.captured["callback_number"] == NUMBER and call.keypad_field is None
    call.handle(ev.DetailsCaptured({"caller_name": "Ada"}))
    call.handle(ev.IntentProposed("callback", 0.9))
    assert call.decision.route == "callback_desk" and call.decision.unconfirmed_fields == ()


def test_a_pause_ends_a_typed_entry_and_a_typed_value_can_complete_the_details() -> None:
    call, clock = in_capture()
    call.handle(ev.DetailsCaptured({"caller_name": "Ada"}))
    call.handle(ev.IntentProposed("emergency", 0.9))
    effects = type_keys(call, "4155552671")
    assert effects[-1] == WakeAt(clock.now + POLICY.keypad_timeout_s)
    clock.advance(POLICY.keypad_timeout_s)
    assert call.handle(ev.TimerFired()) == [CheckTypedEntry("callback_number", "4155552671")]
    effects = call.handle(ev.TypedEntryChecked("callback_number", NUMBER))
    # Nothing else was asked: the proposal is weighed again, as if the engine had proposed it once more.
    assert isinstance(effects[0], PersistDecision) and effects[0].decision.route == "emergency_desk"
    assert call.decision.reason is DecisionReason.ACCEPTED


def test_a_typed_value_that_is_not_valid_is_asked_again_then_given_up_on() -> None:
    call, _ = in_capture()
    call.handle(ev.DetailsCaptured({"caller_name": "Ada", "address": "1 Elm St"}))
    call.handle(ev.IntentProposed("callback", 0.9))  # its soft callback_number is asked (1)
    type_keys(call, "123#")
    assert call.handle(ev.TypedEntryChecked("callback_number", None)) == [
        Speak(Line.KEYPAD_INVALID, ("callback_number",))]  # asked again (2)
    type_keys(call, "456#")
    effects = call.handle(ev.TypedEntryChecked("callback_number", None))
    # Asked twice: no third time; the call goes on to its route without the soft field.
    assert call.decision.route == "callback_desk" and call.decision.missing_fields == ("callback_number",)
    assert not any(isinstance(effect, Speak) and effect.line is Line.KEYPAD_INVALID for effect in effects)


def test_a_spoken_number_awaiting_its_yes_may_be_typed_over_and_once_confirmed_keys_are_not_typed() -> None:
    call, _ = in_capture()
    call.handle(ev.IntentProposed("callback", 0.9))
    call.handle(ev.DetailsCaptured({"callback_number": NUMBER}))
    assert call.keypad_field == "callback_number"  # read back, not confirmed yet: typing replaces it
    call.handle(ev.DetailsCaptured({}, confirmed=frozenset({"callback_number"})))
    assert call.keypad_field is None
    assert type_keys(call, "3") == [] and call.trail[-1].note == "absorbed: key 3 while details are asked for"


# --- Read-back -----------------------------------------------------------------------------------


def test_a_spoken_read_back_value_counts_but_is_listed_until_the_caller_says_yes() -> None:
    call, _ = in_capture()
    call.handle(ev.DetailsCaptured({"caller_name": "Ada", "callback_number": NUMBER}))
    assert call.unread == {"callback_number"}
    call.handle(ev.IntentProposed("emergency", 0.9))  # a hard field: a spoken, unconfirmed value counts
    assert call.decision.route == "emergency_desk" and call.decision.unconfirmed_fields == ("callback_number",)
    call, _ = in_capture()
    call.handle(ev.DetailsCaptured({"caller_name": "Ada", "callback_number": NUMBER}))
    call.handle(ev.DetailsCaptured({}, confirmed=frozenset({"callback_number", "address"})))  # yes to the read-back
    assert call.unread == set() and call.trail[-1].note == ""
    call.handle(ev.IntentProposed("emergency", 0.9))
    assert call.decision.unconfirmed_fields == ()


# --- Caller ID -----------------------------------------------------------------------------------


def test_a_caller_id_number_a_route_wants_is_confirmed_once_with_the_other_details() -> None:
    call, _ = in_capture()
    call.handle(ev.CallerNumberKnown(NUMBER))
    effects = call.handle(ev.IntentProposed("callback", 0.9))
    assert Speak(Line.ASK_DETAILS, ("address", "callback_number", "caller_name"), ("callback_number",)) in effects
    assert asks_in(call.handle(ev.IntentProposed("callback", 0.9))) == [("address", "caller_name")]  # once


def test_a_caller_id_number_counts_for_a_soft_field() -> None:
    call, _ = in_capture()
    assert call.handle(ev.CallerNumberKnown(NUMBER)) == []
    assert call.trail[-1].note == "callback_number from caller ID, unconfirmed"
    call.handle(ev.DetailsCaptured({"caller_name": "Ada", "address": "1 Elm St"}))
    call.handle(ev.IntentProposed("callback", 0.9))
    decision = call.decision
    assert (decision.route, decision.missing_fields, decision.unconfirmed_fields) == (
        "callback_desk", (), ("callback_number",))
    assert decision.captured["callback_number"] == NUMBER


def test_a_caller_id_number_counts_for_a_hard_field_once_confirmed() -> None:
    call, _ = in_capture()
    call.handle(ev.CallerNumberKnown(NUMBER))
    call.handle(ev.DetailsCaptured({"caller_name": "Ada"}))
    assert asks_in(call.handle(ev.IntentProposed("emergency", 0.9))) == [("callback_number",)]
    call.handle(ev.DetailsCaptured({}, confirmed=frozenset({"callback_number"})))  # the caller said yes
    call.handle(ev.IntentProposed("emergency", 0.9))
    decision = call.decision
    assert (decision.route, decision.reason, decision.unconfirmed_fields) == (
        "emergency_desk", DecisionReason.ACCEPTED, ())


def test_a_number_the_caller_gave_is_not_replaced_by_caller_id() -> None:
    call, _ = in_capture()
    call.handle(ev.DetailsCaptured({"callback_number": "+15550100"}))
    call.handle(ev.CallerNumberKnown(NUMBER))
    assert call.captured["callback_number"] == "+15550100" and call.unconfirmed == set()
    assert call.trail[-1].note == "absorbed: callback_number already given"


def test_caller_id_without_a_caller_id_field_is_absorbed() -> None:
    call, _ = in_capture(replace(POLICY, caller_id_field=None))
    call.handle(ev.CallerNumberKnown(NUMBER))
    assert call.captured == {} and call.trail[-1].note == "absorbed"


# --- The policy itself ---------------------------------------------------------------------------


def test_the_policy_refuses_urgent_intents_without_a_person_to_send_them_to() -> None:
    with pytest.raises(ValueError, match="human route must reach a person"):
        replace(POLICY, human_route="voicemail")
    with pytest.raises(ValueError, match="'fire' is referenced but not defined"):
        replace(POLICY, urgent_intents=frozenset({"fire"}))
    with pytest.raises(ValueError, match="'sales' is referenced but not defined"):
        replace(POLICY, keys={"5": "sales"})


def test_an_urgent_caller_still_answering_at_the_budget_gets_the_details_time_once() -> None:
    policy = replace(POLICY, details_budget_s=15.0)
    call, clock = in_capture(policy)
    call.handle(ev.IntentProposed("emergency", 0.95))
    clock.advance(policy.budget_s - 3)
    call.handle(ev.DetailsCaptured({"caller_name": "Ada"}))  # answering, 3 s before the budget ends
    clock.advance(3)
    effects = call.handle(ev.TimerFired())
    assert call.decision is None and WakeAt(call.started_at + policy.budget_s + 15.0) in effects
    clock.advance(15.0)
    call.handle(ev.TimerFired())  # no second extension, however recent the answers
    assert call.decision is not None and call.decision.reason is DecisionReason.BUDGET_EXPIRED
    # Its route needs the number it never got: a person, never voicemail.
    assert (call.decision.route, call.decision.proposed_route) == ("front_desk", "emergency_desk")
    assert call.decision.routed_on_intent


def test_an_urgent_caller_who_stopped_answering_is_put_through_at_the_budget() -> None:
    policy = replace(POLICY, details_budget_s=15.0)
    call, clock = in_capture(policy)
    call.handle(ev.IntentProposed("emergency", 0.95))
    call.handle(ev.DetailsCaptured({"caller_name": "Ada"}))
    clock.advance(policy.budget_s)  # the last detail was given long before the budget ended
    call.handle(ev.TimerFired())
    assert call.decision is not None and call.decision.route == "front_desk"
    assert call.decision.decided_after_s == policy.budget_s


def test_answers_without_a_trusted_need_get_no_more_time() -> None:
    policy = replace(POLICY, details_budget_s=15.0)
    call, clock = in_capture(policy)
    call.handle(ev.IntentProposed("emergency", 0.2))
    clock.advance(policy.budget_s - 1)
    call.handle(ev.DetailsCaptured({"caller_name": "Ada"}))
    clock.advance(1)
    call.handle(ev.TimerFired())
    assert call.decision is not None and call.decision.reason is DecisionReason.BUDGET_EXPIRED


def test_a_caller_answering_the_clarifying_question_at_the_budget_gets_the_details_time_once() -> None:
    policy = replace(POLICY, details_budget_s=15.0)
    call, clock = in_capture(policy)
    effects = call.handle(ev.IntentProposed("billing", 0.3))
    assert Speak(Line.CLARIFY) in effects
    clock.advance(policy.budget_s - 0.5)
    call.handle(ev.CallerStartedSpeaking())  # the answer begins just before the budget ends
    clock.advance(0.5)
    effects = call.handle(ev.TimerFired())
    assert call.decision is None and WakeAt(call.started_at + policy.budget_s + 15.0) in effects
    call.handle(ev.IntentProposed("billing", 0.9))  # the answer, heard
    assert call.decision is not None and call.decision.reason is DecisionReason.ACCEPTED


def test_a_caller_answering_the_question_about_an_unsure_urgent_need_at_the_budget_is_heard_out() -> None:
    policy = replace(UNSURE, details_budget_s=15.0)
    call, clock = in_capture(policy)
    call.handle(ev.DetailsCaptured({"caller_name": "Ada", "address": "1 Elm St"}))
    clock.advance(policy.budget_s - policy.clarify_needs_s - 1)
    assert Speak(Line.CLARIFY) in call.handle(ev.IntentProposed("emergency", 0.7, "the water just sits there"))
    clock.advance(policy.clarify_needs_s + 0.5)
    call.handle(ev.CallerStartedSpeaking())  # the answer begins just before the budget ends
    clock.advance(0.5)
    effects = call.handle(ev.TimerFired())
    assert call.decision is None and WakeAt(call.started_at + policy.budget_s + 15.0) in effects
    call.handle(ev.IntentProposed("billing", 0.95, "it's about the bill for the drain"))  # the answer, heard
    assert (call.decision.route, call.decision.reason) == ("billing_desk", DecisionReason.ACCEPTED)

    call, clock = in_capture(policy)  # silent after the question: put through at the budget, as urgent
    call.handle(ev.CallerStartedSpeaking())
    call.handle(ev.IntentProposed("emergency", 0.7, "the water just sits there"))
    clock.advance(policy.budget_s)
    call.handle(ev.TimerFired())
    assert (call.decision.route, call.decision.reason) == ("front_desk", DecisionReason.BUDGET_EXPIRED)


def test_a_caller_silent_after_the_clarifying_question_gets_no_more_time() -> None:
    policy = replace(POLICY, details_budget_s=15.0)
    call, clock = in_capture(policy)
    call.handle(ev.CallerStartedSpeaking())  # the first words, before the question
    call.handle(ev.IntentProposed("billing", 0.3))
    clock.advance(policy.budget_s)
    call.handle(ev.TimerFired())
    assert call.decision is not None and call.decision.reason is DecisionReason.BUDGET_EXPIRED
    assert call.decision.route == "voicemail"


def test_a_caller_confirming_their_number_at_the_budget_is_heard_out_then_put_through() -> None:
    policy = replace(POLICY, details_budget_s=15.0)
    call, clock = in_capture(policy)
    call.handle(ev.CallerNumberKnown(NUMBER))
    call.handle(ev.DetailsCaptured({"caller_name": "Ada"}))
    effects = call.handle(ev.IntentProposed("callback", 0.95))  # soft fields only: the address, the number's yes
    assert Speak(Line.ASK_DETAILS, ("address", "callback_number"), ("callback_number",)) in effects
    clock.advance(policy.budget_s - 2)
    call.handle(ev.DetailsCaptured({"address": "1 Elm St"}))  # only the yes is left
    clock.advance(2)
    effects = call.handle(ev.TimerFired())
    assert call.decision is None and effects == [WakeAt(clock.now + policy.answer_grace_s)]
    call.handle(ev.DetailsCaptured({}, None, frozenset({"callback_number"})))  # the yes: nothing more is awaited
    assert call.decision is not None and call.decision.route == "callback_desk"
    assert call.decision.reason is DecisionReason.ACCEPTED
    assert call.decision.unconfirmed_fields == () and call.decision.decided_after_s == policy.budget_s


def test_past_the_budget_a_route_lacking_only_soft_fields_asks_nothing_more() -> None:
    policy = replace(POLICY, details_budget_s=15.0)
    call, clock = in_capture(policy)
    call.handle(ev.DetailsCaptured({"caller_name": "Ada"}))  # its hard field: what is left is soft
    effects = call.handle(ev.IntentProposed("callback", 0.95))
    assert asks_in(effects) == [("address", "callback_number")]
    clock.advance(policy.budget_s - 1)
    call.handle(ev.CallerStartedSpeaking())  # the answer is under way as the budget ends
    clock.advance(1)
    assert call.handle(ev.TimerFired()) == [WakeAt(clock.now + policy.answer_grace_s)]
    clock.advance(3)
    effects = call.handle(ev.DetailsCaptured({"address": "1 Elm St"}))  # the number is still missing
    decision = call.decision
    assert asks_in(effects) == [] and decision is not None
    assert (decision.route, decision.reason) == ("callback_desk", DecisionReason.ACCEPTED)
    assert decision.missing_fields == ("callback_number",) and decision.decided_after_s == policy.budget_s + 3


def at_the_budget_awaiting_the_number(policy):
    """A callback call whose caller gave their address 4 s before the budget ran out; the number is awaited."""
    call, clock = in_capture(policy)
    call.handle(ev.DetailsCaptured({"caller_name": "Ada"}))
    call.handle(ev.IntentProposed("callback", 0.95))
    clock.advance(policy.budget_s - 4)
    call.handle(ev.DetailsCaptured({"address": "1 Elm St"}))
    clock.advance(4)
    call.handle(ev.TimerFired())
    return call, clock


def test_past_the_budget_an_answer_that_never_comes_is_waited_for_only_the_grace() -> None:
    policy = replace(POLICY, details_budget_s=15.0)
    call, clock = at_the_budget_awaiting_the_number(policy)
    assert call.decision is None
    clock.advance(policy.answer_grace_s)
    call.handle(ev.TimerFired())
    assert call.decision is not None and call.decision.route == "callback_desk"
    assert call.decision.reason is DecisionReason.BUDGET_EXPIRED  # the grace ran out: the budget decided
    assert call.decision.decided_after_s == policy.budget_s + policy.answer_grace_s
    # A caller still talking when the grace ends gets no second one.
    talking, clock = at_the_budget_awaiting_the_number(policy)
    clock.advance(policy.answer_grace_s - 1)
    talking.handle(ev.CallerStartedSpeaking())
    clock.advance(1)
    assert talking.handle(ev.TimerFired()) != [] and talking.decision is not None
    assert talking.decision.decided_after_s == policy.budget_s + policy.answer_grace_s
    # Asking again, late, would have been answered with more questions: the proposal is accepted as it stands.
    late, _ = at_the_budget_awaiting_the_number(policy)
    effects = late.handle(ev.IntentProposed("callback", 0.95))
    assert asks_in(effects) == [] and late.decision is not None
    assert (late.decision.route, late.decision.reason) == ("callback_desk", DecisionReason.ACCEPTED)


def at_the_budget_answering_at_length(policy):
    """A callback call (soft fields left) whose caller begins a long answer as the budget ends; the engine
    reports what it hears (CallerSpoke)."""
    call, clock = in_capture(policy)
    call.handle(ev.CallerSpoke("I need a callback"))
    call.handle(ev.DetailsCaptured({"caller_name": "Ada"}))
    call.handle(ev.IntentProposed("callback", 0.95))
    clock.advance(policy.budget_s - 1)
    call.handle(ev.CallerStartedSpeaking())
    clock.advance(1)
    assert call.handle(ev.TimerFired()) == [WakeAt(clock.now + policy.answer_grace_s)]
    clock.advance(policy.answer_grace_s)
    return call, clock


def test_past_the_grace_an_answer_still_being_said_is_waited_for_until_it_is_heard() -> None:
    policy = replace(POLICY, details_budget_s=25.0)
    call, clock = at_the_budget_answering_at_length(policy)
    assert call.handle(ev.TimerFired()) == [WakeAt(clock.now + HEARD_OUT_STEP_S)] and call.decision is None
    clock.advance(1)
    call.handle(ev.CallerSpoke("it's 1 Elm Street"))
    call.handle(ev.DetailsCaptured({"address": "1 Elm St"}))
    decision = call.decision
    assert decision is not None and (decision.route, decision.reason) == ("callback_desk", DecisionReason.ACCEPTED)
    assert decision.captured["address"] == "1 Elm St"
    assert decision.decided_after_s == policy.budget_s + policy.answer_grace_s + 1
    # Heard, but with no detail in it: the call goes on at the next look.
    unclear, clock = at_the_budget_answering_at_length(policy)
    unclear.handle(ev.TimerFired())
    unclear.handle(ev.CallerSpoke("um, let me think"))
    clock.advance(HEARD_OUT_STEP_S)
    unclear.handle(ev.TimerFired())
    assert unclear.decision is not None and unclear.decision.reason is DecisionReason.BUDGET_EXPIRED
    # Never past the budget and the details time, however long the caller talks.
    endless, clock = at_the_budget_answering_at_length(policy)
    effects = endless.handle(ev.TimerFired())
    while endless.decision is None:
        clock.advance(next(effect.at for effect in effects if isinstance(effect, WakeAt)) - clock.now)
        effects = endless.handle(ev.TimerFired())
    assert endless.decision.decided_after_s == policy.budget_s + policy.details_budget_s


def test_time_given_to_hear_out_a_clarification_is_not_spent_on_another() -> None:
    policy = replace(POLICY, details_budget_s=25.0)
    call, clock = in_capture(policy)
    assert Speak(Line.CLARIFY) in call.handle(ev.IntentProposed("billing", 0.3))
    clock.advance(policy.budget_s - 1)
    call.handle(ev.CallerStartedSpeaking())  # answering the clarifying question as the budget ends
    clock.advance(1)
    assert call.handle(ev.TimerFired()) == [WakeAt(clock.now + policy.details_budget_s)]
    clock.advance(3)
    effects = call.handle(ev.IntentProposed("billing", 0.4))  # still unclear: decided now, not asked again
    assert Speak(Line.CLARIFY) not in effects
    decision = call.decision
    assert decision is not None and (decision.route, decision.reason) == ("voicemail", DecisionReason.LOW_CONFIDENCE)
    assert decision.decided_after_s == policy.budget_s + 3


def test_no_clarifying_question_is_asked_too_late_to_be_answered_in_the_budget() -> None:
    call, clock = in_capture()
    assert Speak(Line.CLARIFY) in call.handle(ev.IntentProposed("billing", 0.3))
    clock.advance(POLICY.budget_s - POLICY.clarify_needs_s + 1)  # the answer comes with 7 s left
    effects = call.handle(ev.IntentProposed("billing", 0.4))
    assert Speak(Line.CLARIFY) not in effects
    decision = call.decision
    assert decision is not None and (decision.route, decision.reason) == ("voicemail", DecisionReason.LOW_CONFIDENCE)


def asked_for_soft_fields(policy):
    """A trusted need whose route has its hard field and asks for its soft ones."""
    call, clock = in_capture(policy)
    call.handle(ev.CallerStartedSpeaking())
    call.handle(ev.DetailsCaptured({"caller_name": "Ada"}))
    effects = call.handle(ev.IntentProposed("callback", 0.9))
    assert asks_in(effects) == [("address", "callback_number")]
    return call, clock


def test_the_budget_ending_while_the_agent_asks_waits_for_the_callers_answer_to_begin() -> None:
    policy = replace(POLICY, details_budget_s=15.0)
    call, clock = asked_for_soft_fields(policy)
    clock.advance(policy.budget_s - 2)
    call.handle(ev.AgentStartedSpeaking())  # the question is still being said when the budget ends
    clock.advance(2)
    effects = call.handle(ev.TimerFired())  # woken at the details limit at the latest
    assert call.decision is None and effects == [WakeAt(call.started_at + policy.budget_s + 15.0)]
    clock.advance(1)
    effects = call.handle(ev.AgentStoppedSpeaking())
    assert WakeAt(clock.now + policy.answer_start_s) in effects and call.decision is None
    clock.advance(1)
    call.handle(ev.CallerStartedSpeaking())  # the answer begins: it is heard out (soft fields)
    clock.advance(policy.answer_start_s)
    call.handle(ev.TimerFired())
    assert call.decision is None
    call.handle(ev.DetailsCaptured({"callback_number": "+14155550199", "address": "1 Elm St"}))
    assert (call.decision.route, call.decision.reason) == ("callback_desk", DecisionReason.ACCEPTED)


def test_a_caller_silent_after_the_question_is_put_through_once_their_turn_has_passed() -> None:
    policy = replace(POLICY, details_budget_s=15.0)
    call, clock = asked_for_soft_fields(policy)
    clock.advance(policy.budget_s - 5)
    call.handle(ev.AgentStartedSpeaking())
    clock.advance(4)
    call.handle(ev.AgentStoppedSpeaking())  # a second before the budget
    clock.advance(1)
    effects = call.handle(ev.TimerFired())
    assert call.decision is None and WakeAt(clock.now - 1 + policy.answer_start_s) in effects
    clock.advance(policy.answer_start_s - 1)
    call.handle(ev.TimerFired())
    assert (call.decision.route, call.decision.reason) == ("callback_desk", DecisionReason.BUDGET_EXPIRED)
    assert call.decision.decided_after_s == policy.budget_s + policy.answer_start_s - 1


@pytest.mark.parametrize("case", ["agent long silent", "no details time", "caller already answering"])
def test_the_budget_does_not_wait_for_a_turn_that_is_not_the_callers(case: str) -> None:
    policy = replace(POLICY, details_budget_s=0.0 if case == "no details time" else 15.0)
    call, clock = asked_for_soft_fields(policy)
    clock.advance(policy.budget_s - 6)
    call.handle(ev.AgentStartedSpeaking())
    clock.advance(1)
    call.handle(ev.AgentStoppedSpeaking())
    if case != "agent long silent":
        clock.advance(4)
        call.handle(ev.AgentStartedSpeaking())  # asked again, and still asking when the budget ends
    if case == "caller already answering":
        clock.advance(0.5)
        call.handle(ev.CallerStartedSpeaking())
        clock.advance(policy.answering_window_s + 1)  # and past the window an answer is heard out in
    clock.now = max(clock.now, call.started_at + policy.budget_s)
    call.handle(ev.TimerFired())
    assert call.decision is not None and call.decision.reason is DecisionReason.BUDGET_EXPIRED


def asked_as_the_budget_ends():
    """Soft fields asked for, the question's last words heard a second before the budget, which then ends."""
    policy = replace(POLICY, details_budget_s=15.0)
    call, clock = asked_for_soft_fields(policy)
    clock.advance(policy.budget_s - 1)
    call.handle(ev.AgentStartedSpeaking())
    call.handle(ev.AgentStoppedSpeaking())
    clock.advance(1)
    assert call.handle(ev.TimerFired()) == [WakeAt(clock.now - 1 + policy.answer_start_s)]  # their turn waited for
    return call, clock, policy


def test_the_callers_turn_is_waited_for_once_not_again_after_a_later_question() -> None:
    call, clock, policy = asked_as_the_budget_ends()
    clock.advance(1)
    call.handle(ev.CallerStartedSpeaking())  # they answer: heard out for up to answer_grace_s
    assert call.decision is None
    clock.advance(policy.answer_grace_s - 2)
    call.handle(ev.CallerSpoke("something not a detail"))
    call.handle(ev.AgentStartedSpeaking())  # the agent asks again, late: no second wait for this one
    clock.advance(1)
    call.handle(ev.AgentStoppedSpeaking())
    clock.advance(1.5)  # past the grace the answer was heard out in
    call.handle(ev.TimerFired())
    assert call.decision is not None and call.decision.reason is DecisionReason.BUDGET_EXPIRED
    assert call.decision.decided_after_s == pytest.approx(policy.budget_s + policy.answer_grace_s + 1.5)


def test_a_question_asked_while_an_answer_is_heard_out_past_the_budget_is_not_waited_for() -> None:
    policy = replace(POLICY, details_budget_s=15.0)
    call, clock = asked_for_soft_fields(policy)
    clock.advance(policy.budget_s - 1)
    call.handle(ev.CallerStartedSpeaking())  # answering as the budget ends: heard out
    clock.advance(1)
    call.handle(ev.TimerFired())
    assert call.decision is None
    clock.advance(policy.answer_grace_s - 1)
    call.handle(ev.CallerSpoke("something not a detail"))
    call.handle(ev.AgentStartedSpeaking())  # the engine asks again, late: its answer would not be heard out
    clock.advance(1)
    call.handle(ev.TimerFired())
    assert call.decision is not None and call.decision.reason is DecisionReason.BUDGET_EXPIRED
    assert call.decision.decided_after_s == policy.budget_s + policy.answer_grace_s


def test_a_caller_typing_the_number_asked_for_as_the_budget_ends_is_waited_for_until_it_is_typed() -> None:
    call, clock, policy = asked_as_the_budget_ends()  # the callback number (keyable) among the fields asked
    clock.advance(1)
    for digit in "415555019":
        call.handle(ev.KeyPressed(digit))  # they type instead of speaking
    clock.advance(policy.answer_start_s)
    call.handle(ev.TimerFired())
    assert call.decision is None
    call.handle(ev.KeyPressed("9"))
    clock.advance(1)
    call.handle(ev.TimerFired())
    assert call.decision is None  # still typing, past the grace's first half
    effects = call.handle(ev.KeyPressed("#"))
    assert CheckTypedEntry("callback_number", "4155550199") in effects
    call.handle(ev.TypedEntryChecked("callback_number", "+14155550199"))
    assert (call.decision.route, call.decision.reason) == ("callback_desk", DecisionReason.ACCEPTED)
    assert call.decision.captured["callback_number"] == "+14155550199"
