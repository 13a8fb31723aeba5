"""Effects a call's machine asks the session runner to carry out. The machine never awaits."""
from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from machines.decision import DispatchDecision


class Line(StrEnum):
    """Lines the agent speaks; their wording comes from the config."""

    GREETING = "greeting"
    CLARIFY = "clarify"
    ASK_DETAILS = "ask_details"
    HANDOFF = "handoff"
    KEYPAD_THANKS = "keypad_thanks"  # a typed value was taken; then the fields still asked for
    KEYPAD_INVALID = "keypad_invalid"  # a typed value was not valid; then the field is asked again


@dataclass(frozen=True, slots=True)
class WakeAt:
    """Send `TimerFired` when the machine's clock reaches `at` (seconds, same clock as the machine)."""

    at: float


@dataclass(frozen=True, slots=True)
class Speak:
    """Say a line, then ask for `missing_fields` (one at a time). Those also in `confirm_fields` are
    pre-filled from caller ID: the caller is asked to confirm the number they are calling from."""

    line: Line
    missing_fields: tuple[str, ...] = ()
    confirm_fields: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class CheckTypedEntry:
    """Check digits the caller typed for `field` and answer with `TypedEntryChecked`."""

    field: str
    digits: str


@dataclass(frozen=True, slots=True)
class AnswerTool:
    """Reply to the engine's tool call so the model knows what happened to its proposal."""

    tool_call_id: str
    outcome: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class PersistDecision:
    decision: DispatchDecision


@dataclass(frozen=True, slots=True)
class CloseRealtime:
    pass


@dataclass(frozen=True, slots=True)
class CloseMedia:
    """Close the Media Stream so Twilio requests the action URL. Only ever emitted once Realtime is closed."""

    decision: DispatchDecision | None


@dataclass(frozen=True, slots=True)
class CallFinished:
    """Nothing of the call remains to do; the runner may dispose of the machine."""

    outcome: str


CallEffect = WakeAt | Speak | CheckTypedEntry | AnswerTool | PersistDecision | CloseRealtime | CloseMedia | CallFinished
