"""What the call store keeps, as records: a triage pass, its outcome, a call's whole record, and the JSON
form of decisions and outcomes that every store writes and reads back.

Each request of `/voice/incoming` for a call opens a *triage pass* (1, 2, … per CallSid). During a
pass the machine makes at most one `DispatchDecision`; it is saved before the call moves on, and
`/voice/after?pass=N` answers the TwiML of that pass's saved decision (or the fallback when there is
none). The re-entry guard reads the Studio nodes the call already entered, across passes.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from machines import DecisionReason, DispatchDecision, RouteKind

_DECISION_KEYS = frozenset(
    {
        "route", "route_kind", "reason", "intent", "confidence",
        "summary", "captured", "proposed_route", "decided_after_s",
        "missing_fields", "unconfirmed_fields", "routed_on_intent",
    }
)
_OUTCOME_KEYS = frozenset({"outcome", "state_path", "faults", "notes", "engine_seconds"})
# A call fact is a scalar learned after (or outside) the triage: TaskRouter handle time, CSAT, duration.
FactValue = str | int | float | bool | None


@dataclass(frozen=True, slots=True)
class TriagePass:
    call_sid: str
    number: int  # 1, 2, … per call_sid
    token: str  # checked on the Media Stream; never leaves the server in call records
    caller: str  # From
    called: str  # To
    account_sid: str
    entry_node: str | None  # Studio node that handed the call to us ("FW…/widget"), if known
    arm: str  # rollout arm, e.g. "ai"
    opened_at: float  # unix seconds, from the store's clock


@dataclass(frozen=True, slots=True)
class PassOutcome:
    outcome: str  # route kind of the decision, or "abandoned"
    state_path: tuple[str, ...]  # machine states in order
    faults: int = 0  # internal errors the machine absorbed
    notes: tuple[str, ...] = ()  # short trail notes worth keeping (no audio, no secrets)
    engine_seconds: float = 0.0  # how long an AI engine (Realtime or offline) was connected: the cost


@dataclass(frozen=True, slots=True)
class PassRecord:
    triage_pass: TriagePass
    decision: DispatchDecision | None
    outcome: PassOutcome | None
    finished_at: float | None
    answered_route: str | None  # the route whose TwiML /voice/after served for this pass, once it did
    decided_at: float | None = None  # unix seconds when the decision was first saved


@dataclass(frozen=True, slots=True)
class CallRecord:
    call_sid: str
    passes: tuple[PassRecord, ...]  # by number
    visited_nodes: frozenset[str]
    facts: Mapping[str, FactValue] = field(default_factory=dict)  # see `CallStore.record_call_facts`

    def to_json(self) -> dict:
        """The shape `GET /calls/{CallSid}` returns. The pass token is deliberately left out."""
        return {
            "call_sid": self.call_sid,
            "visited_nodes": sorted(self.visited_nodes),
            "passes": [_pass_record_to_json(record) for record in self.passes],
            "facts": dict(self.facts),
        }


def _pass_record_to_json(record: PassRecord) -> dict:
    triage_pass = record.triage_pass
    return {
        "number": triage_pass.number,
        "entry_node": triage_pass.entry_node,
        "arm": triage_pass.arm,
        "opened_at": triage_pass.opened_at,
        "caller": triage_pass.caller,
        "called": triage_pass.called,
        "decision": None if record.decision is None else decision_to_json(record.decision),
        "outcome": None if record.outcome is None else outcome_to_json(record.outcome),
        "finished_at": record.finished_at,
        "answered_route": record.answered_route,
        "decided_at": record.decided_at,
    }


def decision_to_json(decision: DispatchDecision) -> dict:
    return {
        "route": decision.route,
        "route_kind": decision.route_kind,
        "reason": str(decision.reason),
        "intent": decision.intent,
        "confidence": decision.confidence,
        "summary": decision.summary,
        "captured": dict(decision.captured),
        "proposed_route": decision.proposed_route,
        "decided_after_s": decision.decided_after_s,
        "missing_fields": list(decision.missing_fields),
        "unconfirmed_fields": list(decision.unconfirmed_fields),
        "routed_on_intent": decision.routed_on_intent,
    }


def decision_from_json(data: dict) -> DispatchDecision:
    """Read a decision written by `decision_to_json`; ValueError on any shape it cannot read."""
    if not isinstance(data, dict):
        raise ValueError(f"a decision must be a JSON object, got {type(data).__name__}")
    unknown = set(data) - _DECISION_KEYS
    if unknown:
        raise ValueError(f"decision has unknown keys: {', '.join(sorted(map(str, unknown)))}")
    reason = _required_text(data, "reason")
    try:
        decision_reason = DecisionReason(reason)
    except ValueError:
        raise ValueError(f"decision reason {reason!r} is not one of: {', '.join(DecisionReason)}") from None
    route_kind = _required_text(data, "route_kind")
    try:
        decision_route_kind = RouteKind(route_kind)
    except ValueError:
        raise ValueError(f"decision route kind {route_kind!r} is not one of: {', '.join(RouteKind)}") from None
    captured = data.get("captured", {})
    if not isinstance(captured, dict) or not all(
        isinstance(key, str) and isinstance(value, str) for key, value in captured.items()
    ):
        raise ValueError("decision 'captured' must be an object of text values")
    return DispatchDecision(
        route=_required_text(data, "route"),
        route_kind=decision_route_kind,
        reason=decision_reason,
        intent=_optional_text(data, "intent"),
        confidence=_optional_number(data, "confidence"),
        summary=_text(data, "summary", default=""),
        captured=captured,
        proposed_route=_optional_text(data, "proposed_route"),
        decided_after_s=_number(data, "decided_after_s", default=0.0),
        missing_fields=_names(data, "missing_fields"),
        unconfirmed_fields=_names(data, "unconfirmed_fields"),
        routed_on_intent=_flag(data, "routed_on_intent"),
    )


def _flag(data: dict, key: str) -> bool:
    """A true/false key; absent (False) in decisions stored before the key existed."""
    value = data.get(key, False)
    if not isinstance(value, bool):
        raise ValueError(f"{key!r} must be true or false")
    return value


def _names(data: dict, key: str) -> tuple[str, ...]:
    """A list of field names; absent in decisions stored before the key existed."""
    names = data.get(key, [])
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise ValueError(f"decision {key!r} must be a list of names")
    return tuple(names)


def outcome_to_json(outcome: PassOutcome) -> dict:
    return {
        "outcome": outcome.outcome,
        "state_path": list(outcome.state_path),
        "faults": outcome.faults,
        "notes": list(outcome.notes),
        "engine_seconds": outcome.engine_seconds,
    }


def outcome_from_json(data: Any) -> PassOutcome:
    if not isinstance(data, dict):
        raise ValueError(f"an outcome must be a JSON object, got {type(data).__name__}")
    unknown = set(data) - _OUTCOME_KEYS
    if unknown:
        raise ValueError(f"outcome has unknown keys: {', '.join(sorted(map(str, unknown)))}")
    faults = data.get("faults", 0)
    if not isinstance(faults, int) or isinstance(faults, bool) or faults < 0:
        raise ValueError("outcome 'faults' must be a whole number of at least 0")
    return PassOutcome(
        outcome=_required_text(data, "outcome"),
        state_path=_text_list(data, "state_path"),
        faults=faults,
        notes=_text_list(data, "notes"),
        engine_seconds=_number(data, "engine_seconds", default=0.0),
    )


def _required_text(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise ValueError(f"{key!r} must be non-empty text")
    return value


def _text(data: Mapping[str, Any], key: str, *, default: str) -> str:
    value = data.get(key, default)
    if not isinstance(value, str):
        raise ValueError(f"{key!r} must be text")
    return value


def _optional_text(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{key!r} must be text or null")
    return value


def _number(data: Mapping[str, Any], key: str, *, default: float) -> float:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{key!r} must be a finite number")
    return float(value)


def _optional_number(data: Mapping[str, Any], key: str) -> float | None:
    if data.get(key) is None:
        return None
    return _number(data, key, default=0.0)


def _text_list(data: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = data.get(key, [])
    if not isinstance(value, (list, tuple)) or not all(isinstance(item, str) for item in value):
        raise ValueError(f"{key!r} must be a list of text")
    return tuple(value)
