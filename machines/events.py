"""Events that reach a call's machine. The session runner turns wire traffic into these."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RealtimeOpened:
    """The engine is connected and configured; the agent can speak."""


@dataclass(frozen=True, slots=True)
class GreetingPlayed:
    """The caller has heard the greeting (its mark came back)."""


@dataclass(frozen=True, slots=True)
class CallerSpoke:
    """A transcript of one caller turn."""

    text: str


@dataclass(frozen=True, slots=True)
class DetailsCaptured:
    """Validated caller details (field name → value) recorded by the engine."""

    fields: Mapping[str, str]
    tool_call_id: str | None = None


@dataclass(frozen=True, slots=True)
class IntentProposed:
    """The engine proposes an intent; the machine decides whether it is dispatched."""

    intent: str
    confidence: float
    summary: str = ""
    tool_call_id: str | None = None


@dataclass(frozen=True, slots=True)
class LanguageNotServed:
    """The engine cannot converse in the caller's language (e.g. the English-only offline engine)."""

    language: str


@dataclass(frozen=True, slots=True)
class TimerFired:
    """A wake-up for the machine to look at the clock (budget, handoff-line timeout)."""


@dataclass(frozen=True, slots=True)
class HandoffPlayed:
    """The handoff line finished playing (its mark came back)."""


@dataclass(frozen=True, slots=True)
class EngineFailed:
    """The engine errored, refused the connection or dropped it."""

    reason: str = "engine_error"


@dataclass(frozen=True, slots=True)
class CallerHungUp:
    """Twilio ended the stream because the caller hung up."""


@dataclass(frozen=True, slots=True)
class RealtimeClosed:
    """The engine's socket is closed (by us or by the far end)."""


@dataclass(frozen=True, slots=True)
class MediaClosed:
    """The Media Stream is closed; Twilio will request the action URL."""


CallEvent = (
    RealtimeOpened
    | GreetingPlayed
    | CallerSpoke
    | DetailsCaptured
    | IntentProposed
    | LanguageNotServed
    | TimerFired
    | HandoffPlayed
    | EngineFailed
    | CallerHungUp
    | RealtimeClosed
    | MediaClosed
)

ALL_EVENT_TYPES: tuple[type, ...] = CallEvent.__args__
