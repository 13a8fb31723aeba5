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


@dataclass(frozen=True, slots=True)
class WakeAt:
    """Send `TimerFired` when the machine's clock reaches `at` (seconds, same clock as the machine)."""

    at: float


@dataclass(frozen=True, slots=True)
class Speak:
    line: Line
    missing_fields: tuple[str, ...] = ()


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


CallEffect = WakeAt | Speak | AnswerTool | PersistDecision | CloseRealtime | CloseMedia | CallFinished
