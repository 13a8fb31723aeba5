"""The rollout's arithmetic (machines/rollout.py): arms are deterministic, monotone in the percentage,
allow/deny win; the brake's verdicts and threshold."""
from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from machines.rollout import (
    BUCKETS,
    UNSETTLED_GRACE_S,
    Arm,
    ArmRule,
    BrakeRule,
    FinishedPass,
    Verdict,
    assign_arm,
    bucket_of,
    pass_verdict,
    read_brake,
)

numbers = st.from_regex(r"\+1[2-9][0-9]{9}", fullmatch=True)
call_sids = st.from_regex(r"CA[0-9a-f]{32}", fullmatch=True)
percents = st.floats(min_value=0, max_value=100, allow_nan=False)
salts = st.text(min_size=1, max_size=20)


@given(salts, numbers)
def test_a_bucket_is_stable_and_in_range(salt, number):
    assert bucket_of(salt, number) == bucket_of(salt, number)
    assert 0 <= bucket_of(salt, number) < BUCKETS


def test_a_bucket_is_fixed_across_processes():
    # sha256, not Python's per-process `hash`: this value must never change, or every caller moves arm.
    assert bucket_of("front-desk-rollout-1", "+14155552671") == 4109


@given(numbers, call_sids, call_sids, percents, salts)
def test_the_same_caller_gets_the_same_arm_on_every_call(number, first_sid, second_sid, percent, salt):
    rule = ArmRule(percent, salt)
    assert assign_arm(rule, number, first_sid) == assign_arm(rule, number, second_sid)


@given(st.one_of(st.none(), numbers), call_sids, percents, percents, salts)
def test_raising_the_percentage_never_moves_an_ai_caller_to_legacy(number, call_sid, low, high, salt):
    low, high = sorted((low, high))
    if assign_arm(ArmRule(low, salt), number, call_sid).arm == Arm.AI:
        assert assign_arm(ArmRule(high, salt), number, call_sid).arm == Arm.AI


@given(st.one_of(st.none(), numbers), call_sids, salts)
def test_zero_is_nobody_and_a_hundred_is_everybody(number, call_sid, salt):
    assert assign_arm(ArmRule(0, salt), number, call_sid).arm == Arm.LEGACY
    assert assign_arm(ArmRule(100, salt), number, call_sid).arm == Arm.AI


@given(numbers, call_sids, percents, salts)
def test_allow_and_deny_win_over_the_percentage(number, call_sid, percent, salt):
    allowed = assign_arm(ArmRule(percent, salt, allow=frozenset({number})), number, call_sid)
    denied = assign_arm(ArmRule(percent, salt, deny=frozenset({number})), number, call_sid)
    assert (allowed.arm, allowed.why, allowed.bucket) == (Arm.AI, "allow", None)
    assert (denied.arm, denied.why) == (Arm.LEGACY, "deny")
    both = ArmRule(percent, salt, allow=frozenset({number}), deny=frozenset({number}))
    assert assign_arm(both, number, call_sid).arm == Arm.LEGACY  # the safe side


def test_a_withheld_number_draws_from_the_call_sid_so_it_is_not_sticky():
    rule = ArmRule(50, "salt")
    arms = {assign_arm(rule, None, f"CA{index:032x}").arm for index in range(40)}
    assert arms == {Arm.AI, Arm.LEGACY}
    assert assign_arm(rule, None, "CA" + "1" * 32).why == "call_sid"


def test_the_share_of_callers_follows_the_percentage():
    rule = ArmRule(5, "front-desk-rollout-1")
    in_ai = sum(assign_arm(rule, f"+1415555{index:04d}", "CA" + "0" * 32).arm == Arm.AI for index in range(10_000))
    assert 400 <= in_ai <= 600  # 5 % of 10 000 callers; the hash spreads them evenly


# --------------------------------------------------------------------------- verdicts

NOW = 1_000_000.0


def finished(**fields) -> FinishedPass:
    return FinishedPass(**{"opened_at": NOW - 30, **fields})


def test_engine_failure_and_budget_expiry_are_failures_a_guards_fallback_is_not():
    assert pass_verdict(finished(decision_reason="engine_failed", outcome="voicemail"), NOW) is Verdict.FAILED
    assert pass_verdict(finished(decision_reason="budget_expired"), NOW) is Verdict.FAILED
    for reason in ("accepted", "low_confidence", "missing_fields", "unknown_intent", "reentry_refused"):
        assert pass_verdict(finished(decision_reason=reason, outcome="flex"), NOW) is Verdict.SUCCEEDED


def test_a_budget_expiry_that_still_reached_the_intents_route_is_not_a_failure():
    # An emergency put through at the budget without every detail: the policy working, not the AI failing.
    reached = finished(decision_reason="budget_expired", outcome="flex", routed_on_intent=True)
    assert pass_verdict(reached, NOW) is Verdict.SUCCEEDED
    assert pass_verdict(finished(decision_reason="budget_expired", outcome="voicemail"), NOW) is Verdict.FAILED


def test_a_hang_up_is_not_a_failure_an_internal_error_is():
    assert pass_verdict(finished(outcome="abandoned", answered=True), NOW) is Verdict.SUCCEEDED
    assert pass_verdict(finished(outcome="abandoned", faults=2, answered=True), NOW) is Verdict.FAILED


def test_a_fallback_answered_with_no_outcome_fails_once_its_session_cannot_be_running():
    early = finished(answered=True, opened_at=NOW - UNSETTLED_GRACE_S + 1)
    late = finished(answered=True, opened_at=NOW - UNSETTLED_GRACE_S)
    assert pass_verdict(early, NOW) is Verdict.NOT_COUNTED
    assert pass_verdict(late, NOW) is Verdict.FAILED
    assert pass_verdict(finished(opened_at=NOW - 10 * UNSETTLED_GRACE_S), NOW) is Verdict.NOT_COUNTED  # unanswered


def test_a_pass_ended_by_a_shutdown_is_not_counted():
    assert pass_verdict(finished(decision_reason="engine_failed", shut_down=True), NOW) is Verdict.NOT_COUNTED


# --------------------------------------------------------------------------- the threshold


def window(failures: int, successes: int, *, start: float = NOW - 1000) -> list[FinishedPass]:
    passes = [finished(decision_reason="engine_failed", opened_at=start + i) for i in range(failures)]
    passes += [finished(decision_reason="accepted", opened_at=start + failures + i) for i in range(successes)]
    return passes


def test_the_brake_trips_just_above_the_rate_and_not_at_it():
    rule = BrakeRule(window_calls=20, min_calls=20, max_failure_rate=0.25)
    at = read_brake(rule, window(5, 15), NOW)
    above = read_brake(rule, window(6, 14), NOW)
    assert (at.calls, at.failures, at.trips) == (20, 5, False)
    assert (above.calls, above.failures, above.trips, above.failure_rate) == (20, 6, True, 0.3)


def test_the_brake_waits_for_min_calls_and_can_be_off():
    assert not read_brake(BrakeRule(window_calls=50, min_calls=20), window(19, 0), NOW).trips
    assert read_brake(BrakeRule(window_calls=50, min_calls=20), window(20, 0), NOW).trips
    assert not read_brake(BrakeRule(window_calls=50, min_calls=20, enabled=False), window(20, 0), NOW).trips


def test_only_the_newest_window_calls_count():
    rule = BrakeRule(window_calls=10, min_calls=10, max_failure_rate=0.25)
    old_failures_then_recent_successes = window(30, 10)
    reading = read_brake(rule, reversed(old_failures_then_recent_successes), NOW)
    assert (reading.calls, reading.failures, reading.trips) == (10, 0, False)


@given(
    st.lists(st.sampled_from(["engine_failed", "accepted", "budget_expired", "low_confidence"]), max_size=80),
    st.integers(min_value=1, max_value=60),
    st.integers(min_value=1, max_value=60),
    st.floats(min_value=0, max_value=1),
)
def test_the_brake_trips_exactly_when_the_window_rate_is_above_the_limit(reasons, window_calls, min_calls, rate):
    rule = BrakeRule(window_calls=window_calls, min_calls=min_calls, max_failure_rate=rate)
    passes = [finished(decision_reason=reason, opened_at=NOW - 1000 + i) for i, reason in enumerate(reasons)]
    reading = read_brake(rule, passes, NOW)
    newest = reasons[::-1][:window_calls]
    failures = sum(reason in ("engine_failed", "budget_expired") for reason in newest)
    assert (reading.calls, reading.failures) == (len(newest), failures)
    assert reading.trips == (len(newest) >= min_calls and len(newest) > 0 and failures / len(newest) > rate)
