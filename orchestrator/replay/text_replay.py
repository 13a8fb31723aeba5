"""Replaying one past call through the triage: the same engine interface and call machine as a live call,
with text instead of audio.

    past call's caller turns ──► engine.send_caller_text ──► engine events
                                                              │ tool calls
                                          call machine ◄──────┘ (interpret_tool_call, as live)
                                              │ answers, lines
                                              └──► request gate ──► engine.send_tool_output / speak

No Media Stream, no marks: the greeting counts as heard at once, and lines are asked for as text. Each
caller turn is answered by one engine response (and the responses it leads to); the replay goes on to
the next turn when the engine is quiet, and stops at the machine's decision. A past caller who ran out of
words before a decision leaves the machine where a live caller's silence would: the call's clock moves to
the triage budget, and the machine decides as it would at the budget. What is compared is the decision:
a call the machine would send to the fallback route counts as that, not as its best guess.
The engine is a connector's text engine (`connect_text`, where its capabilities declare text input), and
the requests to it go through the live call's gate (`orchestrator.call.engine_requests`).
"""
from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import trio

from machines import (
    LANGUAGE_FIELD,
    AnswerTool,
    CallFlow,
    CallMachine,
    DispatchDecision,
    Line,
    Speak,
)
from machines import events as ev
from orchestrator.call import EngineRequestGate
from orchestrator.composition import call_flow
from orchestrator.config import RoutingConfig
from orchestrator.engines import (
    EngineCall,
    EngineConnector,
    EngineEvent,
    EngineProblem,
    EngineUnavailable,
    ResponseFinished,
    ResponseStarted,
    TextEngine,
    ToolCallReady,
    ToolRejected,
    interpret_tool_call,
    tool_output,
)
from orchestrator.replay.corpus import CorpusCall, caller_turn_texts

CALLER_WINDOW_MS = 30_000  # the turns a caller says before a front desk would have decided
TURN_TIMEOUT_S = 30.0  # an engine silent this long after a caller turn is broken
MAX_BUDGET_WAKES = 3  # the budget, its one extension for details, and a spare
# Lines a replay does not ask for: the greeting counts as heard, and the replay stops at the decision.
_UNSAID_LINES = frozenset({Line.GREETING, Line.HANDOFF})


@dataclass(frozen=True, slots=True)
class ReplayOutcome:
    call_id: str
    words: str  # the caller turns replayed, joined
    decision: DispatchDecision | None
    proposed_intent: str | None  # the engine's last proposal, whatever the machine made of it
    proposed_confidence: float | None
    decide_ms: float | None  # first caller turn sent → decision
    problem: str | None = None  # why the replay could not finish (engine refused, timed out, failed)
    turns_sent: int = 0

    @property
    def intent(self) -> str:
        """The intent the call would have been routed on: the accepted one, or why there is none."""
        decided = self.decision
        if decided is None:
            return f"(no decision: {self.problem or 'the caller said nothing the engine acted on'})"
        on_own_route = decided.routed_on_intent and decided.proposed_route is None
        if decided.intent and (not decided.is_fallback or on_own_route):
            return decided.intent
        missing = f", missing {', '.join(decided.missing_fields)}" if decided.missing_fields else ""
        return f"({'person' if decided.routed_on_intent else 'fallback'}: {decided.reason}{missing})"


def caller_turns(call: CorpusCall, *, use_asr: bool = False, within_ms: int = CALLER_WINDOW_MS) -> list[str]:
    """The caller's turns that start in the window (cleaned; empty ones dropped)."""
    return caller_turn_texts(call, within_ms=within_ms, use_asr=use_asr)


class _ReplayClock:
    """Trio's clock, moved forward when the replay skips the silence after the past caller's last turn."""

    def __init__(self) -> None:
        self.skipped = 0.0

    def now(self) -> float:
        return trio.current_time() + self.skipped

    def skip_to(self, moment: float) -> None:
        self.skipped += max(0.0, moment - self.now())


@dataclass
class _Replay:
    """One call's driver: the machine on one side, the engine on the other (as CallSession's driver)."""

    config: RoutingConfig
    machine: CallMachine
    engine: TextEngine
    events: trio.MemoryReceiveChannel[EngineEvent]
    requests: EngineRequestGate = field(init=False)
    proposal: tuple[str, float] | None = None

    def __post_init__(self) -> None:
        self.requests = EngineRequestGate(self.config, request_prefix="replay_")

    @property
    def decided(self) -> bool:
        return self.machine.decision is not None

    def handle(self, event: ev.CallEvent) -> None:
        # The decision is read from the machine: nothing is stored in a replay.
        for effect in self.machine.handle(event):
            if isinstance(effect, AnswerTool):
                self.requests.answer_tool(effect.tool_call_id, tool_output(effect))
            elif isinstance(effect, Speak) and effect.line not in _UNSAID_LINES:
                self.requests.ask_line(effect)

    async def until_quiet(self) -> None:
        """Handle engine events until its responses are over and nothing is left to ask of it."""
        with trio.fail_after(TURN_TIMEOUT_S):
            while not self.decided:
                event = await self.events.receive()
                if isinstance(event, ResponseStarted):
                    self.requests.on_response_started()
                elif isinstance(event, ToolCallReady):
                    self.on_tool_call(event)
                elif isinstance(event, EngineProblem):
                    if event.fatal:
                        self.handle(ev.EngineFailed(f"engine_error: {event.code}"))
                        return
                    self.requests.on_harmless_problem(event)
                elif isinstance(event, ResponseFinished):
                    self.requests.on_response_finished(event.tag)
                    if not await self.flush():
                        return

    async def until_budget(self, clock: _ReplayClock) -> None:
        """The caller says nothing more: the machine's budget (and any extension it grants) runs out."""
        for _ in range(MAX_BUDGET_WAKES):
            if self.decided or not self.machine.triage_open:
                return
            clock.skip_to(self.machine.budget_deadline)
            self.handle(ev.TimerFired())
            if not self.decided and await self.flush():
                await self.until_quiet()

    def on_tool_call(self, call: ToolCallReady) -> None:
        interpreted = interpret_tool_call(self.config, call.name, call.arguments_json, call.call_id)
        if isinstance(interpreted, ToolRejected):
            self.requests.answer_tool(interpreted.call_id, interpreted.output)
            return
        if isinstance(interpreted, ev.IntentProposed):
            self.proposal = (interpreted.intent, interpreted.confidence)
        self.handle(interpreted)

    async def flush(self) -> bool:
        """Send what the machine owes the engine; True when that asked for another response."""
        if self.decided:
            return False
        machine = self.machine
        return await self.requests.flush(
            self.engine, language=machine.captured.get(LANGUAGE_FIELD), may_continue=machine.triage_open
        )


async def replay_call(connector: EngineConnector, config: RoutingConfig, flow: CallFlow, call: CorpusCall,
                      *, use_asr: bool = False) -> ReplayOutcome:
    """Replay one past call; never raises for an engine that fails (the outcome says what happened)."""
    turns = caller_turns(call, use_asr=use_asr)
    call_sid = "CA" + hashlib.sha256(call.call_id.encode()).hexdigest()[:32]
    clock = _ReplayClock()
    machine = flow.start_call(call_sid, clock=clock.now)
    problem = None
    started: float | None = None
    decided_at: float | None = None
    sent = 0
    replay: _Replay | None = None
    try:
        async with connector.connect_text(EngineCall(call_sid)) as engine:
            events_in, events_out = trio.open_memory_channel[EngineEvent](1000)
            async with trio.open_nursery() as nursery:

                async def pump() -> None:
                    async with events_in:
                        async for event in engine.events():
                            await events_in.send(event)

                nursery.start_soon(pump)
                replay = _Replay(config, machine, engine, events_out)
                replay.handle(ev.RealtimeOpened())
                replay.handle(ev.GreetingPlayed())
                started = time.perf_counter()
                for turn in turns:
                    if replay.decided:
                        break
                    replay.handle(ev.CallerSpoke(turn))
                    await engine.send_caller_text(turn)
                    sent += 1
                    try:
                        await replay.until_quiet()
                    except trio.TooSlowError:
                        problem = f"the engine did not answer within {TURN_TIMEOUT_S:g} s"
                        break
                    except (trio.EndOfChannel, trio.ClosedResourceError):
                        problem = "the engine closed the session"
                        break
                if replay.decided:
                    decided_at = time.perf_counter()
                elif problem is None:
                    await replay.until_budget(clock)
                nursery.cancel_scope.cancel()
    except EngineUnavailable as unavailable:
        problem = f"engine unavailable: {unavailable.reason}"
    finally:
        flow.dispose(machine)
    proposal = replay.proposal if replay is not None else None
    if decided_at is not None and started is not None:
        decide_ms: float | None = (decided_at - started) * 1000
    else:  # decided at the budget (or not at all): the call's own clock says when
        decide_ms = machine.decision.decided_after_s * 1000 if machine.decision is not None else None
    return ReplayOutcome(
        call.call_id, " ".join(turns), machine.decision,
        proposal[0] if proposal else None, proposal[1] if proposal else None,
        decide_ms, problem, sent,
    )


async def replay_calls(connector: EngineConnector, config: RoutingConfig, calls: Sequence[CorpusCall], *,
                       use_asr: bool = False, concurrency: int = 8,
                       on_done: Callable[[ReplayOutcome], None] | None = None) -> list[ReplayOutcome]:
    """Replay calls `concurrency` at a time; outcomes in the calls' order. The connector's engines must
    take text (`capabilities.text_input`)."""
    if not connector.capabilities.text_input:
        raise ValueError(f"the {connector.name} engine takes no text input: past calls cannot be replayed on it")
    flow = call_flow(config)
    outcomes: list[ReplayOutcome | None] = [None] * len(calls)
    limit = trio.CapacityLimiter(max(1, concurrency))

    async def one(index: int, call: CorpusCall) -> None:
        async with limit:
            outcome = await replay_call(connector, config, flow, call, use_asr=use_asr)
        outcomes[index] = outcome
        if on_done is not None:
            on_done(outcome)

    async with trio.open_nursery() as nursery:
        for index, call in enumerate(calls):
            nursery.start_soon(one, index, call)
    return [outcome for outcome in outcomes if outcome is not None]
