"""The simulated Twilio caller against a small test-local server (our server's role, played here).

The peer below is a starlette app served by hypercorn on 127.0.0.1:0. It validates every signature
with twilio's RequestValidator, answers TwiML built with VoiceResponse, checks on its WebSocket that
the caller speaks Twilio's Media Streams protocol (message order, numbers as strings, counters that
increase by one), plays a per-test script of audio, marks and clears, and answers `<Hangup/>` at the
`<Connect action>` URL.
"""

from __future__ import annotations

import base64
import gc
import re
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import httpx
import orjson
import pytest
import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket
from twilio.request_validator import RequestValidator
from twilio.twiml.voice_response import VoiceResponse

from bridge.twilio.media_stream import (
    ConnectedMessage,
    DtmfMessage,
    MarkMessage,
    MediaFrame,
    MediaStreamProtocolError,
    StartMessage,
    StopMessage,
    clear_frame,
    mark_frame,
    media_frame,
    parse_twilio_message,
)
from bridge.twilio.mulaw import silence, tone
from orchestrator.commands.call_report import render_call
from orchestrator.testing.twilio_caller import (
    CallEnded,
    CallerOptions,
    CallerViolation,
    CallRecordUnavailable,
    CallResult,
    HangUp,
    MarkEcho,
    PressDigit,
    Say,
    SimulatedCaller,
    Wait,
    WaitForAgent,
    fetch_call_record,
    parse_connect_twiml,
)

TOKEN = "test-auth-token-0123456789abcdef"
PARAMETERS = {"token": "t-123", "entry_node": "ai_triage"}
MEDIA_FORMAT = {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}  # numbers, not strings
GUARD_S = 10  # no test may hang: a broken caller fails here instead (not a speed assertion)


# --------------------------------------------------------------------------- the test-local server


class StreamPeer:
    """Our server's side of one Media Stream: reads and checks everything the caller sends."""

    def __init__(self, websocket: WebSocket, server: Peer) -> None:
        self.websocket = websocket
        self.server = server
        self.messages: list[tuple[float, Any]] = []  # (time, typed message)
        self.stream_sid: str | None = None
        self.disconnect_code: int | None = None
        self._changed = trio.Event()
        self._sequence = 0
        self._chunk = 0
        self._timestamp = -1

    def problem(self, text: str) -> None:
        self.server.problems.append(text)

    def of(self, kind: type) -> list[Any]:
        return [message for _, message in self.messages if isinstance(message, kind)]

    async def wait_for(self, predicate: Callable[[StreamPeer], bool]) -> None:
        while not predicate(self):
            if self.disconnect_code is not None:
                raise AssertionError("the caller disconnected before the condition held")
            await self._changed.wait()

    async def wait_for_marks(self, count: int) -> None:
        await self.wait_for(lambda peer: len(peer.of(MarkMessage)) >= count)

    # The send_* methods return the time just before sending: the caller cannot have seen the frame sooner.

    async def send_audio(self, mulaw: bytes, mark: str | None = None) -> float:
        assert self.stream_sid is not None
        before = trio.current_time()
        await self.websocket.send_text(media_frame(self.stream_sid, base64.b64encode(mulaw).decode()))
        if mark is not None:
            await self.send_mark(mark)
        return before

    async def send_mark(self, name: str) -> float:
        assert self.stream_sid is not None
        before = trio.current_time()
        await self.websocket.send_text(mark_frame(self.stream_sid, name))
        return before

    async def send_clear(self) -> float:
        assert self.stream_sid is not None
        before = trio.current_time()
        await self.websocket.send_text(clear_frame(self.stream_sid))
        return before

    async def close(self, code: int = 1000) -> None:
        await self.websocket.close(code=code)

    async def read(self) -> None:
        while True:
            message = await self.websocket.receive()
            if message["type"] == "websocket.disconnect":
                self.disconnect_code = message.get("code", 1005)
                self._notify()
                return
            if message.get("text") is None:
                self.problem(f"non-text frame from the caller: {message!r}")
                continue
            self._check(message["text"])
            self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def _check(self, text: str) -> None:
        try:
            message = parse_twilio_message(text, validate_media=True)
        except MediaStreamProtocolError as exc:
            self.problem(f"invalid frame {exc}: {text[:200]}")
            return
        raw = orjson.loads(text)
        index = len(self.messages)
        self.messages.append((trio.current_time(), message))
        if index == 0:
            if not isinstance(message, ConnectedMessage) or raw != {
                "event": "connected",
                "protocol": "Call",
                "version": "1.0.0",
            }:
                self.problem(f"first message is not `connected`: {text}")
            return
        if index == 1 and not isinstance(message, StartMessage):
            self.problem(f"second message is not `start`: {text}")
        if isinstance(message, (ConnectedMessage, StartMessage)) and index > 1:
            self.problem(f"{message.event} sent again: {text}")
        if not isinstance(raw.get("sequenceNumber"), str) or int(raw["sequenceNumber"]) != self._sequence + 1:
            self.problem(f"sequenceNumber after {self._sequence} is {raw.get('sequenceNumber')!r}")
        self._sequence = int(raw.get("sequenceNumber") or 0)
        if isinstance(message, StartMessage):
            self.stream_sid = message.stream_sid
            start = message.start
            sid_ok = re.fullmatch(r"MZ[0-9a-f]{32}", start.stream_sid) is not None
            if start.stream_sid != message.stream_sid or not sid_ok:
                self.problem(f"bad streamSid {start.stream_sid!r}")
            if start.call_sid != self.server.webhook_forms[-1]["CallSid"]:
                self.problem(f"start.callSid {start.call_sid} is not the webhook's")
            if raw["start"]["mediaFormat"] != MEDIA_FORMAT:
                self.problem(f"mediaFormat {raw['start']['mediaFormat']}")
            if start.tracks != ["inbound"] or start.custom_parameters != self.server.parameters:
                self.problem(f"start carries {start.tracks} {start.custom_parameters}")
            return
        if message.stream_sid != self.stream_sid:
            self.problem(f"streamSid {message.stream_sid} is not the stream's")
        if isinstance(message, MediaFrame):
            media = raw["media"]
            if not (isinstance(media["chunk"], str) and isinstance(media["timestamp"], str)):
                self.problem(f"media numbers are not strings: {media}")
            if message.chunk != self._chunk + 1 or message.timestamp <= self._timestamp:
                self.problem(f"chunk {message.chunk} after {self._chunk}, timestamp {message.timestamp}")
            self._chunk, self._timestamp = message.chunk, message.timestamp
            if message.track != "inbound" or len(base64.b64decode(message.payload)) != 160:
                self.problem(f"media frame of {message.track} with {message.audio_bytes} bytes")
        if isinstance(message, StopMessage) and (
            message.stop.call_sid != self.server.webhook_forms[-1]["CallSid"]
            or message.stop.account_sid != self.server.webhook_forms[-1]["AccountSid"]
        ):
            self.problem(f"stop names another call: {text}")


Behaviour = Callable[[StreamPeer], Awaitable[None]]


async def close_after_opening(stream: StreamPeer) -> None:
    await stream.wait_for(lambda peer: len(peer.of(MediaFrame)) >= 3)
    await stream.close()


@dataclass
class Peer:
    """The server's side of the call: what it answers, and everything it saw."""

    behaviour: Behaviour = close_after_opening
    parameters: dict[str, str] = field(default_factory=lambda: dict(PARAMETERS))
    incoming_twiml: Callable[[Peer], str] | None = None  # None: the standard <Connect><Stream>
    stream_url: str | None = None  # as written in the TwiML; None: ws://<our address>/media
    reject_stream: bool = False
    webhook_hangs: bool = False
    records: dict[str, Any] = field(default_factory=dict)
    base_url: str = ""
    webhook_forms: list[dict[str, str]] = field(default_factory=list)
    webhook_statuses: list[int] = field(default_factory=list)
    # (query, form) of each request to the <Connect action> URL
    action_requests: list[tuple[dict[str, str], dict[str, str]]] = field(default_factory=list)
    streams: list[StreamPeer] = field(default_factory=list)
    stream_attempts: int = 0
    problems: list[str] = field(default_factory=list)
    streams_done: trio.Event = field(default_factory=trio.Event)

    @property
    def signed_stream_url(self) -> str:
        return self.stream_url or self.base_url.replace("http://", "ws://") + "/media"

    @property
    def stream(self) -> StreamPeer:
        assert len(self.streams) == 1, f"{len(self.streams)} streams"
        return self.streams[0]

    def connect_twiml(self) -> str:
        response = VoiceResponse()
        connect = response.connect(action=f"{self.base_url}/voice/after?pass=1", method="POST")
        stream = connect.stream(url=self.signed_stream_url)
        for name, value in self.parameters.items():
            stream.parameter(name=name, value=value)
        return str(response)


def signed(request_url: str, params: dict[str, str], signature: str | None) -> bool:
    return RequestValidator(TOKEN).validate(request_url, params, signature or "")


def build_app(peer: Peer) -> Starlette:
    async def incoming(request: Request) -> Response:
        form = {key: str(value) for key, value in (await request.form()).items()}
        if not signed(str(request.url), form, request.headers.get("x-twilio-signature")):
            peer.webhook_statuses.append(403)
            return Response("invalid signature", status_code=403)
        peer.webhook_forms.append(form)
        peer.webhook_statuses.append(200)
        if peer.webhook_hangs:
            await trio.sleep_forever()
        twiml = peer.incoming_twiml(peer) if peer.incoming_twiml else peer.connect_twiml()
        return Response(twiml, media_type="application/xml")

    async def media(websocket: WebSocket) -> None:
        peer.stream_attempts += 1
        signature = websocket.headers.get("x-twilio-signature")
        if peer.reject_stream or not signed(peer.signed_stream_url, {}, signature):
            await websocket.close(code=1008)  # before accept: hypercorn answers HTTP 403
            return
        await websocket.accept()
        stream = StreamPeer(websocket, peer)
        peer.streams.append(stream)
        try:
            async with trio.open_nursery() as nursery:

                async def read_then_stop() -> None:
                    await stream.read()
                    nursery.cancel_scope.cancel()

                nursery.start_soon(read_then_stop)
                await peer.behaviour(stream)
        except Exception as exc:  # an assertion in a behaviour must fail the test, not vanish in a log
            peer.problems.append(f"behaviour raised {exc!r}")
        finally:
            peer.streams_done.set()

    async def after(request: Request) -> Response:
        form = {key: str(value) for key, value in (await request.form()).items()}
        if not signed(str(request.url), form, request.headers.get("x-twilio-signature")):
            return Response("invalid signature", status_code=403)
        peer.action_requests.append((dict(request.query_params), form))
        response = VoiceResponse()
        response.hangup()
        return Response(str(response), media_type="application/xml")

    async def call_record(request: Request) -> Response:
        if not signed(str(request.url), {}, request.headers.get("x-twilio-signature")):
            return Response("invalid signature", status_code=403)
        record = peer.records.get(request.path_params["call_sid"])
        return JSONResponse(record) if record is not None else Response("no such call", status_code=404)

    return Starlette(
        routes=[
            Route("/voice/incoming", incoming, methods=["POST"]),
            WebSocketRoute("/media", media),
            Route("/voice/after", after, methods=["POST"]),
            Route("/calls/{call_sid}", call_record, methods=["GET"]),
        ]
    )


@asynccontextmanager
async def serving(peer: Peer) -> AsyncIterator[Peer]:
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.errorlog = None
    async with trio.open_nursery() as nursery:
        urls = await nursery.start(partial(serve, build_app(peer), config))
        peer.base_url = urls[0]
        try:
            yield peer
        finally:
            nursery.cancel_scope.cancel()


def options(peer: Peer, **overrides: Any) -> CallerOptions:
    settings: dict[str, Any] = {"base_url": peer.base_url, "auth_token": TOKEN, "speed": 10.0}
    settings["max_call_s"] = 30.0
    settings.update(overrides)
    return CallerOptions(**settings)


async def call(peer: Peer, steps: list[Any] = (), **overrides: Any) -> CallResult:  # type: ignore[assignment]
    with trio.fail_after(GUARD_S):
        return await SimulatedCaller(options(peer, **overrides), steps).run()


def kinds(result: CallResult) -> list[str]:
    return [violation.kind for violation in result.violations]


# --------------------------------------------------------------------------- the call, end to end


async def test_a_full_call_speaks_the_protocol_and_records_every_result_field() -> None:
    async def greet_then_hand_off(stream: StreamPeer) -> None:
        await stream.wait_for(lambda peer: len(peer.of(MediaFrame)) >= 5)
        await stream.send_audio(tone(500), mark="greeting")
        await stream.wait_for_marks(1)
        await stream.send_audio(silence(200), mark="handoff")
        await stream.wait_for_marks(2)
        await stream.close()

    async with serving(Peer(behaviour=greet_then_hand_off)) as peer:
        result = await call(peer, incoming_query="flow_sid=FW123&node=ai_triage")

    assert peer.problems == []
    assert result.violations == []
    (form,) = peer.webhook_forms
    assert re.fullmatch(r"CA[0-9a-f]{32}", result.call_sid)
    assert form == {
        "AccountSid": "AC" + "0" * 32,
        "ApiVersion": "2010-04-01",
        "CallSid": result.call_sid,
        "CallStatus": "ringing",
        "Direction": "inbound",
        "From": "+15551230000",
        "To": "+15557650000",
        "Called": "+15557650000",
        "Caller": "+15551230000",
    }
    assert result.webhook_status == 200
    assert "<Connect" in result.incoming_twiml
    assert result.stream_url == peer.signed_stream_url
    assert result.action_url == f"{peer.base_url}/voice/after?pass=1"
    assert result.custom_parameters == PARAMETERS
    assert result.stream_sid == peer.stream.stream_sid
    assert result.stream_rejected_status is None
    assert result.media_closed_by == "server" and result.close_code == 1000
    assert result.media_opened_at is not None and result.media_closed_at is not None
    assert result.action_answered_at is not None
    assert result.media_opened_at < result.media_closed_at <= result.action_answered_at
    ((action_query, action_form),) = peer.action_requests
    assert action_query == {"pass": "1"}
    assert action_form == {**form, "CallStatus": "in-progress"}
    assert result.action_status == 200 and "<Hangup />" in (result.final_twiml or "")
    assert [(mark.name, mark.cleared) for mark in result.marks] == [("greeting", False), ("handoff", False)]
    assert result.audio_received_ms == 700
    assert result.audio_played_ms == 700 and result.audio_cleared_ms == 0 and result.clears == 0
    assert result.transcript == []
    # The mark echoes reached the server as `mark` messages, between media frames.
    assert [mark.mark.name for mark in peer.stream.of(MarkMessage)] == ["greeting", "handoff"]
    assert not peer.stream.of(StopMessage)  # the server closed: the caller does not send stop


async def test_mark_echo_follows_the_playback_clock() -> None:
    sent_at: dict[str, float] = {}

    async def play(stream: StreamPeer) -> None:
        await stream.wait_for(lambda peer: len(peer.of(MediaFrame)) >= 1)
        sent_at["empty"] = await stream.send_mark("empty")  # nothing buffered: echoed at once
        await stream.wait_for_marks(1)
        sent_at["one_second"] = await stream.send_audio(tone(1000), mark="one_second")
        sent_at["half_second"] = await stream.send_audio(tone(500), mark="half_second")
        await stream.wait_for_marks(3)
        await stream.close()

    async with serving(Peer(behaviour=play)) as peer:
        result = await call(peer, speed=10.0)

    assert peer.problems == [] and result.violations == []
    echoes = {mark.name: mark for mark in result.marks}
    assert [mark.name for mark in result.marks] == ["empty", "one_second", "half_second"]
    assert not any(mark.cleared for mark in result.marks)
    # At speed 10, 1 s of audio plays in 100 ms of wall clock: the echo cannot come sooner.
    assert echoes["one_second"].at - sent_at["one_second"] >= 0.0999
    assert echoes["half_second"].at - sent_at["one_second"] >= 0.1499
    assert echoes["empty"].at < sent_at["one_second"]
    assert result.audio_played_ms == 1500


async def test_clear_drops_unplayed_audio_and_echoes_pending_marks_as_cleared() -> None:
    times: dict[str, float] = {}

    async def barge_in(stream: StreamPeer) -> None:
        await stream.wait_for(lambda peer: len(peer.of(MediaFrame)) >= 1)
        await stream.send_audio(tone(100), mark="started")
        await stream.send_audio(tone(2000), mark="a")
        await stream.send_audio(tone(2000), mark="b")
        await stream.wait_for_marks(1)  # 100 ms played, 4 s still buffered: the caller barges in
        times["clear"] = await stream.send_clear()
        await stream.wait_for_marks(3)
        await stream.send_audio(tone(100), mark="c")
        await stream.wait_for_marks(4)
        await stream.close()

    async with serving(Peer(behaviour=barge_in)) as peer:
        result = await call(peer, speed=10.0)

    assert peer.problems == [] and result.violations == []
    assert [(mark.name, mark.cleared) for mark in result.marks] == [
        ("started", False),
        ("a", True),
        ("b", True),
        ("c", False),
    ]
    assert all(mark.at >= times["clear"] for mark in result.marks[1:])
    assert result.clears == 1
    assert result.audio_received_ms == 4200
    assert 0 < result.audio_cleared_ms <= 4000 and result.audio_played_ms >= 200
    assert result.audio_played_ms + result.audio_cleared_ms == 4200  # everything not cleared was played
    assert [mark.mark.name for mark in peer.stream.of(MarkMessage)] == ["started", "a", "b", "c"]


async def test_caller_hang_up_sends_stop_closes_and_follows_the_action_as_completed() -> None:
    async def listen(stream: StreamPeer) -> None:
        await trio.sleep_forever()  # the caller ends this call

    states: list[str] = []

    async def watch(caller: SimulatedCaller) -> None:
        while caller.state != "done":
            states.append(current := caller.state)
            await caller.wait_until(lambda c: c.state != current)
        states.append("done")

    async with serving(Peer(behaviour=listen)) as peer:
        caller = SimulatedCaller(options(peer), [Say(tone(200), "hello there"), HangUp()])
        with trio.fail_after(GUARD_S):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch, caller)
                result = await caller.run()
            await peer.streams_done.wait()

    assert peer.problems == [] and result.violations == []
    assert states == ["dialing", "streaming", "after", "done"]
    stream = peer.stream
    # hypercorn reports every client-initiated close to the app as 1006, so only "it closed" is visible here.
    assert stream.disconnect_code is not None
    assert isinstance(stream.messages[-1][1], StopMessage)
    assert len(stream.of(MediaFrame)) == 10  # 200 ms in 20 ms frames
    assert result.media_closed_by == "caller" and result.close_code == 1000
    assert [text for _, text in result.transcript] == ["caller: hello there"]
    assert result.transcript[0][0] >= (result.media_opened_at or 0)
    ((_, action_form),) = peer.action_requests
    assert action_form["CallStatus"] == "completed"
    assert result.final_twiml is not None and "<Hangup />" in result.final_twiml


async def test_hang_up_from_another_task_and_no_action_when_follow_action_is_off() -> None:
    async def listen(stream: StreamPeer) -> None:
        await trio.sleep_forever()

    async with serving(Peer(behaviour=listen)) as peer:
        caller = SimulatedCaller(options(peer, follow_action=False))
        assert caller.state == "dialing"
        outcome: list[CallResult] = []
        with trio.fail_after(GUARD_S):
            async with trio.open_nursery() as nursery:

                async def run() -> None:
                    outcome.append(await caller.run())

                nursery.start_soon(run)
                await caller.wait_until(lambda c: c.state == "streaming" and len(c.sent) >= 5)
                await caller.hang_up()
            # The nursery exited: run() returned and left no task behind.
        assert caller.state == "done"
        with pytest.raises(CallEnded):
            await caller.wait_until(lambda c: False)

    (result,) = outcome
    assert result.media_closed_by == "caller"
    assert peer.action_requests == []
    assert result.action_status is None and result.final_twiml is None
    assert peer.stream.of(StopMessage)


async def test_wait_for_agent_waits_for_the_agent_to_finish_then_the_caller_speaks() -> None:
    played: dict[str, float] = {}

    async def greet(stream: StreamPeer) -> None:
        await stream.wait_for(lambda peer: len(peer.of(MediaFrame)) >= 3)
        played["sent"] = await stream.send_audio(tone(1000), mark="greeting")
        await trio.sleep_forever()

    async with serving(Peer(behaviour=greet)) as peer:
        result = await call(peer, [WaitForAgent(quiet_ms=300), Say(tone(100), "my boiler leaks"), HangUp()])

    assert peer.problems == [] and result.violations == []
    (said_at, text) = result.transcript[0]
    assert text == "caller: my boiler leaks"
    # 1 s of greeting plays in 100 ms at speed 10, then 300 ms (30 ms wall) of quiet.
    assert said_at - played["sent"] >= 0.1
    assert result.marks[0].name == "greeting" and said_at >= result.marks[0].at


async def test_wait_for_agent_gives_up_after_its_timeout_when_the_agent_never_speaks() -> None:
    async def mute(stream: StreamPeer) -> None:
        await trio.sleep_forever()

    async with serving(Peer(behaviour=mute)) as peer:
        result = await call(peer, [WaitForAgent(timeout_ms=500), Say(tone(40), "hello?"), HangUp()])

    assert result.transcript and result.media_opened_at is not None
    assert result.transcript[0][0] - result.media_opened_at >= 0.05  # 500 ms at speed 10
    assert len(peer.stream.of(MediaFrame)) == 25 + 2  # 500 ms of silence kept flowing, then the 40 ms Say


async def test_press_digit_sends_a_dtmf_message_between_media_frames() -> None:
    async def listen(stream: StreamPeer) -> None:
        await trio.sleep_forever()

    async with serving(Peer(behaviour=listen)) as peer:
        result = await call(peer, [Wait(40), PressDigit("5"), Wait(40), PressDigit("#"), HangUp()])

    assert peer.problems == [] and result.violations == []
    kinds_seen = [type(message).__name__ for _, message in peer.stream.messages]
    assert kinds_seen == [
        "ConnectedMessage",
        "StartMessage",
        "MediaFrame",
        "MediaFrame",
        "DtmfMessage",
        "MediaFrame",
        "MediaFrame",
        "DtmfMessage",
        "StopMessage",
    ]
    digits = peer.stream.of(DtmfMessage)
    assert [(dtmf.dtmf.digit, dtmf.dtmf.track) for dtmf in digits] == [
        ("5", "inbound_track"),
        ("#", "inbound_track"),
    ]
    with pytest.raises(ValueError):
        PressDigit("x")


# --------------------------------------------------------------------------- security


async def test_missing_or_wrong_webhook_signature_is_refused_and_recorded() -> None:
    async with serving(Peer()) as peer:
        unsigned = await call(peer, sign=False)
        wrong = await call(peer, bad_signature=True)

    for result in (unsigned, wrong):
        assert result.webhook_status == 403
        assert result.stream_url is None and result.stream_sid is None and result.final_twiml is None
        assert result.violations == []
    assert peer.webhook_statuses == [403, 403]
    assert peer.stream_attempts == 0 and peer.action_requests == []


async def test_a_refused_websocket_upgrade_is_recorded_with_its_status() -> None:
    async with serving(Peer(reject_stream=True)) as peer:
        result = await call(peer)

    assert result.webhook_status == 200
    assert result.stream_rejected_status == 403
    assert result.stream_sid is None and result.media_opened_at is None and result.media_closed_by is None
    assert peer.stream_attempts == 1
    # The <Connect> ended without a stream: Twilio goes on to the action URL.
    ((_, action_form),) = peer.action_requests
    assert action_form["CallStatus"] == "in-progress"


async def test_the_upgrade_is_signed_over_the_stream_url_as_written_even_via_ws_origin() -> None:
    public = Peer(stream_url="wss://front-desk.example.com/media")
    async with serving(public) as peer:
        origin = peer.base_url.replace("http://", "ws://")
        result = await call(peer, ws_origin=origin)
        bad = await call(peer, ws_origin=origin, bad_signature=True)

    assert peer.problems == []
    assert result.stream_url == "wss://front-desk.example.com/media"
    assert result.stream_rejected_status is None and result.media_closed_by == "server"
    assert bad.webhook_status == 403 and bad.stream_url is None


# --------------------------------------------------------------------------- server misbehaviour


async def test_server_protocol_violations_are_recorded_and_the_call_carries_on() -> None:
    async def misbehave(stream: StreamPeer) -> None:
        await stream.wait_for(lambda peer: len(peer.of(MediaFrame)) >= 1)
        sid = stream.stream_sid
        assert sid is not None
        websocket = stream.websocket
        await websocket.send_bytes(b"\x00\x01binary")
        await websocket.send_text(f'{{"event": "speak", "streamSid": "{sid}"}}')
        await websocket.send_text(media_frame(sid, "not base64 !!"))
        await websocket.send_text(media_frame("MZ" + "f" * 32, base64.b64encode(silence(20)).decode()))
        await websocket.send_text("this is not json")
        wav_header = base64.b64encode(b"RIFF\x24\x00\x00\x00WAVEfmt ").decode()
        await websocket.send_text(media_frame(sid, wav_header))
        await websocket.send_text(f'{{"event": "mark", "streamSid": "{sid}", "mark": {{}}}}')
        await stream.send_audio(tone(100), mark="still-here")
        await stream.wait_for_marks(1)
        await stream.close()

    async with serving(Peer(behaviour=misbehave)) as peer:
        result = await call(peer)

    assert peer.problems == []
    assert kinds(result) == [
        "binary_frame",
        "unknown_event",
        "bad_payload",
        "wrong_stream_sid",
        "malformed_json",
        "audio_header",
        "invalid_shape",
    ]
    assert all(isinstance(violation, CallerViolation) for violation in result.violations)
    assert all(violation.excerpt for violation in result.violations)
    assert "speak" in result.violations[1].excerpt
    assert [mark.name for mark in result.marks] == ["still-here"]
    assert result.media_closed_by == "server" and result.action_status == 200


async def test_twiml_without_connect_is_the_final_twiml_and_opens_no_stream() -> None:
    def say_and_hang_up(_: Peer) -> str:
        response = VoiceResponse()
        response.say("We are closed.")
        response.hangup()
        return str(response)

    async with serving(Peer(incoming_twiml=say_and_hang_up)) as peer:
        result = await call(peer)

    assert result.violations == []
    assert result.webhook_status == 200
    assert result.stream_url is None and result.action_url is None and result.stream_sid is None
    assert result.final_twiml == say_and_hang_up(peer) and "We are closed." in result.final_twiml
    assert peer.stream_attempts == 0 and peer.action_requests == []


async def test_malformed_twiml_is_a_violation_and_the_final_twiml() -> None:
    async with serving(Peer(incoming_twiml=lambda _: "<Response><Connect>")) as peer:
        result = await call(peer)

    assert kinds(result) == ["malformed_twiml"]
    assert result.final_twiml == "<Response><Connect>" and result.stream_url is None
    assert peer.stream_attempts == 0


async def test_a_server_that_never_closes_ends_the_call_at_max_call_s() -> None:
    async def never_close(stream: StreamPeer) -> None:
        await trio.sleep_forever()

    async with serving(Peer(behaviour=never_close)) as peer:
        started = trio.current_time()
        # 0.6 s of wall clock, counted from dialing: room for a slow webhook on a loaded machine.
        result = await call(peer, max_call_s=6.0, speed=10.0)

    assert kinds(result) == ["max_call_duration"]
    assert result.media_closed_by == "caller" and result.close_code == 1000
    assert result.media_closed_at is not None and result.media_closed_at - started >= 0.6
    assert peer.stream.of(StopMessage)
    ((_, action_form),) = peer.action_requests
    assert action_form["CallStatus"] == "completed"


async def test_a_webhook_that_never_answers_ends_the_call_at_max_call_s() -> None:
    async with serving(Peer(webhook_hangs=True)) as peer:
        result = await call(peer, max_call_s=0.3, speed=1.0)

    assert kinds(result) == ["webhook_timeout"]
    assert result.webhook_status == 0 and result.stream_url is None


async def test_an_unreachable_server_is_recorded_not_raised() -> None:
    async with serving(Peer()) as peer:
        address = peer.base_url
    # The server is gone now: nothing listens on that port.
    result = await call(Peer(base_url=address))
    assert kinds(result) == ["webhook_unreachable"]
    assert result.webhook_status == 0


async def test_nothing_is_left_open_after_a_call() -> None:
    async with serving(Peer()) as peer:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ResourceWarning)
            result = await call(peer)
            async with httpx.AsyncClient() as http:
                with trio.fail_after(GUARD_S):
                    lent = await SimulatedCaller(options(peer), http=http).run()
                assert not http.is_closed  # a client lent to the caller stays the lender's
            gc.collect()
        with trio.fail_after(GUARD_S):
            await peer.streams_done.wait()
    assert result.media_closed_by == "server" and lent.media_closed_by == "server"
    assert [warning for warning in caught if issubclass(warning.category, ResourceWarning)] == []


async def test_run_plays_one_call_and_bad_steps_or_options_are_programming_errors() -> None:
    async with serving(Peer()) as peer:
        caller = SimulatedCaller(options(peer))
        await caller.run()
        with pytest.raises(RuntimeError):
            await caller.run()
    with pytest.raises(TypeError):
        SimulatedCaller(options(peer), ["say hello"])  # type: ignore[list-item]
    with pytest.raises(ValueError):
        CallerOptions(base_url="ftp://x", auth_token=TOKEN)
    with pytest.raises(ValueError):
        CallerOptions(base_url="http://x", auth_token=TOKEN, speed=0)
    with pytest.raises(ValueError):
        Wait(-1)


# --------------------------------------------------------------------------- helpers


def test_parse_connect_twiml_reads_action_stream_and_parameters() -> None:
    response = VoiceResponse()
    connect = response.connect(action="https://x.example/voice/after?pass=2", method="POST")
    stream = connect.stream(url="wss://x.example/media")
    stream.parameter(name="token", value="abc")
    stream.parameter(name="arm", value="ai")
    assert parse_connect_twiml(str(response)) == (
        "https://x.example/voice/after?pass=2",
        "wss://x.example/media",
        {"token": "abc", "arm": "ai"},
    )
    no_stream = VoiceResponse()
    no_stream.enqueue(None, workflow_sid="WW" + "1" * 32)
    assert parse_connect_twiml(str(no_stream)) == (None, None, {})
    assert parse_connect_twiml("<Response><Connect>") == (None, None, {})
    assert parse_connect_twiml("not xml at all") == (None, None, {})
    not_response = "<Other><Connect><Stream url='wss://x'/></Connect></Other>"
    assert parse_connect_twiml(not_response) == (None, None, {})


async def test_fetch_call_record_is_signed_and_none_on_404() -> None:
    record = {"call_sid": "CA1", "passes": []}
    async with serving(Peer(records={"CA1": record})) as peer:
        assert await fetch_call_record(peer.base_url, "CA1", TOKEN) == record
        assert await fetch_call_record(peer.base_url, "CA2", TOKEN) is None
        with pytest.raises(CallRecordUnavailable, match="403"):
            await fetch_call_record(peer.base_url, "CA1", "wrong-token")


RECORD = {
    "call_sid": "CA" + "a" * 32,
    "visited_nodes": ["FW1/ai_triage"],
    "passes": [
        {
            "number": 1,
            "entry_node": None,
            "arm": "ai",
            "opened_at": 1764000000.0,
            "caller": "+15551230000",
            "called": "+15557650000",
            "decision": {
                "route": "billing_desk",
                "route_kind": "flex",
                "reason": "accepted",
                "intent": "billing",
                "confidence": 0.9,
                "summary": "Question about an invoice",
                "captured": {"caller_name": "Ann", "account_number": "12345"},
                "proposed_route": None,
                "decided_after_s": 3.2,
            },
            "outcome": {
                "outcome": "flex",
                "state_path": ["greeting", "capture", "classify", "dispatch", "teardown", "ended"],
                "faults": 0,
                "notes": [],
            },
            "finished_at": 1764000004.0,
            "answered_route": "billing_desk",
        }
    ],
}


def sample_result(**changes: Any) -> CallResult:
    values: dict[str, Any] = {
        "call_sid": "CA" + "a" * 32,
        "webhook_status": 200,
        "incoming_twiml": "<Response/>",
        "stream_url": "wss://x.example/media",
        "action_url": "https://x.example/voice/after?pass=1",
        "custom_parameters": {"token": "t"},
        "stream_sid": "MZ" + "b" * 32,
        "stream_rejected_status": None,
        "media_opened_at": 100.0,
        "media_closed_at": 104.5,
        "media_closed_by": "server",
        "close_code": 1000,
        "action_status": 200,
        "final_twiml": '<?xml version="1.0" encoding="UTF-8"?><Response><Enqueue workflowSid="WW1">'
        '<Task priority="30">{"intent": "billing"}</Task></Enqueue></Response>',
        "action_answered_at": 104.6,
        "marks": [MarkEcho("audio-1", 101.0, False)],
        "audio_received_ms": 2000.0,
        "audio_played_ms": 1500.0,
        "audio_cleared_ms": 500.0,
        "clears": 1,
        "violations": [],
        "transcript": [(101.5, "caller: I have a billing question")],
    }
    values.update(changes)
    return CallResult(**values)


def test_render_call_shows_transcript_state_path_decision_captured_data_and_twiml() -> None:
    text = render_call(sample_result(), RECORD)
    assert "caller: I have a billing question" in text
    assert "1.50 s" in text  # transcript time from the stream start
    assert "greeting → capture → classify → dispatch → teardown → ended" in text
    assert "route billing_desk (flex)" in text and "reason accepted" in text and "intent billing" in text
    assert "confidence 0.90" in text and "Question about an invoice" in text
    assert "caller_name: Ann" in text and "account_number: 12345" in text
    assert '\n  <Response>\n    <Enqueue workflowSid="WW1">\n' in text  # pretty-printed
    assert "\x1b[" not in text  # no colour codes


def test_render_call_without_a_record_or_with_a_junk_one_still_reports() -> None:
    result = sample_result(
        violations=[CallerViolation(102.0, "binary_frame", "3 bytes")], final_twiml="<Response><Oops>"
    )
    text = render_call(result, None)
    assert "Server record: not available" in text
    assert "binary_frame: 3 bytes" in text and "<Response><Oops>" in text
    junk = render_call(result, {"passes": ["oops", {"decision": "x", "outcome": {"state_path": "no"}}]})
    assert "decision: none" in junk and "(no state path recorded)" in junk
    no_stream = render_call(sample_result(stream_url=None, final_twiml=None, transcript=[]), {"passes": []})
    assert "stream: none" in no_stream and "(no passes recorded)" in no_stream and "(none)" in no_stream
