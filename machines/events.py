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
class CallerStartedSpeaking:
    """The caller's voice was heard starting (before any transcript of it)."""


@dataclass(frozen=True, slots=True)
class AgentStartedSpeaking:
    """The agent's words began reaching the caller while they are being triaged."""


@dataclass(frozen=True, slots=True)
class AgentStoppedSpeaking:
    """The caller has heard everything the agent said so far (its marks came back, or were cleared)."""


@dataclass(frozen=True, slots=True)
class CallerSpoke:
    """A transcript of one caller turn."""

    text: str


@dataclass(frozen=True, slots=True)
class DetailsCaptured:
    """Validated caller details (field name → value) recorded by the engine.

    `confirmed`: fields the caller confirmed (yes to a read-back or to the caller-ID question), given a
    value here or already captured. A read-back field recorded without being confirmed counts as captured
    but stays unconfirmed.
    """

    fields: Mapping[str, str]
    tool_call_id: str | None = None
    confirmed: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class IntentProposed:
    """The engine proposes an intent; the machine decides whether it is dispatched."""

    intent: str
    confidence: float
    summary: str = ""
    tool_call_id: str | None = None


@dataclass(frozen=True, slots=True)
class KeyPressed:
    """The caller pressed a keypad key (Twilio `dtmf`): "0"-"9", "*" or "#".

    While the agent asks for a keyable field (`TriagePolicy.keyable_fields`), keys type its value: digits
    accumulate, "*" clears them, "#" (or `keypad_timeout_s` without a key) ends the entry, which the runner
    checks (`CheckTypedEntry` → `TypedEntryChecked`). Otherwise, during greeting or capture, a key on an
    intent (`TriagePolicy.keys`) proposes that intent with confidence 1.0, through the usual guards; any
    other key is absorbed (noted in the trail), and so is every key while the details the machine asked for
    are still awaited (the caller may be typing them).
    """

    digit: str


@dataclass(frozen=True, slots=True)
class TypedEntryChecked:
    """The runner's check of a typed entry (`CheckTypedEntry`): the field's normalised value, or None when
    the digits are not a valid value for it. A valid value is captured and confirmed (no read-back)."""

    field: str
    value: str | None


@dataclass(frozen=True, slots=True)
class CallerNumberKnown:
    """The caller's own number (Twilio's `From`, E.164), when not withheld.

    It pre-fills the policy's caller-ID field, unconfirmed: enough for a soft field, while a hard one
    counts only once the caller confirms it (the engine records the field again).
    """

    number: str


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
    | AgentStartedSpeaking
    | AgentStoppedSpeaking
    | CallerStartedSpeaking
    | CallerSpoke
    | DetailsCaptured
    | IntentProposed
    | KeyPressed
    | TypedEntryChecked
    | CallerNumberKnown
    | LanguageNotServed
    | TimerFired
    | HandoffPlayed
    | EngineFailed
    | CallerHungUp
    | RealtimeClosed
    | MediaClosed
)

ALL_EVENT_TYPES: tuple[type, ...] = CallEvent.__args__
