"""A protocol-faithful fake of the OpenAI Realtime GA server, for tests and load runs.

    async with run_fake_realtime(Scenario(steps=[
        on(after_session_update(), speak(ms=400, transcript="Hello, how can I help?")),
        on(after_audio_frames(25), call_function("propose_route", {"intent": "billing"})),
        on(after_client_event("response.create"), speak(ms=200, transcript="Transferring you.")),
    ])) as fake:
        settings = RealtimeSettings(url=fake.url, api_key="sk-test")
        ...
        assert fake.violations == []

What it does like the real server:
- `session.created` on connect; `session.updated` echoing the merged session after each `session.update`.
- Every client frame is validated against the SDK's client event types (a discriminated union) plus a
  check for parameters the SDK does not know; a bad frame gets an `error` event
  (`invalid_request_error`, code, message, param, event_id) and is recorded in `violations`.
- The beta shape (an `OpenAI-Beta` header, a `session.update` without `session.type` or with beta-only
  session fields) gets `beta_api_shape_disabled` and the socket is closed with code 4000. (Whether the
  real server treats beta-only fields next to a `session.type` this way or as `unknown_parameter` is
  unverified; the fake takes the stricter reading.)
- A deployment on an older API version (`Scenario.unknown_params`): a `session.update` setting a parameter it
  does not know gets `unknown_parameter` naming it, and the session is left as it was.
- Stateful answers: `conversation_already_has_active_response`, `response_cancel_not_active`,
  `input_audio_buffer_commit_empty`, `conversation.item.added/done` for created items, truncate checks
  ("Only model output audio messages can be truncated", "Audio content of X ms is already shorter than Y ms"),
  input transcripts only when `audio.input.transcription` is configured.
- Every event it sends is validated against the SDK's server event types (no unknown fields either).
  A failure is a bug in the fake or the scenario: that connection is closed with 1011 and
  `run_fake_realtime` raises `FakeRealtimeBug` when its block exits, so no test passes over it.

What it does NOT do: think. Responses come only from the scenario's steps (server VAD does not start
responses by itself here); echo mode answers each audio frame with one audio delta and no response
envelope (load tests only). Event order inside a response follows the GA event reference; the exact
interleaving of transcript and audio deltas on the real server is not specified.

Standalone: `python -m orchestrator.testing --port 8765 --echo`.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import copy
import itertools
import math
import ssl
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit

import orjson
import trio
from openai.types.realtime import (
    ConversationItemCreateEvent,
    ConversationItemDeleteEvent,
    ConversationItemRetrieveEvent,
    ConversationItemTruncateEvent,
    InputAudioBufferAppendEvent,
    InputAudioBufferClearEvent,
    InputAudioBufferCommitEvent,
    ResponseCancelEvent,
    ResponseCreateEvent,
    SessionUpdateEvent,
)
from pydantic import BaseModel, ValidationError
from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
    serve_websocket,
)

from bridge.openai_realtime import (
    CLIENT_EVENT_ADAPTER,
    SERVER_EVENT_ADAPTER,
    reraise_lone,
)

__all__ = [
    "AfterClientEvent",
    "ClientFrameCheck",
    "Close",
    "Drop",
    "FakeRealtime",
    "FakeRealtimeBug",
    "FunctionCall",
    "Immediately",
    "Freeze",
    "Pause",
    "ProtocolViolation",
    "ReceivedEvent",
    "RecordedSession",
    "Respond",
    "Scenario",
    "SendError",
    "SendEvent",
    "SendRaw",
    "Speech",
    "Step",
    "UserSpeech",
    "after_audio_frames",
    "after_client_event",
    "after_response_create",
    "after_session_update",
    "call_function",
    "cancelled_function_call",
    "check_client_frame",
    "check_server_event",
    "expire_session",
    "immediately",
    "on",
    "run_fake_realtime",
    "speak",
]

BETA_SHAPE_MESSAGE = "The Realtime Beta API is no longer supported. Please use /v1/realtime for the GA API."
# Top-level session fields that exist only in the beta shape.
BETA_SESSION_FIELDS = frozenset(
    {
        "modalities",
        "voice",
        "input_audio_format",
        "output_audio_format",
        "input_audio_transcription",
        "turn_detection",
        "temperature",
        "max_response_output_tokens",
    }
)
MIN_COMMIT_MS = 100  # a smaller buffer is `input_audio_buffer_commit_empty` (REPORTED ≈100 ms)


class FakeRealtimeBug(AssertionError):
    """The fake was about to send something the SDK's server types reject: fix the fake or the scenario."""


# --------------------------------------------------------------------------- scenario


@dataclass(frozen=True)
class Immediately:
    """Fires as soon as the step becomes current (right after session.created for the first step)."""


@dataclass(frozen=True)
class AfterClientEvent:
    """Fires once `count` valid client events of `type` arrived since the previous step fired."""

    type: str
    count: int = 1


Trigger = Immediately | AfterClientEvent


def immediately() -> Immediately:
    return Immediately()


def after_client_event(event_type: str, count: int = 1) -> AfterClientEvent:
    return AfterClientEvent(event_type, count)


def after_session_update() -> AfterClientEvent:
    return AfterClientEvent("session.update")


def after_response_create() -> AfterClientEvent:
    return AfterClientEvent("response.create")


def after_audio_frames(count: int) -> AfterClientEvent:
    return AfterClientEvent("input_audio_buffer.append", count)


@dataclass(frozen=True)
class Speech:
    """An assistant message: `ms` of audio (silence unless `audio` bytes are given) and its transcript."""

    ms: int = 200
    transcript: str = ""
    audio: bytes | None = None


@dataclass(frozen=True)
class FunctionCall:
    name: str
    arguments: dict[str, Any] | str = field(default_factory=dict)
    call_id: str | None = None


@dataclass(frozen=True)
class UserSpeech:
    """The caller speaks: speech_started/stopped, committed, the user item, and its transcript when
    input transcription is configured."""

    transcript: str = ""
    ms: int = 800


@dataclass(frozen=True)
class Respond:
    """One response made of assistant messages and function calls.

    `status="cancelled"` plays every output to the end (arguments included) and then marks the items
    incomplete and the response cancelled, as the server does when a response is cut after its
    arguments were generated. `interrupted_by` makes the caller barge in after `interrupt_after_ms` of
    assistant audio: speech_started, the response cancelled (`turn_detected`), then the rest of the
    user turn. `pace_s` sleeps between audio chunks, which leaves room for a client `response.cancel`.
    """

    outputs: tuple[Speech | FunctionCall, ...]
    status: Literal["completed", "cancelled", "incomplete", "failed"] = "completed"
    reason: Literal["turn_detected", "client_cancelled", "max_output_tokens", "content_filter"] | None = None
    chunk_ms: int = 100
    pace_s: float | None = None
    interrupted_by: UserSpeech | None = None
    interrupt_after_ms: int = 0


@dataclass(frozen=True)
class SendError:
    code: str | None
    message: str
    param: str | None = None
    error_type: str = "invalid_request_error"


@dataclass(frozen=True)
class SendEvent:
    """Any server event as a dict (validated; `event_id` is filled in when missing)."""

    event: dict[str, Any]


@dataclass(frozen=True)
class SendRaw:
    """Text sent as is, unvalidated: non-JSON frames, unknown event types, SDK-invalid payloads."""

    text: str


@dataclass(frozen=True)
class Pause:
    seconds: float


@dataclass(frozen=True)
class Close:
    """Close with a close frame."""

    code: int = 1000
    reason: str = ""


@dataclass(frozen=True)
class Drop:
    """Abrupt disconnect: the TCP connection goes away without a close frame (client sees 1006)."""


@dataclass(frozen=True)
class Freeze:
    """The peer goes silent, the TCP connection left open (a dead host behind a black hole): nothing more is
    read or sent, pings included."""


Action = Respond | UserSpeech | SendError | SendEvent | SendRaw | Pause | Close | Drop | Freeze


@dataclass(frozen=True)
class Step:
    trigger: Trigger
    actions: tuple[Action, ...]


def on(trigger: Trigger, *actions: Action) -> Step:
    return Step(trigger, actions)


def speak(ms: int = 200, transcript: str = "", **options: Any) -> Respond:
    return Respond((Speech(ms, transcript),), **options)


def call_function(
    name: str, arguments: dict[str, Any] | str, *, preamble: Speech | None = None, call_id: str | None = None
) -> Respond:
    """A completed response calling one function, optionally after a spoken preamble."""
    outputs = (preamble,) if preamble is not None else ()
    return Respond((*outputs, FunctionCall(name, arguments, call_id)))


def cancelled_function_call(
    name: str,
    arguments: dict[str, Any] | str,
    *,
    reason: Literal["turn_detected", "client_cancelled"] = "turn_detected",
) -> Respond:
    """Arguments fully streamed (`...arguments.done` included), then the response is cancelled."""
    return Respond((FunctionCall(name, arguments),), status="cancelled", reason=reason)


def expire_session() -> tuple[Action, ...]:
    """What the server does at the 60-minute cap."""
    return (
        SendError("session_expired", "Your session hit the maximum duration of 60 minutes."),
        Close(1001, "session expired"),
    )


@dataclass(frozen=True)
class Scenario:
    steps: Sequence[Step] = ()
    # Answer every input_audio_buffer.append with one output_audio.delta carrying the same payload.
    echo_audio: bool = False
    # Reject the WebSocket handshake with this HTTP status (e.g. 503).
    refuse_status: int | None = None
    # Reject handshakes with neither `Authorization` nor `api-key` (HTTP 401), like the real endpoint.
    require_auth: bool = True
    # False keeps only counters for audio frames (long load runs).
    record_audio: bool = True
    # Answer the WebSocket upgrade only after this long (a slow connection to the endpoint).
    handshake_delay_s: float = 0.0
    # Leave out the metadata response.create asked for (a proxy or deployment that drops it).
    drop_metadata: bool = False
    # Parameters this deployment does not know (an older API version), as dotted paths such as
    # "session.audio.input.turn_detection.idle_timeout_ms": a session.update that sets one is refused with
    # `unknown_parameter`, as the server refuses any parameter it does not know, and changes nothing.
    unknown_params: tuple[str, ...] = ()


# --------------------------------------------------------------------------- client frame checks


@dataclass(frozen=True)
class ProtocolViolation:
    at: float
    code: str | None
    message: str
    param: str | None
    frame: str


@dataclass(frozen=True)
class ClientFrameCheck:
    """Result of checking one client frame: the SDK model, or the error the server would send."""

    event: BaseModel | None
    data: Any
    code: str | None = None
    message: str = ""
    param: str | None = None
    client_event_id: str | None = None
    fatal: bool = False  # the server closes the socket (4000) after the error

    @property
    def ok(self) -> bool:
        return self.event is not None


def check_client_frame(frame: str | bytes) -> ClientFrameCheck:
    """Validate a client frame the way the GA server does (as far as is known)."""
    if isinstance(frame, bytes):
        return ClientFrameCheck(
            None, frame, "invalid_value", "Binary frames are not supported; send JSON text."
        )
    try:
        data = orjson.loads(frame)
    except orjson.JSONDecodeError as exc:
        return ClientFrameCheck(None, frame, "invalid_json", f"The event is not valid JSON: {exc}")
    if not isinstance(data, dict):
        return ClientFrameCheck(None, data, "invalid_value", "The event must be a JSON object.")
    client_event_id = data.get("event_id") if isinstance(data.get("event_id"), str) else None
    if data.get("type") == "session.update" and _is_beta_session(data.get("session")):
        return ClientFrameCheck(
            None, data, "beta_api_shape_disabled", BETA_SHAPE_MESSAGE, None, client_event_id, fatal=True
        )
    try:
        event = CLIENT_EVENT_ADAPTER.validate_python(data)
    except ValidationError as exc:
        code, message, param = _describe_validation_error(exc)
        return ClientFrameCheck(None, data, code, message, param, client_event_id)
    unknown = _unknown_fields(event)
    if unknown:
        return ClientFrameCheck(
            None,
            data,
            "unknown_parameter",
            f"Unknown parameter: '{unknown[0]}'.",
            unknown[0],
            client_event_id,
        )
    if isinstance(event, InputAudioBufferAppendEvent):
        try:
            base64.b64decode(event.audio, validate=True)
        except binascii.Error:
            return ClientFrameCheck(
                None, data, "invalid_value", "Invalid base64 audio.", "audio", client_event_id
            )
    return ClientFrameCheck(event, data, client_event_id=client_event_id)


def _is_beta_session(session: Any) -> bool:
    return isinstance(session, dict) and ("type" not in session or bool(BETA_SESSION_FIELDS & session.keys()))


def _describe_validation_error(exc: ValidationError) -> tuple[str, str, str | None]:
    first = exc.errors()[0]
    kind = first["type"]
    # Drop the union tag and nested union member names from the location; keep field names and indices.
    path = [
        part for part in first["loc"][1:] if isinstance(part, int) or (part.islower() and "[" not in part)
    ]
    param = _dotted(path) or None
    if kind == "union_tag_invalid":
        return (
            "invalid_value",
            f"Invalid value: '{first['input'].get('type')}'. Unknown client event type.",
            "type",
        )
    if kind == "union_tag_not_found":
        return "missing_required_parameter", "Missing required parameter: 'type'.", "type"
    if kind == "missing":
        return "missing_required_parameter", f"Missing required parameter: '{param}'.", param
    return "invalid_value", f"Invalid value for '{param}': {first['msg']}.", param


def _dotted(path: Sequence[str | int]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def _unknown_fields(model: BaseModel, prefix: str = "") -> list[str]:
    """Paths of fields the SDK does not define (SDK models accept extras; the server does not)."""
    found = [f"{prefix}{name}" for name in (model.model_extra or {})]
    for name in model.model_fields_set:
        found += _unknown_in(getattr(model, name), f"{prefix}{name}")
    return found


def _sets(data: dict[str, Any], dotted: str) -> bool:
    """Whether `data` (a client event's JSON) sets the parameter at `dotted` (null included)."""
    *parents, name = dotted.split(".")
    for part in parents:
        data = data.get(part) if isinstance(data, dict) else None  # type: ignore[assignment]
    return isinstance(data, dict) and name in data


def _unknown_in(value: Any, path: str) -> list[str]:
    if isinstance(value, BaseModel):
        return _unknown_fields(value, f"{path}.")
    if isinstance(value, list):
        return [found for index, item in enumerate(value) for found in _unknown_in(item, f"{path}[{index}]")]
    return []


def check_server_event(event: dict[str, Any]) -> None:
    """Raise FakeRealtimeBug unless the SDK's server types accept `event` without unknown fields."""
    try:
        model = SERVER_EVENT_ADAPTER.validate_python(event)
    except ValidationError as exc:
        raise FakeRealtimeBug(f"fake would send an invalid {event.get('type')!r}: {exc}") from None
    unknown = _unknown_fields(model)
    if unknown:
        raise FakeRealtimeBug(f"fake would send {event.get('type')!r} with unknown fields {unknown}")


# --------------------------------------------------------------------------- recording


@dataclass(frozen=True)
class ReceivedEvent:
    at: float  # trio.current_time()
    type: str | None
    data: Any  # the JSON as sent (a dict), or the raw frame when it was not JSON
    event: BaseModel | None  # the SDK model; None for an invalid frame


@dataclass(eq=False)
class RecordedSession:
    """Everything the fake saw and did on one connection."""

    path: str
    query: dict[str, str]
    headers: dict[str, str]  # names lower-cased
    opened_at: float
    refused_status: int | None = None
    received: list[ReceivedEvent] = field(default_factory=list)
    sent: list[dict[str, Any]] = field(default_factory=list)
    violations: list[ProtocolViolation] = field(default_factory=list)
    audio_frames_received: int = 0
    audio_bytes_received: int = 0
    closed_at: float | None = None
    close_code: int | None = None
    close_reason: str | None = None
    closed_by: Literal["client", "server"] | None = None
    _changed: trio.Event = field(default_factory=trio.Event, repr=False)

    @property
    def is_closed(self) -> bool:
        return self.closed_at is not None

    def events_of_type(self, event_type: str) -> list[ReceivedEvent]:
        return [received for received in self.received if received.type == event_type]

    def sent_of_type(self, event_type: str) -> list[dict[str, Any]]:
        return [event for event in self.sent if event.get("type") == event_type]

    async def wait_closed(self) -> None:
        while not self.is_closed:
            await self._changed.wait()

    async def wait_for_client_event(self, event_type: str, count: int = 1) -> list[ReceivedEvent]:
        while len(self.events_of_type(event_type)) < count:
            await self._changed.wait()
        return self.events_of_type(event_type)

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def _mark_closed(
        self, code: int | None, reason: str | None, closed_by: Literal["client", "server"]
    ) -> None:
        if self.closed_at is None:
            self.closed_at = trio.current_time()
            self.close_code, self.close_reason, self.closed_by = code, reason, closed_by
            self._notify()


class FakeRealtime:
    """The running fake: its URL, and a RecordedSession per connection attempt."""

    def __init__(self, scenario: Scenario) -> None:
        # Applies to connections accepted from now on (tests may swap it between reconnects).
        self.scenario = scenario
        self.url = ""
        self.sessions: list[RecordedSession] = []
        # False forgets each connection's record once it ends (a long-running demo must not grow).
        self.keep_sessions = True
        # Exceptions raised by the fake itself, re-raised when run_fake_realtime exits.
        self.crashes: list[Exception] = []
        self._ids = itertools.count(1)
        self._changed = trio.Event()

    @property
    def violations(self) -> list[ProtocolViolation]:
        return [violation for session in self.sessions for violation in session.violations]

    @property
    def last_session(self) -> RecordedSession:
        return self.sessions[-1]

    async def wait_for_session(self, count: int = 1) -> RecordedSession:
        """Wait until `count` connections were attempted; return the count-th."""
        while len(self.sessions) < count:
            await self._changed.wait()
        return self.sessions[count - 1]

    def new_id(self, prefix: str) -> str:
        return f"{prefix}_{next(self._ids):06d}"

    async def handle_request(self, request: WebSocketRequest) -> None:
        scenario = self.scenario
        target = urlsplit(request.path)
        headers = {name.decode().lower(): value.decode() for name, value in request.headers}
        record = RecordedSession(target.path, dict(parse_qsl(target.query)), headers, trio.current_time())
        self.sessions.append(record)
        self._changed.set()
        self._changed = trio.Event()
        status = scenario.refuse_status
        if status is None and scenario.require_auth and not _has_credentials(headers):
            status = 401
        if status is not None:
            record.refused_status = status
            await request.reject(status, body=f"fake realtime refused the handshake ({status})".encode())
            record._mark_closed(None, None, "server")
            self._forget_unless_kept(record)
            return
        if scenario.handshake_delay_s:
            await trio.sleep(scenario.handshake_delay_s)
        websocket = await request.accept()
        try:
            await _SessionRunner(self, websocket, record, scenario).run()
        except Exception as crash:
            # Kept, not propagated: trio-websocket's cleanup would let a cancellation swallow it.
            self.crashes.append(_unwrap_lone(crash))
            record._mark_closed(1011, f"fake crashed: {crash!r}"[:120], "server")
            with trio.move_on_after(1):
                await websocket.aclose(1011, "fake realtime crashed")
        finally:
            record._mark_closed(None, "fake server stopped", "server")
            self._forget_unless_kept(record)

    def _forget_unless_kept(self, record: RecordedSession) -> None:
        if not self.keep_sessions and record in self.sessions:
            self.sessions.remove(record)


def _unwrap_lone(error: Exception) -> Exception:
    while isinstance(error, ExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return error


def _has_credentials(headers: dict[str, str]) -> bool:
    return headers.get("authorization", "").startswith("Bearer ") or bool(headers.get("api-key"))


# --------------------------------------------------------------------------- one connection


class _FrozenStream(trio.abc.HalfCloseableStream):
    """What a frozen connection reads from and writes to: nothing ever arrives or leaves."""

    def __init__(self, stream: trio.abc.HalfCloseableStream) -> None:
        self._stream = stream

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        await trio.sleep_forever()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await trio.sleep_forever()

    async def wait_send_all_might_not_block(self) -> None:
        await trio.sleep_forever()

    async def send_eof(self) -> None:
        await trio.sleep_forever()

    async def aclose(self) -> None:
        await self._stream.aclose()


class _SocketGone(Exception):
    """The socket closed under a sender; ends the script quietly."""


@dataclass
class _ActiveResponse:
    id: str
    metadata: dict[str, str] | None = None
    cancel_reason: str | None = None


def _requested_metadata(event: BaseModel | None) -> dict[str, str] | None:
    if isinstance(event, ResponseCreateEvent) and event.response is not None and event.response.metadata:
        return dict(event.response.metadata)
    return None


@dataclass
class _ItemRecord:
    kind: Literal["assistant_audio", "assistant_text", "function_call", "user", "other"]
    item: dict[str, Any]
    audio_ms: int = 0


def _default_session(model: str) -> dict[str, Any]:
    pcm = {"type": "audio/pcm", "rate": 24000}
    return {
        "type": "realtime",
        "model": model,
        "output_modalities": ["audio"],
        "instructions": "",
        "tools": [],
        "tool_choice": "auto",
        "max_output_tokens": "inf",
        "truncation": "auto",
        "audio": {
            "input": {
                "format": dict(pcm),
                "transcription": None,
                "noise_reduction": None,
                "turn_detection": {
                    "type": "server_vad",
                    "threshold": 0.5,
                    "prefix_padding_ms": 300,
                    "silence_duration_ms": 500,
                    "idle_timeout_ms": None,
                    "create_response": True,
                    "interrupt_response": True,
                },
            },
            "output": {"format": dict(pcm), "voice": "alloy", "speed": 1.0},
        },
    }


def _merge(current: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Only the fields present change; explicit nulls clear (session.update semantics). A tagged
    object (format, turn_detection) is replaced as a whole: its fields depend on its `type`."""
    merged = dict(current)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and "type" not in value:
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _bytes_per_ms(audio_format: dict[str, Any] | None) -> int:
    # µ-law / A-law 8 kHz: 8 bytes per ms; PCM16 24 kHz: 48.
    return 48 if (audio_format or {}).get("type") == "audio/pcm" else 8


_SILENCE_BYTE = {"audio/pcm": b"\x00", "audio/pcma": b"\xd5"}  # µ-law (the default) is 0xFF


def _silence(audio_format: dict[str, Any] | None, ms: int) -> bytes:
    fill = _SILENCE_BYTE.get((audio_format or {}).get("type"), b"\xff")
    return fill * (ms * _bytes_per_ms(audio_format))


def _split(text: str, pieces: int) -> list[str]:
    if not text or pieces <= 1:
        return [text] if text else []
    size = math.ceil(len(text) / pieces)
    return [text[index : index + size] for index in range(0, len(text), size)]


class _SessionRunner:
    """Plays one connection: protocol answers come from the receive loop, the scenario runs in its own
    task and is fed every accepted client event."""

    def __init__(
        self, fake: FakeRealtime, websocket: WebSocketConnection, record: RecordedSession, scenario: Scenario
    ) -> None:
        self._fake = fake
        self._websocket = websocket
        self._record = record
        self._scenario = scenario
        self._session = _default_session(record.query.get("model", "gpt-realtime"))
        self._items: dict[str, _ItemRecord] = {}
        self._last_item_id: str | None = None
        self._active_response: _ActiveResponse | None = None
        self._buffered_input_ms = 0.0
        self._input_ms = 0.0
        self._script_listening = True

    # ---- lifecycle

    async def run(self) -> None:
        if "openai-beta" in self._record.headers:
            await self._reject_beta_shape(self._record.headers["openai-beta"])
            return
        try:
            await self._emit(
                {"type": "session.created", "event_id": self._id("event"), "session": self._session}
            )
        except _SocketGone:
            return
        to_script, from_receiver = trio.open_memory_channel[BaseModel](math.inf)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._run_script, from_receiver)
            await self._receive_loop(to_script)
            nursery.cancel_scope.cancel()

    async def _reject_beta_shape(self, frame: str) -> None:
        self._violation("beta_api_shape_disabled", BETA_SHAPE_MESSAGE, None, f"OpenAI-Beta: {frame}")
        try:
            await self._emit(self._error_event("beta_api_shape_disabled", BETA_SHAPE_MESSAGE))
            await self._close(4000, "beta_api_shape_disabled")
        except _SocketGone:
            pass

    async def _receive_loop(self, to_script: trio.MemorySendChannel[BaseModel]) -> None:
        while True:
            try:
                frame = await self._websocket.get_message()
            except ConnectionClosed as exc:
                reason = exc.reason
                self._record._mark_closed(
                    int(reason.code) if reason else 1006, reason.reason if reason else None, "client"
                )
                return
            check = check_client_frame(frame)
            try:
                if not check.ok:
                    await self._refuse_frame(frame, check)
                    if check.fatal:
                        return
                    continue
                self._remember(check)
                accepted = await self._apply(check.event)
            except _SocketGone:
                # The client closed while we answered; the fake marks its own closes before making them.
                self._mark_closed_by_client()
                return
            if accepted and self._script_listening:
                try:
                    to_script.send_nowait(check.event)
                except trio.BrokenResourceError:  # the script finished
                    self._script_listening = False

    def _mark_closed_by_client(self) -> None:
        reason = self._websocket.closed
        self._record._mark_closed(
            int(reason.code) if reason else 1006, reason.reason if reason else None, "client"
        )

    def _remember(self, check: ClientFrameCheck) -> None:
        event = check.event
        if isinstance(event, InputAudioBufferAppendEvent):
            self._record.audio_frames_received += 1
            self._record.audio_bytes_received += len(event.audio) * 3 // 4 - event.audio[-2:].count("=")
            if not self._scenario.record_audio:
                return
        self._record.received.append(ReceivedEvent(trio.current_time(), event.type, check.data, event))
        self._record._notify()

    async def _refuse_frame(self, frame: str | bytes, check: ClientFrameCheck) -> None:
        data = check.data
        event_type = data.get("type") if isinstance(data, dict) else None
        self._record.received.append(ReceivedEvent(trio.current_time(), event_type, data, None))
        self._violation(
            check.code, check.message, check.param, frame if isinstance(frame, str) else repr(frame)
        )
        await self._emit(self._error_event(check.code, check.message, check.param, check.client_event_id))
        if check.fatal:
            await self._close(4000, check.code or "")

    def _violation(self, code: str | None, message: str, param: str | None, frame: str) -> None:
        self._record.violations.append(
            ProtocolViolation(trio.current_time(), code, message, param, frame[:500])
        )
        self._record._notify()

    # ---- sending

    def _id(self, prefix: str) -> str:
        return self._fake.new_id(prefix)

    def _error_event(
        self,
        code: str | None,
        message: str,
        param: str | None = None,
        client_event_id: str | None = None,
        error_type: str = "invalid_request_error",
    ) -> dict[str, Any]:
        return {
            "type": "error",
            "event_id": self._id("event"),
            "error": {
                "type": error_type,
                "code": code,
                "message": message,
                "param": param,
                "event_id": client_event_id,
            },
        }

    async def _emit(self, event: dict[str, Any]) -> None:
        check_server_event(event)
        await self._send_text(orjson.dumps(event).decode())
        if self._scenario.record_audio or event["type"] != "response.output_audio.delta":
            self._record.sent.append(event)

    async def _send_text(self, text: str) -> None:
        try:
            await self._websocket.send_message(text)
        except ConnectionClosed:
            raise _SocketGone from None

    async def _close(self, code: int, reason: str) -> None:
        self._record._mark_closed(code, reason, "server")
        await self._websocket.aclose(code, reason)

    async def _drop(self) -> None:
        self._record._mark_closed(1006, "dropped by the fake", "server")
        # No public API closes the TCP stream without a close frame; this is test tooling.
        await self._websocket._stream.aclose()

    # ---- protocol answers to client events

    async def _apply(self, event: BaseModel) -> bool:
        """Answer a valid client event like the server; False when the server refused it (error sent)."""
        match event:
            case SessionUpdateEvent():
                update = event.session.model_dump(mode="json", exclude_unset=True)
                unknown = [path for path in self._scenario.unknown_params if _sets({"session": update}, path)]
                if unknown:
                    message = f"Unknown parameter: '{unknown[0]}'."
                    await self._emit(self._error_event("unknown_parameter", message, unknown[0], event.event_id))
                    return False
                self._session = _merge(self._session, update)
                await self._emit(
                    {"type": "session.updated", "event_id": self._id("event"), "session": self._session}
                )
            case InputAudioBufferAppendEvent():
                ms = (len(event.audio) * 3 // 4) / _bytes_per_ms(self._input_format)
                self._buffered_input_ms += ms
                self._input_ms += ms
                if self._scenario.echo_audio:
                    await self._echo(event.audio)
            case InputAudioBufferCommitEvent():
                return await self._commit(event)
            case InputAudioBufferClearEvent():
                self._buffered_input_ms = 0
                await self._emit({"type": "input_audio_buffer.cleared", "event_id": self._id("event")})
            case ConversationItemCreateEvent():
                await self._create_item(event)
            case ConversationItemTruncateEvent():
                return await self._truncate(event)
            case ConversationItemDeleteEvent() | ConversationItemRetrieveEvent():
                record = self._items.get(event.item_id)
                if record is None:
                    return await self._client_error(
                        "invalid_value", f"Item '{event.item_id}' not found.", "item_id", event
                    )
                if isinstance(event, ConversationItemDeleteEvent):
                    del self._items[event.item_id]
                    reply = {"type": "conversation.item.deleted", "item_id": event.item_id}
                else:
                    reply = {"type": "conversation.item.retrieved", "item": record.item}
                await self._emit({**reply, "event_id": self._id("event")})
            case ResponseCreateEvent():
                if self._active_response is not None:
                    return await self._client_error(
                        "conversation_already_has_active_response",
                        "Conversation already has an active response in progress: "
                        f"{self._active_response.id}. "
                        "Wait until the response is finished before creating a new one.",
                        None,
                        event,
                    )
            case ResponseCancelEvent():
                active = self._active_response
                if active is None or (event.response_id is not None and event.response_id != active.id):
                    return await self._client_error(
                        "response_cancel_not_active",
                        "Cancellation failed: no active response found.",
                        None,
                        event,
                    )
                else:
                    active.cancel_reason = "client_cancelled"
        return True

    @property
    def _input_format(self) -> dict[str, Any] | None:
        return self._session.get("audio", {}).get("input", {}).get("format")

    @property
    def _output_format(self) -> dict[str, Any] | None:
        return self._session.get("audio", {}).get("output", {}).get("format")

    async def _client_error(
        self, code: str | None, message: str, param: str | None, event: BaseModel
    ) -> bool:
        await self._emit(self._error_event(code, message, param, getattr(event, "event_id", None)))
        return False

    async def _echo(self, payload: str) -> None:
        await self._emit(
            {
                "type": "response.output_audio.delta",
                "event_id": self._id("event"),
                "response_id": "resp_echo",
                "item_id": "item_echo",
                "output_index": 0,
                "content_index": 0,
                "delta": payload,
            }
        )

    async def _commit(self, event: InputAudioBufferCommitEvent) -> bool:
        if self._buffered_input_ms < MIN_COMMIT_MS:
            return await self._client_error(
                "input_audio_buffer_commit_empty",
                f"Error committing input audio buffer: buffer too small. Expected at least {MIN_COMMIT_MS}ms "
                f"of audio, but buffer only has {self._buffered_input_ms:.2f}ms of audio.",
                None,
                event,
            )
        self._buffered_input_ms = 0
        item_id = self._id("item")
        await self._emit(
            {
                "type": "input_audio_buffer.committed",
                "event_id": self._id("event"),
                "item_id": item_id,
                "previous_item_id": self._last_item_id,
            }
        )
        await self._add_item(item_id, "user", self._user_audio_item(item_id))
        return True

    async def _create_item(self, event: ConversationItemCreateEvent) -> None:
        item = event.item.model_dump(mode="json", exclude_unset=True)
        item_id = item.get("id") or self._id("item")
        item.update(id=item_id, object="realtime.item", status="completed")
        kind = "user" if item.get("role") == "user" else "other"
        previous = event.previous_item_id if event.previous_item_id is not None else self._last_item_id
        await self._add_item(item_id, kind, item, previous)

    async def _add_item(
        self, item_id: str, kind: Any, item: dict[str, Any], previous: str | None = None
    ) -> None:
        previous = previous if previous is not None else self._last_item_id
        self._items[item_id] = _ItemRecord(kind, copy.deepcopy(item))
        self._last_item_id = item_id
        for event_type in ("conversation.item.added", "conversation.item.done"):
            await self._emit(
                {
                    "type": event_type,
                    "event_id": self._id("event"),
                    "previous_item_id": previous,
                    "item": item,
                }
            )

    async def _truncate(self, event: ConversationItemTruncateEvent) -> bool:
        record = self._items.get(event.item_id)
        if record is None:
            return await self._client_error(
                "invalid_value", f"Item '{event.item_id}' not found.", "item_id", event
            )
        if record.kind != "assistant_audio":
            return await self._client_error(
                "unsupported_content_type", "Only model output audio messages can be truncated", None, event
            )
        if event.audio_end_ms > record.audio_ms:
            return await self._client_error(
                None,
                f"Audio content of {record.audio_ms}ms is already shorter than {event.audio_end_ms}ms",
                "audio_end_ms",
                event,
            )
        record.audio_ms = event.audio_end_ms
        for content in record.item.get("content", []):
            content["transcript"] = None  # truncation drops the whole server-side transcript
        await self._emit(
            {
                "type": "conversation.item.truncated",
                "event_id": self._id("event"),
                "item_id": event.item_id,
                "content_index": event.content_index,
                "audio_end_ms": event.audio_end_ms,
            }
        )
        return True

    # ---- script

    async def _run_script(self, client_events: trio.MemoryReceiveChannel[BaseModel]) -> None:
        with client_events:
            try:
                for step in self._scenario.steps:
                    trigger_event = await self._wait_for(step.trigger, client_events)
                    # A response asked for by response.create carries that request's metadata.
                    metadata = None if self._scenario.drop_metadata else _requested_metadata(trigger_event)
                    for action in step.actions:
                        await self._perform(action, metadata)
                        metadata = None
            except (_SocketGone, trio.EndOfChannel):
                return

    @staticmethod
    async def _wait_for(
        trigger: Trigger, client_events: trio.MemoryReceiveChannel[BaseModel]
    ) -> BaseModel | None:
        """Wait for the trigger; return the client event that fired it (None for `Immediately`)."""
        if isinstance(trigger, Immediately):
            return None
        seen = 0
        while True:
            event = await client_events.receive()
            if event.type == trigger.type:
                seen += 1
                if seen >= trigger.count:
                    return event

    async def _perform(self, action: Action, metadata: dict[str, str] | None = None) -> None:
        match action:
            case Respond():
                await self._respond(action, metadata)
            case UserSpeech():
                await self._user_turn(action)
            case SendError():
                await self._emit(
                    self._error_event(action.code, action.message, action.param, None, action.error_type)
                )
            case SendEvent():
                await self._emit({"event_id": self._id("event"), **action.event})
            case SendRaw():
                await self._send_text(action.text)
            case Pause():
                await trio.sleep(action.seconds)
            case Close():
                await self._close(action.code, action.reason)
                raise _SocketGone
            case Drop():
                await self._drop()
                raise _SocketGone
            case Freeze():
                self._record._mark_closed(1006, "frozen by the fake", "server")
                # No public API stops trio-websocket's reader; this is test tooling. Its reader and senders
                # find a stream that never delivers nor writes; the socket closes with the fake.
                self._websocket._stream = _FrozenStream(self._websocket._stream)
                await trio.sleep_forever()
            case _:
                raise FakeRealtimeBug(f"unknown scenario action {action!r}")

    # ---- the user's turn

    def _user_audio_item(self, item_id: str) -> dict[str, Any]:
        return {
            "id": item_id,
            "object": "realtime.item",
            "type": "message",
            "role": "user",
            "status": "completed",
            "content": [{"type": "input_audio", "transcript": None}],
        }

    async def _speech_started(self) -> str:
        item_id = self._id("item")
        await self._emit(
            {
                "type": "input_audio_buffer.speech_started",
                "event_id": self._id("event"),
                "item_id": item_id,
                "audio_start_ms": int(self._input_ms),
            }
        )
        return item_id

    async def _user_turn(self, speech: UserSpeech, item_id: str | None = None) -> None:
        if item_id is None:
            item_id = await self._speech_started()
        end_ms = int(self._input_ms) + speech.ms
        await self._emit(
            {
                "type": "input_audio_buffer.speech_stopped",
                "event_id": self._id("event"),
                "item_id": item_id,
                "audio_end_ms": end_ms,
            }
        )
        self._buffered_input_ms = 0
        await self._emit(
            {
                "type": "input_audio_buffer.committed",
                "event_id": self._id("event"),
                "item_id": item_id,
                "previous_item_id": self._last_item_id,
            }
        )
        await self._add_item(item_id, "user", self._user_audio_item(item_id))
        if self._session.get("audio", {}).get("input", {}).get("transcription"):
            await self._emit(
                {
                    "type": "conversation.item.input_audio_transcription.completed",
                    "event_id": self._id("event"),
                    "item_id": item_id,
                    "content_index": 0,
                    "transcript": speech.transcript,
                    "usage": {"type": "duration", "seconds": speech.ms / 1000},
                }
            )

    # ---- responses

    def _response_object(
        self,
        response_id: str,
        status: str,
        output: list[dict[str, Any]],
        reason: str | None,
        audio_ms: int = 0,
        *,
        metadata: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        voice = self._session.get("audio", {}).get("output", {}).get("voice")
        audio_output: dict[str, Any] = {"format": self._output_format}
        if isinstance(voice, str):  # SDK gap: a custom voice object does not validate in RealtimeResponse
            audio_output["voice"] = voice
        done = status != "in_progress"
        details = None
        if status in ("cancelled", "incomplete"):
            details = {"type": status, "reason": reason}
        elif status == "failed":
            details = {"type": "failed", "error": {"type": "server_error", "code": "internal_error"}}
        output_tokens = audio_ms // 50 + 1  # 1 audio token per 50 ms of assistant speech
        return {
            "id": response_id,
            "object": "realtime.response",
            "status": status,
            "status_details": details,
            "output": output,
            "conversation_id": "conv_fake",
            "output_modalities": self._session.get("output_modalities") or ["audio"],
            "max_output_tokens": self._session.get("max_output_tokens", "inf"),
            "audio": {"output": audio_output},
            "usage": {
                "total_tokens": output_tokens + 100,
                "input_tokens": 100,
                "output_tokens": output_tokens,
            }
            if done
            else None,
            "metadata": metadata,
        }

    async def _respond(self, respond: Respond, metadata: dict[str, str] | None = None) -> None:
        if self._active_response is not None:
            raise FakeRealtimeBug("scenario started a response while another one is active")
        active = self._active_response = _ActiveResponse(self._id("resp"), metadata)
        try:
            await self._emit(
                {
                    "type": "response.created",
                    "event_id": self._id("event"),
                    "response": self._response_object(active.id, "in_progress", [], None, metadata=metadata),
                }
            )
            await self._emit(
                {
                    "type": "rate_limits.updated",
                    "event_id": self._id("event"),
                    "rate_limits": [
                        {"name": "requests", "limit": 1000, "remaining": 999, "reset_seconds": 0.06},
                        {"name": "tokens", "limit": 100000, "remaining": 95000, "reset_seconds": 3.0},
                    ],
                }
            )
            finished: list[dict[str, Any]] = []
            audio_ms = 0
            barge_in_item: str | None = None
            for output_index, output in enumerate(respond.outputs):
                if active.cancel_reason is not None:
                    break
                if isinstance(output, Speech):
                    item, spoken_ms, barge_in_item = await self._speak(
                        output, respond, active, output_index, audio_ms
                    )
                    audio_ms += spoken_ms
                else:
                    item = await self._call(output, respond, active, output_index)
                finished.append(item)
            status, reason = respond.status, respond.reason
            if active.cancel_reason is not None:
                status, reason = "cancelled", active.cancel_reason
            elif status == "cancelled" and reason is None:
                reason = "turn_detected"
            await self._emit(
                {
                    "type": "response.done",
                    "event_id": self._id("event"),
                    "response": self._response_object(
                        active.id, status, finished, reason, audio_ms, metadata=active.metadata
                    ),
                }
            )
        finally:
            self._active_response = None
        if barge_in_item is not None and respond.interrupted_by is not None:
            await self._user_turn(respond.interrupted_by, barge_in_item)

    def _item_status(self, respond: Respond, active: _ActiveResponse) -> str:
        return "completed" if respond.status == "completed" and active.cancel_reason is None else "incomplete"

    async def _open_item(self, item: dict[str, Any], response_id: str, output_index: int) -> str | None:
        previous = self._last_item_id
        self._last_item_id = item["id"]
        await self._emit(
            {
                "type": "response.output_item.added",
                "event_id": self._id("event"),
                "response_id": response_id,
                "output_index": output_index,
                "item": item,
            }
        )
        await self._emit(
            {
                "type": "conversation.item.added",
                "event_id": self._id("event"),
                "previous_item_id": previous,
                "item": item,
            }
        )
        return previous

    async def _close_item(
        self, item: dict[str, Any], response_id: str, output_index: int, previous: str | None
    ) -> None:
        await self._emit(
            {
                "type": "response.output_item.done",
                "event_id": self._id("event"),
                "response_id": response_id,
                "output_index": output_index,
                "item": item,
            }
        )
        await self._emit(
            {
                "type": "conversation.item.done",
                "event_id": self._id("event"),
                "previous_item_id": previous,
                "item": item,
            }
        )

    async def _speak(
        self,
        speech: Speech,
        respond: Respond,
        active: _ActiveResponse,
        output_index: int,
        audio_ms_before: int,
    ) -> tuple[dict[str, Any], int, str | None]:
        """Stream one assistant message; returns the final item, the ms of audio sent and, when the
        caller barged in, the id of the user item that speech_started announced."""
        text_only = self._session.get("output_modalities") == ["text"]
        item_id = self._id("item")
        ids = {"response_id": active.id, "item_id": item_id, "output_index": output_index, "content_index": 0}
        item: dict[str, Any] = {
            "id": item_id,
            "object": "realtime.item",
            "type": "message",
            "role": "assistant",
            "status": "in_progress",
            "content": [],
        }
        previous = await self._open_item(item, active.id, output_index)
        part_type = "text" if text_only else "audio"
        empty_part = {"type": "text", "text": ""} if text_only else {"type": "audio", "transcript": ""}
        await self._emit(
            {"type": "response.content_part.added", "event_id": self._id("event"), **ids, "part": empty_part}
        )

        audio_format = self._output_format
        audio = (
            b""
            if text_only
            else (speech.audio if speech.audio is not None else _silence(audio_format, speech.ms))
        )
        chunk_bytes = max(1, respond.chunk_ms * _bytes_per_ms(audio_format))
        chunks = [audio[start : start + chunk_bytes] for start in range(0, len(audio), chunk_bytes)]
        pieces = _split(speech.transcript, max(1, len(chunks)))
        said: list[str] = []
        sent_ms = 0
        barge_in_item = None
        for index in range(max(len(chunks), len(pieces))):
            if active.cancel_reason is not None:
                break
            if (
                respond.interrupted_by is not None
                and audio_ms_before + sent_ms >= respond.interrupt_after_ms
                and index > 0
            ):
                barge_in_item = await self._speech_started()
                active.cancel_reason = "turn_detected"
                break
            if index < len(pieces):
                said.append(pieces[index])
                delta_type = (
                    "response.output_text.delta" if text_only else "response.output_audio_transcript.delta"
                )
                await self._emit(
                    {"type": delta_type, "event_id": self._id("event"), **ids, "delta": pieces[index]}
                )
            if index < len(chunks):
                await self._emit(
                    {
                        "type": "response.output_audio.delta",
                        "event_id": self._id("event"),
                        **ids,
                        "delta": base64.b64encode(chunks[index]).decode(),
                    }
                )
                sent_ms += len(chunks[index]) // _bytes_per_ms(audio_format)
            if respond.pace_s:
                await trio.sleep(respond.pace_s)
        transcript = "".join(said)
        if text_only:
            await self._emit(
                {
                    "type": "response.output_text.done",
                    "event_id": self._id("event"),
                    **ids,
                    "text": transcript,
                }
            )
            content = {"type": "output_text", "text": transcript}
            done_part = {"type": "text", "text": transcript}
        else:
            await self._emit({"type": "response.output_audio.done", "event_id": self._id("event"), **ids})
            await self._emit(
                {
                    "type": "response.output_audio_transcript.done",
                    "event_id": self._id("event"),
                    **ids,
                    "transcript": transcript,
                }
            )
            content = {"type": "output_audio", "transcript": transcript}
            done_part = {"type": part_type, "transcript": transcript}
        await self._emit(
            {"type": "response.content_part.done", "event_id": self._id("event"), **ids, "part": done_part}
        )
        item = {**item, "status": self._item_status(respond, active), "content": [content]}
        await self._close_item(item, active.id, output_index, previous)
        # A copy: truncation edits the stored item, not the events already recorded as sent.
        self._items[item_id] = _ItemRecord(
            "assistant_text" if text_only else "assistant_audio", copy.deepcopy(item), sent_ms
        )
        return item, sent_ms, barge_in_item

    async def _call(
        self, call: FunctionCall, respond: Respond, active: _ActiveResponse, output_index: int
    ) -> dict[str, Any]:
        item_id = self._id("item")
        call_id = call.call_id or self._id("call")
        arguments = (
            call.arguments if isinstance(call.arguments, str) else orjson.dumps(call.arguments).decode()
        )
        item: dict[str, Any] = {
            "id": item_id,
            "object": "realtime.item",
            "type": "function_call",
            "status": "in_progress",
            "call_id": call_id,
            "name": call.name,
            "arguments": "",
        }
        previous = await self._open_item(item, active.id, output_index)
        ids = {"response_id": active.id, "item_id": item_id, "output_index": output_index, "call_id": call_id}
        for piece in _split(arguments, 3):
            if respond.pace_s:
                await trio.sleep(respond.pace_s)
            await self._emit(
                {
                    "type": "response.function_call_arguments.delta",
                    "event_id": self._id("event"),
                    **ids,
                    "delta": piece,
                }
            )
        # Emitted even when the response is being cancelled: that is why tools wait for completion.
        await self._emit(
            {
                "type": "response.function_call_arguments.done",
                "event_id": self._id("event"),
                **ids,
                "name": call.name,
                "arguments": arguments,
            }
        )
        item = {**item, "status": self._item_status(respond, active), "arguments": arguments}
        await self._close_item(item, active.id, output_index, previous)
        self._items[item_id] = _ItemRecord("function_call", copy.deepcopy(item))
        return item


# --------------------------------------------------------------------------- running it


@asynccontextmanager
async def run_fake_realtime(
    scenario: Scenario | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[FakeRealtime]:
    """Serve the fake on `host:port` (0 = any free port) for the duration of the block; see `fake.url`.
    With `ssl_context` it serves wss:// (its URL names `host`, which the certificate must cover).

    A crash of the fake itself (e.g. FakeRealtimeBug) closes that connection with 1011 and is raised
    when the block exits, so a test cannot pass over it.
    """
    fake = FakeRealtime(scenario or Scenario())
    try:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(partial(serve_websocket, fake.handle_request, host, port, ssl_context))
            fake.url = f"{'wss' if ssl_context else 'ws'}://{host}:{server.port}/v1/realtime"
            try:
                yield fake
            except BaseException as body_error:
                if fake.crashes:
                    raise fake.crashes[0] from body_error
                raise
            finally:
                nursery.cancel_scope.cancel()
            if fake.crashes:
                raise fake.crashes[0]
    except BaseExceptionGroup as group:
        reraise_lone(group)


async def _serve_forever(scenario: Scenario, host: str, port: int) -> None:
    async with run_fake_realtime(scenario, host=host, port=port) as fake:
        print(f"fake realtime listening on {fake.url}", flush=True)
        await trio.sleep_forever()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m orchestrator.testing", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--echo", action="store_true", help="answer each audio frame with an audio delta")
    parser.add_argument(
        "--greeting-ms", type=int, default=0, help="speak this much audio after session.update"
    )
    parser.add_argument(
        "--refuse", type=int, metavar="STATUS", help="reject every handshake with this HTTP status"
    )
    parser.add_argument("--no-auth", action="store_true", help="accept handshakes without credentials")
    args = parser.parse_args(argv)
    steps = [on(after_session_update(), speak(args.greeting_ms, "Hello."))] if args.greeting_ms else []
    scenario = Scenario(
        steps=steps,
        echo_audio=args.echo,
        refuse_status=args.refuse,
        require_auth=not args.no_auth,
        record_audio=False,  # a long-running process must not grow with every frame
    )
    try:
        trio.run(_serve_forever, scenario, args.host, args.port)
    except KeyboardInterrupt:
        sys.exit(0)
