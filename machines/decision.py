"""The one dispatch decision a call may have."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from machines.policy import RouteKind

# The outcome of a pass that ended without a decision (the caller hung up first).
ABANDONED = "abandoned"


class DecisionReason(StrEnum):
    ACCEPTED = "accepted"
    LOW_CONFIDENCE = "low_confidence"
    MISSING_FIELDS = "missing_fields"
    UNKNOWN_INTENT = "unknown_intent"
    BUDGET_EXPIRED = "budget_expired"
    ENGINE_FAILED = "engine_failed"
    REENTRY_REFUSED = "reentry_refused"
    UNSUPPORTED_LANGUAGE = "unsupported_language"


@dataclass(frozen=True, slots=True)
class DispatchDecision:
    """Where the call goes next, and why. Persisted by CallSid before the call moves on."""

    route: str
    route_kind: RouteKind
    reason: DecisionReason
    intent: str | None = None
    confidence: float | None = None
    summary: str = ""
    captured: Mapping[str, str] = field(default_factory=dict)
    # The route a guard turned the call from (re-entry, a missing required field, urgency): for call
    # records and parity reports.
    proposed_route: str | None = None
    decided_after_s: float = 0.0
    # Fields the route of the call's intent needs (hard or soft) that the caller did not give.
    missing_fields: tuple[str, ...] = ()
    # Captured fields pre-filled from caller ID that the caller has not confirmed.
    unconfirmed_fields: tuple[str, ...] = ()
    # The route came from a trusted intent (its own route, or the human route standing in for it), even
    # when triage stopped early: the caller ended where their need goes, not on the fallback.
    routed_on_intent: bool = False

    @property
    def is_fallback(self) -> bool:
        return self.reason is not DecisionReason.ACCEPTED
