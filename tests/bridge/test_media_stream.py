"""Twilio Media Streams wire protocol: parsing, frame builders, mark bookkeeping."""

from __future__ import annotations

import base64
from collections import deque

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from bridge.twilio.media_stream import (
    DEFAULT_MAX_FRAME_BYTES,
    ConnectedMessage,
    DtmfMessage,
    MarkLabel,
    MarkMessage,
    MarkTracker,
    MediaFrame,
    MediaStreamCounters,
    MediaStreamProtocolError,
    OutboundClearMessage,
    OutboundMarkMessage,
    OutboundMediaMessage,
    OutboundMediaPayload,
    StartMessage,
    StopMessage,
    UnknownTwilioMessage,
    clear_frame,
    decoded_base64_length,
    mark_frame,
    media_frame,
    parse_twilio_message,
    plausible_audio_payload,
)

STREAM_SID = "MZ18ad3ab5a668481ce02b83e7395059f0"
CALL_SID = "CA5aa5ec9e1f0e1d6e1c3c0e3c2a1b0c9d"
ACCOUNT_SID = "AC25e16e9a716a4a1786a7c83f58e30482"
PAYLOAD = base64.b64encode(bytes(range(160))).decode()

# Sample frames, shaped exactly as in protocols/twilio.md §1.2.
CONNECTED = '{"event":"connected","protocol":"Call","version":"1.0.0"}'
START = (
    f'{{"event":"start","sequenceNumber":"1","start":{{"accountSid":"{ACCOUNT_SID}","streamSid":"{STREAM_SID}","callSid":"{CALL_SID}",'
    '"tracks":["inbound"],"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1},'
    f'"customParameters":{{"session":"opaque-per-call-token"}}}},"streamSid":"{STREAM_SID}"}}'
)
MEDIA = (
    '{"event":"media","sequenceNumber":"4","media":{"track":"inbound","chunk":"2","timestamp":"5",'
    f'"payload":"{PAYLOAD}"}},"streamSid":"{STREAM_SID}"}}'
)
DTMF = f'{{"event":"dtmf","streamSid":"{STREAM_SID}","sequenceNumber":"5","dtmf":{{"track":"inbound_track","digit":"1"}}}}'
MARK = f'{{"event":"mark","sequenceNumber":"4","streamSid":"{STREAM_SID}","mark":{{"name":"my label"}}}}'
STOP = f'{{"event":"stop","sequenceNumber":"5","stop":{{"accountSid":"{ACCOUNT_SID}","callSid":"{CALL_SID}"}},"streamSid":"{STREAM_SID}"}}'


def edited(frame: str, **changes: object) -> str:
    """The frame with top-level keys replaced (value None removes the key)."""
    data = orjson.loads(frame)
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    return orjson.dumps(data).decode()


def protocol_error(raw: str | bytes, **kwargs: object) -> MediaStreamProtocolError:
    with pytest.raises(MediaStreamProtocolError) as caught:
        parse_twilio_message(raw, **kwargs)
    return caught.value


# --- Inbound shapes ------------------------------------------------------------------------------


def test_connected() -> None:
    message = parse_twilio_message(CONNECTED)
    assert message == ConnectedMessage(event="connected", protocol="Call", version="1.0.0")


def test_start() -> None:
    message = parse_twilio_message(START)
    assert isinstance(message, StartMessage)
    assert message.sequence_number == 1
    assert message.stream_sid == STREAM_SID
    assert message.start.stream_sid == STREAM_SID
    assert message.start.call_sid == CALL_SID
    assert message.start.account_sid == ACCOUNT_SID
    assert message.start.tracks == ["inbound"]
    assert message.start.media_format.encoding == "audio/x-mulaw"
    assert message.start.media_format.sample_rate == 8000
    assert message.start.media_format.channels == 1
    assert message.start.custom_parameters == {"session": "opaque-per-call-token"}


def test_start_without_custom_parameters_defaults_to_empty() -> None:
    data = orjson.loads(START)
    del data["start"]["customParameters"]
    message = parse_twilio_message(orjson.dumps(data).decode())
    assert isinstance(message, StartMessage)
    assert message.start.custom_parameters == {}


def test_media_fast_path() -> None:
    message = parse_twilio_message(MEDIA)
    assert message == MediaFrame(
        stream_sid=STREAM_SID, sequence_number=4, track="inbound", chunk=2, timestamp=5, payload=PAYLOAD
    )
    assert message.event == "media"
    assert message.audio_bytes == 160


def test_media_validated_path_gives_the_same_frame() -> None:
    assert parse_twilio_message(MEDIA, validate_media=True) == parse_twilio_message(MEDIA)


def test_dtmf() -> None:
    message = parse_twilio_message(DTMF)
    assert isinstance(message, DtmfMessage)
    assert (message.sequence_number, message.stream_sid) == (5, STREAM_SID)
    assert (message.dtmf.track, message.dtmf.digit) == ("inbound_track", "1")


def test_mark() -> None:
    message = parse_twilio_message(MARK)
    assert isinstance(message, MarkMessage)
    assert (message.sequence_number, message.stream_sid, message.mark.name) == (4, STREAM_SID, "my label")


def test_stop() -> None:
    message = parse_twilio_message(STOP)
    assert isinstance(message, StopMessage)
    assert message.sequence_number == 5
    assert (message.stop.account_sid, message.stop.call_sid) == (ACCOUNT_SID, CALL_SID)


@pytest.mark.parametrize("validate_media", [False, True])
def test_numbers_are_accepted_as_numbers_too(validate_media: bool) -> None:
    data = orjson.loads(MEDIA)
    data["sequenceNumber"] = 4
    data["media"].update(chunk=2, timestamp=5)
    message = parse_twilio_message(orjson.dumps(data).decode(), validate_media=validate_media)
    assert (message.sequence_number, message.chunk, message.timestamp) == (4, 2, 5)

    assert parse_twilio_message(edited(MARK, sequenceNumber=9)).sequence_number == 9
    start = orjson.loads(START)
    start["start"]["mediaFormat"].update(sampleRate="8000", channels="1")
    assert parse_twilio_message(orjson.dumps(start).decode()).start.media_format.sample_rate == 8000


@pytest.mark.parametrize("bad_number", ["four", "4.0", 4.0, True, None, [], {}])
@pytest.mark.parametrize("validate_media", [False, True])
def test_junk_numbers_are_invalid_shape(bad_number: object, validate_media: bool) -> None:
    data = orjson.loads(MEDIA)
    data["media"]["chunk"] = bad_number
    error = protocol_error(orjson.dumps(data).decode(), validate_media=validate_media)
    assert error.kind == "invalid_shape"


def test_extra_fields_are_ignored() -> None:
    data = orjson.loads(START)
    data["somethingNew"] = {"x": 1}
    data["start"]["alsoNew"] = "y"
    assert isinstance(parse_twilio_message(orjson.dumps(data).decode()), StartMessage)
    assert isinstance(parse_twilio_message(edited(MEDIA, somethingNew=1)), MediaFrame)


# --- Unknown and broken frames -------------------------------------------------------------------


def test_unknown_event_is_returned_not_raised() -> None:
    raw = '{"event":"transcription","streamSid":"MZ1","text":"hi"}'
    message = parse_twilio_message(raw)
    assert message == UnknownTwilioMessage(
        event="transcription", raw={"event": "transcription", "streamSid": "MZ1", "text": "hi"}
    )


@pytest.mark.parametrize("raw", ['{"event":"media"', "not json", "", '{"event":"start",}', '"\ud800"'])
def test_malformed_json(raw: str) -> None:
    assert protocol_error(raw).kind == "malformed_json"


@pytest.mark.parametrize(
    "raw",
    [
        "[]",
        '"media"',
        "42",
        "null",
        "{}",
        '{"event":7}',
        '{"event":["media"]}',
        '{"event":{"x":1}}',
    ],
)
def test_wrong_top_level_shapes(raw: str) -> None:
    assert protocol_error(raw).kind == "invalid_shape"


@pytest.mark.parametrize("validate_media", [False, True])
@pytest.mark.parametrize(
    "media",
    [
        None,
        "a string",
        [],
        {"track": "inbound", "chunk": "2", "timestamp": "5"},  # no payload
        {"track": "inbound", "chunk": "2", "timestamp": "5", "payload": 12},
        {"track": None, "chunk": "2", "timestamp": "5", "payload": "AA=="},
        {"chunk": "2", "timestamp": "5", "payload": "AA=="},
    ],
)
def test_media_wrong_shapes(media: object, validate_media: bool) -> None:
    error = protocol_error(edited(MEDIA, media=media), validate_media=validate_media)
    assert error.kind == "invalid_shape"


@pytest.mark.parametrize("validate_media", [False, True])
def test_media_without_stream_sid(validate_media: bool) -> None:
    assert protocol_error(edited(MEDIA, streamSid=None), validate_media=validate_media).kind == "invalid_shape"


def test_start_without_stream_sid() -> None:
    assert protocol_error(edited(START, streamSid=None)).kind == "invalid_shape"
    data = orjson.loads(START)
    del data["start"]["streamSid"]
    error = protocol_error(orjson.dumps(data).decode())
    assert error.kind == "invalid_shape"
    assert "start.streamSid" in error.detail


def test_error_detail_does_not_echo_the_input() -> None:
    data = orjson.loads(START)
    data["start"]["callSid"] = {"secret": "+15551234567"}
    error = protocol_error(orjson.dumps(data).decode())
    assert "+15551234567" not in str(error)


@pytest.mark.parametrize("raw", [b'{"event":"connected"}', bytearray(b"\x00\x01"), memoryview(b"{}")])
def test_binary_frames_are_rejected(raw: bytes) -> None:
    assert protocol_error(raw).kind == "binary_frame"


def test_other_types_are_a_programming_error() -> None:
    with pytest.raises(TypeError):
        parse_twilio_message(42)  # type: ignore[arg-type]


def test_oversized_frames() -> None:
    assert DEFAULT_MAX_FRAME_BYTES == 64 * 1024
    big_payload = "A" * DEFAULT_MAX_FRAME_BYTES
    assert protocol_error(edited(MEDIA, media={"payload": big_payload})).kind == "oversized"
    assert protocol_error(MEDIA, max_bytes=100).kind == "oversized"
    assert isinstance(parse_twilio_message(MEDIA, max_bytes=len(MEDIA)), MediaFrame)


def test_oversized_counts_utf8_bytes_not_characters() -> None:
    raw = '{"event":"x","t":"%s"}' % ("é" * 100)  # 2 bytes per "é"
    assert isinstance(parse_twilio_message(raw, max_bytes=len(raw.encode())), UnknownTwilioMessage)
    assert protocol_error(raw, max_bytes=len(raw) + 10).kind == "oversized"


def test_counters() -> None:
    counters = MediaStreamCounters()
    for raw in ["nope", "[]", b"\x00", '{"event":"a"}', '{"event":"a"}', '{"event":"b"}', MEDIA]:
        try:
            message = parse_twilio_message(raw)
        except MediaStreamProtocolError as error:
            counters.record_error(error)
        else:
            if isinstance(message, UnknownTwilioMessage):
                counters.record_unknown(message)
    assert counters.errors_by_kind == {"malformed_json": 1, "invalid_shape": 1, "binary_frame": 1}
    assert counters.total_errors == 3
    assert counters.unknown_events == {"a": 2, "b": 1}


def test_counters_cap_distinct_unknown_events() -> None:
    counters = MediaStreamCounters()
    for n in range(100):
        counters.record_unknown(UnknownTwilioMessage(event=f"e{n}", raw={}))
    assert len(counters.unknown_events) == MediaStreamCounters.MAX_DISTINCT_UNKNOWN_EVENTS + 1
    assert counters.unknown_events[MediaStreamCounters.OTHER_UNKNOWN_EVENTS] == 100 - 32


# The fast path must accept exactly what the MediaMessage schema accepts, with the same values:
# start from a valid frame, then corrupt or delete up to two fields.
_wire_ints = st.one_of(st.integers(0, 10**9), st.integers(0, 10**9).map(str))
_any_json_value = st.one_of(
    st.integers(-5, 10**6),
    st.sampled_from(["", " 7", "7 ", "+3", "1_000", "0x10", "4.0", "٣", "-1", "inbound"]),
    st.text(max_size=4),
    st.booleans(),
    st.none(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.lists(st.integers(-5, 5), max_size=1),
    st.dictionaries(st.text(max_size=2), st.integers(-5, 5), max_size=1),
)
_MEDIA_FIELD_PATHS = [
    ("sequenceNumber",),
    ("streamSid",),
    ("media",),
    ("media", "track"),
    ("media", "chunk"),
    ("media", "timestamp"),
    ("media", "payload"),
]


@st.composite
def media_like_frames(draw: st.DrawFn) -> str:
    frame: dict[str, object] = {
        "event": "media",
        "sequenceNumber": draw(_wire_ints),
        "streamSid": draw(st.text(max_size=8)),
        "media": {
            "track": draw(st.text(max_size=8)),
            "chunk": draw(_wire_ints),
            "timestamp": draw(_wire_ints),
            "payload": draw(st.text(max_size=8)),
        },
    }
    for _ in range(draw(st.integers(0, 2))):
        *parents, key = draw(st.sampled_from(_MEDIA_FIELD_PATHS))
        container = frame.get(parents[0]) if parents else frame
        if not isinstance(container, dict):
            continue
        if draw(st.booleans()):
            container.pop(key, None)
        else:
            container[key] = draw(_any_json_value)
    return orjson.dumps(frame).decode()


def _outcome(raw: str, validate_media: bool) -> object:
    try:
        return parse_twilio_message(raw, validate_media=validate_media)
    except MediaStreamProtocolError as error:
        return error.kind


@settings(max_examples=500)
@given(media_like_frames())
def test_media_fast_path_matches_the_schema(raw: str) -> None:
    assert _outcome(raw, validate_media=False) == _outcome(raw, validate_media=True)


# --- Outbound frames -----------------------------------------------------------------------------


def test_media_frame_is_exactly_the_documented_json() -> None:
    frame = media_frame(STREAM_SID, PAYLOAD)
    assert isinstance(frame, str)  # bytes would go out as a binary frame, which Twilio rejects
    assert frame == f'{{"event":"media","streamSid":"{STREAM_SID}","media":{{"payload":"{PAYLOAD}"}}}}'
    model = OutboundMediaMessage(stream_sid=STREAM_SID, media=OutboundMediaPayload(payload=PAYLOAD))
    assert frame == model.model_dump_json(by_alias=True)


def test_mark_frame_is_exactly_the_documented_json() -> None:
    frame = mark_frame(STREAM_SID, "turn-12-chunk-3")
    assert frame == f'{{"event":"mark","streamSid":"{STREAM_SID}","mark":{{"name":"turn-12-chunk-3"}}}}'
    model = OutboundMarkMessage(stream_sid=STREAM_SID, mark=MarkLabel(name="turn-12-chunk-3"))
    assert frame == model.model_dump_json(by_alias=True)


def test_clear_frame_is_exactly_the_documented_json() -> None:
    frame = clear_frame(STREAM_SID)
    assert frame == f'{{"event":"clear","streamSid":"{STREAM_SID}"}}'
    assert frame == OutboundClearMessage(stream_sid=STREAM_SID).model_dump_json(by_alias=True)


@given(st.text(), st.text())
def test_frame_builders_match_the_models_for_any_text(stream_sid: str, text: str) -> None:
    assert mark_frame(stream_sid, text) == OutboundMarkMessage(
        stream_sid=stream_sid, mark=MarkLabel(name=text)
    ).model_dump_json(by_alias=True)
    assert media_frame(stream_sid, text) == OutboundMediaMessage(
        stream_sid=stream_sid, media=OutboundMediaPayload(payload=text)
    ).model_dump_json(by_alias=True)
    assert orjson.loads(mark_frame(stream_sid, text))["mark"]["name"] == text


@given(st.binary(max_size=600))
def test_decoded_base64_length(audio: bytes) -> None:
    encoded = base64.b64encode(audio).decode()
    assert decoded_base64_length(encoded) == len(audio)
    assert decoded_base64_length(encoded.rstrip("=")) == len(audio)


@given(st.binary(min_size=1, max_size=8000))
def test_every_base64_audio_of_up_to_a_second_is_plausible(audio: bytes) -> None:
    assert plausible_audio_payload(base64.b64encode(audio).decode())


@pytest.mark.parametrize("payload", ["", "abc", "éééé", "A" * 40_000, "QUJD\n"])
def test_implausible_audio_payloads(payload: str) -> None:
    assert not plausible_audio_payload(payload)


# --- MarkTracker: examples -----------------------------------------------------------------------


def send(tracker: MarkTracker, item_id: str, ms: int) -> str:
    """Send `ms` of audio of `item_id` followed by a mark; return the mark name."""
    tracker.on_audio_sent(item_id, ms * 8)
    name = tracker.next_mark_name()
    tracker.on_mark_sent(name)
    return name


def test_played_marks_advance_playback() -> None:
    tracker = MarkTracker()
    first, second, third = (send(tracker, "item_a", 100) for _ in range(3))
    assert tracker.played_ms("item_a") == 0
    assert tracker.on_mark_echoed(first) is True
    assert tracker.played_ms("item_a") == 100
    assert tracker.on_mark_echoed(third) is True  # implies `second` was played too
    assert tracker.played_ms("item_a") == 300
    assert tracker.sent_ms("item_a") == 300
    assert tracker.pending_marks == 0
    assert tracker.on_mark_echoed(second) is False  # already settled


def test_marks_echoed_because_of_clear_are_not_played() -> None:
    tracker = MarkTracker()
    first, second, third = (send(tracker, "item_a", 100) for _ in range(3))
    tracker.on_mark_echoed(first)
    tracker.on_clear_sent()
    # Twilio now echoes every pending mark; that audio was discarded.
    assert tracker.on_mark_echoed(second) is False
    assert tracker.on_mark_echoed(third) is False
    assert tracker.played_ms("item_a") == 100
    assert tracker.sent_ms("item_a") == 300


def test_audio_after_the_last_echoed_mark_counts_as_unplayed() -> None:
    tracker = MarkTracker()
    mark = send(tracker, "item_a", 100)
    tracker.on_audio_sent("item_a", 50 * 8)  # no mark after it
    tracker.on_mark_echoed(mark)
    assert tracker.played_ms("item_a") == 100


def test_a_later_items_mark_proves_the_earlier_items_tail() -> None:
    tracker = MarkTracker()
    send(tracker, "item_a", 100)
    tracker.on_audio_sent("item_a", 40 * 8)  # tail of item_a without its own mark
    item_b_mark = send(tracker, "item_b", 60)
    tracker.on_mark_echoed(item_b_mark)
    assert tracker.played_ms("item_a") == 140
    assert tracker.played_ms("item_b") == 60


def test_new_audio_after_clear_is_tracked_separately() -> None:
    tracker = MarkTracker()
    first = send(tracker, "item_a", 100)
    send(tracker, "item_a", 100)
    tracker.on_mark_echoed(first)
    tracker.on_clear_sent()
    new_mark = send(tracker, "item_b", 80)
    assert tracker.on_mark_echoed(new_mark) is True
    assert tracker.played_ms("item_a") == 100  # the cleared 100 ms stay unplayed
    assert tracker.played_ms("item_b") == 80


def test_unknown_items_and_marks() -> None:
    tracker = MarkTracker()
    assert tracker.played_ms("nobody") == 0
    assert tracker.sent_ms("nobody") == 0
    assert tracker.on_mark_echoed("stranger") is False


def test_mark_names_are_unique_and_duplicates_rejected() -> None:
    tracker = MarkTracker(mark_prefix="m")
    names = {tracker.next_mark_name() for _ in range(1000)}
    assert len(names) == 1000
    tracker.on_mark_sent("dup")
    with pytest.raises(ValueError):
        tracker.on_mark_sent("dup")


def test_negative_audio_is_rejected_and_empty_audio_ignored() -> None:
    tracker = MarkTracker()
    with pytest.raises(ValueError):
        tracker.on_audio_sent("item_a", -1)
    tracker.on_audio_sent("item_a", 0)
    assert tracker.sent_bytes("item_a") == 0


def test_forget() -> None:
    tracker = MarkTracker()
    mark = send(tracker, "item_a", 100)
    tracker.forget("item_a")
    tracker.on_clear_sent()  # must not trip over the forgotten item
    assert tracker.on_mark_echoed(mark) is False
    assert tracker.played_ms("item_a") == 0


# --- MarkTracker against a simulated Twilio playback buffer --------------------------------------


class FakeTwilioPlayback:
    """Twilio's side: a FIFO of audio and marks, played in order; echoes go to an inbox that the
    bridge reads later (so echoes can arrive after we already sent `clear`)."""

    def __init__(self) -> None:
        self.buffer: deque[tuple[str, str, int]] = deque()  # ("audio", item, n) | ("mark", name, 0)
        self.inbox: deque[str] = deque()
        self.heard: dict[str, int] = {}

    def enqueue_audio(self, item_id: str, n_bytes: int) -> None:
        self.buffer.append(("audio", item_id, n_bytes))

    def enqueue_mark(self, name: str) -> None:
        self.buffer.append(("mark", name, 0))
        self._echo_reached_marks()

    def play(self, n_bytes: int) -> None:
        while n_bytes > 0 and self.buffer:
            kind, item_id, length = self.buffer[0]
            played = min(n_bytes, length)
            self.heard[item_id] = self.heard.get(item_id, 0) + played
            n_bytes -= played
            if played == length:
                self.buffer.popleft()
            else:
                self.buffer[0] = (kind, item_id, length - played)
            self._echo_reached_marks()

    def clear(self) -> None:
        self.inbox.extend(name for kind, name, _ in self.buffer if kind == "mark")
        self.buffer.clear()

    def _echo_reached_marks(self) -> None:
        while self.buffer and self.buffer[0][0] == "mark":
            self.inbox.append(self.buffer.popleft()[1])


class MarkTrackerAgainstPlayback(RuleBasedStateMachine):
    items = ("item_a", "item_b", "item_c")

    def __init__(self) -> None:
        super().__init__()
        self.tracker = MarkTracker()
        self.twilio = FakeTwilioPlayback()
        self.sent: dict[str, int] = {}
        self.last_played: dict[str, int] = {}

    @rule(item_id=st.sampled_from(items), n_bytes=st.integers(0, 800))
    def send_audio(self, item_id: str, n_bytes: int) -> None:
        self.tracker.on_audio_sent(item_id, n_bytes)
        self.twilio.enqueue_audio(item_id, n_bytes)
        self.sent[item_id] = self.sent.get(item_id, 0) + n_bytes

    @rule()
    def send_mark(self) -> None:
        name = self.tracker.next_mark_name()
        self.tracker.on_mark_sent(name)
        self.twilio.enqueue_mark(name)

    @rule(n_bytes=st.integers(0, 1600))
    def twilio_plays(self, n_bytes: int) -> None:
        self.twilio.play(n_bytes)

    @precondition(lambda self: self.twilio.inbox)
    @rule(count=st.integers(1, 5))
    def bridge_reads_echoes(self, count: int) -> None:
        for _ in range(min(count, len(self.twilio.inbox))):
            self.tracker.on_mark_echoed(self.twilio.inbox.popleft())

    @rule()
    def barge_in(self) -> None:
        self.tracker.on_clear_sent()
        self.twilio.clear()

    @rule(name=st.sampled_from(["stranger", "audio-999999"]))
    def stray_echo(self, name: str) -> None:
        assert self.tracker.on_mark_echoed(name) is False

    @invariant()
    def played_is_never_more_than_heard_or_sent(self) -> None:
        for item_id in self.items:
            played = self.tracker.played_bytes(item_id)
            assert played <= self.twilio.heard.get(item_id, 0) <= self.sent.get(item_id, 0)
            assert self.tracker.played_ms(item_id) <= self.tracker.sent_ms(item_id)

    @invariant()
    def played_never_decreases(self) -> None:
        for item_id in self.items:
            played = self.tracker.played_bytes(item_id)
            assert played >= self.last_played.get(item_id, 0)
            self.last_played[item_id] = played


TestMarkTrackerAgainstPlayback = MarkTrackerAgainstPlayback.TestCase
TestMarkTrackerAgainstPlayback.settings = settings(max_examples=300, stateful_step_count=60)


@given(st.lists(st.integers(1, 400), min_size=1, max_size=30), st.data())
def test_played_is_exact_at_an_echoed_mark(chunks: list[int], data: st.DataObject) -> None:
    tracker = MarkTracker()
    names = []
    for n_bytes in chunks:
        tracker.on_audio_sent("item_a", n_bytes)
        names.append(tracker.next_mark_name())
        tracker.on_mark_sent(names[-1])
    index = data.draw(st.integers(0, len(chunks) - 1))
    tracker.on_mark_echoed(names[index])
    assert tracker.played_bytes("item_a") == sum(chunks[: index + 1])
