"""Hostile Media Stream input through a real call session (the in-memory harness): any sequence of frames
(repeated set-up messages, garbage, binary, oversized, missing fields, stray marks and keys, a hang-up
anywhere) arrives during triage; the call must still end where it should, everything of it closed."""
from __future__ import annotations

import base64

import orjson
import structlog
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.twilio import plausible_audio_payload
from orchestrator.engines.interface import CallerTranscript
from tests.call.session_harness import (
    ACME_CONFIG,
    CALL_SID,
    STREAM_SID,
    ScriptedConnector,
    expect_speak,
    expect_tool_output,
    propose,
    respond,
    running_session,
    vad_response,
)

SCRIPT = [expect_speak("greeting"), respond(audio_ms=200), expect_tool_output("call_1"), expect_speak("handoff"),
          respond(audio_ms=200)]
ACCOUNT_SID = "AC" + "0" * 32
MENU_KEYS = frozenset(key for intent in ACME_CONFIG.intents for key in intent.keys)
STOP = orjson.dumps({"event": "stop", "sequenceNumber": "99", "streamSid": STREAM_SID,
                     "stop": {"accountSid": ACCOUNT_SID, "callSid": CALL_SID}}).decode()


def frame(**body: object) -> str:
    return orjson.dumps({"sequenceNumber": "5", "streamSid": STREAM_SID, **body}).decode()


def media(payload: object) -> str:
    return frame(event="media", media={"track": "inbound", "chunk": "3", "timestamp": "60", "payload": payload})


def start(call_sid: str) -> str:
    return frame(event="start", start={
        "accountSid": ACCOUNT_SID, "streamSid": STREAM_SID, "callSid": call_sid, "tracks": ["inbound"],
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
    })


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
hostile_frames = st.one_of(
    st.binary(max_size=300).map(lambda audio: media(base64.b64encode(audio).decode())),  # good audio
    st.text(max_size=300).map(media),  # a payload of anything
    st.binary(min_size=1, max_size=300).map(lambda audio: media(base64.b64encode(audio).decode()[:-1])),
    json_values.map(media),
    st.just(media("A" * 70_000)),  # over the frame limit
    st.just(media("A" * 20_000)),  # under it, over any audio frame
    st.just(frame(event="connected", protocol="Call", version="1.0.0")),
    st.sampled_from([CALL_SID, "CA" + "f" * 32]).map(start),
    st.text(max_size=40).map(lambda name: frame(event="mark", mark={"name": name})),
    st.just(frame(event="mark", mark={"name": "line-greeting-1"})),  # an echo of a mark already echoed
    # Any key but the menu's own (a menu key chooses its intent: tests/e2e covers that path).
    st.text(max_size=3).filter(lambda digit: digit[:2] not in MENU_KEYS)
    .map(lambda digit: frame(event="dtmf", dtmf={"track": "inbound_track", "digit": digit})),
    st.text(max_size=20).map(lambda event: frame(event=event)),
    st.dictionaries(st.sampled_from(["event", "media", "streamSid", "mark", "start"]), json_values, max_size=4)
    .map(lambda data: orjson.dumps(data).decode()),
    json_values.map(lambda value: orjson.dumps(value).decode()),
    st.text(max_size=200),
    st.binary(max_size=200),
    st.just(STOP),
)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(frames=st.lists(hostile_frames, max_size=25))
def test_any_media_stream_frames_during_triage_leave_the_call_ending_where_it_should(frames: list[str | bytes]):
    with structlog.testing.capture_logs() as logs:
        trio.run(_hostile_call, frames)
    assert not [entry for entry in logs if entry["log_level"] in ("error", "critical") or "exc_info" in entry]


async def _hostile_call(frames: list[str | bytes]) -> None:
    hung_up = STOP in frames
    async with running_session(ScriptedConnector(SCRIPT)) as call:
        for raw in frames:
            call.socket.feed_raw(raw)
        await call.settle()
        if not call.finished.is_set():
            call.engine.emit(CallerTranscript("I was charged twice"), *vad_response(propose("billing", 0.9)))
            await call.settle()
    assert call.socket.closed_with is not None
    assert call.session.realtime_closed.is_set()
    assert call.outcome is not None
    if hung_up:
        assert call.outcome.outcome == "abandoned"
    else:
        assert call.decision is not None and call.decision.route == "billing_desk"
        assert call.engine.finished_script
    assert all(plausible_audio_payload(payload) for payload in call.engine.caller_audio)
