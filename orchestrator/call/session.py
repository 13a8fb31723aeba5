"""One call's session: the Media Stream, the engine and the call machine, inside one Trio nursery.

    call nursery
    ├── media reader   Twilio frames → media intake (caller audio to the engine, mark echoes, hang-up)
    │   └── silence watch  no frame for `media_silence_s` while the call is up: the stream's peer is dead
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

What the session puts together lives beside it: what a Twilio frame means (`media_intake`), what the
caller hears of the agent (`playback`, over `bridge.twilio.audio_out`), the requests to the engine
(`engine_requests`), the switch to a second engine (`failover`) and the pass's records (`pass_records`).
A stream that goes silent (a proxy that died, a half-open connection) ends the call as an engine failure
would, and `move_live_call` then hands the call to its route without the stream (Twilio's REST API).
The commonest frames each way (caller audio, mark echoes, agent audio) go through functions that never
wait, which the sockets call from their read reactor as frames arrive, so no task wakes for them.
"""
from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio

from bridge.twilio import AudioOut, MediaSocket, StartMessage
from machines import (
    LANGUAGE_FIELD,
    AnswerTool,
    CallEffect,
    CallFinished,
    CallFlow,
    CallHistory,
    CallMachine,
    CheckTypedEntry,
    CloseMedia,
    CloseRealtime,
    Line,
    PersistDecision,
    Speak,
    WakeAt,
)
from machines import events as ev
from orchestrator.call.engine_requests import EngineRequestGate
from orchestrator.call.failover import CatchUp, EngineFailover, EngineSwitched
from orchestrator.call.media_intake import MediaIntake
from orchestrator.call.pass_records import PassRecords
from orchestrator.call.playback import Playback
from orchestrator.config import RoutingConfig, caller_number
from orchestrator.engines import (
    AgentTranscript,
    CallerSpeechStarted,
    CallerTranscript,
    EngineCall,
    EngineConnector,
    EngineProblem,
    EngineUnavailable,
    ResponseFinished,
    ResponseStarted,
    ToolCallReady,
    ToolRejected,
    TriageEngine,
    interpret_tool_call,
    tool_output,
    typed_value,
)
from orchestrator.store import CallStore, TriagePass
from orchestrator.telemetry import ServerMetrics, call_logger

# Routes whose TwiML speaks for itself: a spoken "putting you through" would be wrong before them.
_SILENT_HANDOFF_KINDS = frozenset({"resolve", "voicemail"})
# Slack on top of budget and handoff line before a session is cut short as hung (a bug, not a path).
_HUNG_CALL_SLACK_S = 60.0
# Engine events the driver decides on (the engine reader hands them over).
_ENGINE_NOTICES = (ResponseStarted, ResponseFinished, ToolCallReady, EngineProblem)
MEDIA_SILENT = "media_silent"  # the reason of the engine failure a silent Media Stream stands for
# How often, per silence period, the watch looks whether frames still come: silence is noticed within 1.25×.
_SILENCE_LOOKS = 4


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
    # Seconds without a Media Stream message, while the call is up, after which its peer is dead (0: never).
    media_silence_s: float = 0.0
    # Moves the live call to its route once its stream went silent (the stream can carry no TwiML now);
    # returns what happened, for the pass's record. None: nothing can (the caller waits for Twilio).
    move_live_call: Callable[[TriagePass], Awaitable[str]] | None = None


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
        self.triage_pass = triage_pass
        self.history = history
        self.call_sid = triage_pass.call_sid
        self.known_language = known_language
        self.log = call_logger(self.call_sid, start.stream_sid).bind(triage_pass=triage_pass.number)
        # Set once the engine's socket is closed (or was never opened); the action URL waits on it.
        self.realtime_closed = trio.Event()
        self.machine: CallMachine | None = None

        self._engine: TriageEngine | None = None
        self._engine_scope = trio.CancelScope()
        self._engine_lost: str | None = None  # why the current engine ended by itself
        self._engine_reader_scope: trio.CancelScope | None = None
        self._engine_seconds = 0.0  # how long engines were connected, summed over failover (the pass's cost)
        self._events_in, self._events_out = trio.open_memory_channel[object](math.inf)
        self._teardown_ready = trio.Event()
        self._machine_ended = trio.Event()
        self._close_media_requested = False
        self._nursery: trio.Nursery | None = None
        self.media_went_silent = False
        self._notes: list[str] = []  # the session's own, for the pass's record
        self._failover = EngineFailover(
            deps.failover, metrics=deps.metrics, log=self.log, shutting_down=deps.shutting_down
        )
        self._requests = EngineRequestGate(deps.config)  # driver only
        self._records = PassRecords(deps.store, triage_pass, metrics=deps.metrics, log=self.log)
        # The engine reader's (and the engine socket reactor's); the media reader's (and its socket reactor's).
        self._playback = Playback(
            AudioOut(start.stream_sid, socket.post_texts), listening=self._listening, post=self._post,
            metrics=deps.metrics, log=self.log,
        )
        self._intake = MediaIntake(
            listening=self._listening, hearing=self._hearing, on_mark_echo=self._playback.on_mark_echo, post=self._post,
            metrics=deps.metrics, log=self.log,
        )

    # ------------------------------------------------------------------ the session task

    async def run(self) -> None:
        flow = self.deps.flow
        machine = self.machine = flow.start_call(self.call_sid, self.history)
        self.deps.metrics.calls_started.inc()
        self.deps.metrics.active_calls.inc()
        self.log.info("triage started", entry_node=self.history.entry_node, state=machine.state)
        if self.known_language:  # from Studio, or from the caller's number: the greeting is in it
            self._start_timers(machine.handle(ev.DetailsCaptured({LANGUAGE_FIELD: self.known_language})))
        caller = caller_number(self.triage_pass.caller)
        if caller is not None and flow.policy.caller_id_field is not None:  # pre-filled, to be confirmed
            self._start_timers(machine.handle(ev.CallerNumberKnown(caller)))
        policy = flow.policy
        hung_after = policy.budget_s + policy.details_budget_s + policy.handoff_line_timeout_s + _HUNG_CALL_SLACK_S
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
                if self.media_went_silent:  # before the close, which waits for a peer that will not answer
                    await self._move_live_call()
                await self.socket.close(1000)
                await self._records.finish(
                    machine, notes=[*self._failover.notes, *self._notes], engine_seconds=self._engine_seconds
                )
            flow.dispose(machine)
            self.deps.metrics.active_calls.dec()
            self.log.info("triage finished", outcome=machine.outcome, state=machine.state)

    async def _run_engine(self) -> None:
        """The engine's lifetime; the failover engine's too when the first one is refused or lost.
        Returns when an engine ended by itself; cancelled (by the driver) when the call closes it."""
        machine = self.machine
        assert machine is not None
        connector, taking_over = self.deps.connector, False
        while True:
            lost = await self._run_one_engine(connector, taking_over=taking_over)
            if lost is None or not self._failover.possible(machine):
                self._failover.switching = False
                if lost is not None and lost.startswith("engine_unavailable"):
                    self._post(ev.EngineFailed(lost))
                return  # a dropped engine reaches the machine as RealtimeClosed
            connector, taking_over = self._failover.take_over(lost), True

    async def _run_one_engine(self, connector: EngineConnector, *, taking_over: bool) -> str | None:
        """Run one engine until it ends by itself (returns why) or is refused (returns why)."""
        machine = self.machine
        assert machine is not None
        if taking_over:  # what the lost engine heard reaches the machine first, so the new one knows it
            await self._failover.catch_up(self._post)
        call = EngineCall(self.call_sid, dict(machine.captured), tuple(machine.caller_turns), taking_over)
        self._engine_lost = None
        attempted_at = trio.current_time()
        connected = False
        try:
            async with connector.connect(call) as engine:
                connected = True
                self._engine = engine
                self._intake.engine_opened(engine)
                async with trio.open_nursery() as engine_nursery:
                    self._engine_reader_scope = engine_nursery.cancel_scope
                    engine_nursery.start_soon(self._read_engine, engine, engine_nursery.cancel_scope)
                    if taking_over:
                        self._post(EngineSwitched())
                    language = machine.captured.get(LANGUAGE_FIELD)
                    if language and not connector.capabilities.serves_language(language):
                        self.log.info("the engine does not speak the caller's language", language=language)
                        self._post(ev.LanguageNotServed(language))
                    self._post(ev.RealtimeOpened())
                    await trio.sleep_forever()
        except EngineUnavailable as unavailable:
            self.deps.metrics.engine_unavailable.inc()
            self.deps.metrics.engine_connect_failures.labels(kind=unavailable.kind).inc()
            self.log.warning(
                "engine unavailable", engine=connector.name, kind=unavailable.kind, reason=unavailable.reason
            )
            self._engine_lost = f"engine_unavailable: {unavailable.reason}"
        finally:
            self._engine = None
            self._intake.engine_closed()
            self._engine_reader_scope = None
            if connected:  # from the connection attempt to its close; a refused attempt costs nothing
                self._engine_seconds += trio.current_time() - attempted_at
        return self._engine_lost

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
                if isinstance(item, ResponseStarted):
                    self._requests.on_response_started()
                elif isinstance(item, ResponseFinished):
                    self._requests.on_response_finished(item.tag)
                elif isinstance(item, ToolCallReady):
                    await self._on_tool_call(item)
                elif isinstance(item, EngineProblem):
                    await self._on_engine_problem(item)
                elif isinstance(item, EngineSwitched):
                    self._failover.on_switched(self._requests, machine)
                elif isinstance(item, CatchUp):
                    item.done.set()
                else:
                    await self._handle(item)
                # One flush per input: the effects of one event make at most one response request.
                await self._flush_requests(machine)
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
                decision = self.machine.decision if self.machine else None
                if effect.line is Line.HANDOFF and decision and decision.route_kind in _SILENT_HANDOFF_KINDS:
                    self._post(ev.HandoffPlayed())  # nothing to say: the route's TwiML speaks
                    return
                self._requests.ask_line(effect)
            case AnswerTool():
                self._requests.answer_tool(effect.tool_call_id, tool_output(effect))
            case CheckTypedEntry(field=name, digits=digits):
                self._post(ev.TypedEntryChecked(name, typed_value(self.deps.config, name, digits)))
            case PersistDecision(decision=decision):
                await self._records.save_decision(decision)
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

    def _wake_at(self, at: float) -> None:
        async def wake() -> None:
            await trio.sleep_until(at)
            self._post(ev.TimerFired())

        if self._nursery is not None:
            self._nursery.start_soon(wake)

    async def _fail_on_shutdown(self) -> None:
        await self.deps.shutting_down.wait()
        self._post(ev.EngineFailed("server_shutdown"))

    async def _on_tool_call(self, call: ToolCallReady) -> None:
        interpreted = interpret_tool_call(self.deps.config, call.name, call.arguments_json, call.call_id)
        if isinstance(interpreted, ToolRejected):
            self.deps.metrics.tool_rejections.labels(call.name[:40]).inc()
            self.log.info("tool call rejected", tool=call.name, problems=list(interpreted.problems))
            self._requests.answer_tool(interpreted.call_id, interpreted.output)
            return
        await self._handle(interpreted)

    async def _on_engine_problem(self, problem: EngineProblem) -> None:
        self.deps.metrics.engine_problems.labels(problem.code[:60], str(problem.fatal).lower()).inc()
        if not problem.fatal:
            self.log.info("engine reported a harmless problem", code=problem.code)
            self._requests.on_harmless_problem(problem)
            return
        self.log.warning("engine failed", code=problem.code, message=problem.message[:200])
        reader_scope = self._engine_reader_scope
        assert self.machine is not None
        if self._failover.possible(self.machine) and reader_scope is not None:
            self._engine_lost = f"engine_error: {problem.code}"
            reader_scope.cancel()  # the session task opens the failover engine
            return
        await self._handle(ev.EngineFailed(f"engine_error: {problem.code}"))

    async def _flush_requests(self, machine: CallMachine) -> None:
        engine = self._engine
        if engine is None:
            if not self._failover.switching:  # else kept for the failover engine
                self._requests.drop_all()
            return
        await self._requests.flush(
            engine, language=machine.captured.get(LANGUAGE_FIELD), may_continue=machine.triage_open
        )

    # ------------------------------------------------------------------ the engine reader

    async def _read_engine(self, engine: TriageEngine, engine_scope: trio.CancelScope) -> None:
        playback = self._playback
        try:
            async for event in engine.events(playback.play):
                if isinstance(event, ResponseStarted):
                    playback.on_response_started(event.response_id, event.tag)
                elif isinstance(event, ResponseFinished):
                    playback.on_response_finished(event.response_id, event.tag)
                elif isinstance(event, CallerSpeechStarted):
                    self._post(ev.CallerStartedSpeaking())
                    await playback.on_caller_speech(engine)
                elif isinstance(event, CallerTranscript):
                    self.log.debug("caller said", chars=len(event.text))
                    self._post(ev.CallerSpoke(event.text))
                elif isinstance(event, AgentTranscript):
                    self.log.debug("agent said", chars=len(event.text))
                if isinstance(event, _ENGINE_NOTICES):  # decided by the driver
                    self._post(event)
            if self._engine_lost is None:
                self._engine_lost = "engine_dropped"
        finally:
            # The engine's connection ended (or we are leaving): nothing keeps its block open.
            engine_scope.cancel()

    # ------------------------------------------------------------------ the media reader

    async def _read_media(self) -> None:
        async with trio.open_nursery() as nursery:
            if self.deps.media_silence_s > 0:
                nursery.start_soon(self._watch_media_silence, nursery.cancel_scope)
            await self.socket.serve(self._intake.on_frame)
            nursery.cancel_scope.cancel()
        self._post(ev.MediaClosed())

    async def _watch_media_silence(self, reader_scope: trio.CancelScope) -> None:
        """Twilio sends a frame every 20 ms while the call is up: none for `media_silence_s` means the
        stream's peer is gone without a close. The call then ends as on an engine failure (the machine
        decides where it goes), and the media reader stops waiting for the dead stream."""
        silence_s = self.deps.media_silence_s
        frames_seen, last_frame_at = self._intake.frames_received, trio.current_time()
        while True:
            await trio.sleep(silence_s / _SILENCE_LOOKS)
            now = trio.current_time()
            if self._intake.frames_received != frames_seen:
                frames_seen, last_frame_at = self._intake.frames_received, now
            elif now - last_frame_at >= silence_s:
                break
        if self._close_media_requested:
            return  # we are closing the stream ourselves: Twilio requests the action URL on its close
        self.media_went_silent = True
        self.deps.metrics.media_streams_silent.inc()
        self._notes.append(f"{MEDIA_SILENT}: no Media Stream message for {silence_s:g} s")
        self.log.warning("the Media Stream went silent: its peer is gone", seconds=silence_s)
        self._post(ev.EngineFailed(MEDIA_SILENT))
        reader_scope.cancel()  # the stream is closed for this call: MediaClosed follows

    async def _move_live_call(self) -> None:
        move = self.deps.move_live_call
        if move is None:
            self._notes.append("live call not moved: no way to reach Twilio's REST API")
            return
        try:
            self._notes.append(await move(self.triage_pass))
        except Exception as error:  # a bug in the hand-over must not skip the record
            self.log.exception("moving the live call failed")
            self._notes.append(f"live call not moved: {type(error).__name__}")

    def _listening(self) -> bool:
        # After the decision the caller is no longer heard: the agent must not answer again.
        return self.machine is not None and self.machine.triage_open

    def _hearing(self) -> bool:
        # Over the handoff line the engine still hears the caller, only to notice them talking over it.
        return self._listening() or self._playback.handoff_playing
