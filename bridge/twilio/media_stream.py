"""Twilio Media Streams (bidirectional, `<Connect><Stream>`) wire protocol.

Everything Twilio-specific about the stream lives here and nowhere else:

- typed messages both ways (pydantic models at the edge),
- `parse_twilio_message`: one text frame in, one typed message out, with a fast path for `media`
  (50 frames/s per call) and full validation for the rare control messages,
- `media_frame` / `mark_frame` / `clear_frame`: the exact JSON text frames we send,
- `MarkTracker`: how much of the audio we sent has the caller actually heard (barge-in).

Wire facts (see protocols/twilio.md §1): all frames are JSON text; numeric-looking fields
(`sequenceNumber`, `media.chunk`, `media.timestamp`) arrive as strings; audio is base64 µ-law
8 kHz mono without header, i.e. 8 bytes per millisecond.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Literal, TypeAlias

import orjson
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
)
from pydantic.alias_generators import to_camel

DEFAULT_MAX_FRAME_BYTES = 64 * 1024
MULAW_BYTES_PER_MS = 8  # 8000 samples/s, one byte per sample

ProtocolErrorKind: TypeAlias = Literal["binary_frame", "oversized", "malformed_json", "invalid_shape", "unusable_audio"]


class MediaStreamProtocolError(ValueError):
    """A frame from Twilio that we cannot use. Log it, count it by `kind`, keep the call going."""

    def __init__(self, kind: ProtocolErrorKind, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind: ProtocolErrorKind = kind
        self.detail = detail


def _wire_int(value: object) -> int:
    """Twilio sends counters as strings ("4") but may one day send numbers; accept both."""
    if type(value) is int:  # not isinstance: a JSON `true` is not a sequence number
        return value
    if type(value) is str:
        return int(value)  # ValueError on junk, which both parse paths turn into invalid_shape
    raise ValueError("expected an integer or a numeric string")


WireInt = Annotated[int, BeforeValidator(_wire_int)]


class _WireModel(BaseModel):
    # camelCase on the wire, snake_case in Python; Twilio may add fields at any time, so ignore extras.
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True, extra="ignore")


# --- Inbound: messages Twilio sends --------------------------------------------------------------


class ConnectedMessage(_WireModel):
    """First frame on the socket; carries no streamSid."""

    event: Literal["connected"]
    protocol: str
    version: str


class MediaFormat(_WireModel):
    encoding: str
    sample_rate: WireInt
    channels: WireInt


class StreamStart(_WireModel):
    account_sid: str
    stream_sid: str
    call_sid: str
    tracks: list[str]
    media_format: MediaFormat
    custom_parameters: dict[str, str] = Field(default_factory=dict)


class StartMessage(_WireModel):
    """Sent once, right after `connected`. Nothing can be sent to Twilio before it arrives."""

    event: Literal["start"]
    sequence_number: WireInt
    stream_sid: str
    start: StreamStart


class InboundMedia(_WireModel):
    track: str
    chunk: WireInt
    timestamp: WireInt  # ms since stream start
    payload: str  # base64 µ-law


class MediaMessage(_WireModel):
    """Schema of record for inbound `media`. `parse_twilio_message` returns a `MediaFrame` instead."""

    event: Literal["media"]
    sequence_number: WireInt
    stream_sid: str
    media: InboundMedia


class DtmfDigit(_WireModel):
    track: str  # "inbound_track" here, unlike media's "inbound"
    digit: str


class DtmfMessage(_WireModel):
    event: Literal["dtmf"]
    sequence_number: WireInt
    stream_sid: str
    dtmf: DtmfDigit


class MarkLabel(_WireModel):
    name: str


class MarkMessage(_WireModel):
    """Echo of a mark we sent: the audio before it was played, or we sent `clear` (see MarkTracker)."""

    event: Literal["mark"]
    sequence_number: WireInt
    stream_sid: str
    mark: MarkLabel


class StreamStop(_WireModel):
    account_sid: str
    call_sid: str


class StopMessage(_WireModel):
    event: Literal["stop"]
    sequence_number: WireInt
    stream_sid: str
    stop: StreamStop


TwilioMessage = Annotated[
    ConnectedMessage | StartMessage | MediaMessage | DtmfMessage | MarkMessage | StopMessage,
    Field(discriminator="event"),
]
TWILIO_MESSAGE_ADAPTER: TypeAdapter[TwilioMessage] = TypeAdapter(TwilioMessage)
_KNOWN_EVENTS = frozenset({"connected", "start", "media", "dtmf", "mark", "stop"})


@dataclass(slots=True)
class MediaFrame:
    """One inbound audio frame, flattened. Plain slotted object: building a pydantic model per
    frame (even with model_construct) costs more than the JSON parse itself. Treat as read-only."""

    event: ClassVar[Literal["media"]] = "media"
    stream_sid: str
    sequence_number: int
    track: str
    chunk: int
    timestamp: int  # ms since stream start
    payload: str  # base64 µ-law, forwarded untouched

    @classmethod
    def from_message(cls, message: MediaMessage) -> MediaFrame:
        media = message.media
        return cls(
            message.stream_sid, message.sequence_number, media.track, media.chunk, media.timestamp, media.payload
        )

    @property
    def audio_bytes(self) -> int:
        return decoded_base64_length(self.payload)


@dataclass(frozen=True, slots=True)
class UnknownTwilioMessage:
    """A well-formed frame with an event we do not know (Twilio adds events without notice)."""

    event: str
    raw: dict[str, Any]


InboundMessage: TypeAlias = ConnectedMessage | StartMessage | MediaFrame | DtmfMessage | MarkMessage | StopMessage | UnknownTwilioMessage


def parse_twilio_message(
    raw: str | bytes, *, max_bytes: int = DEFAULT_MAX_FRAME_BYTES, validate_media: bool = False
) -> InboundMessage:
    """Turn one WebSocket frame from Twilio into a typed message.

    `raw` is what the WebSocket library hands over: `str` for a text frame, `bytes` for a binary
    frame (Twilio only sends text, so bytes are a protocol error). `media` takes a hand-checked fast
    path unless `validate_media` is set; it accepts exactly what `MediaMessage` accepts.

    Raises MediaStreamProtocolError (kind: binary_frame, oversized, malformed_json, invalid_shape).
    """
    if type(raw) is not str:
        if isinstance(raw, (bytes, bytearray, memoryview)):
            raise MediaStreamProtocolError("binary_frame", f"{len(raw)} bytes")
        raise TypeError(f"expected str or bytes, got {type(raw).__name__}")
    # A character is at most 4 UTF-8 bytes, so short frames skip the exact (encoding) check.
    if len(raw) * 4 > max_bytes and (
        len(raw) > max_bytes or len(raw.encode("utf-8", "surrogatepass")) > max_bytes
    ):
        raise MediaStreamProtocolError("oversized", f"frame over {max_bytes} bytes")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise MediaStreamProtocolError("malformed_json", str(exc)) from None
    if type(data) is not dict:
        raise MediaStreamProtocolError("invalid_shape", f"top level is {type(data).__name__}, not an object")

    event = data.get("event")
    if event == "media" and not validate_media:
        frame = _media_frame_of(data)
        if frame is not None:
            return frame
    if type(event) is not str:
        raise MediaStreamProtocolError("invalid_shape", "missing or non-string 'event'")
    if event not in _KNOWN_EVENTS:
        return UnknownTwilioMessage(event, data)
    try:
        message = TWILIO_MESSAGE_ADAPTER.validate_python(data)
    except ValidationError as exc:
        raise MediaStreamProtocolError("invalid_shape", _first_error(exc)) from None
    return MediaFrame.from_message(message) if isinstance(message, MediaMessage) else message


def _media_frame_of(data: dict[str, Any]) -> MediaFrame | None:
    """The fast path: a MediaFrame when every field has its usual type, else None (the full model then
    decides, so an unusual frame gets exactly the model's answer and error). Extra fields are ignored, as
    the model ignores them."""
    media = data.get("media")
    if type(media) is not dict:
        return None
    stream_sid, track, payload = data.get("streamSid"), media.get("track"), media.get("payload")
    if not (type(stream_sid) is type(track) is type(payload) is str):
        return None
    try:
        return MediaFrame(
            stream_sid,
            _wire_int(data.get("sequenceNumber")),
            track,
            _wire_int(media.get("chunk")),
            _wire_int(media.get("timestamp")),
            payload,
        )
    except ValueError:  # a missing or junk number
        return None


def _first_error(exc: ValidationError) -> str:
    # Short and without the input: frames can carry caller data.
    error = exc.errors(include_url=False, include_input=False)[0]
    location = ".".join(str(part) for part in error["loc"])
    return f"{location}: {error['msg']}" + (f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else "")


# --- Outbound: messages we send ------------------------------------------------------------------


class OutboundMediaPayload(_WireModel):
    payload: str  # base64 µ-law 8 kHz, no WAV/AU header


class OutboundMediaMessage(_WireModel):
    event: Literal["media"] = "media"
    stream_sid: str
    media: OutboundMediaPayload


class OutboundMarkMessage(_WireModel):
    event: Literal["mark"] = "mark"
    stream_sid: str
    mark: MarkLabel


class OutboundClearMessage(_WireModel):
    event: Literal["clear"] = "clear"
    stream_sid: str


# The frame builders are the byte-for-byte equivalent of `model.model_dump_json(by_alias=True)`
# (tests hold them to it) without building a model per audio chunk. They return `str` because a
# bytes WebSocket message is a binary frame, which Twilio rejects (warning 31950).


def media_frame(stream_sid: str, payload_b64: str) -> str:
    return orjson.dumps({"event": "media", "streamSid": stream_sid, "media": {"payload": payload_b64}}).decode()


def mark_frame(stream_sid: str, name: str) -> str:
    return orjson.dumps({"event": "mark", "streamSid": stream_sid, "mark": {"name": name}}).decode()


def clear_frame(stream_sid: str) -> str:
    return orjson.dumps({"event": "clear", "streamSid": stream_sid}).decode()


def decoded_base64_length(payload_b64: str) -> int:
    """Bytes encoded by a base64 string (padded or not, no whitespace), without decoding it."""
    n = len(payload_b64)
    padding = 0
    if n >= 2 and payload_b64[-1] == "=":
        padding = 2 if payload_b64[-2] == "=" else 1
    return n * 3 // 4 - padding


# Twilio sends 20 ms (160 bytes) a frame; a second of audio in one frame is no Twilio frame.
MAX_MEDIA_PAYLOAD_CHARS = (1000 * MULAW_BYTES_PER_MS + 2) // 3 * 4


def plausible_audio_payload(payload_b64: str) -> bool:
    """Whether a media payload can be base64 audio of a sane length: a check of a few string operations
    (tens of ns, run 50 times a second per call); it does not decode, so an engine that decodes must still
    expect a payload that fails to."""
    return 0 < len(payload_b64) <= MAX_MEDIA_PAYLOAD_CHARS and len(payload_b64) % 4 == 0 and payload_b64.isascii()


# --- Counting what went wrong --------------------------------------------------------------------


@dataclass
class MediaStreamCounters:
    """Per-stream tallies of rejected frames and unknown events, for logs and metrics."""

    # Event names come from the peer: cap distinct keys so a noisy peer cannot grow this without bound.
    MAX_DISTINCT_UNKNOWN_EVENTS: ClassVar[int] = 32
    OTHER_UNKNOWN_EVENTS: ClassVar[str] = "<other>"

    errors_by_kind: Counter[str] = field(default_factory=Counter)
    unknown_events: Counter[str] = field(default_factory=Counter)

    def record_error(self, error: MediaStreamProtocolError) -> None:
        self.errors_by_kind[error.kind] += 1

    def record_unknown(self, message: UnknownTwilioMessage) -> None:
        key = message.event
        if key not in self.unknown_events and len(self.unknown_events) >= self.MAX_DISTINCT_UNKNOWN_EVENTS:
            key = self.OTHER_UNKNOWN_EVENTS
        self.unknown_events[key] += 1

    @property
    def total_errors(self) -> int:
        return self.errors_by_kind.total()


# --- Barge-in bookkeeping ------------------------------------------------------------------------


@dataclass(slots=True)
class _ItemAudio:
    sent: int = 0
    played_before_clear: int = 0
    # [start, end) byte ranges on the playback timeline, only for audio sent since the last clear.
    spans: list[list[int]] = field(default_factory=list)


class MarkTracker:
    """How much of each response item's audio has Twilio actually played? Pure, no I/O.

    Model: everything we send is laid end to end on one playback timeline measured in µ-law
    bytes (8 bytes = 1 ms); each item's audio covers spans of it and a mark is a point on it.
    Twilio plays the timeline in order and echoes a mark when playback reaches it, so the echo of
    mark M proves every byte before M was played, whatever item it belonged to (echoes arrive in
    order; an echo also settles any earlier pending mark). `clear` discards everything not yet
    played and makes Twilio echo every pending mark at once: those echoes mean "discarded", not
    "played". So `on_clear_sent` freezes each item's played count and forgets the pending marks;
    their echoes then arrive as unknown names and are ignored.

    Guarantees:
    - `played_bytes(item) <= sent_bytes(item)` and it never decreases.
    - It never counts discarded audio as played. Precision is the mark spacing: audio after the
      last echoed mark counts as unplayed, so the mark spacing is the precision of `played_ms`.
    - Conservative under the one race Twilio leaves open: a mark truly played whose echo reaches us
      after we sent `clear` is counted as cleared (an echo does not say which it was). That
      under-reports by at most one mark interval.

    Call the `on_*` methods *before* awaiting the matching send, so an echo can never overtake
    the bookkeeping:

        tracker.on_audio_sent(item_id, decoded_base64_length(delta)); send(media_frame(sid, delta))
        name = tracker.next_mark_name(); tracker.on_mark_sent(name); send(mark_frame(sid, name))
        inbound MarkMessage:  tracker.on_mark_echoed(message.mark.name)
        barge-in:             tracker.on_clear_sent(); send(clear_frame(sid))
                              truncate(item_id, audio_end_ms=tracker.played_ms(item_id))

    Cost: O(1) per chunk, mark and echo (amortised); O(items since last clear) per clear.
    """

    def __init__(self, mark_prefix: str = "audio-") -> None:
        self._mark_prefix = mark_prefix
        self._marks_named = 0
        self._queued_until = 0  # timeline offset: end of everything sent
        self._played_until = 0  # timeline offset: reached by playback, per the latest echo
        self._pending_marks: deque[tuple[str, int]] = deque()  # (name, offset), oldest first
        self._pending_names: set[str] = set()
        self._items: dict[str, _ItemAudio] = {}
        self._items_since_clear: set[str] = set()

    def on_audio_sent(self, item_id: str, n_bytes: int) -> None:
        """Record `n_bytes` of decoded µ-law of `item_id` queued to Twilio."""
        if n_bytes <= 0:
            if n_bytes < 0:
                raise ValueError(f"negative audio length: {n_bytes}")
            return
        item = self._items.get(item_id)
        if item is None:
            item = self._items[item_id] = _ItemAudio()
        start, end = self._queued_until, self._queued_until + n_bytes
        spans = item.spans
        if spans and spans[-1][1] == start:
            spans[-1][1] = end  # the usual case: an item's chunks are contiguous
        else:
            spans.append([start, end])
            self._items_since_clear.add(item_id)
        item.sent += n_bytes
        self._queued_until = end

    def next_mark_name(self) -> str:
        """A name never used before by this tracker."""
        self._marks_named += 1
        return f"{self._mark_prefix}{self._marks_named}"

    def on_mark_sent(self, name: str) -> None:
        """Record a mark placed after all audio sent so far."""
        if name in self._pending_names:
            raise ValueError(f"mark {name!r} is already pending; mark names must be unique")
        self._pending_marks.append((name, self._queued_until))
        self._pending_names.add(name)

    def on_mark_echoed(self, name: str) -> bool:
        """Apply a mark echo. True if it proved playback; False if cleared or unknown (ignored)."""
        if name not in self._pending_names:
            return False
        while True:
            pending_name, offset = self._pending_marks.popleft()
            self._pending_names.discard(pending_name)
            if pending_name == name:
                self._played_until = offset
                return True

    def on_clear_sent(self) -> None:
        """Twilio drops its buffer: freeze what was proven played, forget the pending marks."""
        for item_id in self._items_since_clear:
            item = self._items.get(item_id)
            if item is not None:
                item.played_before_clear = self._played_bytes(item)
                item.spans.clear()
        self._items_since_clear.clear()
        self._pending_marks.clear()
        self._pending_names.clear()

    def played_bytes(self, item_id: str) -> int:
        item = self._items.get(item_id)
        return 0 if item is None else self._played_bytes(item)

    def played_ms(self, item_id: str) -> int:
        """Milliseconds of `item_id` the caller heard: the `audio_end_ms` for a Realtime truncate."""
        return self.played_bytes(item_id) // MULAW_BYTES_PER_MS

    def sent_bytes(self, item_id: str) -> int:
        item = self._items.get(item_id)
        return 0 if item is None else item.sent

    def sent_ms(self, item_id: str) -> int:
        return self.sent_bytes(item_id) // MULAW_BYTES_PER_MS

    @property
    def pending_marks(self) -> int:
        return len(self._pending_marks)

    def forget(self, item_id: str) -> None:
        """Drop an item nobody will ask about again (keeps a long call's memory flat)."""
        self._items.pop(item_id, None)
        self._items_since_clear.discard(item_id)

    def _played_bytes(self, item: _ItemAudio) -> int:
        played_until = self._played_until
        return item.played_before_clear + sum(
            max(0, min(end, played_until) - start) for start, end in item.spans
        )
