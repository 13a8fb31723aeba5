"""The Realtime client against the protocol-faithful fake, over loopback.

Benchmark (not a test): `PYTHONPATH=. .venv/bin/python tests/test_realtime_client.py`.
"""

from __future__ import annotations

import base64
import os
import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any
from urllib.parse import urlsplit

import orjson
import pytest
import trio
import trio.testing
import trustme
from hypothesis import given
from hypothesis import strategies as st
from openai.types.realtime import (
    InputAudioBufferAppendEvent,
    RealtimeErrorEvent,
    ResponseAudioDeltaEvent,
    ResponseFunctionCallArgumentsDoneEvent,
    SessionCreatedEvent,
    SessionUpdatedEvent,
)
from pydantic import ValidationError
from trio_websocket import WebSocketConnection, serve_websocket, wrap_client_stream

from bridge.openai_realtime.client import (
    AudioDelta,
    RealtimeConnection,
    RealtimeConnectionClosed,
    RealtimeRequestError,
    RealtimeSettings,
    RealtimeUnavailable,
    ServerEventDecoder,
    ToolCallCollector,
    audio_append_frame,
    open_realtime,
)
from bridge.websocket.byte_io import PlainSocketIO
from orchestrator.testing.fake_realtime import (
    Drop,
    FakeRealtime,
    Freeze,
    Respond,
    Scenario,
    SendError,
    SendRaw,
    Speech,
    UserSpeech,
    after_audio_frames,
    after_response_create,
    after_session_update,
    call_function,
    cancelled_function_call,
    expire_session,
    on,
    run_fake_realtime,
    speak,
)

TIMEOUT_S = 2  # every test must finish well within this
TOOLS = [
    {
        "name": "propose_route",
        "description": "Propose where the call should go.",
        "parameters": {
            "type": "object",
            "properties": {"intent": {"type": "string"}},
            "required": ["intent"],
        },
    }
]


def twilio_payload(index: int = 0) -> str:
    """A 20 ms µ-law frame as Twilio sends it (160 bytes, base64)."""
    return base64.b64encode(bytes((index + offset) % 256 for offset in range(160))).decode()


@asynccontextmanager
async def connected(
    scenario: Scenario | None = None, *, tls: bool = False, **settings: Any
) -> AsyncIterator[tuple[FakeRealtime, RealtimeConnection]]:
    """Our client and the fake; `tls`: over wss:// with a test CA."""
    serving, trusting = None, None
    if tls:
        ca = trustme.CA()
        serving, trusting = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH), ssl.create_default_context()
        ca.issue_cert("localhost").configure_cert(serving)
        ca.configure_trust(trusting)
    async with run_fake_realtime(scenario, ssl_context=serving) as fake:
        options = {"url": fake.url.replace("127.0.0.1", "localhost"), "api_key": "sk-test", **settings}
        async with open_realtime(RealtimeSettings(**options), ssl_context=trusting) as realtime:
            yield fake, realtime


@asynccontextmanager
async def raw_websocket(url: str, headers: list[tuple[bytes, bytes]]) -> AsyncIterator[WebSocketConnection]:
    """A bare client, to send what RealtimeConnection never would. It owns its TCP stream because
    trio-websocket's own client leaves it open after a close initiated by the server."""
    target = urlsplit(url)
    stream = await trio.open_tcp_stream(target.hostname, target.port)
    try:
        async with trio.open_nursery() as nursery:
            host = f"{target.hostname}:{target.port}"
            websocket = await wrap_client_stream(nursery, stream, host, target.path, extra_headers=headers)
            try:
                yield websocket
            finally:
                await websocket.aclose()
                nursery.cancel_scope.cancel()
    finally:
        await trio.aclose_forcefully(stream)


async def events_until(realtime: RealtimeConnection, event_type: str) -> list[Any]:
    """Every event up to and including the first of `event_type`."""
    seen = []
    async for event in realtime.events():
        seen.append(event)
        if type_of(event) == event_type:
            return seen
    raise AssertionError(f"socket closed before {event_type}; saw {[type_of(e) for e in seen]}")


def type_of(event: Any) -> str:
    return event["type"] if isinstance(event, dict) else event.type


# --------------------------------------------------------------------------- session and handshake


async def test_configure_waits_for_session_updated_and_sends_the_ga_shape():
    with trio.fail_after(TIMEOUT_S):
        async with connected() as (fake, realtime):
            updated = await realtime.configure("You are a front desk.", TOOLS)

            assert isinstance(updated, SessionUpdatedEvent)
            assert updated.session.audio.input.format.type == "audio/pcmu"
            # session.created arrived while configure waited; it is not lost.
            assert isinstance(await realtime.receive(), SessionCreatedEvent)

            session = fake.last_session
            (update,) = session.events_of_type("session.update")
            sent = update.data["session"]
            assert sent["type"] == "realtime"
            assert sent["audio"]["input"]["format"] == {"type": "audio/pcmu"}
            assert sent["audio"]["output"]["format"] == {"type": "audio/pcmu"}
            assert sent["audio"]["output"]["voice"] == "marin"
            assert sent["audio"]["input"]["turn_detection"]["type"] == "server_vad"
            assert sent["tools"][0]["name"] == "propose_route" and sent["tools"][0]["type"] == "function"
            assert "openai-beta" not in session.headers
            assert session.headers["authorization"] == "Bearer sk-test"
            assert session.query == {"model": "gpt-realtime-1.5"}
            assert fake.violations == []


async def test_azure_style_settings_send_api_key_and_no_authorization():
    with trio.fail_after(TIMEOUT_S):
        async with run_fake_realtime() as fake:
            settings = RealtimeSettings(
                url=fake.url + "?api-version=2025-08-28&deployment=front-desk",
                model=None,
                api_key=None,
                extra_headers={"api-key": "azure-key"},
            )
            async with open_realtime(settings) as realtime:
                await realtime.configure("x")
            session = fake.last_session
            assert session.headers["api-key"] == "azure-key"
            assert "authorization" not in session.headers
            assert session.query == {"api-version": "2025-08-28", "deployment": "front-desk"}


def test_settings_refuse_the_beta_header():
    with pytest.raises(ValidationError, match="OpenAI-Beta"):
        RealtimeSettings(api_key="sk", extra_headers={"OpenAI-Beta": "realtime=v1"})


async def test_manual_turns_send_turn_detection_null():
    with trio.fail_after(TIMEOUT_S):
        async with connected() as (fake, realtime):
            updated = await realtime.configure("x", vad=None)
            (update,) = fake.last_session.events_of_type("session.update")
            assert update.data["session"]["audio"]["input"]["turn_detection"] is None
            assert updated.session.audio.input.turn_detection is None


async def test_configure_raises_when_the_server_answers_with_an_error():
    bad_tool = {**TOOLS[0], "strict": True}  # not a GA tool field: unknown_parameter
    with trio.fail_after(TIMEOUT_S):
        async with connected() as (fake, realtime):
            with pytest.raises(RealtimeRequestError) as raised:
                await realtime.configure("x", [bad_tool])
            assert raised.value.error.code == "unknown_parameter"
            assert raised.value.error.param == "session.tools[0].strict"
            assert len(fake.violations) == 1


async def test_configure_times_out_into_realtime_unavailable():
    async def accept_and_stay_silent(request):
        await request.accept()
        await trio.sleep_forever()

    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                partial(serve_websocket, accept_and_stay_silent, "127.0.0.1", 0, None)
            )
            settings = RealtimeSettings(
                url=f"ws://127.0.0.1:{server.port}/v1/realtime", configure_timeout_s=0.2
            )
            async with open_realtime(settings) as realtime:
                with pytest.raises(RealtimeUnavailable, match="no session.updated"):
                    await realtime.configure("x")
            nursery.cancel_scope.cancel()


# --------------------------------------------------------------------------- audio


@given(st.binary(min_size=0, max_size=400))
def test_audio_append_frame_equals_the_sdk_serialization(audio: bytes):
    payload = base64.b64encode(audio).decode()
    expected = InputAudioBufferAppendEvent(type="input_audio_buffer.append", audio=payload).model_dump_json(
        exclude_unset=True
    )
    assert audio_append_frame(payload) == expected


async def test_audio_append_passes_twilio_payloads_through_byte_identical():
    payloads = [twilio_payload(index) for index in range(25)]
    with trio.fail_after(TIMEOUT_S):
        async with connected() as (fake, realtime):
            await realtime.configure("x")
            for payload in payloads:
                await realtime.append_audio(payload)
            received = await fake.last_session.wait_for_client_event(
                "input_audio_buffer.append", len(payloads)
            )
            assert [event.data["audio"] for event in received] == payloads
            assert fake.last_session.audio_bytes_received == 160 * len(payloads)
            assert fake.violations == []


async def test_audio_deltas_arrive_on_the_fast_path_and_the_rest_as_sdk_events():
    scenario = Scenario(steps=[on(after_session_update(), speak(ms=300, transcript="Hello, front desk."))])
    with trio.fail_after(TIMEOUT_S):
        async with connected(scenario) as (fake, realtime):
            await realtime.configure("x")
            events = await events_until(realtime, "response.done")
            deltas = [event for event in events if isinstance(event, AudioDelta)]
            assert len(deltas) == 3  # 100 ms chunks
            assert sum(len(base64.b64decode(delta.delta)) for delta in deltas) == 300 * 8  # µ-law 8 kHz
            transcript = [e for e in events if type_of(e) == "response.output_audio_transcript.done"]
            assert transcript[0].transcript == "Hello, front desk."
            assert not any(isinstance(event, dict) for event in events)
            assert realtime.stats.unknown_events == realtime.stats.invalid_events == 0


async def test_echo_mode_answers_each_frame_with_the_same_payload():
    payloads = [twilio_payload(index) for index in range(5)]
    with trio.fail_after(TIMEOUT_S):
        async with connected(Scenario(echo_audio=True)) as (fake, realtime):
            await realtime.configure("x")
            for payload in payloads:
                await realtime.append_audio(payload)
            echoed = []
            async for event in realtime.events():
                if isinstance(event, AudioDelta):
                    echoed.append(event.delta)
                    if len(echoed) == len(payloads):
                        break
            assert echoed == payloads


# --------------------------------------------------------------------------- function calls


async def test_a_completed_function_call_is_surfaced_once_and_answered():
    scenario = Scenario(
        steps=[
            on(
                after_audio_frames(3),
                call_function("propose_route", {"intent": "billing"}, preamble=Speech(100, "One moment.")),
            ),
            on(after_response_create(), speak(ms=100, transcript="Transferring you to billing.")),
        ]
    )
    with trio.fail_after(TIMEOUT_S):
        async with connected(scenario) as (fake, realtime):
            await realtime.configure("x", TOOLS)
            for index in range(3):
                await realtime.append_audio(twilio_payload(index))
            collector = ToolCallCollector()
            surfaced = []
            for event in await events_until(realtime, "response.done"):
                surfaced += collector.feed(event)  # response.done lists the call again: not surfaced twice

            (call,) = surfaced
            assert call.name == "propose_route"
            assert orjson.loads(call.arguments_json) == {"intent": "billing"}
            assert call.response_id and call.item_id and call.call_id

            await realtime.send_function_output(call.call_id, '{"accepted": true}')
            follow_up = await events_until(realtime, "response.done")
            assert follow_up[-1].response.status == "completed"

            session = fake.last_session
            (output,) = session.events_of_type("conversation.item.create")
            assert output.data["item"] == {
                "call_id": call.call_id,
                "output": '{"accepted": true}',
                "type": "function_call_output",
            }
            assert len(session.events_of_type("response.create")) == 1
            assert fake.violations == []
            assert not session.sent_of_type("error")


async def test_a_cancelled_response_never_surfaces_its_arguments():
    scenario = Scenario(
        steps=[on(after_session_update(), cancelled_function_call("propose_route", {"intent": "sales"}))]
    )
    with trio.fail_after(TIMEOUT_S):
        async with connected(scenario) as (fake, realtime):
            await realtime.configure("x", TOOLS)
            events = await events_until(realtime, "response.done")
            collector = ToolCallCollector()
            assert [call for event in events for call in collector.feed(event)] == []
            # The trap: arguments were fully streamed all the same.
            (arguments_done,) = [e for e in events if isinstance(e, ResponseFunctionCallArgumentsDoneEvent)]
            assert orjson.loads(arguments_done.arguments) == {"intent": "sales"}
            assert events[-1].response.status == "cancelled"
            assert events[-1].response.status_details.reason == "turn_detected"


def test_tool_call_collector_surfaces_from_response_done_when_item_done_was_missed():
    decoder = ServerEventDecoder()
    done = decoder.decode(
        orjson.dumps(
            {
                "type": "response.done",
                "event_id": "event_1",
                "response": {
                    "id": "resp_1",
                    "object": "realtime.response",
                    "status": "completed",
                    "output": [
                        {
                            "id": "item_1",
                            "object": "realtime.item",
                            "type": "function_call",
                            "status": "completed",
                            "call_id": "call_1",
                            "name": "propose_route",
                            "arguments": '{"intent":"billing"}',
                        }
                    ],
                },
            }
        )
    )
    collector = ToolCallCollector()
    (call,) = collector.feed(done)
    assert (call.call_id, call.name, call.item_id, call.response_id) == (
        "call_1",
        "propose_route",
        "item_1",
        "resp_1",
    )
    assert collector.feed(done) == []


async def test_barge_in_cancels_the_response_and_delivers_the_user_turn():
    scenario = Scenario(
        steps=[
            on(
                after_session_update(),
                Respond(
                    (Speech(1000, "Our opening hours are nine to five."),),
                    interrupted_by=UserSpeech("Actually, billing please", ms=600),
                    interrupt_after_ms=200,
                ),
            )
        ]
    )
    with trio.fail_after(TIMEOUT_S):
        async with connected(scenario) as (fake, realtime):
            await realtime.configure("x", transcription={"model": "gpt-4o-mini-transcribe", "language": "en"})
            events = await events_until(realtime, "conversation.item.input_audio_transcription.completed")
            types = [type_of(event) for event in events]
            assert types.index("input_audio_buffer.speech_started") < types.index("response.done")
            assert types.index("response.done") < types.index("input_audio_buffer.speech_stopped")
            assert types.count("response.output_audio.delta") == 2  # 200 ms in 100 ms chunks
            done = events[types.index("response.done")]
            assert (done.response.status, done.response.status_details.reason) == (
                "cancelled",
                "turn_detected",
            )
            assert events[-1].transcript == "Actually, billing please"
            started = events[types.index("input_audio_buffer.speech_started")]
            assert events[-1].item_id == started.item_id


async def test_session_expiry_is_an_error_then_a_1001_close():
    scenario = Scenario(steps=[on(after_session_update(), *expire_session())])
    with trio.fail_after(TIMEOUT_S):
        async with connected(scenario) as (fake, realtime):
            await realtime.configure("x")
            events = [event async for event in realtime.events()]
            assert events[-1].error.code == "session_expired"
            assert realtime.closed.code == 1001


# --------------------------------------------------------------------------- errors, drops, odd frames


async def test_an_error_event_comes_out_as_an_sdk_error():
    scenario = Scenario(
        steps=[on(after_session_update(), SendError("invalid_value", "Nope.", param="session.voice"))]
    )
    with trio.fail_after(TIMEOUT_S):
        async with connected(scenario) as (fake, realtime):
            await realtime.configure("x")
            (error,) = [e for e in await events_until(realtime, "error") if isinstance(e, RealtimeErrorEvent)]
            assert (error.error.code, error.error.param, error.error.type) == (
                "invalid_value",
                "session.voice",
                "invalid_request_error",
            )


async def test_a_server_drop_mid_stream_ends_iteration_cleanly():
    scenario = Scenario(
        steps=[on(after_session_update(), Respond((Speech(1000, "This is cut"),), chunk_ms=100), Drop())]
    )
    with trio.fail_after(TIMEOUT_S):
        async with connected(scenario) as (fake, realtime):
            await realtime.configure("x")
            events = [event async for event in realtime.events()]
            assert type_of(events[-1]) == "response.done"  # everything sent before the drop is delivered
            assert realtime.closed is not None and realtime.closed.code == 1006
            with pytest.raises(RealtimeConnectionClosed):
                await realtime.append_audio(twilio_payload())
            with pytest.raises(RealtimeConnectionClosed):
                await realtime.receive()
        assert fake.last_session.closed_by == "server"


async def test_unknown_events_are_dicts_and_non_json_frames_are_skipped():
    scenario = Scenario(
        steps=[
            on(
                after_session_update(),
                SendRaw("this is not json"),
                SendRaw('{"type": "response.brand_new_thing", "detail": 1}'),
                SendRaw('{"type": "input_audio_buffer.speech_started"}'),  # known type, invalid payload
                SendError(None, "marker"),
            )
        ]
    )
    with trio.fail_after(TIMEOUT_S):
        async with connected(scenario) as (fake, realtime):
            await realtime.configure("x")
            events = await events_until(realtime, "error")
            assert {"type": "response.brand_new_thing", "detail": 1} in events
            assert {"type": "input_audio_buffer.speech_started"} in events
            assert realtime.stats.malformed_frames == 1
            assert realtime.stats.unknown_events == 1
            assert realtime.stats.invalid_events == 1


def test_a_custom_voice_in_response_created_still_parses():
    frame = orjson.dumps(
        {
            "type": "response.created",
            "event_id": "event_1",
            "response": {
                "id": "resp_1",
                "status": "in_progress",
                "audio": {"output": {"voice": {"id": "voice_123"}}},
            },
        }
    )
    event = ServerEventDecoder().decode(frame)
    assert not isinstance(event, dict)
    assert event.response.audio.output.voice == "voice_123"


async def test_refused_handshake_raises_realtime_unavailable():
    with trio.fail_after(TIMEOUT_S):
        async with run_fake_realtime(Scenario(refuse_status=503)) as fake:
            with pytest.raises(RealtimeUnavailable) as raised:
                async with open_realtime(RealtimeSettings(url=fake.url, api_key="sk-test")):
                    raise AssertionError("must not get here")
            assert raised.value.status_code == 503
            assert fake.last_session.refused_status == 503


async def test_missing_credentials_are_refused_like_the_real_endpoint():
    with trio.fail_after(TIMEOUT_S):
        async with run_fake_realtime() as fake:
            with pytest.raises(RealtimeUnavailable) as raised:
                async with open_realtime(RealtimeSettings(url=fake.url)):
                    pass
            assert raised.value.status_code == 401


async def test_nothing_listening_raises_realtime_unavailable():
    with socket.socket() as probe:  # a port that was free a moment ago
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with trio.fail_after(TIMEOUT_S):
        with pytest.raises(RealtimeUnavailable, match="cannot connect"):
            async with open_realtime(RealtimeSettings(url=f"ws://127.0.0.1:{port}/v1/realtime", api_key="k")):
                pass


async def test_a_silent_handshake_times_out_into_realtime_unavailable():
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    with trio.fail_after(TIMEOUT_S):
        async with listener:  # accepts TCP (backlog) but never answers the upgrade
            with pytest.raises(RealtimeUnavailable, match="no handshake"):
                settings = RealtimeSettings(
                    url=f"ws://127.0.0.1:{port}/v1/realtime", api_key="k", connect_timeout_s=0.2
                )
                async with open_realtime(settings):
                    pass


# --------------------------------------------------------------------------- closing


async def test_leaving_on_an_exception_closes_the_socket_and_keeps_the_exception():
    class CallerHungUp(Exception):
        pass

    with trio.fail_after(TIMEOUT_S):
        async with run_fake_realtime() as fake:
            with pytest.raises(CallerHungUp):
                async with open_realtime(RealtimeSettings(url=fake.url, api_key="sk-test")) as realtime:
                    await realtime.configure("x")
                    raise CallerHungUp
            session = fake.last_session
            await session.wait_closed()
            assert (session.closed_by, session.close_code) == ("client", 1000)


async def test_cancellation_closes_the_socket_with_a_close_frame():
    with trio.fail_after(TIMEOUT_S):
        async with run_fake_realtime() as fake:
            with trio.move_on_after(0.2) as scope:
                async with open_realtime(RealtimeSettings(url=fake.url, api_key="sk-test")) as realtime:
                    await realtime.configure("x")
                    await trio.sleep_forever()
            assert scope.cancelled_caught
            session = fake.last_session
            await session.wait_closed()
            # A proper close (1000), not a dropped TCP connection (1006): the close is shielded.
            assert (session.closed_by, session.close_code) == ("client", 1000)
            assert session.closed_at <= trio.current_time()


async def test_an_idle_connection_is_kept_alive_by_answered_pings():
    with trio.fail_after(TIMEOUT_S):
        async with run_fake_realtime() as fake:
            settings = RealtimeSettings(url=fake.url, api_key="sk-test", keepalive_s=0.1)
            async with open_realtime(settings) as realtime:
                await realtime.configure("x")
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(events_until, realtime, "never.sent")  # a receiving task sees the pongs
                    await trio.sleep(0.5)  # five pings, each answered: the connection stays open
                    assert realtime.closed is None
                    nursery.cancel_scope.cancel()
            await fake.last_session.wait_closed()
            assert (fake.last_session.closed_by, fake.last_session.close_code) == ("client", 1000)


async def test_a_peer_that_answers_no_ping_ends_the_connection_within_two_intervals():
    scenario = Scenario(steps=[on(after_session_update(), Freeze())])
    with trio.fail_after(TIMEOUT_S):
        async with run_fake_realtime(scenario) as fake:
            settings = RealtimeSettings(url=fake.url, api_key="sk-test", keepalive_s=0.2)
            async with open_realtime(settings) as realtime:
                await realtime.configure("x")
                frozen_at = trio.current_time()
                async for _ in realtime.events():
                    pass
                assert trio.current_time() - frozen_at <= 2 * 0.2 + 0.2
                assert realtime.closed is not None and realtime.closed.code == 1006


# --------------------------------------------------------------------------- benchmark (not a test)


def _benchmark() -> None:
    import timeit
    from dataclasses import dataclass

    from openai.types.realtime import RealtimeServerEvent
    from pydantic import TypeAdapter

    from bridge.openai_realtime.client import SERVER_EVENT_ADAPTER, audio_delta_of

    @dataclass(slots=True)
    class LightAudioDelta:
        type: str
        event_id: str
        response_id: str
        item_id: str
        output_index: int
        content_index: int
        delta: str

    frame = orjson.dumps(
        {
            "type": "response.output_audio.delta",
            "event_id": "event_CdZ3lVQ8bzxMmPe0Kd2Jw",
            "response_id": "resp_CdZ3l1sGx4JfWJ6n9YcVt",
            "item_id": "item_CdZ3lcDxqoRMoKMuJ5X8S",
            "output_index": 0,
            "content_index": 0,
            "delta": base64.b64encode(os.urandom(800)).decode(),  # 100 ms of µ-law
        }
    ).decode()
    plain_union = TypeAdapter(RealtimeServerEvent)  # the SDK alias: pydantic ignores its discriminator
    decoder = ServerEventDecoder()
    cases = {
        "orjson.loads only (floor)": lambda: orjson.loads(frame),
        "orjson + slots dataclass": lambda: LightAudioDelta(**orjson.loads(frame)),
        "audio_delta_of (the fast path)": lambda: audio_delta_of(frame),
        "orjson + SDK model_construct": lambda: ResponseAudioDeltaEvent.model_construct(
            **orjson.loads(frame)
        ),
        "discriminated union validate_json": lambda: SERVER_EVENT_ADAPTER.validate_json(frame),
        "ServerEventDecoder.decode": lambda: decoder.decode(frame),
        "plain SDK union validate_json": lambda: plain_union.validate_json(frame),
    }
    frames = 100_000
    print(f"parse {frames:,} response.output_audio.delta frames ({len(frame)} bytes each), best of 3:")
    for name, parse in cases.items():
        parse()
        slow = "plain" in name or "construct" in name
        number = frames // 10 if slow else frames  # the slow ones: 10k frames, scaled to 100k
        seconds = min(timeit.repeat(parse, number=number, repeat=3)) * frames / number
        note = " (10k frames x10)" if slow else ""
        print(f"  {name:36s} {seconds:7.3f} s  {seconds / frames * 1e6:7.2f} µs/frame{note}")


if __name__ == "__main__":
    _benchmark()


async def test_a_requested_response_echoes_its_metadata_and_a_vad_one_has_none():
    scenario = Scenario(
        steps=[
            on(after_response_create(), speak(ms=100, transcript="Hello.")),
            on(after_audio_frames(2), speak(ms=100, transcript="Mm-hm.")),
        ]
    )
    with trio.fail_after(TIMEOUT_S):
        async with connected(scenario) as (fake, realtime):
            await realtime.configure("x")
            await realtime.create_response("Say hello.", metadata={"line": "greeting"}, event_id="evt_line_1")
            done = [e for e in await events_until(realtime, "response.done") if type_of(e) == "response.done"]
            assert done[0].response.metadata == {"line": "greeting"}
            for index in range(2):
                await realtime.append_audio(twilio_payload(index))
            created = [e for e in await events_until(realtime, "response.done") if type_of(e) == "response.created"]
            assert created[0].response.metadata is None
            (request,) = fake.last_session.events_of_type("response.create")
            assert request.data["event_id"] == "evt_line_1"
            assert request.data["response"] == {"instructions": "Say hello.", "metadata": {"line": "greeting"}}
            assert fake.violations == []


# --------------------------------------------------------------------------- the socket fast path


def use_socket(kind: str, monkeypatch: pytest.MonkeyPatch) -> bool:
    """"plain": a plain socket with the read reactor; "no reactor": the same without it; "tls": wss://
    (the same reactor, records opened in it). Returns whether the connection is to use TLS."""
    if kind == "no reactor":
        monkeypatch.setattr(PlainSocketIO, "set_fast_path", lambda self, on_readable: None)
    return kind == "tls"


@pytest.mark.parametrize("kind", ["plain", "no reactor", "tls"])
async def test_take_audio_gives_every_delta_in_order_and_skips_transcript_deltas(kind: str, monkeypatch):
    """take_audio: paced deltas go to the consumer, in order with the other events (in the read reactor on a
    plain or TLS socket; without one, inside receive()); transcript deltas (ignored) are dropped without waking the
    receiver; everything else comes from events() in order."""
    tls = use_socket(kind, monkeypatch)
    reactor = kind != "no reactor"
    audio = bytes(range(256)) * 19  # distinct chunks, so their order shows
    speech = Respond((Speech(600, "one two three four", audio=audio[:4800]),), pace_s=0.03)
    scenario = Scenario(steps=[on(after_session_update(), speech)])
    seen: list[tuple[str, str]] = []  # (by whom, delta or event type), in the order they were handled

    def consumer(delta: AudioDelta) -> None:
        in_reactor = trio.lowlevel.current_task().name == "websocket read reactor"
        seen.append(("reactor" if in_reactor else "receiver", delta.delta))

    with trio.fail_after(TIMEOUT_S):
        async with connected(scenario, tls=tls) as (fake, realtime):
            assert realtime._websocket._io.__class__.__name__ == ("TlsSocketIO" if tls else "PlainSocketIO")
            await realtime.configure("x")
            realtime.take_audio(consumer, ignored=frozenset({"response.output_audio_transcript.delta"}))
            others = []
            async for event in realtime.events():
                assert not isinstance(event, AudioDelta)
                others.append(type_of(event))
                seen.append(("events", type_of(event)))
                if type_of(event) == "response.done":
                    break
            realtime.take_audio(None)
    sent = [event["delta"] for event in fake.last_session.sent_of_type("response.output_audio.delta")]
    assert len(sent) == 6 and len(set(sent)) == 6
    deltas = [(by, what) for by, what in seen if by != "events"]
    assert [delta for _by, delta in deltas] == sent  # each exactly once, in order
    if reactor:
        # The fast path is used; a delta that lands in bytes the receiving task is already reading is handed
        # over by that task instead (same consumer, same order), which depends on timing alone.
        assert any(by == "reactor" for by, _delta in deltas)
    else:
        assert all(by == "receiver" for by, _delta in deltas)
    order = [what for _by, what in seen]
    assert order.index(sent[-1]) < order.index("response.output_audio.done")  # in order with the events
    words = len(fake.last_session.sent_of_type("response.output_audio_transcript.delta"))
    assert words >= 3 and others.count("response.output_audio_transcript.delta") < words  # some skipped
    assert "response.output_audio_transcript.done" in others
    assert realtime.stats.frames_received == len(fake.last_session.sent)


@pytest.mark.parametrize("kind", ["plain", "tls"])
async def test_post_audio_writes_without_waiting_and_a_busy_worker_joins_two_frames_per_append(kind: str, monkeypatch):
    from orchestrator.engines.caller_audio_batching import CALLER_FRAMES_PER_BATCH, CallerAudioBatching
    from orchestrator.engines.realtime import RealtimeEngine

    tls = use_socket(kind, monkeypatch)
    payloads = [twilio_payload(index) for index in range(6)]
    with trio.fail_after(TIMEOUT_S):
        async with connected(tls=tls) as (fake, realtime):
            await realtime.configure("x")
            engine = RealtimeEngine(realtime, CallerAudioBatching(busy_share=0))  # always busy
            sent_before = realtime.stats.frames_sent
            for payload in payloads[:4]:
                engine.send_caller_audio(payload)
            assert realtime.stats.frames_sent == sent_before + 2  # posted, no await in between
            engine.send_caller_audio("***not base64***")  # held, as the first of a pair
            assert realtime.stats.frames_sent == sent_before + 2
            engine.send_caller_audio(payloads[4])  # not a base64 pair: the good one goes alone, the other is dropped
            await fake.last_session.wait_for_client_event("input_audio_buffer.append", 3)
    appended = [event.data["audio"] for event in fake.last_session.events_of_type("input_audio_buffer.append")]
    joined = [base64.b64encode(b"".join(base64.b64decode(p) for p in pair)).decode()
              for pair in (payloads[0:2], payloads[2:4])]
    assert CALLER_FRAMES_PER_BATCH == 2
    assert appended == [*joined, payloads[4]]
    assert not fake.last_session.violations


async def test_a_worker_that_is_not_busy_sends_each_caller_frame_at_once():
    from orchestrator.engines.caller_audio_batching import CallerAudioBatching
    from orchestrator.engines.realtime import RealtimeEngine

    payloads = [twilio_payload(index) for index in range(3)]
    with trio.fail_after(TIMEOUT_S):
        async with connected() as (fake, realtime):
            await realtime.configure("x")
            engine = RealtimeEngine(realtime, CallerAudioBatching(busy_share=float("inf")))  # never busy
            sent_before = realtime.stats.frames_sent
            engine.send_caller_audio(payloads[0])
            assert realtime.stats.frames_sent == sent_before + 1  # not held for a second frame
            engine.send_caller_audio("***not base64***")  # dropped, never sent
            for payload in payloads[1:]:
                engine.send_caller_audio(payload)
            await fake.last_session.wait_for_client_event("input_audio_buffer.append", 3)
    appended = [event.data["audio"] for event in fake.last_session.events_of_type("input_audio_buffer.append")]
    assert appended == payloads
    assert not fake.last_session.violations
