"""A call session driven over in-memory doubles: a scripted engine and a fake Twilio media socket.

No socket, no fake server, no timer runs out: a test says what the engine must be asked, in order, and what
it answers, and a request the script does not expect fails the call at once (`UnexpectedRequest` raised
inside the session). The test plays the caller and the engine's own initiatives between `settle()`s.

    script = [expect_speak("greeting"), respond(audio_ms=400), expect_tool_output("call_1"), ...]
    async with running_session(ScriptedConnector(script)) as call:
        await call.settle()
        call.engine.emit(*vad_response(propose("billing", 0.9)))
        ...
"""
from __future__ import annotations

import base64
import itertools
import json
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
import trio
import trio.testing

from bridge.twilio.media_stream import MULAW_BYTES_PER_MS, StartMessage, parse_twilio_message
from machines.call_machine import CallFlow
from machines.decision import DispatchDecision
from machines.policy import CallHistory
from orchestrator.call.session import CallSession, SessionDeps
from orchestrator.config.routing import RoutingConfig, load_routing_config
from orchestrator.engines.interface import (
    AgentAudio,
    EngineCall,
    EngineCapabilities,
    EngineEvent,
    EngineProblem,
    EngineUnavailable,
    ResponseFinished,
    ResponseStarted,
    SpokenLine,
    ToolCallReady,
)
from orchestrator.engines.tools import PROPOSE_ROUTE, RECORD_DETAILS
from orchestrator.store.sqlite_store import PassOutcome, TriagePass
from orchestrator.telemetry.metrics import ServerMetrics
from tests.live_call_support import ACME

CALL_SID = "CA" + "0" * 32
STREAM_SID = "MZ" + "0" * 32
AUDIO_CHUNK_MS = 100  # what a scripted response sends per AgentAudio
CALL_TIMEOUT_S = 5.0  # a harness call that takes longer is hung


class UnexpectedRequest(AssertionError):
    """The session asked the engine for something the script did not expect (raised inside the session)."""


# --------------------------------------------------------------------------- the engine's script


@dataclass(frozen=True)
class Expect:
    """The next request the session must make: `speak` (of `tag`), `tool_output` (for `call_id`) or
    `truncate` (of `item_id`, at `audio_end_ms`). None matches anything."""

    request: str
    tag: str | None = None
    call_id: str | None = None
    item_id: str | None = None
    audio_end_ms: int | None = None


@dataclass(frozen=True)
class Emit:
    """Events the engine sends at this point of the script (`events` may depend on the last request)."""

    events: Callable[[ScriptedEngine], Sequence[EngineEvent]]


Step = Expect | Emit


def expect_speak(tag: str | None) -> Expect:
    return Expect("speak", tag=tag)


def expect_tool_output(call_id: str) -> Expect:
    return Expect("tool_output", call_id=call_id)


def expect_truncate(item_id: str, audio_end_ms: int) -> Expect:
    return Expect("truncate", item_id=item_id, audio_end_ms=audio_end_ms)


def emit(*events: EngineEvent) -> Emit:
    return Emit(lambda engine: events)


def respond(*, audio_ms: int = 0, tools: Sequence[ToolCallReady] = (), finish: bool = True) -> Emit:
    """A response to the request just matched: started, its audio, its tool calls, finished (with the tag
    the session gave it)."""

    def events(engine: ScriptedEngine) -> list[EngineEvent]:
        response_id, item_id = engine.next_ids()
        tag = engine.last_tag
        out: list[EngineEvent] = [ResponseStarted(response_id, tag)]
        out += [AgentAudio(response_id, item_id, audio_payload(AUDIO_CHUNK_MS)) for _ in range(audio_ms // AUDIO_CHUNK_MS)]
        out += [ToolCallReady(call.call_id, call.name, call.arguments_json, response_id) for call in tools]
        if finish:
            out.append(ResponseFinished(response_id, tag, "completed"))
        return out

    return Emit(events)


def refuse() -> Emit:
    """The engine refuses the request just matched: it runs a response of its own (the request race)."""
    return Emit(lambda engine: [
        EngineProblem("conversation_already_has_active_response", "a response is active", False, engine.last_request_id)
    ])


def propose(intent: str, confidence: float, call_id: str = "call_1") -> ToolCallReady:
    arguments = {"intent": intent, "confidence": confidence, "summary": f"caller asks about {intent}"}
    return ToolCallReady(call_id, PROPOSE_ROUTE, json.dumps(arguments), None)


def record_details(details: dict[str, str], call_id: str = "call_details") -> ToolCallReady:
    return ToolCallReady(call_id, RECORD_DETAILS, json.dumps(details), None)


def vad_response(*tools: ToolCallReady, response_id: str = "vad_1") -> list[EngineEvent]:
    """A response the engine started by itself after the caller spoke (no tag), with its tool calls."""
    return [ResponseStarted(response_id, None), *tools, ResponseFinished(response_id, None, "completed")]


def audio_payload(ms: int) -> str:
    return base64.b64encode(b"\xff" * (ms * MULAW_BYTES_PER_MS)).decode()


# --------------------------------------------------------------------------- the scripted engine


@dataclass(frozen=True)
class Request:
    request: str
    tag: str | None = None
    request_id: str | None = None
    instructions: str | None = None
    line: SpokenLine | None = None
    call_id: str | None = None
    output: str | None = None
    item_id: str | None = None
    audio_end_ms: int | None = None


class ScriptedEngine:
    """A TriageEngine that follows its script and keeps what it was sent."""

    def __init__(self, call: EngineCall, script: Sequence[Step]) -> None:
        self.call = call
        self._steps = list(script)
        self.requests: list[Request] = []
        self.caller_audio: list[str] = []
        self.keys_pressed = 0  # caller_pressed_key calls
        self._events_in, self._events_out = trio.open_memory_channel[EngineEvent | None](float("inf"))
        self._ids = itertools.count(1)
        self.last_tag: str | None = None
        self.last_request_id: str | None = None
        self._run_until_expect()

    @property
    def finished_script(self) -> bool:
        return not self._steps

    def next_ids(self) -> tuple[str, str]:
        number = next(self._ids)
        return f"resp_{number}", f"item_{number}"

    def emit(self, *events: EngineEvent) -> None:
        """Events the engine sends of its own accord (the caller spoke, VAD started a response)."""
        for event in events:
            self._events_in.send_nowait(event)

    def drop(self) -> None:
        """The engine's connection ends (events() stops after what was sent)."""
        self._events_in.send_nowait(None)

    # ---- TriageEngine

    def send_caller_audio(self, payload_b64: str) -> None:
        self.caller_audio.append(payload_b64)

    def caller_pressed_key(self) -> None:
        self.keys_pressed += 1

    async def speak(
        self, instructions: str | None, *, tag: str | None, request_id: str | None = None, line: SpokenLine | None = None
    ) -> None:
        self._on_request(Request("speak", tag=tag, request_id=request_id, instructions=instructions, line=line))

    async def send_tool_output(self, call_id: str, output: str) -> None:
        self._on_request(Request("tool_output", call_id=call_id, output=output))

    async def truncate(self, item_id: str, audio_end_ms: int) -> None:
        self._on_request(Request("truncate", item_id=item_id, audio_end_ms=audio_end_ms))

    async def events(self, on_agent_audio: Callable[[AgentAudio], None] | None = None) -> AsyncIterator[EngineEvent]:
        async for event in self._events_out:
            if event is None:
                return
            if on_agent_audio is not None and isinstance(event, AgentAudio):
                on_agent_audio(event)
            else:
                yield event

    # ---- the script

    def _on_request(self, request: Request) -> None:
        self.requests.append(request)
        expected = self._steps.pop(0) if self._steps else None
        if not isinstance(expected, Expect) or not _matches(expected, request):
            raise UnexpectedRequest(f"the engine was asked {request}, the script expected {expected}")
        if request.request == "speak":
            self.last_tag, self.last_request_id = request.tag, request.request_id
        self._run_until_expect()

    def _run_until_expect(self) -> None:
        while self._steps and isinstance(self._steps[0], Emit):
            self.emit(*self._steps.pop(0).events(self))


def _matches(expected: Expect, request: Request) -> bool:
    if expected.request != request.request:
        return False
    if expected.request == "speak":
        return expected.tag == request.tag
    return all(
        wanted is None or wanted == got
        for wanted, got in (
            (expected.call_id, request.call_id), (expected.item_id, request.item_id),
            (expected.audio_end_ms, request.audio_end_ms),
        )
    )


class ScriptedConnector:
    """Opens a ScriptedEngine per call, each with the next script; refuses when told to (or with no script)."""

    capabilities = EngineCapabilities()

    def __init__(
        self, *scripts: Sequence[Step], name: str = "scripted", refuse: bool = False,
        capabilities: EngineCapabilities | None = None,
    ) -> None:
        self.name = name
        self._scripts = list(scripts)
        self._refuse = refuse
        if capabilities is not None:
            self.capabilities = capabilities
        self.engines: list[ScriptedEngine] = []
        self.may_open = trio.Event()  # connect() waits for it: the engine "is connecting" until then
        self.may_open.set()

    @asynccontextmanager
    async def connect(self, call: EngineCall) -> AsyncIterator[ScriptedEngine]:
        await self.may_open.wait()
        if self._refuse or not self._scripts:
            raise EngineUnavailable("refused by the script")
        engine = ScriptedEngine(call, self._scripts.pop(0))
        self.engines.append(engine)
        yield engine

    @property
    def engine(self) -> ScriptedEngine:
        return self.engines[-1]


# --------------------------------------------------------------------------- the Twilio side


class FakeMediaSocket:
    """Twilio's side of the Media Stream, in memory. The test feeds frames; what the session sends is kept
    (parsed). Marks are echoed as soon as they are sent (the caller hears everything at once) unless
    `echo_marks` is off; a `clear` echoes every pending mark, as Twilio does."""

    def __init__(self, *, echo_marks: bool = True) -> None:
        self.echo_marks = echo_marks
        self.sent: list[dict[str, Any]] = []
        self.closed_with: int | None = None
        self._pending_marks: list[str] = []
        self._frames_in, self._frames_out = trio.open_memory_channel[str](float("inf"))
        self._sequence = itertools.count(2)

    # ---- MediaSocket

    async def serve(self, on_frame: Callable[[str | bytes], None]) -> None:
        async with self._frames_out:
            async for frame in self._frames_out:
                on_frame(frame)

    def post_texts(self, texts: Sequence[str]) -> None:
        if self.closed_with is not None:
            return
        for text in texts:
            message = json.loads(text)
            assert message["streamSid"] == STREAM_SID
            self.sent.append(message)
            if message["event"] == "mark":
                self._pending_marks.append(message["mark"]["name"])
                if self.echo_marks:
                    self.play_marks()
            elif message["event"] == "clear":
                self.play_marks()

    async def close(self, code: int = 1000) -> None:
        if self.closed_with is None:
            self.closed_with = code
            self._frames_in.close()

    # ---- the caller

    def feed(self, event: str, **body: Any) -> None:
        frame = {"event": event, "sequenceNumber": str(next(self._sequence)), "streamSid": STREAM_SID, **body}
        try:
            self._frames_in.send_nowait(orjson.dumps(frame).decode())
        except trio.ClosedResourceError:
            pass  # hung up or closed: nothing reaches the session any more

    def feed_raw(self, frame: str | bytes) -> None:
        """One frame exactly as given (anything a broken or hostile peer might send)."""
        try:
            self._frames_in.send_nowait(frame)  # type: ignore[arg-type]
        except trio.ClosedResourceError:
            pass

    def caller_audio(self, frames: int) -> list[str]:
        """`frames` media frames of 20 ms from the caller; returns their payloads."""
        payloads = [base64.b64encode(bytes([index % 256]) * 160).decode() for index in range(frames)]
        for index, payload in enumerate(payloads):
            self.feed("media", media={"track": "inbound", "chunk": str(index), "timestamp": str(20 * index),
                                      "payload": payload})
        return payloads

    def play_marks(self, count: int | None = None) -> None:
        """Echo the oldest `count` pending marks (all by default): the audio before them was played."""
        count = len(self._pending_marks) if count is None else count
        for name in self._pending_marks[:count]:
            self.feed("mark", mark={"name": name})
        del self._pending_marks[:count]

    def hang_up(self) -> None:
        self.feed("stop", stop={"accountSid": "AC" + "0" * 32, "callSid": CALL_SID})
        self._frames_in.close()

    # ---- what the session sent

    def events(self) -> list[str]:
        return [message["event"] for message in self.sent]

    def marks(self) -> list[str]:
        return [message["mark"]["name"] for message in self.sent if message["event"] == "mark"]


# --------------------------------------------------------------------------- the store and the session


@dataclass
class MemoryPassStore:
    """What a session writes to the call store, kept in memory (the first decision of a pass stands)."""

    decisions: dict[tuple[str, int], DispatchDecision] = field(default_factory=dict)
    outcomes: dict[tuple[str, int], PassOutcome] = field(default_factory=dict)

    async def save_decision(self, call_sid: str, number: int, decision: DispatchDecision) -> DispatchDecision:
        return self.decisions.setdefault((call_sid, number), decision)

    async def finish_pass(self, call_sid: str, number: int, outcome: PassOutcome) -> None:
        self.outcomes[(call_sid, number)] = outcome


@dataclass
class HarnessCall:
    session: CallSession
    socket: FakeMediaSocket
    connector: ScriptedConnector
    failover: ScriptedConnector | None
    store: MemoryPassStore
    metrics: ServerMetrics
    finished: trio.Event

    @property
    def engine(self) -> ScriptedEngine:
        return self.connector.engine

    @property
    def state(self) -> str | None:
        machine = self.session.machine
        return machine.state if machine is not None else None

    @property
    def decision(self) -> DispatchDecision | None:
        return self.store.decisions.get((CALL_SID, 1))

    @property
    def outcome(self) -> PassOutcome | None:
        return self.store.outcomes.get((CALL_SID, 1))

    async def settle(self) -> None:
        """Until every task of the call waits for something only the test (or a timer) can give."""
        await trio.testing.wait_all_tasks_blocked()

    def metric(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels or None) or 0.0


ACME_CONFIG = load_routing_config(ACME)


@asynccontextmanager
async def running_session(
    connector: ScriptedConnector,
    *,
    failover: ScriptedConnector | None = None,
    socket: FakeMediaSocket | None = None,
    config: RoutingConfig = ACME_CONFIG,
    known_language: str | None = None,
) -> AsyncIterator[HarnessCall]:
    """A CallSession running in the background for the block; after it, the session has ended."""
    socket = socket or FakeMediaSocket()
    store = MemoryPassStore()
    metrics = ServerMetrics()
    flow = CallFlow(config.triage_policy(), trio.current_time)
    deps = SessionDeps(config, flow, store, connector, metrics, failover=failover)  # type: ignore[arg-type]
    triage_pass = TriagePass(CALL_SID, 1, "token", "+14155550123", "+14155550100", "AC" + "0" * 32, None, "ai", 0.0)
    session = CallSession(deps, socket, _start_message(), triage_pass, CallHistory(), known_language)  # type: ignore[arg-type]
    call = HarnessCall(session, socket, connector, failover, store, metrics, trio.Event())

    async def run() -> None:
        try:
            await session.run()
        finally:
            call.finished.set()

    with trio.fail_after(CALL_TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run)
            await call.settle()
            yield call
            await call.finished.wait()


def _start_message() -> StartMessage:
    frame = {
        "event": "start", "sequenceNumber": "1", "streamSid": STREAM_SID,
        "start": {"accountSid": "AC" + "0" * 32, "streamSid": STREAM_SID, "callSid": CALL_SID, "tracks": ["inbound"],
                  "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}},
    }
    start = parse_twilio_message(orjson.dumps(frame).decode())
    assert isinstance(start, StartMessage)
    return start
