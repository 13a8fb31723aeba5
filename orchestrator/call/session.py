"""One call's session: the Media Stream, the engine and the call machine, inside one Trio nursery.

    call nursery
    ├── media reader   Twilio frames → caller audio to the engine, mark echoes, hang-up
    ├── driver         the only task that feeds the machine and carries out its effects, in order
    ├── timers         WakeAt effects
    └── session task   async with engine:            (nested: the engine's lifetime)
                           engine reader             agent audio → Twilio (+ marks), barge-in
                       [async with failover engine:  (once, if the first is refused or lost mid-triage)
                           engine reader]
                       # every engine is closed here, on every path
                       close the Media Stream        (only here, after the block)

The Media Stream is closed by the session task, lexically after the engine's `async with`; nothing
else closes it. That structure, not a flag, is what puts "Realtime closed" before "stream closed"
(and so before Twilio requests the action URL). `realtime_closed` lets the action URL handler wait
for the hang-up path, where Twilio closes the stream first.

Failover: when the engine is refused at the start, drops, or fails while the caller is still being
triaged, the session opens the failover engine (the offline one) with what the machine has captured and
heard so far. The machine does not see the first engine go: only a failover that fails too reaches it.
"""
from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import trio

from bridge.twilio.media_stream import (
    MULAW_BYTES_PER_MS,
    DtmfMessage,
    MarkMessage,
    MarkTracker,
    MediaFrame,
    MediaStreamCounters,
    MediaStreamProtocolError,
    StartMessage,
    StopMessage,
    UnknownTwilioMessage,
    clear_frame,
    decoded_base64_length,
    mark_frame,
    media_frame,
    parse_twilio_message,
)
from machines import events as ev
from machines.call_machine import TRIAGE_OPEN, CallFlow, CallMachine
from machines.decision import DispatchDecision
from machines.effects import (
    AnswerTool,
    CallEffect,
    CallFinished,
    CloseMedia,
    CloseRealtime,
    Line,
    PersistDecision,
    Speak,
    WakeAt,
)
from machines.policy import LANGUAGE_FIELD, CallHistory
from orchestrator.telemetry.logs import call_logger
from orchestrator.store.sqlite_store import CallStore, PassOutcome, TriagePass
from orchestrator.engines.tools import ToolRejected, interpret_tool_call, line_instructions, spoken_line, tool_output
from orchestrator.config.routing import RoutingConfig
from orchestrator.telemetry.metrics import ServerMetrics
from orchestrator.engines.interface import (
    AgentAudio,
    AgentTranscript,
    CallerSpeechStarted,
    CallerTranscript,
    EngineCall,
    EngineConnector,
    EngineEvent,
    EngineProblem,
    EngineUnavailable,
    ResponseFinished,
    ResponseStarted,
    ToolCallReady,
    TriageEngine,
    serves_language,
)

# Lines whose end the machine waits for (their mark echo becomes GreetingPlayed / HandoffPlayed).
_LINE_PLAYED = {Line.GREETING.value: ev.GreetingPlayed, Line.HANDOFF.value: ev.HandoffPlayed}
# Routes whose TwiML speaks for itself: a spoken "putting you through" would be wrong before them.
_SILENT_HANDOFF_KINDS = frozenset({"resolve", "voicemail"})
# How many trail notes a finished pass keeps in the store.
_KEPT_NOTES = 20
# A mark at least every this much agent audio (and at each response's end): the precision of barge-in's
# audio_end_ms. A mark per 20 ms chunk measured 6 WebSocket messages per echoed frame instead of 4.4.
MARK_EVERY_MS = 100
# Caller audio kept while the engine connects (or the failover takes over), so the caller's first words
# reach it: Twilio streams from the first moment, a Realtime connection takes a few hundred ms.
HELD_CALLER_AUDIO_MS = 3000
CALLER_FRAME_MS = 20  # Twilio's media frames
# Slack on top of budget and handoff line before a session is cut short as hung (a bug, not a path).
_HUNG_CALL_SLACK_S = 60.0
_CATCH_UP_LIMIT_S = 1.0  # the driver never takes this long for what is queued; if it does, go on anyway


class MediaSocket(Protocol):
    """The Twilio side of the call as the session needs it (the server adapts its WebSocket)."""

    async def receive(self) -> str | bytes | None:
        """The next frame, or None once the socket is closed."""

    async def send_text(self, text: str) -> None:
        """Send a text frame; a closed socket drops it silently."""

    async def send_texts(self, texts: Sequence[str]) -> None:
        """Send text frames in this order with one write (audio and its mark)."""

    async def close(self, code: int = 1000) -> None:
        """Close (idempotent)."""

    # The fast path: frames handled in the socket's reactor, without waking the session's tasks.
    def handle_now(self, handler: Callable[[str | bytes], bool] | None) -> bool:
        """Give frames to `handler` while `receive()` waits; refused ones (False) come from `receive()`."""

    def can_send_now(self) -> bool:
        """Whether send_text_now / send_texts_now write at once."""

    def send_text_now(self, text: str) -> None:
        """send_text without waiting, after can_send_now()."""

    def send_texts_now(self, texts: Sequence[str]) -> None:
        """send_texts without waiting, after can_send_now()."""


@dataclass
class SessionDeps:
    """What every call session is built from: one set per server (the composition root makes it)."""

    config: RoutingConfig
    flow: CallFlow
    store: CallStore
    connector: EngineConnector
    metrics: ServerMetrics
    shutting_down: trio.Event = field(default_factory=trio.Event)
    # Takes over a call whose engine is refused or lost while the caller is being triaged (None: fallback route).
    failover: EngineConnector | None = None


@dataclass(frozen=True, slots=True)
class _EngineNotice:
    """An engine event the driver decides on, handed over by the engine reader."""

    event: ResponseStarted | ResponseFinished | EngineProblem | ToolCallReady


@dataclass(frozen=True, slots=True)
class _CatchUp:
    """Set once the driver has handled everything posted before it (e.g. the lost engine's last tool calls)."""

    done: trio.Event


@dataclass(frozen=True, slots=True)
class _EngineSwitched:
    """The failover engine is open: the driver forgets the old engine's requests and re-asks what was lost."""


class CallSession:
    """Runs one triage pass of a call from the stream's `start` until nothing of it remains."""

    def __init__(
        self,
        deps: SessionDeps,
        socket: MediaSocket,
        start: StartMessage,
        triage_pass: TriagePass,
        history: CallHistory,
        known_language: str | None = None,
    ) -> None:
        self.deps = deps
        self.socket = socket
        self.stream_sid = start.stream_sid
        self.triage_pass = triage_pass
        self.history = history
        self.call_sid = triage_pass.call_sid
        self.known_language = known_language
        self.log = call_logger(self.call_sid, self.stream_sid).bind(triage_pass=triage_pass.number)
        # Set once the engine's socket is closed (or was never opened); the action URL waits on it.
        self.realtime_closed = trio.Event()
        self.finished = trio.Event()
        self.machine: CallMachine | None = None
        self.counters = MediaStreamCounters()

        self._engine: TriageEngine | None = None
        self._engine_scope = trio.CancelScope()
        self._engine_lost: str | None = None  # why the current engine ended by itself
        self._engine_reader_scope: trio.CancelScope | None = None
        self._switching_engine = False  # between losing an engine and the failover being open
        self._failed_over = False
        self._engine_seconds = 0.0  # how long engines were connected, summed over failover (the pass's cost)
        self._session_notes: list[str] = []  # kept in the pass record with the machine's notes
        self._events_in, self._events_out = trio.open_memory_channel[object](math.inf)
        self._teardown_ready = trio.Event()
        self._machine_ended = trio.Event()
        self._close_media_requested = False
        self._decision: DispatchDecision | None = None
        self._nursery: trio.Nursery | None = None
        # Outbound audio and barge-in (engine reader only).
        self._tracker = MarkTracker()
        self._tag_by_response: dict[str, str | None] = {}
        self._current_item: str | None = None
        self._cleared_items: set[str] = set()
        self._line_marks: dict[str, str] = {}  # mark name → line tag
        self._unmarked_bytes = 0  # audio sent since the last mark
        # Caller audio that came while no engine was open (media reader only); the oldest goes first when full.
        self._held_caller_audio: deque[str] = deque(maxlen=HELD_CALLER_AUDIO_MS // CALLER_FRAME_MS)
        # Requests to the engine (driver only).
        self._response_active = False
        self._pending_outputs: list[tuple[str, str]] = []
        self._pending_line: Speak | None = None
        self._pending_continue = False
        self._last_request: tuple[str, Speak | None] | None = None
        self._line_in_flight: Speak | None = None  # a line requested whose response has not finished
        self._request_ids = itertools.count(1)

    # ------------------------------------------------------------------ the session task

    async def run(self) -> None:
        flow = self.deps.flow
        machine = self.machine = flow.start_call(self.call_sid, self.history)
        self.deps.metrics.calls_started.inc()
        self.deps.metrics.active_calls.inc()
        self.log.info("triage started", entry_node=self.history.entry_node, state=machine.state)
        if self.known_language:  # from Studio, or from the caller's number: the greeting is in it
            self._start_timers(machine.handle(ev.DetailsCaptured({LANGUAGE_FIELD: self.known_language})))
        policy = flow.policy
        hung_after = policy.budget_s + policy.handoff_line_timeout_s + _HUNG_CALL_SLACK_S
        try:
            with trio.move_on_after(hung_after) as guard:
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    nursery.start_soon(self._read_media)
                    nursery.start_soon(self._drive)
                    nursery.start_soon(self._fail_on_shutdown)
                    self._start_timers(machine.start())
                    with self._engine_scope:
                        await self._run_engine()
                    # The engine is closed here, on every path.
                    self.realtime_closed.set()
                    self._post(ev.RealtimeClosed())
                    await self._teardown_ready.wait()
                    if self._close_media_requested:
                        await self.socket.close(1000)
                        self._post(ev.MediaClosed())
                    await self._machine_ended.wait()
                    nursery.cancel_scope.cancel()
            if guard.cancelled_caught:
                self.log.error("session hung and was cut short", state=machine.state)
        finally:
            self.realtime_closed.set()
            with trio.CancelScope(shield=True):
                await self.socket.close(1000)
                await self._record_outcome(machine)
            flow.dispose(machine)
            self.deps.metrics.active_calls.dec()
            self.deps.metrics.calls_finished.labels(machine.outcome).inc()
            decision = machine.decision
            self.deps.metrics.observe_finished_pass(
                self.triage_pass.arm, decision.route if decision else None, machine.outcome,
                decision.decided_after_s if decision else None, self._engine_seconds,
                reason=str(decision.reason) if decision else None, faults=machine.faults,
            )
            self.finished.set()
            self.log.info("triage finished", outcome=machine.outcome, state=machine.state)

    async def _run_engine(self) -> None:
        """The engine's lifetime; the failover engine's too when the first one is refused or lost.
        Returns when an engine ended by itself; cancelled (by the driver) when the call closes it."""
        connector = self.deps.connector
        while True:
            lost = await self._run_one_engine(connector, taking_over=connector is not self.deps.connector)
            if lost is None or not self._can_fail_over():
                self._switching_engine = False
                if lost is not None and lost.startswith("engine_unavailable"):
                    self._post(ev.EngineFailed(lost))
                return  # a dropped engine reaches the machine as RealtimeClosed
            assert self.deps.failover is not None
            self._failed_over = True
            connector = self.deps.failover
            self.deps.metrics.engine_failovers.inc()
            self._session_notes.append(f"failover to {connector.name}: {lost}")
            self.log.warning("engine lost; the failover engine takes the call", reason=lost, engine=connector.name)

    async def _run_one_engine(self, connector: EngineConnector, *, taking_over: bool) -> str | None:
        """Run one engine until it ends by itself (returns why) or is refused (returns why)."""
        machine = self.machine
        assert machine is not None
        if taking_over:  # what the lost engine heard reaches the machine first, so the new one knows it
            caught_up = trio.Event()
            self._post(_CatchUp(caught_up))
            with trio.move_on_after(_CATCH_UP_LIMIT_S):
                await caught_up.wait()
        call = EngineCall(self.call_sid, dict(machine.captured), tuple(machine.caller_turns), taking_over)
        self._engine_lost = None
        attempted_at = trio.current_time()
        connected = False
        try:
            async with connector.connect(call) as engine:
                connected = True
                self._engine = engine
                async with trio.open_nursery() as engine_nursery:
                    self._engine_reader_scope = engine_nursery.cancel_scope
                    engine_nursery.start_soon(self._read_engine, engine, engine_nursery.cancel_scope)
                    if taking_over:
                        self._post(_EngineSwitched())
                    language = machine.captured.get(LANGUAGE_FIELD)
                    if language and not serves_language(connector, language):
                        self.log.info("the engine does not speak the caller's language", language=language)
                        self._post(ev.LanguageNotServed(language))
                    self._post(ev.RealtimeOpened())
                    await trio.sleep_forever()
        except EngineUnavailable as unavailable:
            self.deps.metrics.engine_unavailable.inc()
            self.log.warning("engine unavailable", engine=connector.name, reason=unavailable.reason)
            self._engine_lost = f"engine_unavailable: {unavailable.reason}"
        finally:
            self._engine = None
            self._engine_reader_scope = None
            if connected:  # from the connection attempt to its close; a refused attempt costs nothing
                self._engine_seconds += trio.current_time() - attempted_at
        if self._engine_lost is not None and self._can_fail_over():
            self._switching_engine = True  # the driver keeps its pending requests for the next engine
        return self._engine_lost

    def _can_fail_over(self) -> bool:
        machine = self.machine
        return (
            self.deps.failover is not None
            and not self._failed_over
            and machine is not None
            and machine.state in TRIAGE_OPEN
            and not self.deps.shutting_down.is_set()
        )

    async def _record_outcome(self, machine: CallMachine) -> None:
        notes = tuple(f"{entry.event}: {entry.note}" for entry in machine.trail if entry.note)[-_KEPT_NOTES:]
        notes = (*self._session_notes, *notes)[-_KEPT_NOTES:]
        outcome = PassOutcome(
            machine.outcome, tuple(machine.states_visited), machine.faults, notes, engine_seconds=self._engine_seconds
        )
        try:
            with trio.fail_after(5):
                await self.deps.store.finish_pass(self.call_sid, self.triage_pass.number, outcome)
        except Exception as error:  # the outcome is a record; losing it must not break teardown
            self.deps.metrics.store_errors.inc()
            self.log.error("could not record the outcome", error=repr(error))

    # ------------------------------------------------------------------ the driver

    def _post(self, item: object) -> None:
        try:
            self._events_in.send_nowait(item)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass  # the driver is done: the call is over

    def _start_timers(self, effects: list[CallEffect]) -> None:
        # The machine's start-of-call effects are wake-ups only; every later effect goes through the driver.
        for effect in effects:
            if isinstance(effect, WakeAt):
                self._wake_at(effect.at)

    async def _drive(self) -> None:
        machine = self.machine
        assert machine is not None
        async with self._events_out:
            async for item in self._events_out:
                if isinstance(item, _EngineNotice):
                    await self._on_engine_notice(item.event)
                elif isinstance(item, _EngineSwitched):
                    self._on_engine_switched()
                elif isinstance(item, _CatchUp):
                    item.done.set()
                else:
                    await self._handle(item)
                # One flush per input: the effects of one event make at most one response request.
                await self._flush_requests()
                if machine.is_finished:
                    return

    async def _handle(self, event: ev.CallEvent) -> None:
        assert self.machine is not None
        for effect in self.machine.handle(event):
            await self._execute(effect)

    async def _execute(self, effect: CallEffect) -> None:
        match effect:
            case WakeAt(at=at):
                self._wake_at(at)
            case Speak():
                if self._decision is not None and effect.line is Line.HANDOFF and (
                    self._decision.route_kind in _SILENT_HANDOFF_KINDS
                ):
                    self._post(ev.HandoffPlayed())  # nothing to say: the route's TwiML speaks
                    return
                self._pending_line = effect
            case AnswerTool():
                self._pending_outputs.append((effect.tool_call_id, tool_output(effect)))
            case PersistDecision(decision=decision):
                self._decision = decision
                await self._persist(decision)
            case CloseRealtime():
                self._engine_scope.cancel()
            case CloseMedia():
                self._engine_scope.cancel()
                self._close_media_requested = True
                self._teardown_ready.set()
            case CallFinished():
                # Also ends a connection attempt still in flight, which the machine never saw open.
                self._engine_scope.cancel()
                self._teardown_ready.set()
                self._machine_ended.set()

    async def _persist(self, decision: DispatchDecision) -> None:
        self.deps.metrics.decisions.labels(decision.route_kind, str(decision.reason)).inc()
        self.log.info(
            "decision", route=decision.route, kind=decision.route_kind, reason=str(decision.reason),
            intent=decision.intent, confidence=decision.confidence,
        )
        try:
            with trio.fail_after(5):
                stored = await self.deps.store.save_decision(self.call_sid, self.triage_pass.number, decision)
        except Exception as error:  # /voice/after then answers the fallback route: the caller is not dropped
            self.deps.metrics.store_errors.inc()
            self.log.error("could not persist the decision", error=repr(error))
            return
        if stored != decision:
            self.log.warning("a decision was already stored for this pass; it stands", stored=stored.route)

    def _wake_at(self, at: float) -> None:
        async def wake() -> None:
            await trio.sleep_until(at)
            self._post(ev.TimerFired())

        if self._nursery is not None:
            self._nursery.start_soon(wake)

    async def _fail_on_shutdown(self) -> None:
        await self.deps.shutting_down.wait()
        self._post(ev.EngineFailed("server_shutdown"))

    # ------------------------------------------------------------------ requests to the engine (driver)

    def _on_engine_switched(self) -> None:
        machine = self.machine
        assert machine is not None
        self._switching_engine = False
        self._response_active = False
        self._pending_outputs.clear()  # answers to the old engine's tool calls mean nothing to the new one
        self._last_request = None
        lost_line, self._line_in_flight = self._line_in_flight, None
        if machine.state == "greeting":
            return  # the machine asks for the greeting again when the new engine opens
        if self._pending_line is None and lost_line is not None and lost_line.line is not Line.GREETING:
            self._pending_line = lost_line
        elif self._pending_line is None:
            self._pending_continue = True  # the new engine picks the conversation up

    async def _on_engine_notice(self, event: ResponseStarted | ResponseFinished | EngineProblem | ToolCallReady) -> None:
        match event:
            case ResponseStarted():
                self._response_active = True
            case ResponseFinished():
                self._response_active = False
                if self._line_in_flight is not None and event.tag == self._line_in_flight.line.value:
                    self._line_in_flight = None
            case ToolCallReady():
                await self._on_tool_call(event)
            case EngineProblem():
                await self._on_engine_problem(event)

    async def _on_tool_call(self, call: ToolCallReady) -> None:
        interpreted = interpret_tool_call(self.deps.config, call.name, call.arguments_json, call.call_id)
        if isinstance(interpreted, ToolRejected):
            self.deps.metrics.tool_rejections.labels(call.name[:40]).inc()
            self.log.info("tool call rejected", tool=call.name, problems=list(interpreted.problems))
            self._pending_outputs.append((interpreted.call_id, interpreted.output))
            return
        await self._handle(interpreted)

    async def _on_engine_problem(self, problem: EngineProblem) -> None:
        self.deps.metrics.engine_problems.labels(problem.code[:60], str(problem.fatal).lower()).inc()
        last = self._last_request
        if not problem.fatal:
            self.log.info("engine reported a harmless problem", code=problem.code)
            if last is not None and problem.request_id == last[0]:
                # Our response request lost a race with one the engine started itself: ask again after it.
                self._last_request = None
                self._response_active = True
                if last[1] is not None and self._pending_line is None:
                    self._pending_line = last[1]
                elif last[1] is None:
                    self._pending_continue = True
            return
        self.log.warning("engine failed", code=problem.code, message=problem.message[:200])
        reader_scope = self._engine_reader_scope
        if self._can_fail_over() and reader_scope is not None:
            self._engine_lost = f"engine_error: {problem.code}"
            reader_scope.cancel()  # the session task opens the failover engine
            return
        await self._handle(ev.EngineFailed(f"engine_error: {problem.code}"))

    async def _flush_requests(self) -> None:
        """Tool outputs and the next line go out only when no response is active (protocol rule).

        "Active" is what the engine last reported, not what we asked for: a request the engine refuses
        because it started a response itself comes back as a harmless problem and is asked again."""
        engine = self._engine
        if engine is None:
            if self._switching_engine:
                return  # kept for the failover engine
            self._pending_outputs.clear()
            self._pending_line = None
            self._pending_continue = False
            return
        if self._response_active:
            return
        outputs, self._pending_outputs = self._pending_outputs, []
        for call_id, output in outputs:
            await engine.send_tool_output(call_id, output)
        line, self._pending_line = self._pending_line, None
        # After the decision the agent only says the handoff line; a tool answer alone asks for nothing.
        wants_continue = (bool(outputs) or self._pending_continue) and self._forwarding_audio()
        self._pending_continue = False
        if line is None and not wants_continue:
            return
        request_id = f"request_{next(self._request_ids)}"
        self._last_request = (request_id, line)
        if line is None:
            await engine.speak(None, tag=None, request_id=request_id)
        else:
            self._line_in_flight = line
            config = self.deps.config
            language = self.machine.captured.get(LANGUAGE_FIELD) if self.machine else None
            await engine.speak(
                line_instructions(config, line, language), tag=line.line.value, request_id=request_id,
                line=spoken_line(config, line, language),
            )

    # ------------------------------------------------------------------ the engine reader

    async def _read_engine(self, engine: TriageEngine, engine_scope: trio.CancelScope) -> None:
        engine.play_audio_now(self._play_now)
        try:
            async for event in engine.events():
                await self._on_engine_event(engine, event)
            if self._engine_lost is None:
                self._engine_lost = "engine_dropped"
        finally:
            engine.play_audio_now(None)
            # The engine's connection ended (or we are leaving): nothing keeps its block open.
            engine_scope.cancel()

    async def _on_engine_event(self, engine: TriageEngine, event: EngineEvent) -> None:
        machine = self.machine
        assert machine is not None
        if isinstance(event, AgentAudio):
            await self._play(event)
        elif isinstance(event, ResponseStarted):
            self._tag_by_response[event.response_id] = event.tag
            self._post(_EngineNotice(event))
        elif isinstance(event, ResponseFinished):
            self._tag_by_response.pop(event.response_id, None)
            if self._unmarked_bytes:
                await self._mark_audio()  # the end of every response is marked: barge-in knows when it played
            if event.tag in _LINE_PLAYED:
                await self._mark_line_end(event.tag)
            self._post(_EngineNotice(event))
        elif isinstance(event, CallerSpeechStarted):
            if machine.state in TRIAGE_OPEN:
                await self._barge_in(engine)
        elif isinstance(event, CallerTranscript):
            self.log.debug("caller said", chars=len(event.text))
            self._post(ev.CallerSpoke(event.text))
        elif isinstance(event, AgentTranscript):
            self.log.debug("agent said", chars=len(event.text))
        else:  # ToolCallReady, EngineProblem: decided by the driver
            self._post(_EngineNotice(event))

    async def _play(self, audio: AgentAudio) -> None:
        n_bytes = self._playable_bytes(audio)
        if n_bytes:
            frames = self._frames_to_play(audio, n_bytes)
            if len(frames) == 1:
                await self.socket.send_text(frames[0])
            else:
                await self.socket.send_texts(frames)

    def _play_now(self, audio: AgentAudio) -> bool:
        """_play in the socket reactor (TriageEngine.play_audio_now); False: the engine reader plays it."""
        if self.machine is None:
            return False
        n_bytes = self._playable_bytes(audio)
        if not n_bytes:
            return True
        socket = self.socket
        if not socket.can_send_now():
            return False
        frames = self._frames_to_play(audio, n_bytes)
        if len(frames) == 1:
            socket.send_text_now(frames[0])
        else:
            socket.send_texts_now(frames)
        return True

    def _playable_bytes(self, audio: AgentAudio) -> int:
        """The audio's length, or 0 when it is not played."""
        machine = self.machine
        assert machine is not None
        if audio.item_id in self._cleared_items:
            return 0  # a late delta of what the caller interrupted
        if machine.state not in TRIAGE_OPEN and self._tag_by_response.get(audio.response_id) != Line.HANDOFF.value:
            return 0  # once decided, the agent says the handoff line and nothing else
        return max(decoded_base64_length(audio.payload_b64), 0)

    def _frames_to_play(self, audio: AgentAudio, n_bytes: int) -> tuple[str, ...]:
        """The media frame (and a mark, every MARK_EVERY_MS), with the bookkeeping done before the send so
        an echo can never overtake it (MarkTracker's contract)."""
        self._current_item = audio.item_id
        self._tracker.on_audio_sent(audio.item_id, n_bytes)
        media = media_frame(self.stream_sid, audio.payload_b64)
        self._unmarked_bytes += n_bytes
        if self._unmarked_bytes >= MARK_EVERY_MS * MULAW_BYTES_PER_MS:
            return (media, self._next_mark_frame())
        return (media,)

    def _next_mark_frame(self) -> str:
        """A mark after the audio sent so far: its echo proves that much was played."""
        self._unmarked_bytes = 0
        name = self._tracker.next_mark_name()
        self._tracker.on_mark_sent(name)
        return mark_frame(self.stream_sid, name)

    async def _mark_audio(self) -> None:
        await self.socket.send_text(self._next_mark_frame())

    async def _mark_line_end(self, tag: str) -> None:
        name = f"line-{tag}-{len(self._line_marks) + 1}"
        self._line_marks[name] = tag
        self._tracker.on_mark_sent(name)
        await self.socket.send_text(mark_frame(self.stream_sid, name))

    async def _barge_in(self, engine: TriageEngine) -> None:
        tracker = self._tracker
        if tracker.pending_marks == 0:
            return  # everything sent was already played: nothing to stop
        self.deps.metrics.barge_ins.inc()
        tracker.on_clear_sent()
        self._unmarked_bytes = 0  # discarded with the rest of Twilio's buffer
        await self.socket.send_text(clear_frame(self.stream_sid))
        item = self._current_item
        if item is None:
            return
        self._cleared_items.add(item)
        played, sent = tracker.played_ms(item), tracker.sent_ms(item)
        self.log.info("barge-in", played_ms=played, sent_ms=sent)
        if 0 < sent and played < sent:
            await engine.truncate(item, played)

    # ------------------------------------------------------------------ the media reader

    async def _read_media(self) -> None:
        self.socket.handle_now(self._take_media_now)
        try:
            await self._read_media_frames()
        finally:
            self.socket.handle_now(None)

    def _take_media_now(self, frame: str | bytes) -> bool:
        """The commonest frames (caller audio, mark echoes) in the socket reactor; False: for _read_media."""
        try:
            message = parse_twilio_message(frame)
        except MediaStreamProtocolError:
            return False  # counted and logged by the reader
        if isinstance(message, MediaFrame):
            if not self._forwarding_audio():
                return True
            engine = self._engine
            if engine is None:
                self._held_caller_audio.append(message.payload)
                return True
            return not self._held_caller_audio and engine.send_caller_audio_now(message.payload)
        if isinstance(message, MarkMessage):
            self._on_mark_echo(message.mark.name)
            return True
        return False

    async def _read_media_frames(self) -> None:
        while True:
            frame = await self.socket.receive()
            if frame is None:
                self._post(ev.MediaClosed())
                return
            try:
                message = parse_twilio_message(frame)
            except MediaStreamProtocolError as error:
                self.counters.record_error(error)
                self.deps.metrics.media_errors.labels(error.kind).inc()
                if self.counters.errors_by_kind[error.kind] == 1:
                    self.log.warning("unusable Twilio frame", kind=error.kind, detail=error.detail[:120])
                continue
            if isinstance(message, MediaFrame):
                if not self._forwarding_audio():
                    continue
                engine = self._engine
                if engine is None:  # still connecting (or switching to the failover): heard once it is open
                    self._held_caller_audio.append(message.payload)
                    continue
                while self._held_caller_audio:
                    await engine.send_caller_audio(self._held_caller_audio.popleft())
                await engine.send_caller_audio(message.payload)
            elif isinstance(message, MarkMessage):
                self._on_mark_echo(message.mark.name)
            elif isinstance(message, StopMessage):
                self._post(ev.CallerHungUp())
            elif isinstance(message, DtmfMessage):
                self.log.info("caller pressed a key", digit=message.dtmf.digit[:2])
            elif isinstance(message, UnknownTwilioMessage):
                self.counters.record_unknown(message)
                self.deps.metrics.media_unknown_events.inc()
            else:
                self.log.debug("repeated stream set-up message ignored", event=message.event)

    def _forwarding_audio(self) -> bool:
        # After the decision the caller is no longer heard: the agent must not answer again.
        return self.machine is not None and self.machine.state in TRIAGE_OPEN

    def _on_mark_echo(self, name: str) -> None:
        self._tracker.on_mark_echoed(name)
        tag = self._line_marks.pop(name, None)
        if tag is not None:
            # Played or cleared by a barge-in: either way the line is over.
            self._post(_LINE_PLAYED[tag]())

