"""The fake Realtime server's own checks: it validates every client frame, refuses the beta shape, fails
the test on an invalid event of its own, and keeps the session state the real server keeps."""

from __future__ import annotations

import orjson
import pytest
import trio
import trio.testing
from openai.types.realtime import (
    ResponseDoneEvent,
)
from trio_websocket import ConnectionClosed

from bridge.openai_realtime.client import (
    AudioDelta,
)
from orchestrator.testing.fake_realtime import (
    FakeRealtimeBug,
    Respond,
    Scenario,
    SendEvent,
    Speech,
    after_client_event,
    after_session_update,
    immediately,
    on,
    run_fake_realtime,
    speak,
)
from tests.bridge.test_realtime_client import TIMEOUT_S, connected, events_until, raw_websocket, type_of

# --------------------------------------------------------------------------- the fake's own checks


async def test_the_fake_flags_an_invalid_client_frame():
    with trio.fail_after(TIMEOUT_S):
        async with run_fake_realtime() as fake:
            async with raw_websocket(fake.url, [(b"Authorization", b"Bearer sk-test")]) as websocket:
                assert orjson.loads(await websocket.get_message())["type"] == "session.created"
                await websocket.send_message(
                    orjson.dumps(
                        {"type": "conversation.item.truncate", "item_id": "item_1", "event_id": "mine"}
                    ).decode()
                )
                error = orjson.loads(await websocket.get_message())
                await websocket.send_message('{"type": "input_audio_buffer.append", "audio": "not base64!"}')
                bad_audio = orjson.loads(await websocket.get_message())
                await websocket.send_message('{"type": "response.audio.delta"}')
                unknown_type = orjson.loads(await websocket.get_message())

            assert error["type"] == "error"
            assert error["error"]["type"] == "invalid_request_error"
            assert error["error"]["code"] == "missing_required_parameter"
            assert error["error"]["param"] in ("audio_end_ms", "content_index")
            assert error["error"]["event_id"] == "mine"
            assert (bad_audio["error"]["code"], bad_audio["error"]["param"]) == ("invalid_value", "audio")
            assert (unknown_type["error"]["code"], unknown_type["error"]["param"]) == (
                "invalid_value",
                "type",
            )
            assert [violation.code for violation in fake.violations] == [
                "missing_required_parameter",
                "invalid_value",
                "invalid_value",
            ]
            # Invalid frames are recoverable: the session stayed open until the client left.
            await fake.last_session.wait_closed()
            assert (fake.last_session.closed_by, fake.last_session.close_code) == ("client", 1000)


@pytest.mark.parametrize(
    ("headers", "frame"),
    [
        ([(b"OpenAI-Beta", b"realtime=v1")], None),
        (
            [],
            {
                "type": "session.update",
                "session": {"modalities": ["audio"], "input_audio_format": "g711_ulaw"},
            },
        ),
    ],
    ids=["beta-header", "session-without-type"],
)
async def test_the_fake_rejects_the_beta_shape_and_closes_4000(headers, frame):
    with trio.fail_after(TIMEOUT_S):
        async with run_fake_realtime() as fake:
            async with raw_websocket(fake.url, [(b"Authorization", b"Bearer k"), *headers]) as websocket:
                if frame is not None:
                    assert orjson.loads(await websocket.get_message())["type"] == "session.created"
                    await websocket.send_message(orjson.dumps(frame).decode())
                error = orjson.loads(await websocket.get_message())
                with pytest.raises(ConnectionClosed):
                    await websocket.get_message()
                assert websocket.closed.code == 4000
            assert error["error"]["code"] == "beta_api_shape_disabled"
            assert [violation.code for violation in fake.violations] == ["beta_api_shape_disabled"]


async def test_a_fake_that_would_send_an_invalid_server_event_fails_the_test():
    scenario = Scenario(
        steps=[on(immediately(), SendEvent({"type": "response.output_audio.delta", "delta": "AA=="}))]
    )
    with trio.fail_after(TIMEOUT_S), pytest.raises(FakeRealtimeBug, match="response.output_audio.delta"):
        async with connected(scenario) as (fake, realtime):
            events = [event async for event in realtime.events()]
            assert [type_of(event) for event in events] == ["session.created"]
            assert realtime.closed.code == 1011  # the fake closes the connection it crashed on


async def test_client_cancel_stops_a_paced_response():
    scenario = Scenario(
        steps=[on(after_session_update(), Respond((Speech(2000, "A long answer"),), pace_s=0.01))]
    )
    with trio.fail_after(TIMEOUT_S):
        async with connected(scenario) as (fake, realtime):
            await realtime.configure("x")
            await events_until(realtime, "response.output_audio.delta")
            await realtime.cancel_response()
            done = (await events_until(realtime, "response.done"))[-1]
            assert isinstance(done, ResponseDoneEvent)
            assert (done.response.status, done.response.status_details.reason) == (
                "cancelled",
                "client_cancelled",
            )
            await realtime.cancel_response()  # nothing active any more
            error = (await events_until(realtime, "error"))[-1]
            assert error.error.code == "response_cancel_not_active"


async def test_truncate_is_checked_against_the_audio_sent():
    scenario = Scenario(steps=[on(after_session_update(), speak(ms=300, transcript="Hello"))])
    with trio.fail_after(TIMEOUT_S):
        async with connected(scenario) as (fake, realtime):
            await realtime.configure("x")
            events = await events_until(realtime, "response.done")
            item_id = next(e.item_id for e in events if isinstance(e, AudioDelta))
            await realtime.truncate(item_id, 0, 200)
            truncated = (await events_until(realtime, "conversation.item.truncated"))[-1]
            assert truncated.audio_end_ms == 200
            await realtime.truncate(item_id, 0, 250)  # longer than what is left
            error = (await events_until(realtime, "error"))[-1]
            assert "already shorter" in error.error.message
            assert fake.violations == []  # a refused truncate is a server answer, not a malformed frame


async def test_text_and_response_frames_have_the_ga_shape():
    with trio.fail_after(TIMEOUT_S):
        async with connected() as (fake, realtime):
            await realtime.configure("x")
            await realtime.add_user_text("I want to pay my bill")
            await realtime.create_response(instructions="Answer briefly.")
            session = fake.last_session
            (item,) = await session.wait_for_client_event("conversation.item.create")
            (response,) = await session.wait_for_client_event("response.create")
            assert item.data["item"] == {
                "content": [{"text": "I want to pay my bill", "type": "input_text"}],
                "role": "user",
                "type": "message",
            }
            assert response.data == {
                "type": "response.create",
                "response": {"instructions": "Answer briefly."},
            }
            assert fake.violations == []


async def test_two_receivers_are_refused():
    scenario = Scenario(steps=[on(after_client_event("response.create"), speak(ms=100))])
    with trio.fail_after(TIMEOUT_S):
        async with connected(scenario) as (fake, realtime):
            await realtime.configure("x")
            await realtime.receive()  # session.created
            async with trio.open_nursery() as nursery:
                nursery.start_soon(realtime.receive)
                await trio.testing.wait_all_tasks_blocked()
                with pytest.raises(trio.BusyResourceError):
                    await realtime.receive()
                await realtime.create_response()
