"""The one small interface between a call's session and whoever listens to the caller.

The session runner drives a `TriageEngine` and cannot tell which one it is: the OpenAI Realtime engine
(`orchestrator.engines.realtime`), the same engine pointed at the protocol-faithful fake, or (later) an
offline engine. An engine takes the caller's µ-law audio and requests to speak, and reports what happened
as the plain `EngineEvent`s below; it knows nothing of routes or of the call machine.

The offline engine (`orchestrator.engines.offline.engine`) does not follow free-text instructions, so a request to
say a fixed line also carries the line itself (`SpokenLine`); the Realtime engine uses the instructions.
"""
from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Mapping, Protocol


class EngineUnavailable(Exception):
    """The engine could not be opened for this call (refused, timed out, misconfigured)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


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


def serves_language(connector: object, language: str) -> bool:
    """Whether `connector`'s engines can converse in `language` (a BCP-47 code)."""
    languages = getattr(connector, "languages", None)
    return languages is None or language.split("-")[0].lower() in languages


# --------------------------------------------------------------------------- the engine itself


@dataclass(frozen=True, slots=True)
class SpokenLine:
    """A fixed line from the config, word for word, and the fields the agent must ask for after it."""

    text: str
    asks_for: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class EngineCall:
    """What an engine may know about the call it serves."""

    call_sid: str
    # Details already captured (e.g. before a failover); an engine may use them to avoid asking again.
    captured: Mapping[str, str] = field(default_factory=dict)
    # What the caller said so far, when this engine takes over a call another engine started.
    caller_turns: tuple[str, ...] = ()
    taking_over: bool = False


class TriageEngine(Protocol):
    async def send_caller_audio(self, payload_b64: str) -> None:
        """Forward one base64 µ-law 8 kHz payload from the caller."""

    def send_caller_audio_now(self, payload_b64: str) -> bool:
        """send_caller_audio without waiting, if the engine can (True); False: nothing was done, use
        send_caller_audio. The hot path of a call: it runs in the socket reactor, not in a task."""

    def play_audio_now(self, player: Callable[[AgentAudio], bool] | None) -> bool:
        """Hand agent audio to `player` as it arrives, while `events()` waits (None stops it). Audio the
        player refuses (False), and every other event, comes from `events()` in order. False: the engine
        has no such path, all audio comes from `events()`."""

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

    async def truncate(self, item_id: str, audio_end_ms: int) -> None:
        """The caller heard only `audio_end_ms` of this item (barge-in)."""

    def events(self) -> AsyncIterator[EngineEvent]:
        """Events until the engine's connection ends (the iteration then stops)."""


class EngineConnector(Protocol):
    """Opens one engine per call. Leaving the context closes the engine on every path."""

    name: str
    # Primary language subtags the engine converses in ("en"); absent or None: any language.
    languages: tuple[str, ...] | None

    def connect(self, call: EngineCall) -> AbstractAsyncContextManager[TriageEngine]:
        """Raises EngineUnavailable when the engine cannot be opened."""
