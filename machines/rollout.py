"""Rollout arms and the brake, as arithmetic: which arm a call is in, and when the AI arm must stop.

Pure: no I/O, no clock, no randomness. The orchestrator passes in normalised numbers, the time and the
passes it read from the store (`orchestrator/rollout/live.py`).

Arms. A caller's bucket is a stable hash of (salt, E.164 number) in 0..9999; the call is in the AI arm
when bucket < percent × 100. So the same caller lands in the same arm on every call (as long as the
percentage does not drop), and raising the percentage only moves legacy callers to AI, never back.
The allow list is always AI, the deny list always legacy (deny wins, should a number be on both).

The brake. Over the AI arm's last `window_calls` finished passes (at least `min_calls` of them), a
failure rate above `max_failure_rate` drops the percentage to 0 (see `pass_verdict` for what fails).
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from machines.decision import ABANDONED, DecisionReason

BUCKETS = 10_000  # a bucket is 0.01 % of callers

# Decision reasons that mean the AI could not do its job (a guard's fallback is the AI doing it).
FAILURE_REASONS = frozenset({DecisionReason.ENGINE_FAILED, DecisionReason.BUDGET_EXPIRED})
# A pass answered at the action URL with the fallback and no outcome after this long is one whose
# session never ran or died with its instance; before that its session may still be writing the outcome.
UNSETTLED_GRACE_S = 120.0


class Arm(StrEnum):
    AI = "ai"  # the AI front desk answers
    LEGACY = "legacy"  # the path callers had before it


@dataclass(frozen=True, slots=True)
class ArmRule:
    """What assignment needs. `allow` and `deny` hold E.164 numbers."""

    percent: float  # 0..100
    salt: str
    allow: frozenset[str] = frozenset()
    deny: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class ArmAssignment:
    arm: Arm
    why: str  # "allow", "deny", "caller" (bucket of the number) or "call_sid" (no number: bucket of the call)
    bucket: int | None  # None for allow/deny


def bucket_of(salt: str, key: str) -> int:
    """A stable bucket in 0..BUCKETS-1 (sha256, not Python's `hash`, which changes per process)."""
    digest = hashlib.sha256(f"{salt}{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def assign_arm(rule: ArmRule, caller: str | None, call_sid: str) -> ArmAssignment:
    """The arm of a call from `caller` (E.164, or None when withheld or unreadable)."""
    if caller is not None and caller in rule.deny:
        return ArmAssignment(Arm.LEGACY, "deny", None)
    if caller is not None and caller in rule.allow:
        return ArmAssignment(Arm.AI, "allow", None)
    # A withheld number has nothing stable to hash: the CallSid decides, so such a caller is not sticky
    # (each call of theirs is drawn anew), but the share of them in the AI arm is still the percentage.
    why, key = ("caller", caller) if caller is not None else ("call_sid", call_sid)
    bucket = bucket_of(rule.salt, key)
    return ArmAssignment(Arm.AI if bucket < rule.percent * (BUCKETS / 100) else Arm.LEGACY, why, bucket)


# --------------------------------------------------------------------------- the brake


@dataclass(frozen=True, slots=True)
class BrakeRule:
    window_calls: int = 50
    min_calls: int = 20
    max_failure_rate: float = 0.25
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class FinishedPass:
    """An AI-arm pass as the brake sees it, from the store's record."""

    opened_at: float  # unix seconds
    decision_reason: str | None = None  # None: no decision was made
    outcome: str | None = None  # the session's outcome ("abandoned", a route kind); None: not recorded (yet)
    faults: int = 0  # internal errors the machine absorbed
    answered: bool = False  # the action URL answered for this pass (a decision's TwiML or the fallback)
    shut_down: bool = False  # the server was shutting down: the call was moved on, the AI did not fail
    routed_on_intent: bool = False  # the decision's route came from a trusted intent (DispatchDecision)


class Verdict(StrEnum):
    FAILED = "failed"
    SUCCEEDED = "succeeded"
    NOT_COUNTED = "not_counted"  # still running, or ended by a server shutdown


def decision_failed(reason: str, *, routed_on_intent: bool) -> bool:
    """The AI could not do its job: the engine failed or the budget ran out, and the call did not end
    where a trusted intent sends it (an emergency put through at the budget is the policy working)."""
    return reason in FAILURE_REASONS and not routed_on_intent


def pass_verdict(finished: FinishedPass, now: float) -> Verdict:
    """Whether an AI pass counts against the AI, for it, or not at all.

    Failed: its decision's reason is `engine_failed` or `budget_expired` and its route did not come from
    a trusted intent; or it has no decision and its
    outcome is `abandoned` with faults > 0 (an internal error ended it); or it has neither a decision
    nor an outcome, yet the action URL answered it (the fallback: `no_decision`/`error`) at least
    UNSETTLED_GRACE_S after it opened (its session never ran, or died with its instance).
    Succeeded: any other decision (accepted, or a guard's fallback: low confidence, missing fields,
    unknown intent, re-entry, unsupported language: the AI did its job), or a caller who hung up
    before a decision (abandoned, no faults).
    Not counted: a pass ended by a server shutdown (a deploy must not trip the brake), and one that is
    still running (no decision, no outcome, unanswered or answered within the grace).
    """
    if finished.shut_down:
        return Verdict.NOT_COUNTED
    if finished.decision_reason is not None:
        failed = decision_failed(finished.decision_reason, routed_on_intent=finished.routed_on_intent)
        return Verdict.FAILED if failed else Verdict.SUCCEEDED
    if finished.outcome is not None:
        return Verdict.FAILED if finished.outcome == ABANDONED and finished.faults > 0 else Verdict.SUCCEEDED
    if finished.answered and now - finished.opened_at >= UNSETTLED_GRACE_S:
        return Verdict.FAILED
    return Verdict.NOT_COUNTED


@dataclass(frozen=True, slots=True)
class BrakeReading:
    calls: int  # counted passes in the window
    failures: int
    trips: bool

    @property
    def failure_rate(self) -> float:
        return self.failures / self.calls if self.calls else 0.0


def read_brake(rule: BrakeRule, passes: Iterable[FinishedPass], now: float) -> BrakeReading:
    """The brake over the newest `window_calls` counted passes of `passes` (any order)."""
    counted = [
        (finished.opened_at, verdict)
        for finished in passes
        if (verdict := pass_verdict(finished, now)) is not Verdict.NOT_COUNTED
    ]
    counted.sort(key=lambda item: item[0], reverse=True)
    window = counted[: max(rule.window_calls, 0)]
    failures = sum(1 for _, verdict in window if verdict is Verdict.FAILED)
    calls = len(window)
    trips = rule.enabled and calls > 0 and calls >= rule.min_calls and failures / calls > rule.max_failure_rate
    return BrakeReading(calls, failures, trips)
