"""End to end: a caller (or a peer) sends what Twilio never should, or the Realtime server what it never
should: the call goes on and ends on its route, whatever came in the middle (or, for an error it cannot
read, on the fallback route, in order)."""
from __future__ import annotations

import logging
import xml.etree.ElementTree as ElementTree

import pytest

from bridge.twilio.mulaw import tone
from orchestrator.testing.fake_realtime import Scenario, SendError, SendRaw, after_audio_frames, on
from orchestrator.testing.twilio_caller import Say, SendFrame, WaitForAgent
from tests.live_call_support import (
    CALLER_SPEAKS,
    DETAILS,
    assert_closed_in_order,
    front_desk,
    metric,
    triage_scenario,
)

FLEX_WORKFLOW = "WW37efa99795cd582f2f4c31893159fe53"
OTHER_CALL_SID = "CA" + "f" * 32


def repeated_start(call_sid: str) -> dict:
    return {
        "event": "start", "sequenceNumber": "1",
        "start": {"accountSid": "AC" + "0" * 32, "streamSid": "MZ" + "1" * 32, "callSid": call_sid,
                  "tracks": ["inbound"],
                  "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}},
    }


def media(payload: str) -> dict:
    return {"event": "media", "sequenceNumber": "7",
            "media": {"track": "inbound", "chunk": "7", "timestamp": "140", "payload": payload}}


def assert_enqueued_on_flex(twiml: str | None) -> None:
    assert twiml is not None
    enqueue = ElementTree.fromstring(twiml).find("Enqueue")
    assert enqueue is not None and enqueue.get("workflowSid") == FLEX_WORKFLOW, twiml


async def test_a_repeated_start_another_calls_start_and_a_second_connected_do_not_end_the_call(tmp_path):
    async with front_desk(tmp_path, triage_scenario("emergency", details=DETAILS)) as desk:
        hostile = (
            SendFrame({"event": "connected", "protocol": "Call", "version": "1.0.0"}),
            SendFrame(repeated_start("CA" + "0" * 32)),
            SendFrame(repeated_start(OTHER_CALL_SID)),
        )
        result = await desk.call((*hostile, Say(tone(1200), "I need some help"), WaitForAgent(quiet_ms=400)))
        assert_closed_in_order(desk, result)
        assert_enqueued_on_flex(result.final_twiml)
        desk.assert_nothing_of_the_call_remains()


@pytest.mark.parametrize("frame", ['{"type": "error"}', '{"type": "error", "error": "not an object"}'])
async def test_an_error_event_that_cannot_be_read_counts_as_fatal_and_the_caller_gets_the_fallback(tmp_path, frame):
    """The engine said something failed, not what: the session does not guess that it was harmless."""
    scenario = triage_scenario("emergency", details=DETAILS)
    junk = on(after_audio_frames(2), SendRaw(frame))
    async with front_desk(tmp_path, Scenario(steps=[scenario.steps[0], junk, *scenario.steps[1:]])) as desk:
        result = await desk.call(CALLER_SPEAKS)
        assert_closed_in_order(desk, result)
        assert result.final_twiml is not None
        assert [child.tag for child in ElementTree.fromstring(result.final_twiml)] == ["Say", "Record", "Hangup"]
        desk.assert_nothing_of_the_call_remains()


GARBAGE_MEDIA = (
    SendFrame(media("!!!!not base64!!")),  # passes the cheap check: the engine finds it is not base64
    SendFrame(media("abc")),  # not a base64 length
    SendFrame(media("")),
    SendFrame(media("éééé")),
    SendFrame(media("A" * 40_000)),  # far longer than any Twilio frame
    SendFrame({"event": "media", "media": {"track": "inbound", "payload": 12}}),
    SendFrame({"event": "media"}),
    SendFrame(b"\x00\x01binary"),
    SendFrame("{not json"),
    SendFrame("[]"),
)


async def test_garbage_media_payloads_in_the_middle_are_dropped_and_the_call_routes_right(tmp_path):
    async with front_desk(tmp_path, triage_scenario("emergency", details=DETAILS)) as desk:
        caller_says = Say(tone(1200), "I need some help")
        result = await desk.call((*GARBAGE_MEDIA, caller_says, *GARBAGE_MEDIA, WaitForAgent(quiet_ms=400)))
        assert_closed_in_order(desk, result)
        assert_enqueued_on_flex(result.final_twiml)
        # 4 of each batch are caught by the cheap check (the second batch may come after the decision, unheard)
        assert metric(desk, "media_stream_errors_total", kind="unusable_audio") >= 4
        assert not desk.realtime_session_of(result).violations  # nothing unusable reached the Realtime server
        desk.assert_nothing_of_the_call_remains()


async def test_garbage_media_with_info_logging_on_as_serve_has_it(tmp_path, caplog):
    """`serve` logs at INFO: the line about the dropped audio must log, not end the call."""
    caplog.set_level(logging.INFO)
    await test_garbage_media_payloads_in_the_middle_are_dropped_and_the_call_routes_right(tmp_path)
    assert "caller audio that is not base64 was dropped" in caplog.text


@pytest.mark.parametrize("frame", ['{"type": "error"}', '{"type": "error", "error": "not an object"}'])
async def test_an_error_event_that_cannot_be_read_counts_as_fatal_and_the_caller_gets_the_fallback(tmp_path, frame):
    """The engine said something failed, not what: the session does not guess that it was harmless."""
    scenario = triage_scenario("emergency", details=DETAILS)
    junk = on(after_audio_frames(2), SendRaw(frame))
    async with front_desk(tmp_path, Scenario(steps=[scenario.steps[0], junk, *scenario.steps[1:]])) as desk:
        result = await desk.call(CALLER_SPEAKS)
        assert_closed_in_order(desk, result)
        assert result.final_twiml is not None
        assert [child.tag for child in ElementTree.fromstring(result.final_twiml)] == ["Say", "Record", "Hangup"]
        desk.assert_nothing_of_the_call_remains()


async def test_a_realtime_error_answering_an_audio_append_does_not_end_the_call(tmp_path):
    scenario = triage_scenario("emergency", details=DETAILS)
    bad_append = on(after_audio_frames(2), SendError("invalid_value", "Invalid base64 audio.", param="audio"))
    async with front_desk(tmp_path, Scenario(steps=[scenario.steps[0], bad_append, *scenario.steps[1:]])) as desk:
        result = await desk.call(CALLER_SPEAKS)
        assert_closed_in_order(desk, result)
        assert_enqueued_on_flex(result.final_twiml)
        assert metric(desk, "engine_problems_total", code="invalid_value", fatal="false") == 1
        desk.assert_nothing_of_the_call_remains()


@pytest.mark.parametrize("frame", ['{"type": "error"}', '{"type": "error", "error": "not an object"}'])
async def test_an_error_event_that_cannot_be_read_counts_as_fatal_and_the_caller_gets_the_fallback(tmp_path, frame):
    """The engine said something failed, not what: the session does not guess that it was harmless."""
    scenario = triage_scenario("emergency", details=DETAILS)
    junk = on(after_audio_frames(2), SendRaw(frame))
    async with front_desk(tmp_path, Scenario(steps=[scenario.steps[0], junk, *scenario.steps[1:]])) as desk:
        result = await desk.call(CALLER_SPEAKS)
        assert_closed_in_order(desk, result)
        assert result.final_twiml is not None
        assert [child.tag for child in ElementTree.fromstring(result.final_twiml)] == ["Say", "Record", "Hangup"]
        desk.assert_nothing_of_the_call_remains()


HOSTILE_REALTIME_FRAMES = [
    "{not json",
    "[]",
    '"a string"',
    '{"type": "totally.unknown.event", "event_id": "event_1"}',
    '{"type": "response.output_audio.delta"}',  # a known type without its fields
    '{"type": "response.function_call_arguments.done", "call_id": 5}',
    '{"type": "session.updated", "session": null}',
    '{"type": "rate_limits.updated", "rate_limits": "A' + "A" * 100_000 + '"}',
]


@pytest.mark.parametrize("frame", HOSTILE_REALTIME_FRAMES, ids=lambda frame: frame[:40])
async def test_a_malformed_or_unknown_realtime_event_does_not_end_the_call(tmp_path, frame):
    scenario = triage_scenario("emergency", details=DETAILS)
    junk = on(after_audio_frames(2), SendRaw(frame), SendRaw(frame))
    async with front_desk(tmp_path, Scenario(steps=[scenario.steps[0], junk, *scenario.steps[1:]])) as desk:
        result = await desk.call(CALLER_SPEAKS)
        assert_closed_in_order(desk, result)
        assert_enqueued_on_flex(result.final_twiml)
        desk.assert_nothing_of_the_call_remains()


@pytest.mark.parametrize("frame", ['{"type": "error"}', '{"type": "error", "error": "not an object"}'])
async def test_an_error_event_that_cannot_be_read_counts_as_fatal_and_the_caller_gets_the_fallback(tmp_path, frame):
    """The engine said something failed, not what: the session does not guess that it was harmless."""
    scenario = triage_scenario("emergency", details=DETAILS)
    junk = on(after_audio_frames(2), SendRaw(frame))
    async with front_desk(tmp_path, Scenario(steps=[scenario.steps[0], junk, *scenario.steps[1:]])) as desk:
        result = await desk.call(CALLER_SPEAKS)
        assert_closed_in_order(desk, result)
        assert result.final_twiml is not None
        assert [child.tag for child in ElementTree.fromstring(result.final_twiml)] == ["Say", "Record", "Hangup"]
        desk.assert_nothing_of_the_call_remains()
