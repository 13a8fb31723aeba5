"""A call's life as a finite-state machine: greeting → capture → classify → dispatch → teardown → ended.

The table below is the whole shape of a call; `diagrams/call.mmd` is drawn from it. Callbacks are
named after what they decide. The machine is synchronous and pure: events in, effects out, time
from an injected clock. Late or illegal events are absorbed and written to the trail, never raised.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from transitions import Machine

from machines import events as ev
from machines.decision import ABANDONED, DecisionReason, DispatchDecision
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
from machines.policy import LANGUAGE_FIELD, CallHistory, TriagePolicy

STATES = ["greeting", "capture", "classify", "dispatch", "teardown", "ended"]
TRIAGE_OPEN = ["greeting", "capture"]  # states in which the caller is still being triaged

# trigger, source(s), destination, conditions, callbacks run before the state changes
TRANSITIONS: list[dict] = [
    dict(trigger="greeting_done", source="greeting", dest="capture"),
    dict(trigger="propose", source=TRIAGE_OPEN, dest="classify"),
    dict(trigger="accept", source="classify", dest="dispatch",
         conditions=["intent_is_known", "confident_enough", "required_fields_present"],
         before="decide_proposed_route"),
    dict(trigger="clarify", source="classify", dest="capture",
         conditions=["clarification_left"], before="ask_for_what_is_missing"),
    dict(trigger="give_up", source="classify", dest="dispatch", before="decide_fallback_for_failed_guard"),
    dict(trigger="expire_budget", source=TRIAGE_OPEN, dest="dispatch", before="decide_fallback_for_budget"),
    dict(trigger="fail_engine", source=TRIAGE_OPEN, dest="dispatch", before="decide_fallback_for_engine"),
    dict(trigger="refuse_language", source=TRIAGE_OPEN, dest="dispatch", conditions=["language_unsupported"],
         before="decide_human_for_language"),
    dict(trigger="finish_handoff", source="dispatch", dest="teardown"),
    dict(trigger="hang_up", source=[*TRIAGE_OPEN, "dispatch"], dest="teardown"),
    dict(trigger="finish", source="teardown", dest="ended", conditions=["both_streams_closed"]),
]

STATE_CALLBACKS = {
    "dispatch": "announce_handoff",
    "teardown": "close_streams_in_order",
    "ended": "report_finished",
}


def build_state_machine(model_class: type | None = None, machine_class: type[Machine] = Machine, **kwargs) -> Machine:
    """The one transitions.Machine shared by every call (and, with GraphMachine, by the diagram)."""
    # note_state first: a state left again from its own on_enter callback is still on the path.
    states = [
        {"name": name, "on_enter": ["note_state", *([STATE_CALLBACKS[name]] if name in STATE_CALLBACKS else [])]}
        for name in STATES
    ]
    return machine_class(
        model=None,
        states=states,
        transitions=TRANSITIONS,
        initial="greeting",
        auto_transitions=False,
        ignore_invalid_triggers=True,
        **kwargs,
    )


@dataclass(frozen=True, slots=True)
class TrailEntry:
    at: float
    event: str
    state_before: str
    state_after: str
    note: str = ""


class CallMachine:
    """One call's triage state. Created and disposed of by `CallFlow`."""

    state: str  # set by transitions

    def __init__(self, call_sid: str, policy: TriagePolicy, history: CallHistory, clock: Callable[[], float]):
        self.call_sid = call_sid
        self.policy = policy
        self.history = history
        self.clock = clock
        self.started_at = clock()
        self.budget_deadline = self.started_at + policy.budget_s
        self.handoff_deadline: float | None = None
        self.captured: dict[str, str] = {}
        self.caller_turns: list[str] = []
        self.proposal: ev.IntentProposed | None = None
        self.clarifications = 0
        self.decision: DispatchDecision | None = None
        self.realtime_open = False
        self.engine_broken = False
        self.language_not_served = False  # the engine said it cannot speak the caller's language
        self.media_open = True
        self.close_realtime_sent = False
        self.close_media_sent = False
        self.trail: list[TrailEntry] = []
        # Every state entered, in order, including those passed through within one event (classify).
        self.states_visited: list[str] = [STATES[0]]
        self.faults = 0
        self._effects: list[CallEffect] = []

    # ------------------------------------------------------------------ driving

    def start(self) -> list[CallEffect]:
        """Effects owed at the start of the call: a wake-up when the triage budget runs out."""
        return [WakeAt(self.budget_deadline)]

    def handle(self, event: ev.CallEvent) -> list[CallEffect]:
        """Apply one event; return the effects the runner must carry out, in order. Never raises."""
        before = self.state
        note = ""
        try:
            handler = _HANDLERS.get(type(event))
            if handler is None:
                note = "absorbed: unknown event"
            elif self.state == "ended":
                note = "absorbed: the call has ended"
            else:
                self._expire_budget_if_due()
                note = handler(self, event) or ""
        except Exception as error:  # a bug must not hang up on the caller; the trail keeps it
            self.faults += 1
            note = f"internal_error: {type(error).__name__}: {error}"
        self.trail.append(TrailEntry(self.clock() - self.started_at, type(event).__name__, before, self.state, note))
        effects, self._effects = self._effects, []
        return effects

    @property
    def is_finished(self) -> bool:
        return self.state == "ended"

    @property
    def triage_open(self) -> bool:
        """Whether the caller is still being triaged: heard, answered, and no decision made yet."""
        return self.state in TRIAGE_OPEN

    @property
    def outcome(self) -> str:
        return self.decision.route_kind if self.decision else ABANDONED

    # ------------------------------------------------------------------ event handlers

    def _on_realtime_opened(self, _: ev.RealtimeOpened) -> str | None:
        self.realtime_open = True
        self.close_realtime_sent = False
        if self.state == "greeting":
            self._emit(Speak(Line.GREETING))
            return None
        if self.state == "teardown":
            self.close_streams_in_order()
            return "late: closed again"
        return "absorbed"

    def _on_greeting_played(self, _: ev.GreetingPlayed) -> str | None:
        return None if self.greeting_done() else "absorbed"

    def _on_caller_spoke(self, event: ev.CallerSpoke) -> str | None:
        if self.state not in TRIAGE_OPEN:
            return "absorbed"
        self.caller_turns.append(event.text)
        return None

    def _on_details_captured(self, event: ev.DetailsCaptured) -> str | None:
        if self.state not in TRIAGE_OPEN:
            self._answer_tool(event.tool_call_id, "ignored", "the call has already been handed on")
            return "absorbed"
        self.captured.update(event.fields)
        first_effect = len(self._effects)
        if LANGUAGE_FIELD in event.fields and self.refuse_language():
            self._answer_tool(event.tool_call_id, "handed_to_fallback", "unsupported_language", position=first_effect)
            return f"unsupported language {event.fields[LANGUAGE_FIELD]}"
        self._answer_tool(event.tool_call_id, "recorded", ", ".join(sorted(event.fields)))
        return None

    def _on_intent_proposed(self, event: ev.IntentProposed) -> str | None:
        if self.state not in TRIAGE_OPEN:
            self._answer_tool(event.tool_call_id, "ignored", "the call has already been handed on")
            return "absorbed"
        self.proposal = event
        first_effect = len(self._effects)
        self.propose()
        if self.accept():
            outcome, detail = "accepted", self.decision.route if self.decision else ""
        elif self.clarify():
            outcome, detail = "clarify", self._unmet_guard()
        else:
            self.give_up()
            outcome, detail = "handed_to_fallback", self._unmet_guard()
        # The model hears what became of its proposal before it is asked to say anything more.
        self._answer_tool(event.tool_call_id, outcome, detail, position=first_effect)
        return None

    def _on_language_not_served(self, event: ev.LanguageNotServed) -> str | None:
        self.captured.setdefault(LANGUAGE_FIELD, event.language)
        self.language_not_served = True
        return None if self.refuse_language() else "absorbed"

    def _on_timer_fired(self, _: ev.TimerFired) -> str | None:
        # The budget was already checked on the way in; here only the handoff line's own timeout.
        if self.state == "dispatch" and self.handoff_deadline is not None and self.clock() >= self.handoff_deadline:
            self.finish_handoff()
            return "handoff line timed out"
        return None

    def _on_handoff_played(self, _: ev.HandoffPlayed) -> str | None:
        return None if self.finish_handoff() else "absorbed"

    def _on_engine_failed(self, event: ev.EngineFailed) -> str | None:
        self.engine_broken = True
        if self.fail_engine():
            return event.reason
        if self.state == "dispatch":  # the handoff line cannot finish playing now
            self.finish_handoff()
            return event.reason
        return f"absorbed: {event.reason}"

    def _on_caller_hung_up(self, _: ev.CallerHungUp) -> str | None:
        was_open = self.media_open
        self.media_open = False
        if self.hang_up():
            return None
        if self.state == "teardown":
            self.close_streams_in_order()
        return None if was_open else "absorbed"

    def _on_realtime_closed(self, _: ev.RealtimeClosed) -> str | None:
        was_open = self.realtime_open
        self.realtime_open = False
        if self.state in TRIAGE_OPEN:
            self.engine_broken = True
            self.fail_engine()
            return "realtime dropped"
        if self.state == "dispatch":
            self.finish_handoff()
            return None
        if self.state == "teardown":
            self.close_streams_in_order()
            return None
        return None if was_open else "absorbed"

    def _on_media_closed(self, _: ev.MediaClosed) -> str | None:
        if self.state in TRIAGE_OPEN or self.state == "dispatch":
            # The stream closed without us asking: the caller is gone.
            return self._on_caller_hung_up(ev.CallerHungUp())
        was_open = self.media_open
        self.media_open = False
        if self.state == "teardown":
            self.close_streams_in_order()
            return None
        return None if was_open else "absorbed"

    # ------------------------------------------------------------------ conditions

    def intent_is_known(self) -> bool:
        return self.proposal is not None and self.proposal.intent in self.policy.intents

    def confident_enough(self) -> bool:
        return self.proposal is not None and self.proposal.confidence >= self.policy.min_confidence

    def required_fields_present(self) -> bool:
        return not self._missing_fields()

    def clarification_left(self) -> bool:
        return self.clarifications < self.policy.max_clarifications

    def language_unsupported(self) -> bool:
        if self.language_not_served:
            return True
        supported = self.policy.supported_languages
        language = self.captured.get(LANGUAGE_FIELD)
        return bool(supported) and language is not None and language not in supported

    def both_streams_closed(self) -> bool:
        return not self.realtime_open and not self.media_open

    # ------------------------------------------------------------------ decisions

    def decide_proposed_route(self) -> None:
        assert self.proposal is not None
        self._decide(self.policy.intents[self.proposal.intent], DecisionReason.ACCEPTED)

    def decide_fallback_for_failed_guard(self) -> None:
        reason = {
            "unknown_intent": DecisionReason.UNKNOWN_INTENT,
            "low_confidence": DecisionReason.LOW_CONFIDENCE,
        }.get(self._unmet_guard(), DecisionReason.MISSING_FIELDS)
        self._decide(self.policy.fallback_route, reason)

    def decide_fallback_for_budget(self) -> None:
        self._decide(self.policy.fallback_route, DecisionReason.BUDGET_EXPIRED)

    def decide_fallback_for_engine(self) -> None:
        self._decide(self.policy.fallback_route, DecisionReason.ENGINE_FAILED)

    def decide_human_for_language(self) -> None:
        # A person, not a guessed intent: the AI cannot serve this caller in their language.
        self._decide(self.policy.human_route, DecisionReason.UNSUPPORTED_LANGUAGE)

    def ask_for_what_is_missing(self) -> None:
        self.clarifications += 1
        missing = self._missing_fields() if self.intent_is_known() and self.confident_enough() else ()
        self._speak(Speak(Line.ASK_DETAILS, missing) if missing else Speak(Line.CLARIFY))

    def _decide(self, route_name: str, reason: DecisionReason) -> None:
        """The single place a decision is made: at most once, and never into a node already visited."""
        if self.decision is not None:
            return
        route = self.policy.routes[route_name]
        proposed = None
        if self.history.forbids(route.studio_node_for(self.captured.get(LANGUAGE_FIELD))):
            proposed, route_name, reason = route_name, self.policy.human_route, DecisionReason.REENTRY_REFUSED
            route = self.policy.routes[route_name]
        proposal = self.proposal
        self.decision = DispatchDecision(
            route=route_name,
            route_kind=route.kind,
            reason=reason,
            intent=proposal.intent if proposal else None,
            confidence=proposal.confidence if proposal else None,
            summary=proposal.summary if proposal else "",
            captured=dict(self.captured),
            proposed_route=proposed,
            decided_after_s=self.clock() - self.started_at,
        )
        self._emit(PersistDecision(self.decision))

    # ------------------------------------------------------------------ state entry

    def announce_handoff(self) -> None:
        if self.realtime_open and not self.engine_broken:
            self.handoff_deadline = self.clock() + self.policy.handoff_line_timeout_s
            self._emit(Speak(Line.HANDOFF))
            self._emit(WakeAt(self.handoff_deadline))
        else:
            self.finish_handoff()

    def close_streams_in_order(self) -> None:
        """Realtime first, then the Media Stream; the call ends when both are closed."""
        if self.realtime_open:
            if not self.close_realtime_sent:
                self.close_realtime_sent = True
                self._emit(CloseRealtime())
        elif self.media_open:
            if not self.close_media_sent:
                self.close_media_sent = True
                self._emit(CloseMedia(self.decision))
        else:
            self.finish()

    def report_finished(self) -> None:
        self._emit(CallFinished(self.outcome))

    def note_state(self) -> None:
        self.states_visited.append(self.state)

    # ------------------------------------------------------------------ helpers

    def _expire_budget_if_due(self) -> None:
        if self.state in TRIAGE_OPEN and self.clock() >= self.budget_deadline:
            self.expire_budget()

    def _missing_fields(self) -> tuple[str, ...]:
        if not self.intent_is_known():
            return ()
        route = self.policy.routes[self.policy.intents[self.proposal.intent]]  # type: ignore[union-attr]
        return tuple(sorted(name for name in route.required_fields if not self.captured.get(name)))

    def _unmet_guard(self) -> str:
        if not self.intent_is_known():
            return "unknown_intent"
        if not self.confident_enough():
            return "low_confidence"
        missing = self._missing_fields()
        return f"missing_fields: {', '.join(missing)}" if missing else ""

    def _answer_tool(self, tool_call_id: str | None, outcome: str, detail: str, position: int | None = None) -> None:
        if tool_call_id is None or not self.realtime_open:
            return
        answer = AnswerTool(tool_call_id, outcome, detail)
        if position is None:
            self._emit(answer)
        else:
            self._effects.insert(position, answer)

    def _speak(self, line: Speak) -> None:
        # Nobody can speak without a working engine; the caller then hears the next route instead.
        if self.realtime_open and not self.engine_broken:
            self._emit(line)

    def _emit(self, effect: CallEffect) -> None:
        self._effects.append(effect)


_HANDLERS: dict[type, Callable[[CallMachine, object], str | None]] = {
    ev.RealtimeOpened: CallMachine._on_realtime_opened,
    ev.GreetingPlayed: CallMachine._on_greeting_played,
    ev.LanguageNotServed: CallMachine._on_language_not_served,
    ev.CallerSpoke: CallMachine._on_caller_spoke,
    ev.DetailsCaptured: CallMachine._on_details_captured,
    ev.IntentProposed: CallMachine._on_intent_proposed,
    ev.TimerFired: CallMachine._on_timer_fired,
    ev.HandoffPlayed: CallMachine._on_handoff_played,
    ev.EngineFailed: CallMachine._on_engine_failed,
    ev.CallerHungUp: CallMachine._on_caller_hung_up,
    ev.RealtimeClosed: CallMachine._on_realtime_closed,
    ev.MediaClosed: CallMachine._on_media_closed,
}


class CallFlow:
    """Owns the shared state machine; hands out one `CallMachine` per call and takes it back.

    Sharing one `transitions.Machine` (add_model/remove_model) keeps per-call cost low.
    """

    def __init__(self, policy: TriagePolicy, clock: Callable[[], float]):
        self.policy = policy
        self.clock = clock
        self._machine = build_state_machine()

    def start_call(self, call_sid: str, history: CallHistory | None = None) -> CallMachine:
        call = CallMachine(call_sid, self.policy, history or CallHistory(), self.clock)
        self._machine.add_model(call)
        return call

    def dispose(self, call: CallMachine) -> None:
        self._machine.remove_model(call)

    @property
    def active_calls(self) -> int:
        return len(self._machine.models)
