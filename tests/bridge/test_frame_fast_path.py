"""The per-frame fast paths take exactly what the full models take, and hand everything else to them.

Twilio `media` (`parse_twilio_message`, against `validate_media=True`, the MediaMessage schema) and
Realtime `response.output_audio.delta` (`ServerEventDecoder`, against `validate_audio=True`, the SDK's
ResponseAudioDeltaEvent): frames start valid, then fields are deleted, retyped or added, and some frames
are not JSON at all. For every frame both paths give the same value, or the same error (kind and detail).
"""
from __future__ import annotations

import base64
import dataclasses
import json
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st
from openai.types.realtime import ResponseAudioDeltaEvent

from bridge.openai_realtime.client import AudioDelta, RealtimeStats, ServerEventDecoder, audio_delta_of
from bridge.twilio.media_stream import MediaFrame, MediaStreamProtocolError, parse_twilio_message

_odd_values = st.one_of(
    st.integers(-5, 10**6),
    st.integers(2**63, 2**70),  # beyond 64 bits: orjson refuses, pydantic takes
    st.sampled_from(["", " 7", "7 ", "+3", "1_000", "0x10", "4.0", "٣", "-1", "inbound", "AAAA", "AA=="]),
    st.text(max_size=4),
    st.booleans(),
    st.none(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.just(1.0),
    st.lists(st.integers(-5, 5), max_size=1),
    st.dictionaries(st.text(max_size=2), st.integers(-5, 5), max_size=1),
)
_not_json = st.sampled_from(["", "{", "nul", '{"event": "media",}', "[1, 2]", '"media"', "{'a': 1}"])


def _edit(draw: st.DrawFn, frame: dict[str, Any], paths: list[tuple[str, ...]]) -> None:
    """Delete, retype or add up to three fields (an added one is a name the schema does not have)."""
    for _ in range(draw(st.integers(0, 3))):
        *parents, key = draw(st.sampled_from(paths))
        container: Any = frame
        for parent in parents:
            container = container.get(parent) if isinstance(container, dict) else None
        if not isinstance(container, dict):
            continue
        action = draw(st.sampled_from(["delete", "retype", "add"]))
        if action == "delete":
            container.pop(key, None)
        elif action == "retype":
            container[key] = draw(_odd_values)
        else:
            container[draw(st.sampled_from(["extra", "obfuscation", "Type", "delta2"]))] = draw(_odd_values)


def _dumps(frame: dict[str, Any]) -> str:
    try:
        return orjson.dumps(frame).decode()
    except orjson.JSONEncodeError:  # a >64-bit integer: orjson refuses it, but it is valid JSON
        return json.dumps(frame)


# --------------------------------------------------------------------------- Twilio media

_MEDIA_PATHS = [("sequenceNumber",), ("streamSid",), ("media",), ("event",), ("media", "track"),
                ("media", "chunk"), ("media", "timestamp"), ("media", "payload")]


@st.composite
def media_frames(draw: st.DrawFn) -> str:
    if draw(st.integers(0, 20)) == 0:
        return draw(_not_json)
    frame: dict[str, Any] = {
        "event": "media",
        "sequenceNumber": draw(st.one_of(st.integers(0, 10**6), st.integers(0, 10**6).map(str))),
        "streamSid": "MZ" + "a" * 32,
        "media": {"track": "inbound", "chunk": "2", "timestamp": "40", "payload": base64.b64encode(bytes(160)).decode()},
    }
    _edit(draw, frame, _MEDIA_PATHS)
    return _dumps(frame)


def _twilio_outcome(raw: str, *, validate_media: bool) -> object:
    try:
        return parse_twilio_message(raw, validate_media=validate_media)
    except MediaStreamProtocolError as error:
        return ("error", error.kind, error.detail)


@settings(max_examples=600)
@given(media_frames())
def test_twilio_media_fast_path_gives_what_the_schema_gives(raw: str) -> None:
    assert _twilio_outcome(raw, validate_media=False) == _twilio_outcome(raw, validate_media=True)


def test_twilio_media_fast_path_takes_the_usual_frame_and_refuses_a_bad_one_like_the_schema() -> None:
    good = {"event": "media", "sequenceNumber": "3", "streamSid": "MZ1",
            "media": {"track": "inbound", "chunk": "2", "timestamp": "40", "payload": "AA=="}}
    assert parse_twilio_message(orjson.dumps(good).decode()) == MediaFrame("MZ1", 3, "inbound", 2, 40, "AA==")
    bad = {**good, "media": {**good["media"], "chunk": True}}
    fast = _twilio_outcome(orjson.dumps(bad).decode(), validate_media=False)
    assert fast == _twilio_outcome(orjson.dumps(bad).decode(), validate_media=True)
    assert fast[:2] == ("error", "invalid_shape") and "media.chunk" in fast[2]


# --------------------------------------------------------------------------- Realtime audio deltas

_DELTA_PATHS = [("type",), ("event_id",), ("response_id",), ("item_id",), ("output_index",),
                ("content_index",), ("delta",)]


@st.composite
def delta_frames(draw: st.DrawFn) -> str | bytes:
    if draw(st.integers(0, 20)) == 0:
        return draw(_not_json)
    frame: dict[str, Any] = {
        "type": "response.output_audio.delta",
        "event_id": "event_1",
        "response_id": "resp_1",
        "item_id": "item_1",
        "output_index": draw(st.integers(0, 3)),
        "content_index": 0,
        "delta": base64.b64encode(bytes(160)).decode(),
    }
    _edit(draw, frame, _DELTA_PATHS)
    raw = _dumps(frame)
    return raw.encode() if draw(st.booleans()) else raw  # trio-websocket hands over str; bytes work too


def _normalised(event: object) -> object:
    # An AudioDelta and the SDK model of the same frame are the same event.
    if isinstance(event, AudioDelta):
        return ("audio delta", event.type, *dataclasses.astuple(event))
    if isinstance(event, ResponseAudioDeltaEvent) and not event.model_extra:
        return ("audio delta", event.type, event.event_id, event.response_id, event.item_id,
                event.output_index, event.content_index, event.delta)
    return event


def _realtime_outcome(raw: str | bytes, *, validate_audio: bool) -> tuple[object, RealtimeStats]:
    decoder = ServerEventDecoder(validate_audio=validate_audio)
    return _normalised(decoder.decode(raw)), decoder.stats


@settings(max_examples=600)
@given(delta_frames())
def test_realtime_delta_fast_path_gives_what_the_sdk_model_gives(raw: str | bytes) -> None:
    assert _realtime_outcome(raw, validate_audio=False) == _realtime_outcome(raw, validate_audio=True)
    fast = audio_delta_of(raw)
    if fast is not None:  # whatever the fast path takes, the SDK model takes too
        model = ResponseAudioDeltaEvent.model_validate_json(raw)
        assert not model.model_extra and _normalised(model) == _normalised(fast)


def test_realtime_delta_fast_path_takes_only_the_exact_shape() -> None:
    usual = {"type": "response.output_audio.delta", "event_id": "e", "response_id": "r", "item_id": "i",
             "output_index": 0, "content_index": 0, "delta": "AA=="}
    assert audio_delta_of(orjson.dumps(usual)) == AudioDelta("e", "r", "i", 0, 0, "AA==")
    unusual = [
        {**usual, "obfuscation": "xyz"},  # an extra field: the SDK model keeps it
        {**usual, "output_index": "0"},  # a string index: the model's lax mode decides
        {**usual, "content_index": True},
        {key: value for key, value in usual.items() if key != "item_id"},
        {**usual, "type": "response.output_audio_transcript.delta"},
    ]
    for frame in unusual:
        assert audio_delta_of(orjson.dumps(frame)) is None
        assert _realtime_outcome(orjson.dumps(frame), validate_audio=False) == _realtime_outcome(
            orjson.dumps(frame), validate_audio=True
        )
    # The extra field reaches the caller on the SDK model, not dropped by a shortcut.
    extra = ServerEventDecoder().decode(orjson.dumps(unusual[0]))
    assert isinstance(extra, ResponseAudioDeltaEvent) and extra.model_extra == {"obfuscation": "xyz"}
    # A delta missing a field is no event the SDK knows: passed on as a dict and counted, on both paths.
    decoder = ServerEventDecoder()
    assert decoder.decode(orjson.dumps(unusual[3])) == unusual[3] and decoder.stats.invalid_events == 1
    assert decoder.decode(b"{not json") is None and decoder.stats.malformed_frames == 1
