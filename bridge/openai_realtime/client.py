"""OpenAI Realtime client (GA protocol only) over `bridge.websocket.connection` (Trio, websockets' sans-I/O protocol).

The SDK's own connection is asyncio-only, so this module owns the socket and uses the SDK's pydantic
types for the frames: client events are built from `openai.types.realtime` models, server events are
parsed into them. Nothing here knows about calls, routes or machines.

    async with open_realtime(settings) as realtime:
        await realtime.configure(instructions, tools)        # waits for session.updated
        async for event in realtime.events():                # ends when the socket closes
            ...

Never send an `OpenAI-Beta` header nor a beta-shaped `session.update`: since 2026 the server answers
`beta_api_shape_disabled` and closes the socket with code 4000.
"""

from __future__ import annotations

import binascii
import logging
import socket
import ssl
import typing
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal, Union
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit
from urllib.request import getproxies_environment, proxy_bypass_environment  # type: ignore[attr-defined]

import orjson
import trio
from openai.types.realtime import (
    ConversationItemCreateEvent,
    ConversationItemTruncateEvent,
    RealtimeClientEvent,
    RealtimeErrorEvent,
    RealtimeServerEvent,
    RealtimeSessionCreateRequest,
    ResponseAudioDeltaEvent,
    ResponseCancelEvent,
    ResponseCreateEvent,
    ResponseDoneEvent,
    ResponseOutputItemDoneEvent,
    SessionUpdatedEvent,
    SessionUpdateEvent,
)
from openai.types.realtime.audio_transcription import AudioTranscription
from openai.types.realtime.realtime_audio_config import RealtimeAudioConfig
from openai.types.realtime.realtime_audio_config_input import RealtimeAudioConfigInput
from openai.types.realtime.realtime_audio_config_output import RealtimeAudioConfigOutput
from openai.types.realtime.realtime_audio_formats import AudioPCMU
from openai.types.realtime.realtime_audio_input_turn_detection import (
    SemanticVad,
    ServerVad,
)
from openai.types.realtime.realtime_conversation_item_function_call import (
    RealtimeConversationItemFunctionCall,
)
from openai.types.realtime.realtime_conversation_item_function_call_output import (
    RealtimeConversationItemFunctionCallOutput,
)
from openai.types.realtime.realtime_conversation_item_user_message import (
    Content as UserMessageContent,
)
from openai.types.realtime.realtime_conversation_item_user_message import (
    RealtimeConversationItemUserMessage,
)
from openai.types.realtime.realtime_error import RealtimeError
from openai.types.realtime.realtime_function_tool import RealtimeFunctionTool
from openai.types.realtime.realtime_response_create_params import (
    RealtimeResponseCreateParams,
)
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    TypeAdapter,
    ValidationError,
    field_validator,
)

from bridge.websocket import (
    ProxyRefused,
    WebSocket,
    WebSocketClosed,
    WebSocketRejected,
    connect_websocket,
)

log = logging.getLogger(__name__)

__all__ = [
    "AUDIO_DELTA_CLASSES",
    "AUDIO_DELTA_EVENT",
    "AudioDelta",
    "CLIENT_EVENT_ADAPTER",
    "CLIENT_EVENT_TYPES",
    "DEFAULT_TURN_DETECTION",
    "SERVER_EVENT_ADAPTER",
    "SERVER_EVENT_TYPES",
    "CompletedToolCall",
    "RealtimeClose",
    "RealtimeConnection",
    "RealtimeConnectionClosed",
    "RealtimeFailure",
    "RealtimeRequestError",
    "RealtimeSettings",
    "RealtimeStats",
    "RealtimeUnavailable",
    "ServerEvent",
    "ServerEventDecoder",
    "ToolCallCollector",
    "audio_append_frame",
    "audio_delta_of",
    "error_of",
    "joined_base64",
    "open_realtime",
    "session_update_event",
]


# --------------------------------------------------------------------------- event types


def _union_members(alias: Any) -> tuple[type[BaseModel], ...]:
    """The classes of an SDK `Annotated[Union[...], PropertyInfo(...)]` alias."""
    if typing.get_origin(alias) is Annotated:
        alias = typing.get_args(alias)[0]
    return typing.get_args(alias)


def _event_type_of(event_class: type[BaseModel]) -> str:
    (literal,) = typing.get_args(event_class.model_fields["type"].annotation)
    return str(literal)


def _discriminated_adapter(classes: tuple[type[BaseModel], ...]) -> TypeAdapter[Any]:
    # The SDK marks its unions with its own PropertyInfo(discriminator=...), which pydantic ignores:
    # that is a smart union (~140 µs per audio delta). A real discriminator dispatches on `type` (~2 µs).
    return TypeAdapter(Annotated[Union[classes], Field(discriminator="type")])  # type: ignore[arg-type]  # noqa: UP007 (a runtime tuple)


SERVER_EVENT_CLASSES = _union_members(RealtimeServerEvent)
CLIENT_EVENT_CLASSES = _union_members(RealtimeClientEvent)
SERVER_EVENT_ADAPTER = _discriminated_adapter(SERVER_EVENT_CLASSES)
CLIENT_EVENT_ADAPTER = _discriminated_adapter(CLIENT_EVENT_CLASSES)
SERVER_EVENT_TYPES = frozenset(_event_type_of(cls) for cls in SERVER_EVENT_CLASSES)
CLIENT_EVENT_TYPES = frozenset(_event_type_of(cls) for cls in CLIENT_EVENT_CLASSES)


TurnDetection = ServerVad | SemanticVad

# Written out rather than left to server defaults, because create_response/interrupt_response being on
# by default is implied by the docs, not stated.
DEFAULT_TURN_DETECTION = ServerVad(
    type="server_vad",
    threshold=0.5,
    prefix_padding_ms=300,
    silence_duration_ms=500,
    create_response=True,
    interrupt_response=True,
)

_PCMU = AudioPCMU(type="audio/pcmu")
# OpenSSL's verify codes for a certificate that does not name the host (62) or the IP address (64).
_X509_V_ERR_NAME_MISMATCH = frozenset({62, 64})


# --------------------------------------------------------------------------- settings and errors


class RealtimeSettings(BaseModel):
    """Where and how to reach a Realtime endpoint (OpenAI, Azure OpenAI or a proxy)."""

    model_config = ConfigDict(frozen=True)

    url: str = "wss://api.openai.com/v1/realtime"
    # Appended as `?model=`; None when the URL already names the model or deployment.
    model: str | None = "gpt-realtime-1.5"
    # Sent as `Authorization: Bearer`. None for endpoints authenticated by `extra_headers` (Azure `api-key`).
    api_key: SecretStr | None = None
    extra_headers: dict[str, str] = Field(default_factory=dict)
    # Sent as the `openai` package sends them (`OpenAI-Organization`, `OpenAI-Project`).
    organization: str | None = None
    project: str | None = None
    # A PEM file of CA certificates trusted beside the system's (a private endpoint's own CA), for wss://.
    ca_file: str | None = None
    # An http:// proxy the socket tunnels through (CONNECT); see `proxy_from_environment`.
    proxy: str | None = None
    voice: str = "marin"
    connect_timeout_s: float = 10.0
    configure_timeout_s: float = 10.0
    close_timeout_s: float = 2.0
    # Ping interval; a peer that leaves a ping unanswered until the next is lost (within 2 × this). None: off.
    keepalive_s: float | None = 15.0
    # input_audio_buffer.append may carry up to 15 MiB; server frames are far smaller.
    max_message_bytes: int = 16 * 1024 * 1024

    @field_validator("extra_headers")
    @classmethod
    def _refuse_beta_header(cls, headers: dict[str, str]) -> dict[str, str]:
        if any(name.lower() == "openai-beta" for name in headers):
            raise ValueError("the OpenAI-Beta header selects the retired beta protocol; remove it")
        return headers

    def endpoint(self) -> str:
        """The WebSocket URL with the model query parameter (unless the URL already has one)."""
        parts = urlsplit(self.url)
        query = parse_qsl(parts.query, keep_blank_values=True)
        if self.model is not None and not any(name == "model" for name, _ in query):
            query.append(("model", self.model))
        return urlunsplit(parts._replace(query=urlencode(query)))

    def handshake_headers(self) -> list[tuple[str, str]]:
        headers = list(self.extra_headers.items())
        if self.api_key is not None:
            headers.append(("Authorization", "Bearer " + self.api_key.get_secret_value()))
        if self.organization is not None:
            headers.append(("OpenAI-Organization", self.organization))
        if self.project is not None:
            headers.append(("OpenAI-Project", self.project))
        return headers

    def proxy_from_environment(self) -> str | None:
        """The proxy HTTPS_PROXY (wss://) or HTTP_PROXY (ws://) names for the URL, unless NO_PROXY
        exempts its host: the variables the `openai` package (httpx) honours."""
        parts = urlsplit(self.url)
        if proxy_bypass_environment(parts.hostname or ""):
            return None
        return getproxies_environment().get("https" if parts.scheme == "wss" else "http")

    def tls_context(self) -> ssl.SSLContext | None:
        """The TLS context for a wss:// URL (None for ws://): the system's trust store (`SSL_CERT_FILE`
        included) plus `ca_file`. Building one blocks for ~20 ms: build it once per process and pass it to
        every `open_realtime`."""
        if urlsplit(self.url).scheme != "wss":
            return None
        context = ssl.create_default_context()
        if self.ca_file is not None:
            context.load_verify_locations(cafile=self.ca_file)
        return context


class RealtimeFailure(Exception):
    """Base of every error this module raises on purpose."""


class RealtimeUnavailable(RealtimeFailure):
    """The Realtime session could not be established (refused, rejected, timed out, closed early)."""

    def __init__(self, reason: str, *, status_code: int | None = None, kind: str = "other") -> None:
        super().__init__(reason)
        self.reason = reason
        self.status_code = status_code
        # What failed, for counting: certificate, hostname, tls, dns, proxy, refused, network, timeout,
        # http_status, handshake, url, other.
        self.kind = kind


def connect_failure_kind(error: BaseException) -> str:
    """The kind (see RealtimeUnavailable.kind) of an error raised while connecting."""
    if isinstance(error, ssl.SSLCertVerificationError):
        hostname = error.verify_code in _X509_V_ERR_NAME_MISMATCH
        return "hostname" if hostname else "certificate"
    if isinstance(error, ssl.SSLError):
        return "tls"
    if isinstance(error, socket.gaierror):
        return "dns"
    if isinstance(error, ProxyRefused):
        return "proxy"
    if isinstance(error, ConnectionRefusedError):
        return "refused"
    attempts = error.__cause__  # Trio's "all attempts to connect failed" holds each address's error
    if type(error) is OSError and isinstance(attempts, BaseExceptionGroup) and attempts.exceptions:
        return connect_failure_kind(attempts.exceptions[0])
    if isinstance(error, OSError):
        return "network"
    if isinstance(error, ValueError):
        return "url"
    return "other"


class RealtimeRequestError(RealtimeFailure):
    """The server answered a request with an `error` event (raised by `configure`)."""

    def __init__(self, error: RealtimeError) -> None:
        super().__init__(f"{error.code or error.type}: {error.message}")
        self.error = error


class RealtimeConnectionClosed(RealtimeFailure):
    """Sending or receiving on a socket that is closed. `close` says who closed it and how."""

    def __init__(self, close: RealtimeClose) -> None:
        super().__init__(f"realtime socket closed ({close.code}{' ' + close.reason if close.reason else ''})")
        self.close = close


@dataclass(frozen=True, slots=True)
class RealtimeClose:
    """Close code and reason: 1000 normal, 1006 dropped without a close frame, 4000 beta shape refused."""

    code: int
    reason: str | None


@dataclass(slots=True)
class RealtimeStats:
    frames_received: int = 0
    frames_sent: int = 0
    # Counted, logged and skipped: not JSON, or JSON without a string `type`.
    malformed_frames: int = 0
    # Returned as raw dicts.
    unknown_events: int = 0
    invalid_events: int = 0


# --------------------------------------------------------------------------- decoding


AUDIO_DELTA_EVENT = "response.output_audio.delta"
AUDIO_TRANSCRIPT_DELTA_EVENT = "response.output_audio_transcript.delta"  # a word or so, with the audio
_AUDIO_DELTA_KEYS = frozenset(
    {"type", "event_id", "response_id", "item_id", "output_index", "content_index", "delta"}
)


@dataclass(slots=True)
class AudioDelta:
    """A `response.output_audio.delta` in the exact shape the server sends: the fields of
    `ResponseAudioDeltaEvent` without building a pydantic model for every audio chunk. Not frozen (a
    frozen dataclass costs a third more to build): treat as read-only."""

    type: ClassVar[str] = AUDIO_DELTA_EVENT
    event_id: str
    response_id: str
    item_id: str
    output_index: int
    content_index: int
    delta: str  # base64 audio, passed on untouched


def audio_delta_of(frame: str | bytes) -> AudioDelta | None:
    """The fast path for audio deltas: an AudioDelta when the frame is a delta with exactly the SDK's fields
    and JSON types, else None (any other event, malformed JSON, a wrong type, a missing or an extra field)
    so the frame takes the full SDK validation instead."""
    try:
        data = orjson.loads(frame)
    except orjson.JSONDecodeError:
        return None
    return _audio_delta_from(data) if type(data) is dict else None


def _audio_delta_from(data: dict[str, Any]) -> AudioDelta | None:
    if data.get("type") != AUDIO_DELTA_EVENT or data.keys() != _AUDIO_DELTA_KEYS:
        return None
    event_id, response_id, item_id, delta = data["event_id"], data["response_id"], data["item_id"], data["delta"]
    output_index, content_index = data["output_index"], data["content_index"]
    # `type(...) is`, not isinstance: a JSON true is not an index.
    if not (type(event_id) is type(response_id) is type(item_id) is type(delta) is str
            and type(output_index) is type(content_index) is int):
        return None
    return AudioDelta(event_id, response_id, item_id, output_index, content_index, delta)


# What the decoder yields for an audio delta: AudioDelta, or the SDK model for an unusual but valid frame.
AUDIO_DELTA_CLASSES = (AudioDelta, ResponseAudioDeltaEvent)

# What `receive()` yields: an SDK server-event model (an AudioDelta for most audio deltas), or the raw
# dict of an event type the SDK does not know (or a known type whose payload the SDK cannot validate).
ServerEvent = BaseModel | AudioDelta | dict[str, Any]


class ServerEventDecoder:
    """Turns server frames into SDK event models (audio deltas into AudioDelta). Never raises on bad input.

    Hot path: audio deltas, most of the traffic, take `audio_delta_of` (orjson and a check of the fields,
    ~2x cheaper than the model). Everything else, and any delta that path does not take, is validated by
    the discriminated union straight from the JSON text in pydantic-core; only frames that fail it take the
    slow path through orjson. `validate_audio=True` turns the fast path off (the schema of record, for tests).
    """

    def __init__(self, stats: RealtimeStats | None = None, *, validate_audio: bool = False) -> None:
        self.stats = stats if stats is not None else RealtimeStats()
        self._fast_audio = not validate_audio

    def decode(self, frame: str | bytes) -> ServerEvent | None:
        self.stats.frames_received += 1
        if self._fast_audio:
            delta = audio_delta_of(frame)
            if delta is not None:
                return delta
        try:
            event: ServerEvent = SERVER_EVENT_ADAPTER.validate_json(frame)
        except ValidationError:
            return self._decode_unusual(frame)
        return event

    def _decode_unusual(self, frame: str | bytes) -> ServerEvent | None:
        try:
            data = orjson.loads(frame)
        except orjson.JSONDecodeError:
            self.stats.malformed_frames += 1
            log.warning("realtime frame is not JSON, skipped: %.120r", frame)
            return None
        if not isinstance(data, dict) or not isinstance(data.get("type"), str):
            self.stats.malformed_frames += 1
            log.warning("realtime frame has no event type, skipped: %.120r", frame)
            return None
        if data["type"] not in SERVER_EVENT_TYPES:
            self.stats.unknown_events += 1
            log.debug("unknown realtime event type %r passed on as a dict", data["type"])
            return data
        repaired = _with_custom_voice_as_id(data)
        if repaired is not None:
            try:
                event: ServerEvent = SERVER_EVENT_ADAPTER.validate_python(repaired)
                return event
            except ValidationError:
                pass
        self.stats.invalid_events += 1
        log.warning("realtime event %r does not match the SDK model, passed on as a dict", data["type"])
        return data


def _with_custom_voice_as_id(data: dict[str, Any]) -> dict[str, Any] | None:
    """SDK gap (3.54): `RealtimeResponse.audio.output.voice` is str-only, but a custom voice comes as
    `{"id": ...}` in response.created/done. Returns a copy with the id as the voice, or None."""
    response = data.get("response")
    if not isinstance(response, dict):
        return None
    output = (response.get("audio") or {}).get("output")
    if not isinstance(output, dict) or not isinstance(output.get("voice"), dict):
        return None
    voice_id = output["voice"].get("id")
    if not isinstance(voice_id, str):
        return None
    audio = {**response["audio"], "output": {**output, "voice": voice_id}}
    return {**data, "response": {**response, "audio": audio}}


def error_of(event: ServerEvent) -> RealtimeError | None:
    """The error carried by an `error` event (typed or raw), else None."""
    if isinstance(event, RealtimeErrorEvent):
        return event.error
    if isinstance(event, dict) and event.get("type") == "error":
        raw = event.get("error")
        detail: dict[str, Any] = raw if isinstance(raw, dict) else {}
        return RealtimeError(
            type=str(detail.get("type", "unknown")),
            message=str(detail.get("message", "")),
            code=detail.get("code"),
            param=detail.get("param"),
            event_id=detail.get("event_id"),
        )
    return None


# --------------------------------------------------------------------------- client frames


def audio_append_frame(payload_b64: str) -> str:
    """`input_audio_buffer.append` text for one Twilio media payload, passed through untouched.

    Built with orjson instead of a pydantic model because it runs 50 times a second per call; the
    key order matches `InputAudioBufferAppendEvent.model_dump_json` so both produce the same bytes.
    """
    return orjson.dumps({"audio": payload_b64, "type": "input_audio_buffer.append"}).decode()


def joined_base64(payloads_b64: Sequence[str]) -> str:
    """One base64 string holding the bytes of all, in order. Raises binascii.Error unless all are base64."""
    audio = b"".join([binascii.a2b_base64(payload, strict_mode=True) for payload in payloads_b64])
    return binascii.b2a_base64(audio, newline=False).decode()


def _function_tool(tool: Mapping[str, Any] | RealtimeFunctionTool) -> RealtimeFunctionTool:
    if isinstance(tool, RealtimeFunctionTool):
        return tool
    return RealtimeFunctionTool.model_validate({"type": "function", **tool})


def session_update_event(
    instructions: str,
    tools: Sequence[Mapping[str, Any] | RealtimeFunctionTool],
    *,
    voice: str,
    vad: TurnDetection | None,
    transcription: AudioTranscription | Mapping[str, Any] | None = None,
    output_modalities: Sequence[Literal["audio", "text"]] = ("audio",),
) -> SessionUpdateEvent:
    """A GA `session.update`: µ-law 8 kHz both ways (Twilio's format), the given VAD and tools.

    `vad=None` sends `turn_detection: null` (manual turns: commit + response.create).
    """
    audio_input: dict[str, Any] = {"format": _PCMU, "turn_detection": vad}
    if transcription is not None:
        audio_input["transcription"] = transcription
    session = RealtimeSessionCreateRequest(
        type="realtime",
        instructions=instructions,
        output_modalities=list(output_modalities),
        audio=RealtimeAudioConfig(
            input=RealtimeAudioConfigInput(**audio_input),
            output=RealtimeAudioConfigOutput(format=_PCMU, voice=voice),
        ),
        tools=[_function_tool(tool) for tool in tools],
        tool_choice="auto",
    )
    return SessionUpdateEvent(type="session.update", session=session)


def turn_detection_update_event(vad: TurnDetection | None) -> SessionUpdateEvent:
    """A `session.update` that changes only the turn detection (replaced as a whole by the server)."""
    session = RealtimeSessionCreateRequest(
        type="realtime", audio=RealtimeAudioConfig(input=RealtimeAudioConfigInput(turn_detection=vad))
    )
    return SessionUpdateEvent(type="session.update", session=session)


def _dump(event: BaseModel) -> str:
    # exclude_unset, not exclude_none: an explicit `turn_detection=None` must go out as null.
    return event.model_dump_json(exclude_unset=True)


# --------------------------------------------------------------------------- connection


class RealtimeConnection:
    """One open Realtime socket. Obtain it from `open_realtime`.

    One task receives (`receive()` / `events()` / `configure()`); any number of tasks may send.
    """

    def __init__(self, websocket: WebSocket, settings: RealtimeSettings) -> None:
        self._websocket = websocket
        self._settings = settings
        self.stats = RealtimeStats()
        self._decoder = ServerEventDecoder(self.stats)
        # Events that arrived while configure() waited for session.updated; receive() yields them first.
        self._pending: deque[ServerEvent] = deque()
        self._receiving = False
        # The effective session config from the last session.updated.
        self.session: BaseModel | dict[str, Any] | None = None

    @property
    def closed(self) -> RealtimeClose | None:
        """How the socket closed, or None while it is open."""
        closed = self._websocket.closed
        return None if closed is None else RealtimeClose(closed[0], closed[1] or None)

    # ---- sending

    async def send_event(self, event: BaseModel) -> None:
        """Send any client event model from `openai.types.realtime`."""
        await self._send_text(_dump(event))

    def post_event(self, event: BaseModel) -> None:
        """send_event without waiting: written at once when the socket has room, else queued in order."""
        self._post_text(_dump(event))

    def _post_text(self, text: str) -> None:
        try:
            self._websocket.post_text(text)
        except WebSocketClosed as closed:
            raise RealtimeConnectionClosed(RealtimeClose(closed.code, closed.reason or None)) from None
        self.stats.frames_sent += 1

    async def _send_text(self, text: str) -> None:
        try:
            await self._websocket.send_text(text)
        except WebSocketClosed as closed:
            raise RealtimeConnectionClosed(RealtimeClose(closed.code, closed.reason or None)) from None
        self.stats.frames_sent += 1

    async def configure(
        self,
        instructions: str,
        tools: Sequence[Mapping[str, Any] | RealtimeFunctionTool] = (),
        *,
        voice: str | None = None,
        vad: TurnDetection | None = DEFAULT_TURN_DETECTION,
        transcription: AudioTranscription | Mapping[str, Any] | None = None,
        output_modalities: Sequence[Literal["audio", "text"]] = ("audio",),
    ) -> SessionUpdatedEvent | dict[str, Any]:
        """Send `session.update` and wait for `session.updated`.

        Call it before anything that makes the model speak: until session.updated the session runs with
        default instructions and VAD. Raises RealtimeRequestError on an `error` event, RealtimeUnavailable
        on timeout or when the socket closes first. Other events received meanwhile are kept for receive().
        """
        update = session_update_event(
            instructions,
            tools,
            voice=voice or self._settings.voice,
            vad=vad,
            transcription=transcription,
            output_modalities=output_modalities,
        )
        await self.send_event(update)
        timeout_s = self._settings.configure_timeout_s
        with self._exclusive_receiver(), trio.move_on_after(timeout_s):
            while True:
                try:
                    event = await self._next_event()
                except RealtimeConnectionClosed as closed:
                    raise RealtimeUnavailable(f"socket closed before session.updated: {closed}") from closed
                if isinstance(event, SessionUpdatedEvent):
                    self.session = event.session
                    return event
                if isinstance(event, dict) and event.get("type") == "session.updated":
                    self.session = event.get("session")
                    return event
                error = error_of(event)
                if error is not None:
                    raise RealtimeRequestError(error)
                self._pending.append(event)
        raise RealtimeUnavailable(f"no session.updated within {timeout_s} s")

    async def append_audio(self, payload_b64: str) -> None:
        """Forward one base64 audio payload (µ-law 8 kHz from Twilio) untouched."""
        await self._send_text(audio_append_frame(payload_b64))

    def post_audio(self, payload_b64: str) -> None:
        """append_audio without waiting: written at once when the socket has room, else queued in order."""
        self._post_text(audio_append_frame(payload_b64))

    def take_audio(
        self, on_audio: Callable[[AudioDelta], None] | None, *, ignored: frozenset[str] = frozenset()
    ) -> None:
        """From now on plain audio deltas go to `on_audio` as they arrive, and events whose type is in
        `ignored` (the receiver would drop them) are counted and dropped; receive() yields every other
        event, in order. On a plain socket this runs in the read reactor, without waking the receiving
        task (`bridge.websocket.connection`). None: every event comes from receive() again."""
        if on_audio is None:
            self._websocket.take_messages(None)
            return

        def take(frame: str | bytes) -> bool:
            if self._pending:
                return False
            try:
                data = orjson.loads(frame)
            except orjson.JSONDecodeError:
                return False
            if type(data) is not dict:
                return False
            delta = _audio_delta_from(data)
            if delta is not None:
                on_audio(delta)
            elif data.get("type") not in ignored:
                return False
            self.stats.frames_received += 1
            return True

        self._websocket.take_messages(take)

    async def create_response(
        self,
        instructions: str | None = None,
        *,
        metadata: Mapping[str, str] | None = None,
        event_id: str | None = None,
    ) -> None:
        """Ask for a response; `instructions` override the session's for this response only.

        The server echoes `metadata` in response.created/done, which tells a response we asked for from
        one the server started by itself (VAD). An `error` caused by this request carries `event_id`.
        """
        # Unset fields stay off the wire (exclude_unset), so only pass what is given.
        params: dict[str, Any] = {}
        if instructions is not None:
            params["instructions"] = instructions
        if metadata is not None:
            params["metadata"] = dict(metadata)
        options: dict[str, Any] = {"response": RealtimeResponseCreateParams(**params)} if params else {}
        if event_id is not None:
            options["event_id"] = event_id
        await self.send_event(ResponseCreateEvent(type="response.create", **options))

    async def send_function_output(self, call_id: str, output: str, *, respond: bool = True) -> None:
        """Return a tool result; then ask for a response unless `respond=False` (several parallel
        calls are answered with one response.create after the last output)."""
        item = RealtimeConversationItemFunctionCallOutput(
            type="function_call_output", call_id=call_id, output=output
        )
        await self.send_event(ConversationItemCreateEvent(type="conversation.item.create", item=item))
        if respond:
            await self.create_response()

    async def truncate(
        self, item_id: str, content_index: int, audio_end_ms: int, *, event_id: str | None = None
    ) -> None:
        """Tell the server how much of an assistant audio item the caller actually heard."""
        options = {} if event_id is None else {"event_id": event_id}
        await self.send_event(
            ConversationItemTruncateEvent(
                type="conversation.item.truncate",
                item_id=item_id,
                content_index=content_index,
                audio_end_ms=audio_end_ms,
                **options,
            )
        )

    async def add_user_text(self, text: str) -> None:
        """Add a user text message to the conversation (text-mode replay); no response is requested."""
        item = RealtimeConversationItemUserMessage(
            type="message", role="user", content=[UserMessageContent(type="input_text", text=text)]
        )
        await self.send_event(ConversationItemCreateEvent(type="conversation.item.create", item=item))

    async def cancel_response(self, response_id: str | None = None) -> None:
        """Cancel the active response (the server answers `response_cancel_not_active` if there is none)."""
        options = {} if response_id is None else {"response_id": response_id}
        await self.send_event(ResponseCancelEvent(type="response.cancel", **options))

    # ---- receiving

    async def receive(self) -> ServerEvent:
        """The next server event. Raises RealtimeConnectionClosed once the socket is closed and drained."""
        with self._exclusive_receiver():
            if self._pending:
                return self._pending.popleft()
            return await self._next_event()

    def events(self) -> RealtimeConnection:
        """Async-iterate server events; iteration ends when the socket closes (see `closed`)."""
        return self

    def __aiter__(self) -> RealtimeConnection:
        return self

    async def __anext__(self) -> ServerEvent:
        try:
            return await self.receive()
        except RealtimeConnectionClosed:
            raise StopAsyncIteration from None

    async def _next_event(self) -> ServerEvent:
        receive = self._websocket.receive
        while True:
            frame = await receive()
            if frame is None:
                code, reason = self._websocket.closed or (1006, "")
                raise RealtimeConnectionClosed(RealtimeClose(code, reason or None))
            event = self._decoder.decode(frame)
            if event is not None:
                return event

    @contextmanager
    def _exclusive_receiver(self) -> Iterator[None]:
        # Two readers would steal each other's events (configure() would miss session.updated).
        if self._receiving:
            raise trio.BusyResourceError("another task is already receiving realtime events")
        self._receiving = True
        try:
            yield
        finally:
            self._receiving = False

    async def aclose(self) -> None:
        """Close the socket (code 1000). Idempotent; shielded and bounded, so it also completes when the
        caller is being cancelled and never waits more than `close_timeout_s` for the peer."""
        with trio.CancelScope(shield=True), trio.move_on_after(self._settings.close_timeout_s):
            await self._websocket.close(1000)


@asynccontextmanager
async def open_realtime(
    settings: RealtimeSettings, *, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[RealtimeConnection]:
    """Connect; leaving the block closes the socket on every path (normal exit, exception, cancellation).
    `ssl_context` (wss://): the process's one context; None builds a default one for this connection.

    Raises RealtimeUnavailable if the connection is refused, the handshake rejected or timed out; its
    reason names the real cause (e.g. CERTIFICATE_VERIFY_FAILED) and its `kind` classifies it.
    """
    url = settings.endpoint()
    try:
        with trio.fail_after(settings.connect_timeout_s):
            websocket = await connect_websocket(
                url, settings.handshake_headers(), max_message_bytes=settings.max_message_bytes,
                ssl_context=ssl_context, proxy=settings.proxy,
            )
    except trio.TooSlowError:
        raise RealtimeUnavailable(f"no handshake within {settings.connect_timeout_s} s", kind="timeout") from None
    except WebSocketRejected as rejected:
        if rejected.status_code is None:
            raise RealtimeUnavailable(f"handshake failed: {rejected}", kind="handshake") from None
        body = rejected.body[:200].decode(errors="replace")
        raise RealtimeUnavailable(
            f"handshake rejected with HTTP {rejected.status_code}: {body}",
            status_code=rejected.status_code, kind="http_status",
        ) from None
    except (OSError, ValueError) as error:
        raise RealtimeUnavailable(f"cannot connect: {error!r}", kind=connect_failure_kind(error)) from error
    if settings.keepalive_s:
        websocket.keep_alive(settings.keepalive_s)
    connection = RealtimeConnection(websocket, settings)
    try:
        yield connection
    finally:
        await connection.aclose()


def reraise_lone(group: BaseExceptionGroup[Any]) -> typing.NoReturn:
    """Strict exception groups wrap whatever the block raised; give a lone exception back as itself,
    keeping its own cause and context."""
    if len(group.exceptions) != 1:
        raise group
    error = group.exceptions[0]
    cause, context, suppress = error.__cause__, error.__context__, error.__suppress_context__
    try:
        raise error
    finally:
        error.__cause__, error.__context__, error.__suppress_context__ = cause, context, suppress
        del error


# --------------------------------------------------------------------------- tool calls


@dataclass(frozen=True, slots=True)
class CompletedToolCall:
    call_id: str
    name: str
    arguments_json: str
    item_id: str | None
    response_id: str | None


class ToolCallCollector:
    """Surfaces each function call once, and only once its item or its whole response completed.

    Interrupted and cancelled responses still stream arguments and emit `...arguments.done` and
    `output_item.done` (status incomplete); those must never run a tool. Pure: feed it every event.
    A call may surface at its `output_item.done`, before `response.done`; send the outputs and the one
    `response.create` only after that response's `response.done` (or the server answers
    `conversation_already_has_active_response`).
    """

    def __init__(self) -> None:
        self._surfaced_call_ids: set[str] = set()

    def feed(self, event: ServerEvent) -> list[CompletedToolCall]:
        if isinstance(event, ResponseOutputItemDoneEvent):
            item = event.item
            if isinstance(item, RealtimeConversationItemFunctionCall) and item.status == "completed":
                return self._surface([item], event.response_id)
        elif isinstance(event, ResponseDoneEvent) and event.response.status == "completed":
            items = [
                item
                for item in event.response.output or ()
                if isinstance(item, RealtimeConversationItemFunctionCall)
                and item.status in ("completed", None)
            ]
            return self._surface(items, event.response.id)
        return []

    def _surface(
        self, items: Sequence[RealtimeConversationItemFunctionCall], response_id: str | None
    ) -> list[CompletedToolCall]:
        completed = []
        for item in items:
            if item.call_id is None:
                log.warning("function call item %s has no call_id; it cannot be answered", item.id)
                continue
            if item.call_id in self._surfaced_call_ids:
                continue
            self._surfaced_call_ids.add(item.call_id)
            completed.append(CompletedToolCall(item.call_id, item.name, item.arguments, item.id, response_id))
        return completed
