"""The per-call finite-state machine: pure, synchronous, no I/O.

Typed events go in (`machines.events`), typed effects come out (`machines.effects`); `policy` is what the
machine knows of the routing, `decision` the one decision a call may have, `rollout` the arithmetic of
the rollout's arms and brake, `diagram` the drawing of the table.
"""
from machines import events
from machines.call_machine import TRIAGE_OPEN, CallFlow, CallMachine
from machines.decision import ABANDONED, DecisionReason, DispatchDecision
from machines.diagram import call_graph, call_mermaid
from machines.effects import (
    AnswerTool,
    CallEffect,
    CallFinished,
    CheckTypedEntry,
    CloseMedia,
    CloseRealtime,
    Line,
    PersistDecision,
    Speak,
    WakeAt,
)
from machines.events import DetailsCaptured, IntentProposed
from machines.policy import LANGUAGE_FIELD, PERSON_ROUTE_KINDS, CallHistory, RouteKind, RouteRule, TriagePolicy
from machines.rollout import (
    FAILURE_REASONS,
    UNSETTLED_GRACE_S,
    Arm,
    ArmAssignment,
    ArmRule,
    BrakeReading,
    BrakeRule,
    FinishedPass,
    assign_arm,
    decision_failed,
    read_brake,
)

__all__ = [
    "ABANDONED",
    "FAILURE_REASONS",
    "decision_failed",
    "LANGUAGE_FIELD",
    "PERSON_ROUTE_KINDS",
    "TRIAGE_OPEN",
    "UNSETTLED_GRACE_S",
    "AnswerTool",
    "Arm",
    "ArmAssignment",
    "ArmRule",
    "BrakeReading",
    "BrakeRule",
    "CallEffect",
    "CallFinished",
    "CallFlow",
    "CallHistory",
    "CallMachine",
    "CheckTypedEntry",
    "CloseMedia",
    "CloseRealtime",
    "DecisionReason",
    "DetailsCaptured",
    "DispatchDecision",
    "FinishedPass",
    "IntentProposed",
    "Line",
    "PersistDecision",
    "RouteKind",
    "RouteRule",
    "Speak",
    "TriagePolicy",
    "WakeAt",
    "assign_arm",
    "call_graph",
    "call_mermaid",
    "events",
    "read_brake",
]
