"""A call's life as a finite-state machine: greeting → capture → classify → dispatch → teardown → ended.

The table below is the whole shape of a call; `diagrams/call.mmd` is drawn from it. Callbacks are
named after what they decide. The machine is synchronous and pure: events in, effects out, time
from an injected clock. Late or illegal events are absorbed and written to the trail, never raised.

Routing policy, so that no caller is stranded:
- A proposal is trusted when its intent is known and its confidence reaches `min_confidence`. Its route
  is taken once its hard fields (`RouteRule.required_fields`) are there and its soft ones
  (`wanted_fields`) are there or can no longer be asked for; the decision names what is missing.
- A field is asked for at most `MAX_ASKS_PER_FIELD` times; then the caller is taken not to have it.
- An unknown intent is clarified once; after that, a proposal the machine cannot trust decides at once. A
  clarifying question is not asked with less than `clarify_needs_s` of the budget left: the call is decided.
- When triage ends without an accepted proposal (budget, engine failure, a guard that cannot be met),
  a trusted proposal's route is still taken if it lacks only soft fields; one that lacks a hard field
  goes to the human route; with no trusted proposal, the fallback route.
- An urgent intent proposed below `urgent_min_confidence` marks the call urgent (below) but is not taken yet:
  the need is clarified once first, while a clarification and `clarify_needs_s` of the budget are left.
- The caller's turn: the budget's own end (not time it gave to an answer) coming while the agent asks
  something whose answer the budget would hear out (details, a yes, the need again), or less than
  `answer_start_s` after it asked, with the caller not yet answering, waits once for them to begin, until
  `answer_start_s` after the agent's last words, never past the details time (AgentStartedSpeaking /
  AgentStoppedSpeaking tell the machine when the agent is heard).
- Urgent: a call becomes urgent at any proposal of an urgent intent with a confidence of at least
  `min_confidence` (a key press counts), and stays urgent whatever is proposed after; the latest such
  proposal (`urgent_proposal`) names its urgent intent. An urgent call that fails in any way (budget,
  engine, a guard, re-entry, language) goes to its urgent intent's route when that reaches a person
  (flex, sip) and has its hard fields, else to the human route, and the decision names the urgent
  proposal. An accepted route never puts it into voicemail, nor into a resolve route (a hang-up) other
  than its urgent intent's own: it goes where a failure would.
- Keypad entry: while the agent asks for a keyable field (phone, date), keys type its value instead of
  choosing a menu intent; "#" or a pause ends it, the runner checks it, and a valid value is captured
  confirmed. Then the fields still asked for are asked, or the proposal is weighed again as if the engine
  had proposed it once more (so a typed number can complete the details).
- Confirmation: a caller-ID value is unconfirmed until the caller confirms it (asked once with the other
  details when the route wants it, up to twice when it needs it); a spoken value of a read-back field is
  captured but unconfirmed until the caller says yes. The decision lists both in `unconfirmed_fields`.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from transitions import Machine

from machines import events as ev
from machines.decision import ABANDONED, DecisionReason, DispatchDecision
from machines.effects import (
    AnswerTool,
    CallEffect,
    CallFinished,
    CheckTypedEntry,
    CloseMedia,
    CloseRealtime,
    Line,
    PersistDecision,
    Speak,
    WakeAt,
)
from machines.policy import (
    KEYPAD_CLEAR,
    KEYPAD_DONE,
    LANGUAGE_FIELD,
    MAX_ASKS_PER_FIELD,
    MAX_TYPED_DIGITS,
    PERSON_ROUTE_KINDS,
    CallHistory,
    RouteRule,
    TriagePolicy,
)

STATES = ["greeting", "capture", "classify", "dispatch", "teardown", "ended"]
TRIAGE_OPEN = ["greeting", "capture"]  # states in which the caller is still being triaged
# Past the grace, how often the machine looks again for what the caller was still saying when it ended.
HEARD_OUT_STEP_S = 2.0

# trigger, source(s), destination, conditions, callbacks run before the state changes
TRANSITIONS: list[dict[str, Any]] = [
    dict(trigger="greeting_done", source="greeting", dest="capture"),
    dict(trigger="propose", source=TRIAGE_OPEN, dest="classify"),
    dict(trigger="accept", source="classify", dest="dispatch",
         conditions=["intent_is_known", "confident_enough", "urgency_is_clear", "required_fields_present",
                     "wanted_fields_settled"],
         before="decide_proposed_route"),
    dict(trigger="clarify", source="classify", dest="capture",
         conditions=["clarification_left", "clarifying_can_help"], before="ask_for_what_is_missing"),
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


def build_state_machine(model_class: type | None = None, machine_class: type[Machine] = Machine, **kwargs: Any) -> Machine:
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

    if TYPE_CHECKING:  # transitions adds a method per trigger of TRANSITIONS; each says whether it fired
        def accept(self) -> bool: ...
        def clarify(self) -> bool: ...
        def expire_budget(self) -> bool: ...
        def fail_engine(self) -> bool: ...
        def finish(self) -> bool: ...
        def finish_handoff(self) -> bool: ...
        def give_up(self) -> bool: ...
        def greeting_done(self) -> bool: ...
        def hang_up(self) -> bool: ...
        def propose(self) -> bool: ...
        def refuse_language(self) -> bool: ...

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
        # The latest trusted proposal of an urgent intent: once set, the call is urgent.
        self.urgent_proposal: ev.IntentProposed | None = None
        self.clarifications = 0
        self.unknown_clarified = False  # an unknown intent was clarified once already
        self.urgency_clarified = False  # an urgent intent proposed below urgent_min_confidence was clarified once
        self.asks: dict[str, int] = {}  # field → times the caller was asked for it
        self.asked_fields: tuple[str, ...] = ()  # asked for by the last line, awaited until the next proposal
        self.unconfirmed: set[str] = set()  # captured from caller ID, not yet confirmed by the caller
        self.unread: set[str] = set()  # spoken values of read-back fields the caller has not confirmed
        self.last_detail_at: float | None = None  # when the caller last gave a detail (engine or keypad)
        self.last_speech_at: float | None = None  # when the caller's voice last started
        self.last_key_at: float | None = None  # when the caller last pressed a key typing a value
        self.last_heard_at: float | None = None  # when the engine last reported what the caller said
        self.grace_started_at: float | None = None  # when the budget's grace for an answer under way began
        self.last_clarify_at: float | None = None  # when the agent last asked the caller to say their need again
        self.agent_speaking = False  # the agent's words are reaching the caller
        self.agent_started_at: float | None = None  # when the agent's latest words began reaching the caller
        self.agent_quiet_at: float | None = None  # when the caller had heard all the agent said
        self.turn_wait_until: float | None = None  # the budget waits for the caller's turn until then (once)
        self.turn_waited = False  # that wait is over: the caller began, or their turn passed in silence
        # A value being typed on the keypad: its field, the digits so far, and when a pause ends it.
        self.typed_field: str | None = None
        self.typed_digits = ""
        self.typed_deadline: float | None = None
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
        self.last_heard_at = self.clock()
        return None

    def _on_agent_started_speaking(self, _: ev.AgentStartedSpeaking) -> str | None:
        if self.state not in TRIAGE_OPEN:
            return "absorbed"
        self.agent_speaking = True
        self.agent_started_at = self.clock()
        return None

    def _on_agent_stopped_speaking(self, _: ev.AgentStoppedSpeaking) -> str | None:
        if self.state not in TRIAGE_OPEN:
            return "absorbed"
        self.agent_speaking = False
        self.agent_quiet_at = self.clock()
        if self.turn_wait_until is not None:
            self._expire_budget_if_due()  # the caller's turn now starts: its wait ends `answer_start_s` from here
        return None

    def _on_caller_started_speaking(self, _: ev.CallerStartedSpeaking) -> str | None:
        if self.state not in TRIAGE_OPEN:
            return "absorbed"
        self.last_speech_at = self.clock()
        if self.turn_wait_until is not None:
            self._expire_budget_if_due()  # their turn has begun: the rules for an answer under way apply now
        return None

    def _on_details_captured(self, event: ev.DetailsCaptured) -> str | None:
        if self.state not in TRIAGE_OPEN:
            self._answer_tool(event.tool_call_id, "ignored", "the call has already been handed on")
            return "absorbed"
        self.captured.update(event.fields)
        if event.fields or event.confirmed:
            self.last_detail_at = self.clock()
        self.unconfirmed.difference_update(event.fields)  # recorded by the engine: the caller gave or confirmed it
        self.unread.update(name for name in event.fields if name in self.policy.read_back_fields)
        confirmed = {name for name in event.confirmed if self.captured.get(name)}
        self.unread.difference_update(confirmed)
        self.unconfirmed.difference_update(confirmed)
        first_effect = len(self._effects)
        if LANGUAGE_FIELD in event.fields and self.refuse_language():
            self._answer_tool(event.tool_call_id, "handed_to_fallback", "unsupported_language", position=first_effect)
            return f"unsupported language {event.fields[LANGUAGE_FIELD]}"
        self._answer_tool(event.tool_call_id, "recorded", ", ".join(sorted({*event.fields, *confirmed})))
        if (event.fields or confirmed) and self._soft_fields_only_past_budget():
            # The answer heard out past the budget: nothing more will be asked, so the trusted need is taken
            # as it stands, what is missing named (the guards as for any proposal).
            self.propose()
            if not self.accept():
                self.give_up()
            return "answer heard out after the budget"
        return None

    def _on_intent_proposed(self, event: ev.IntentProposed) -> str | None:
        if self.state not in TRIAGE_OPEN:
            self._answer_tool(event.tool_call_id, "ignored", "the call has already been handed on")
            return "absorbed"
        self.proposal = event
        self.asked_fields = ()
        if event.intent in self.policy.urgent_intents and self.confident_enough():
            self.urgent_proposal = event
        first_effect = len(self._effects)
        self.propose()
        unmet = self._unmet_guard()  # as it stands before a question is asked about it
        if self.accept():
            outcome, detail = "accepted", self.decision.route if self.decision else ""
        elif self.clarify():
            outcome, detail = "clarify", unmet
        else:
            self.give_up()
            outcome, detail = "handed_to_fallback", self._unmet_guard()
        # The model hears what became of its proposal before it is asked to say anything more.
        self._answer_tool(event.tool_call_id, outcome, detail, position=first_effect)
        return None

    def _on_key_pressed(self, event: ev.KeyPressed) -> str | None:
        if self.state not in TRIAGE_OPEN:
            return "absorbed"
        typing_into = self.keypad_field
        if typing_into is not None:
            return self._type_key(typing_into, event.digit)
        intent = self.policy.keys.get(event.digit)
        if intent is None:
            return f"absorbed: key {event.digit} is on no intent"
        if self._waiting_for_details():
            return f"absorbed: key {event.digit} while details are asked for"
        self._on_intent_proposed(ev.IntentProposed(intent, 1.0, f"pressed {event.digit} on the keypad"))
        return f"key {event.digit}: {intent}"

    def _on_typed_entry_checked(self, event: ev.TypedEntryChecked) -> str | None:
        if self.state not in TRIAGE_OPEN:
            return "absorbed"
        name = event.field
        if event.value is None:
            if self.asks.get(name, 0) < MAX_ASKS_PER_FIELD and self._speak(Speak(Line.KEYPAD_INVALID, (name,))):
                self.asks[name] = self.asks.get(name, 0) + 1
                self.asked_fields = (name, *(other for other in self.asked_fields if other != name))
                return f"{name}: typed value not valid, asked again"
            self._carry_on_after_typing(name)
            return f"{name}: typed value not valid"
        self.captured[name] = event.value
        self.unconfirmed.discard(name)
        self.unread.discard(name)
        self._carry_on_after_typing(name)
        return f"{name}: typed"

    def _on_caller_number_known(self, event: ev.CallerNumberKnown) -> str | None:
        name = self.policy.caller_id_field
        if name is None or not event.number or self.state not in TRIAGE_OPEN:
            return "absorbed"
        if self.captured.get(name):
            return f"absorbed: {name} already given"
        self.captured[name] = event.number
        self.unconfirmed.add(name)
        return f"{name} from caller ID, unconfirmed"

    def _on_language_not_served(self, event: ev.LanguageNotServed) -> str | None:
        self.captured.setdefault(LANGUAGE_FIELD, event.language)
        self.language_not_served = True
        return None if self.refuse_language() else "absorbed"

    def _on_timer_fired(self, _: ev.TimerFired) -> str | None:
        # The budget was already checked on the way in; here a typed entry's pause and the handoff line's timeout.
        if self.state in TRIAGE_OPEN and self.typed_deadline is not None and self.clock() >= self.typed_deadline:
            return self._end_typed_entry()
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

    def urgency_is_clear(self) -> bool:
        """An urgent intent is sure enough to be taken, or its need can no longer be clarified."""
        return not self._urgency_in_doubt()

    def _unsure_urgent_proposal(self) -> bool:
        """The proposal is an urgent intent, trusted (else the low-confidence guard applies), but below
        `urgent_min_confidence`."""
        proposal = self.proposal
        return (
            proposal is not None and proposal.intent in self.policy.urgent_intents and self.confident_enough()
            and proposal.confidence < self.policy.urgent_min_confidence
        )

    def _urgency_in_doubt(self) -> bool:
        """An unsure urgent proposal whose need may still be asked about."""
        return (
            self._unsure_urgent_proposal() and not self.urgency_clarified
            and self.clarification_left() and self._time_to_clarify()
        )

    def _unsure_urgency_asked_about(self) -> bool:
        """The need of an unsure urgent proposal was asked about, and nothing newer was proposed."""
        return self.urgency_clarified and self._unsure_urgent_proposal()

    def _time_to_clarify(self) -> bool:
        # The budget itself, not the time given to hear an answer out, bounds a new question.
        return self.started_at + self.policy.budget_s - self.clock() >= self.policy.clarify_needs_s

    def required_fields_present(self) -> bool:
        route = self._trusted_route(self.proposal)
        return route is not None and not self._missing_required(route)

    def wanted_fields_settled(self) -> bool:
        """No soft field of the proposed route is left to ask for: each is given, or asked for enough."""
        route = self._trusted_route(self.proposal)
        if route is None or not self.clarification_left() or self._soft_fields_only_past_budget():
            return True
        return all(self.asks.get(name, 0) >= MAX_ASKS_PER_FIELD for name in self._missing_wanted(route))

    def clarification_left(self) -> bool:
        return self.clarifications < self.policy.max_clarifications

    def clarifying_can_help(self) -> bool:
        if self._urgency_in_doubt():
            return True
        if self._trusted_route(self.proposal) is None:
            # After one clarification of an unknown need, decide; and never ask what cannot be answered in time.
            return not self.unknown_clarified and self._time_to_clarify()
        return bool(self._fields_to_ask())

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
        self._decide_when_triage_stops(reason)

    def decide_fallback_for_budget(self) -> None:
        self._decide_when_triage_stops(DecisionReason.BUDGET_EXPIRED)

    def decide_fallback_for_engine(self) -> None:
        self._decide_when_triage_stops(DecisionReason.ENGINE_FAILED)

    def decide_human_for_language(self) -> None:
        # A person, not a guessed intent: the AI cannot serve this caller in their language.
        self._decide(self.policy.human_route, DecisionReason.UNSUPPORTED_LANGUAGE)

    def ask_for_what_is_missing(self) -> None:
        doubt = self._urgency_in_doubt()
        self.clarifications += 1
        fields = () if doubt else self._fields_to_ask()
        if fields:
            self._extend_budget_for_details()
            confirm = tuple(name for name in fields if name in self.unconfirmed)
            if self._speak(Speak(Line.ASK_DETAILS, fields, confirm)):
                for name in fields:
                    self.asks[name] = self.asks.get(name, 0) + 1
                self.asked_fields = fields
            return
        if not self.intent_is_known():
            self.unknown_clarified = True
        self.urgency_clarified = self.urgency_clarified or doubt
        if self._speak(Speak(Line.CLARIFY)):
            self.last_clarify_at = self.clock()

    def _decide(self, route_name: str, reason: DecisionReason, proposed: str | None = None) -> None:
        """The single place a decision is made: at most once, never into a node already visited, and never
        where an urgent call must not end. `proposed`: a route a guard already turned the call from."""
        if self.decision is not None:
            return
        route = self.policy.routes[route_name]
        if self.history.forbids(route.studio_node_for(self.captured.get(LANGUAGE_FIELD))):
            proposed, route_name, reason = route_name, self.policy.human_route, DecisionReason.REENTRY_REFUSED
            route = self.policy.routes[route_name]
        proposal = self.proposal
        if self._urgent_call_may_not_end_in(route_name, reason):
            urgent_route = self._urgent_route()
            if route_name != urgent_route:
                proposed = proposed or route_name
            route_name, proposal = urgent_route, self.urgent_proposal
            route = self.policy.routes[route_name]
        needed = self._trusted_route(proposal)
        routed_on_intent = needed is not None and route_name in (needed.name, self.policy.human_route)
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
            missing_fields=self._missing_fields(needed) if needed else (),
            unconfirmed_fields=tuple(sorted(name for name in self.unconfirmed | self.unread if self.captured.get(name))),
            routed_on_intent=routed_on_intent,
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

    def _extend_budget_for_details(self) -> None:
        """More time, asked for up front, only where the route cannot work without what is asked (a hard
        field) and the need is not urgent; anyone else gets it only while still answering at the budget."""
        proposal = self.proposal
        route = self._trusted_route(proposal)
        if proposal is None or route is None or not self._missing_required(route):
            return
        if proposal.intent in self.policy.urgent_intents:
            return
        # Bounded from the call's start, so asking again never extends it further.
        deadline = self.started_at + self.policy.budget_s + self.policy.details_budget_s
        if deadline > self.budget_deadline:
            self.budget_deadline = deadline
            self._emit(WakeAt(deadline))

    def _expire_budget_if_due(self) -> None:
        if self.state in TRIAGE_OPEN and self.clock() >= self.budget_deadline:
            if self._awaiting_callers_turn():
                return
            if not self._extend_budget_for_answers():
                self.expire_budget()

    def _awaiting_callers_turn(self) -> bool:
        """The budget ends as the agent is asking something, or has just asked it, and the caller has not begun
        to answer: deciding now would cut them off before their first word. Their turn is waited for, once, at
        the budget's own end (not at the end of time it gave to an answer): until `answer_start_s` after the
        agent's last words, never past the details time. Once they begin, the budget's rules for an answer
        under way apply."""
        now = self.clock()
        if self.turn_waited:
            return False
        if self.turn_wait_until is None:
            extended = self.budget_deadline > self.started_at + self.policy.budget_s
            if extended or self.grace_started_at is not None or not self._answer_just_asked_for(now):
                return False  # past the budget's own end only an answer already under way is heard out
        limit = self.started_at + self.policy.budget_s + self.policy.details_budget_s
        quiet_at = self.agent_quiet_at
        if self.agent_speaking or quiet_at is None:
            until = limit  # woken sooner by the agent falling silent (AgentStoppedSpeaking)
        else:
            until = min(quiet_at + self.policy.answer_start_s, limit)
        if self._caller_began_after_agent() or now >= until:
            self.turn_waited = True
            return False
        if until != self.turn_wait_until:
            self.turn_wait_until = until
            self._emit(WakeAt(until))
        return True

    def _answer_just_asked_for(self, now: float) -> bool:
        """The agent is speaking, or fell silent less than `answer_start_s` ago, an answer the budget would
        hear out is awaited (details, a yes, the need asked again), and the caller has not begun speaking
        since the agent began."""
        quiet_at = self.agent_quiet_at
        recent = self.agent_speaking or (quiet_at is not None and now - quiet_at < self.policy.answer_start_s)
        clarifying = self.last_clarify_at is not None and (
            self.last_speech_at is None or self.last_speech_at < self.last_clarify_at
        )
        awaited = clarifying or (
            self._trusted_route(self.proposal) is not None and (self._waiting_for_details() or self._awaiting_a_yes())
        )
        return recent and awaited and not self._caller_began_after_agent()

    def _caller_began_after_agent(self) -> bool:
        started, agent = self._answer_began_at(), self.agent_started_at
        return started is not None and (agent is None or started >= agent)

    def _answer_began_at(self) -> float | None:
        """When the caller last began to answer: their voice, or a key typing a value."""
        began = [at for at in (self.last_speech_at, self.last_key_at) if at is not None]
        return max(began) if began else None

    def _extend_budget_for_answers(self) -> bool:
        """A caller still answering when the budget ends gets time to finish, once. Answering a clarifying
        question about their need (unknown, or urgent but unsure), or giving a detail the trusted route cannot
        work without: the details extension. Giving a detail a person on the route could ask for instead: only
        the answer under way is heard out (`answer_grace_s`, and past it, until the engine reports that answer
        if it was still being said), and nothing more is asked. One who has stopped answering is put through at
        the budget."""
        limit = self.started_at + self.policy.budget_s + self.policy.details_budget_s
        route = self._trusted_route(self.proposal)
        if route is None or self._unsure_urgency_asked_about():
            if not self._answering_clarification():
                return False
            deadline = limit
        elif self._missing_required(route):
            if not (self._answered_recently(self.last_detail_at) and (self._fields_to_ask() or self._awaiting_a_yes())):
                return False
            deadline = limit
        elif self.grace_started_at is not None:
            if not self._grace_answer_still_being_said():
                return False  # the grace is given once
            deadline = min(self.clock() + HEARD_OUT_STEP_S, limit)
        else:
            if self.budget_deadline > self.started_at + self.policy.budget_s or not self._answer_under_way():
                return False  # never after the details extension
            deadline = min(self.clock() + self.policy.answer_grace_s, limit)
        if deadline <= self.budget_deadline:
            return False  # already extended (bounded from the call's start)
        if route is not None and not self._missing_required(route) and self.grace_started_at is None:
            self.grace_started_at = self.clock()
        self.budget_deadline = deadline
        self._emit(WakeAt(deadline))
        return True

    def _soft_fields_only_past_budget(self) -> bool:
        """The budget has run out and the trusted route lacks no hard field: a person on it can ask for the
        rest, so nothing more is asked, and an answer under way is the last one waited for."""
        route = self._trusted_route(self.proposal)
        past = self.clock() >= self.started_at + self.policy.budget_s
        return past and route is not None and not self._missing_required(route)

    def _answer_under_way(self) -> bool:
        """Something asked is still awaited (a detail, a yes), and the caller is answering: speaking since
        their last detail, or they gave one recently."""
        if not (self._waiting_for_details() or self._awaiting_a_yes()):
            return False
        began = self._answer_began_at()
        speaking = began is not None and (self.last_detail_at is None or began > self.last_detail_at)
        return self._answered_recently(began if speaking else self.last_detail_at)

    def _grace_answer_still_being_said(self) -> bool:
        """The answer the grace was given for is still being said or heard: the caller's voice began before
        the grace's second half and the engine, which reports what it hears, has not reported it yet."""
        if self.typed_field is not None:
            return True  # a value being typed ends at "#" or after a pause (keypad_timeout_s)
        started, heard, grace = self.last_speech_at, self.last_heard_at, self.grace_started_at
        if started is None or heard is None or grace is None or heard >= started:
            return False
        return started <= grace + self.policy.answer_grace_s / 2

    def _awaiting_a_yes(self) -> bool:
        """A value of the trusted route asked about is still to be confirmed (caller ID, a read-back)."""
        route = self._trusted_route(self.proposal)
        pending = (self.unconfirmed & set(self.asked_fields)) | self.unread
        return route is not None and any(
            name in pending for name in (*route.required_fields, *route.wanted_fields)
        )

    def _answering_clarification(self) -> bool:
        """The caller started speaking after being asked to say their need again, and recently."""
        started, asked = self.last_speech_at, self.last_clarify_at
        return asked is not None and started is not None and started >= asked and self._answered_recently(started)

    def _answered_recently(self, at: float | None) -> bool:
        return at is not None and self.clock() - at <= self.policy.answering_window_s

    def _trusted_route(self, proposal: ev.IntentProposed | None) -> RouteRule | None:
        """The route of a proposal the machine trusts (known intent, confident enough), else None."""
        if proposal is None or proposal.intent not in self.policy.intents:
            return None
        if proposal.confidence < self.policy.min_confidence:
            return None
        return self.policy.route_of(proposal.intent)

    def _missing_required(self, route: RouteRule) -> list[str]:
        # A caller-ID value stands in for a hard field only once the caller has confirmed it.
        return sorted(name for name in route.required_fields if not self.captured.get(name) or name in self.unconfirmed)

    def _missing_wanted(self, route: RouteRule) -> list[str]:
        return sorted(name for name in route.wanted_fields if not self.captured.get(name))

    def _missing_fields(self, route: RouteRule) -> tuple[str, ...]:
        return tuple(sorted({*self._missing_required(route), *self._missing_wanted(route)}))

    def _fields_to_ask(self) -> tuple[str, ...]:
        """Missing fields of the trusted proposal's route that the caller may still be asked for, and with
        them, once, a caller-ID number the route wants, to be confirmed."""
        route = self._trusted_route(self.proposal)
        if route is None or self._soft_fields_only_past_budget():
            return ()
        if any(self.asks.get(name, 0) >= MAX_ASKS_PER_FIELD for name in self._missing_required(route)):
            return ()  # a hard field the caller cannot give: a person takes the call, no more questions
        fields = {name for name in self._missing_fields(route) if self.asks.get(name, 0) < MAX_ASKS_PER_FIELD}
        caller_id = self.policy.caller_id_field
        if fields and caller_id in route.wanted_fields and caller_id in self.unconfirmed and not self.asks.get(caller_id):
            fields.add(caller_id)
        return tuple(sorted(fields))

    @property
    def keypad_field(self) -> str | None:
        """The field keys type into now: the one being typed, else the first keyable field the agent asked
        for that is still awaited; None when keys are menu keys."""
        if self.state not in TRIAGE_OPEN:
            return None
        if self.typed_field is not None:
            return self.typed_field
        for name in self.asked_fields:
            awaited = not self.captured.get(name) or name in self.unconfirmed or name in self.unread
            if name in self.policy.keyable_fields and awaited:
                return name
        return None

    def _type_key(self, name: str, digit: str) -> str:
        if digit == KEYPAD_DONE:
            return self._end_typed_entry() if self.typed_field else f"absorbed: {digit} with nothing typed"
        if digit == KEYPAD_CLEAR:
            self.typed_digits = ""
        elif digit.isdigit() and len(digit) == 1:
            self.typed_digits = (self.typed_digits + digit)[:MAX_TYPED_DIGITS]
        else:
            return f"absorbed: key {digit!r} while {name} is typed"
        self.typed_field = name
        self.last_key_at = self.clock()
        self.typed_deadline = self.clock() + self.policy.keypad_timeout_s
        self._emit(WakeAt(self.typed_deadline))
        return f"{name}: {len(self.typed_digits)} digits typed"  # the digits themselves stay out of the trail

    def _end_typed_entry(self) -> str:
        name, digits = self.typed_field, self.typed_digits
        self.typed_field, self.typed_digits, self.typed_deadline = None, "", None
        if name is None or not digits:
            return "absorbed: nothing typed"
        self._emit(CheckTypedEntry(name, digits))
        return f"{name}: entry of {len(digits)} digits ended"

    def _carry_on_after_typing(self, typed: str) -> None:
        """After a typed entry: ask for what is still asked for, else weigh the proposal again (past the budget
        with only soft fields missing nothing more is asked: the typed value was the answer heard out)."""
        remaining = tuple(
            name for name in self.asked_fields
            if name != typed and (not self.captured.get(name) or name in self.unconfirmed)
        )
        proposal = self.proposal
        if (remaining and not self._soft_fields_only_past_budget()) or proposal is None:
            confirm = tuple(name for name in remaining if name in self.unconfirmed)
            self.asked_fields = remaining if self._speak(Speak(Line.KEYPAD_THANKS, remaining, confirm)) else ()
            return
        self._on_intent_proposed(ev.IntentProposed(proposal.intent, proposal.confidence, proposal.summary))

    def _waiting_for_details(self) -> bool:
        return any(not self.captured.get(name) or name in self.unconfirmed for name in self.asked_fields)

    def _decide_when_triage_stops(self, reason: DecisionReason) -> None:
        """Triage ended without an accepted proposal: a trusted proposal's route if it lacks no hard field,
        the human route if it does, else the fallback route."""
        route = self._trusted_route(self.proposal)
        if route is None:
            self._decide(self.policy.fallback_route, reason)
        elif self._missing_required(route):
            self._decide(self.policy.human_route, reason, proposed=route.name)
        else:
            self._decide(route.name, reason)

    def _urgent_call_may_not_end_in(self, route_name: str, reason: DecisionReason) -> bool:
        if self.urgent_proposal is None:
            return False
        if reason is not DecisionReason.ACCEPTED:
            return True  # every failure: its own route or a person
        kind = self.policy.routes[route_name].kind
        own = self.policy.intents[self.urgent_proposal.intent]
        return kind == "voicemail" or (kind == "resolve" and route_name != own)

    def _urgent_route(self) -> str:
        assert self.urgent_proposal is not None
        own = self.policy.route_of(self.urgent_proposal.intent)
        if own.kind in PERSON_ROUTE_KINDS and not self._missing_required(own):
            return own.name
        return self.policy.human_route

    def _unmet_guard(self) -> str:
        if not self.intent_is_known():
            return "unknown_intent"
        if not self.confident_enough():
            return "low_confidence"
        if self._urgency_in_doubt():
            return "urgent_unsure"
        route = self._trusted_route(self.proposal)
        missing = self._missing_fields(route) if route else ()
        return f"missing_fields: {', '.join(missing)}" if missing else ""

    def _answer_tool(self, tool_call_id: str | None, outcome: str, detail: str, position: int | None = None) -> None:
        if tool_call_id is None or not self.realtime_open:
            return
        answer = AnswerTool(tool_call_id, outcome, detail)
        if position is None:
            self._emit(answer)
        else:
            self._effects.insert(position, answer)

    def _speak(self, line: Speak) -> bool:
        # Nobody can speak without a working engine; the caller then hears the next route instead.
        if self.realtime_open and not self.engine_broken:
            self._emit(line)
            return True
        return False

    def _emit(self, effect: CallEffect) -> None:
        self._effects.append(effect)


_HANDLERS: dict[type, Callable[[CallMachine, Any], str | None]] = {
    ev.RealtimeOpened: CallMachine._on_realtime_opened,
    ev.GreetingPlayed: CallMachine._on_greeting_played,
    ev.LanguageNotServed: CallMachine._on_language_not_served,
    ev.AgentStartedSpeaking: CallMachine._on_agent_started_speaking,
    ev.AgentStoppedSpeaking: CallMachine._on_agent_stopped_speaking,
    ev.CallerStartedSpeaking: CallMachine._on_caller_started_speaking,
    ev.CallerSpoke: CallMachine._on_caller_spoke,
    ev.DetailsCaptured: CallMachine._on_details_captured,
    ev.IntentProposed: CallMachine._on_intent_proposed,
    ev.KeyPressed: CallMachine._on_key_pressed,
    ev.TypedEntryChecked: CallMachine._on_typed_entry_checked,
    ev.CallerNumberKnown: CallMachine._on_caller_number_known,
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

    def start_call(self, call_sid: str, history: CallHistory | None = None,
                   clock: Callable[[], float] | None = None) -> CallMachine:
        """`clock`: this call's own (a replay moves it to the budget when the past caller ran out of words)."""
        call = CallMachine(call_sid, self.policy, history or CallHistory(), clock or self.clock)
        self._machine.add_model(call)
        return call

    def dispose(self, call: CallMachine) -> None:
        self._machine.remove_model(call)

    @property
    def active_calls(self) -> int:
        return len(self._machine.models)
