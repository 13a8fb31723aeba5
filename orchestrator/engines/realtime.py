"""The OpenAI Realtime engine: `bridge.openai_realtime.client` (the GA wire protocol) behind the `TriageEngine` interface.

The same engine serves the real endpoint, Azure OpenAI or a proxy (all configuration), and the fake
Realtime server (`orchestrator.testing.fake_realtime`) used by tests and by `serve --engine fake`.
"""
from __future__ import annotations

import binascii
import itertools
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from datetime import date
from typing import Any

from openai.types.realtime import (
    ConversationItemInputAudioTranscriptionCompletedEvent,
    InputAudioBufferSpeechStartedEvent,
    ResponseAudioTranscriptDoneEvent,
    ResponseCreatedEvent,
    ResponseDoneEvent,
)
from openai.types.realtime.realtime_audio_input_turn_detection import ServerVad

from bridge.openai_realtime import (
    AUDIO_DELTA_CLASSES,
    AUDIO_TRANSCRIPT_DELTA_EVENT,
    DEFAULT_TURN_DETECTION,
    RealtimeConnection,
    RealtimeConnectionClosed,
    RealtimeFailure,
    RealtimeRequestError,
    RealtimeSettings,
    RealtimeUnavailable,
    ServerEvent,
    ToolCallCollector,
    error_of,
    joined_base64,
    open_realtime,
    turn_detection_update_event,
)
from orchestrator.engines.caller_audio_batching import CALLER_FRAMES_PER_BATCH, CallerAudioBatching
from orchestrator.engines.interface import (
    SILENT_ANSWER_S,
    AgentAudio,
    AgentTranscript,
    CallerSpeechStarted,
    CallerTranscript,
    EngineCall,
    EngineCapabilities,
    EngineEvent,
    EngineProblem,
    EngineUnavailable,
    ResponseFinished,
    ResponseStarted,
    SpokenLine,
    ToolCallReady,
)

log = logging.getLogger(__name__)

# Errors the Realtime server sends that leave the session usable (protocols/openai-realtime.md §3, §4, §8).
HARMLESS_ERROR_CODES = frozenset(
    {
        "conversation_already_has_active_response",  # our response.create raced one started by VAD
        "response_cancel_not_active",
        "input_audio_buffer_commit_empty",
        "unsupported_content_type",  # a truncate of an item with no audio
    }
)
TAG_KEY = "tag"  # response metadata key carrying the tag given to speak()
_TRUNCATE_ID_PREFIX = "truncate_"
AUDIO_APPEND_PARAM = "audio"  # the `param` of an error that answers an input_audio_buffer.append
_RESPONSE_ID_PREFIX = "respond_"
# Events _translate turns into nothing, frequent enough to skip without validation (one per word or so).
_IGNORED_EVENTS = frozenset({AUDIO_TRANSCRIPT_DELTA_EVENT})  # a truncate the server found too long is harmless


class RealtimeEngine:
    """One call's Realtime session, seen as a `TriageEngine`. Sends on a closed socket are dropped:
    the end of `events()` is how the session learns that the engine is gone."""

    def __init__(
        self,
        connection: RealtimeConnection,
        batching: CallerAudioBatching | None = None,
        turn_detection: ServerVad | None = None,
    ) -> None:
        self._connection = connection
        self._turn_detection = turn_detection  # the session's, when it has an idle timeout to pause
        self._idle_paused = False
        self._batching = batching or CallerAudioBatching()
        self._tools = ToolCallCollector()
        self._tags: dict[str, str | None] = {}  # the active responses' tags, by response id
        # Our response.create requests not yet answered by a response.created: (event id, tag), oldest first.
        self._requests: list[tuple[str, str | None]] = []
        self._request_ids = itertools.count(1)
        self._metadata_echoed = False  # the server echoed our metadata once: tags are never inferred
        self._truncates = itertools.count(1)
        self._held_audio: list[str] = []  # caller frames waiting to go out in one append

    def send_caller_audio(self, payload_b64: str) -> None:
        """Each frame at once while the worker is not busy; else two in one append (`caller_audio_batching`)."""
        held = self._held_audio
        if not held and not self._batching.on():
            if _is_base64(payload_b64):
                self._post_audio(payload_b64)
            else:
                log.info("caller audio that is not base64 was dropped (%d chars)", len(payload_b64))
            return
        held.append(payload_b64)
        if len(held) < CALLER_FRAMES_PER_BATCH:
            return
        self._held_audio = []
        try:
            joined = joined_base64(held)
        except (binascii.Error, ValueError):  # one is not base64: the others go alone, it is dropped
            for payload in held:
                if _is_base64(payload):
                    self._post_audio(payload)
                else:
                    log.info("caller audio that is not base64 was dropped (%d chars)", len(payload))
            return
        self._post_audio(joined)

    def _post_audio(self, payload_b64: str) -> None:
        try:
            self._connection.post_audio(payload_b64)
        except RealtimeConnectionClosed:
            log.debug("realtime socket closed; caller audio was dropped")

    def caller_pressed_key(self) -> None:
        """The server's idle timeout would prompt a caller typing a number: it is off until the agent next
        speaks at our request or the caller speaks."""
        vad = self._turn_detection
        if vad is None or self._idle_paused:
            return
        self._idle_paused = True
        self._post_turn_detection(vad.model_copy(update={"idle_timeout_ms": None}))

    def _resume_idle_timeout(self) -> None:
        if self._idle_paused and self._turn_detection is not None:
            self._idle_paused = False
            self._post_turn_detection(self._turn_detection)

    def _post_turn_detection(self, vad: ServerVad) -> None:
        try:
            self._connection.post_event(turn_detection_update_event(vad))
        except RealtimeConnectionClosed:
            log.debug("realtime socket closed; a turn detection update was dropped")

    async def speak(
        self,
        instructions: str | None,
        *,
        tag: str | None,
        request_id: str | None = None,
        line: SpokenLine | None = None,  # the model follows the instructions, which quote the line
    ) -> None:
        self._resume_idle_timeout()  # before the response: its audio's end starts the timer
        metadata = {TAG_KEY: tag} if tag is not None else None
        request_id = request_id or f"{_RESPONSE_ID_PREFIX}{next(self._request_ids)}"
        if not self._metadata_echoed:
            self._requests.append((request_id, tag))
        await self._quietly(self._connection.create_response(instructions, metadata=metadata, event_id=request_id))

    async def send_tool_output(self, call_id: str, output: str) -> None:
        await self._quietly(self._connection.send_function_output(call_id, output, respond=False))

    async def send_caller_text(self, text: str) -> None:
        """A caller turn as text (replay), answered by one response."""
        await self._quietly(self._connection.add_user_text(text))
        await self.speak(None, tag=None)

    async def truncate(self, item_id: str, audio_end_ms: int) -> None:
        event_id = f"{_TRUNCATE_ID_PREFIX}{next(self._truncates)}"
        await self._quietly(self._connection.truncate(item_id, 0, audio_end_ms, event_id=event_id))

    async def events(self, on_agent_audio: Callable[[AgentAudio], None] | None = None) -> AsyncIterator[EngineEvent]:
        if on_agent_audio is not None:
            self._connection.take_audio(
                lambda delta: on_agent_audio(AgentAudio(delta.response_id, delta.item_id, delta.delta)),
                ignored=_IGNORED_EVENTS,
            )
        try:
            async for event in self._connection.events():
                for translated in self._translate(event):
                    if on_agent_audio is not None and isinstance(translated, AgentAudio):
                        on_agent_audio(translated)  # a delta the reactor left to this task
                    else:
                        yield translated
        finally:
            if on_agent_audio is not None:
                self._connection.take_audio(None)

    def _translate(self, event: ServerEvent) -> Sequence[EngineEvent]:
        # Ordered by frequency: audio deltas are most of the traffic.
        if isinstance(event, AUDIO_DELTA_CLASSES):
            return (AgentAudio(event.response_id, event.item_id, event.delta),)
        ready = [
            ToolCallReady(call.call_id, call.name, call.arguments_json, call.response_id)
            for call in self._tools.feed(event)
        ]
        if isinstance(event, ResponseDoneEvent):
            response = event.response
            response_id = response.id or ""
            tag = self._tags.pop(response_id, _tag_of(response.metadata))
            return (*ready, ResponseFinished(response_id, tag, response.status or "completed"))
        if ready:
            return ready
        if isinstance(event, ResponseCreatedEvent):
            response_id = event.response.id or ""
            tag = self._tags[response_id] = self._tag_of_created(event.response.metadata)
            return (ResponseStarted(response_id, tag),)
        if isinstance(event, InputAudioBufferSpeechStartedEvent):
            self._resume_idle_timeout()
            return (CallerSpeechStarted(),)
        if isinstance(event, ConversationItemInputAudioTranscriptionCompletedEvent):
            return (CallerTranscript(event.transcript),) if event.transcript.strip() else ()
        if isinstance(event, ResponseAudioTranscriptDoneEvent):
            return (AgentTranscript(event.transcript),)
        error = error_of(event)
        if error is not None:
            code = error.code or error.type or "error"
            request_id = error.event_id
            self._requests = [request for request in self._requests if request[0] != request_id]
            harmless = (
                code in HARMLESS_ERROR_CODES
                or (request_id or "").startswith(_TRUNCATE_ID_PREFIX)
                or (code == "invalid_value" and error.param == AUDIO_APPEND_PARAM)  # one bad caller frame
            )
            return (EngineProblem(code, error.message or "", fatal=not harmless, request_id=request_id),)
        return ()

    def _tag_of_created(self, metadata: Mapping[str, str] | None) -> str | None:
        """The tag of a response just created: the one its metadata echoes. Where metadata is not echoed
        (a proxy or deployment drops it), a response created while no other is active and a request of ours
        waits is that request's (the server refuses a response.create while one is active)."""
        tag = _tag_of(metadata)
        if tag is not None:
            self._metadata_echoed = True
            self._requests.clear()  # the metadata says whose each response is from now on
            return tag
        if self._requests and not self._tags:
            return self._requests.pop(0)[1]
        return None

    @staticmethod
    async def _quietly(send: Any) -> None:
        try:
            await send
        except RealtimeConnectionClosed:
            log.debug("realtime socket closed; a send was dropped")


def _is_base64(payload_b64: str) -> bool:
    try:
        binascii.a2b_base64(payload_b64, strict_mode=True)
    except (binascii.Error, ValueError):
        return False
    return True


def _tag_of(metadata: Mapping[str, str] | None) -> str | None:
    return (metadata or {}).get(TAG_KEY)


class RealtimeConnector:
    """Opens a configured Realtime session per call (waits for session.updated before it is used)."""

    name = "realtime"
    capabilities = EngineCapabilities(text_input=True)  # any language the model speaks; text-only sessions

    def __init__(
        self,
        settings: RealtimeSettings,
        *,
        instructions: str,
        tools: Sequence[Mapping[str, Any]],
        transcription_model: str | None = None,
        label: str = "realtime",
        batching: CallerAudioBatching | None = None,
        silent_answer_s: float = SILENT_ANSWER_S,
    ) -> None:
        self.settings = settings
        # The server's VAD asks the model to go on once the caller has been silent this long after the model's
        # audio has played (`idle_timeout_ms`): the model asks again, as the offline engine does.
        self.turn_detection = DEFAULT_TURN_DETECTION.model_copy(
            update={"idle_timeout_ms": round(silent_answer_s * 1000)}
        )
        self.instructions = instructions
        self.tools = list(tools)
        self.transcription = {"model": transcription_model} if transcription_model else None
        self.name = label
        self.tls_context = settings.tls_context()  # one for every call of this process
        self.batching = batching or CallerAudioBatching()  # one for every call of this process

    def connect(self, call: EngineCall) -> AbstractAsyncContextManager[RealtimeEngine]:
        return self._open(call, text_only=False)

    def connect_text(self, call: EngineCall) -> AbstractAsyncContextManager[RealtimeEngine]:
        """A text-only session (no audio either way, no turn detection): cheap replays of past calls."""
        return self._open(call, text_only=True)

    @asynccontextmanager
    async def _open(self, call: EngineCall, *, text_only: bool) -> AsyncIterator[RealtimeEngine]:
        async with AsyncExitStack() as stack:
            try:
                connection = await stack.enter_async_context(
                    open_realtime(self.settings, ssl_context=self.tls_context)
                )
                # The date is per call so the model can turn "next Tuesday" into YYYY-MM-DD.
                instructions = f"{self.instructions}\n\nToday's date is {date.today().isoformat()}."
                if text_only:
                    await connection.configure(instructions, self.tools, vad=None, output_modalities=("text",))
                else:
                    await self._configure_for_audio(connection, instructions)
            except RealtimeFailure as failure:
                kind = failure.kind if isinstance(failure, RealtimeUnavailable) else "session"
                raise EngineUnavailable(f"{type(failure).__name__}: {failure}", kind=kind) from failure
            idle = self.turn_detection if self.turn_detection.idle_timeout_ms and not text_only else None
            yield RealtimeEngine(connection, self.batching, idle)

    async def _configure_for_audio(self, connection: RealtimeConnection, instructions: str) -> None:
        try:
            await connection.configure(instructions, self.tools, vad=self.turn_detection, transcription=self.transcription)
        except RealtimeRequestError as refused:
            error = refused.error
            if not self.turn_detection.idle_timeout_ms or "idle_timeout" not in f"{error.param} {error.message}":
                raise
            # A deployment on an API version without it: calls go on, silent callers wait for the budget.
            log.warning("the Realtime endpoint refuses idle_timeout_ms (%s): silent callers are not prompted", refused)
            self.turn_detection = DEFAULT_TURN_DETECTION  # this process's later calls too
            await connection.configure(instructions, self.tools, vad=self.turn_detection, transcription=self.transcription)
