"""The one small interface between a call's session and whoever listens to the caller.

The session runner drives a `TriageEngine` and cannot tell which one it is: the OpenAI Realtime engine
(`orchestrator.engines.realtime`), the same engine pointed at the protocol-faithful fake, or the offline
engine. An engine takes the caller's µ-law audio and requests to speak, and reports what happened as the
plain `EngineEvent`s below; it knows nothing of routes or of the call machine. What a connector's engines
can do beyond that (languages, text input) is declared in its `EngineCapabilities`.

The offline engine (`orchestrator.engines.offline.engine`) does not follow free-text instructions, so a request to
say a fixed line also carries the line itself (`SpokenLine`); the Realtime engine uses the instructions.
"""
from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Protocol

# A caller who says nothing this long after the agent's words end has not answered, and the agent asks again:
# a silent line (a caller who did not hear, or is unsure it is their turn) never waits out the whole budget.
SILENT_ANSWER_S = 5.0


class EngineUnavailable(Exception):
    """The engine could not be opened for this call (refused, timed out, misconfigured)."""

    def __init__(self, reason: str, *, kind: str = "other") -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind  # what failed, counted by kind (e.g. certificate, dns, refused, http_status, timeout)


# --------------------------------------------------------------------------- events out of an engine


@dataclass(frozen=True, slots=True)
class AgentAudio:
    """A chunk of the agent's speech, base64 µ-law 8 kHz, to be played to the caller as is."""

    response_id: str
    item_id: str
    payload_b64: str


@dataclass(frozen=True, slots=True)
class ResponseStarted:
    """The agent started a response; `tag` is the one given to `speak`, None for one it started itself."""

    response_id: str
    tag: str | None


@dataclass(frozen=True, slots=True)
class ResponseFinished:
    """A response ended (`status`: completed, cancelled, incomplete, failed). All its audio came before."""

    response_id: str
    tag: str | None
    status: str


@dataclass(frozen=True, slots=True)
class CallerSpeechStarted:
    """The caller started talking (barge-in: whatever the agent is saying must stop)."""


@dataclass(frozen=True, slots=True)
class CallerTranscript:
    text: str


@dataclass(frozen=True, slots=True)
class AgentTranscript:
    text: str


@dataclass(frozen=True, slots=True)
class ToolCallReady:
    """A tool call from a response item that completed (never from a cancelled one)."""

    call_id: str
    name: str
    arguments_json: str
    response_id: str | None


@dataclass(frozen=True, slots=True)
class EngineProblem:
    """An error the engine reported. `fatal` problems end the engine's usefulness for this call;
    `request_id` names our request that caused it, when the engine says so."""

    code: str
    message: str
    fatal: bool
    request_id: str | None = None


EngineEvent = (
    AgentAudio
    | ResponseStarted
    | ResponseFinished
    | CallerSpeechStarted
    | CallerTranscript
    | AgentTranscript
    | ToolCallReady
    | EngineProblem
)


# --------------------------------------------------------------------------- the engine itself


@dataclass(frozen=True, slots=True)
class SpokenLine:
    """A fixed line from the config, word for word, and the fields the agent must ask for after it;
    those in `confirms` are known from caller ID: the caller is asked to confirm them instead."""

    text: str
    asks_for: tuple[str, ...] = ()
    confirms: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class EngineCall:
    """What an engine may know about the call it serves."""

    call_sid: str
    # Details already captured (e.g. before a failover); an engine may use them to avoid asking again.
    captured: Mapping[str, str] = field(default_factory=dict)
    # What the caller said so far, when this engine takes over a call another engine started.
    caller_turns: tuple[str, ...] = ()
    taking_over: bool = False


class RespondingEngine(Protocol):
    """What every engine answers to: requests to speak, tool answers, and its events."""

    async def speak(
        self,
        instructions: str | None,
        *,
        tag: str | None,
        request_id: str | None = None,
        line: SpokenLine | None = None,
    ) -> None:
        """Ask for one response (None: let the agent continue the conversation). Its ResponseStarted and
        ResponseFinished carry `tag`; a refusal comes back as an EngineProblem with `request_id`.
        `line` is the fixed line the instructions ask for, for engines that speak it themselves."""

    async def send_tool_output(self, call_id: str, output: str) -> None:
        """Answer a tool call; does not by itself make the agent speak (call `speak(None, …)` after)."""

    def events(self, on_agent_audio: Callable[[AgentAudio], None] | None = None) -> AsyncIterator[EngineEvent]:
        """Events until the engine's connection ends (the iteration then stops). With `on_agent_audio`, the
        agent's audio goes to it as it arrives, in order with the events, instead of being yielded (the
        Realtime engine calls it from the socket's read reactor: it must not wait)."""


class TriageEngine(RespondingEngine, Protocol):
    """An engine on a live call: it hears the caller."""

    def send_caller_audio(self, payload_b64: str) -> None:
        """Forward one base64 µ-law 8 kHz payload from the caller. Never waits (what cannot go out at once
        is queued, in order): it runs in the socket's read reactor, the hot path of a call."""

    async def truncate(self, item_id: str, audio_end_ms: int) -> None:
        """The caller heard only `audio_end_ms` of this item (barge-in)."""

    def caller_pressed_key(self) -> None:
        """The caller is answering on the keypad, which the engine does not hear: their silence is not a
        silence to prompt (`SILENT_ANSWER_S`) until the agent next speaks or the caller speaks. Never waits."""


class TextEngine(RespondingEngine, Protocol):
    """An engine that reads the caller's turns as text (replays of past calls)."""

    async def send_caller_text(self, text: str) -> None:
        """A caller turn, answered by one response."""


@dataclass(frozen=True, slots=True)
class EngineCapabilities:
    """What a connector's engines can do, declared as data (read, never probed)."""

    # Primary language subtags the engines converse in ("en"); None: any language.
    languages: tuple[str, ...] | None = None
    # `connect_text` opens a TextEngine (replays of past calls).
    text_input: bool = False

    def serves_language(self, language: str) -> bool:
        """Whether the engines can converse in `language` (a BCP-47 code)."""
        return self.languages is None or language.split("-")[0].lower() in self.languages


class EngineConnector(Protocol):
    """Opens one engine per call. Leaving the context closes the engine on every path."""

    name: str
    capabilities: EngineCapabilities

    def connect(self, call: EngineCall) -> AbstractAsyncContextManager[TriageEngine]:
        """Raises EngineUnavailable when the engine cannot be opened."""

    def connect_text(self, call: EngineCall) -> AbstractAsyncContextManager[TextEngine]:
        """A TextEngine, when `capabilities.text_input` says so; raises EngineUnavailable like connect."""
