"""Invariants of the call machine over arbitrary event sequences (DESIGN section 4).

The harness plays the session runner: it carries out CloseRealtime/CloseMedia by feeding back the
matching closed events, so every effect has the consequence it has on a live call. It also keeps its
own account of what the caller went through (proposals taken, urgency, questions asked, caller ID
confirmed), from the events and effects alone, to check the routing policy against it.

Two machines share the harness: one throws every event at a call at any time; the other holds a
conversation in capture (proposals, details, keys, caller ID, time running out slowly, more
clarifications allowed than asks per field), so that the routing policy's paths are reached often.
"""
from __future__ import annotations

from dataclasses import replace

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from machines import events as ev
from machines.call_machine import CallFlow
from machines.decision import DecisionReason
from machines.effects import AnswerTool, CheckTypedEntry, CloseMedia, CloseRealtime, Line, PersistDecision, Speak
from machines.policy import MAX_ASKS_PER_FIELD, PERSON_ROUTE_KINDS
from tests.machine_fixtures import ENTRY_NODE, HISTORY, POLICY, VISITED_NODE, FakeClock

INTENTS = st.sampled_from([*POLICY.intents, "no_such_intent"])
FIELDS = st.dictionaries(st.sampled_from(["caller_name", "callback_number", "address", "preferred_date", "other"]),
                         st.text(max_size=5), max_size=3)
# The intents whose routes tell the routing policy's cases apart: hard and soft fields, urgent intents whose
# routes reach a person, hang up or enter Studio, other intents that hang up or leave a message, an unknown need.
POLICY_INTENTS = st.sampled_from(["emergency", "gas_smell", "flood", "callback", "quote", "opening_hours",
                                  "leave_message", "billing", "no_such_intent"])
CONFIDENCES = st.sampled_from([0.3, 0.6, 0.7, 0.9]) | st.floats(0, 1)
# Details as a caller gives them: each field given ("x") or said to be none ("").
GIVEN = st.dictionaries(st.sampled_from(["caller_name", "callback_number", "address", "preferred_date"]),
                        st.sampled_from(["x", ""]), min_size=1, max_size=2)
# What a caller types: digits, then "#" (done), "*" (start again) or nothing (a pause ends it).
TYPED = st.tuples(st.text("0123456789", max_size=12), st.sampled_from(["#", "*", ""]))
# The runner's check of a typed entry, as the harness plays it: this many digits make a valid value.
VALID_TYPED_DIGITS = 4
# Lines after which the agent asks for the fields they name.
ASKING_LINES = (Line.ASK_DETAILS, Line.KEYPAD_THANKS, Line.KEYPAD_INVALID)
# Decisions made by the routing policy when no proposal was accepted as it stood.
STRANDED_REASONS = (DecisionReason.BUDGET_EXPIRED, DecisionReason.ENGINE_FAILED, DecisionReason.LOW_CONFIDENCE,
                    DecisionReason.UNKNOWN_INTENT, DecisionReason.MISSING_FIELDS)


class CallHarness(RuleBasedStateMachine):
    """The runner's side and the caller's account of one call, the events any call may get, and the
    invariants every call keeps."""

    policy = POLICY

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.flow = CallFlow(self.policy, self.clock)
        self.call = self.flow.start_call("CA_prop", HISTORY)
        self.realtime_open = False  # as the world sees it, not as the machine believes
        self.media_open = True
        self.decisions: list = []
        self.effects_log: list = []
        # The harness's own account of the call, kept from events and effects.
        self.last_proposal: tuple[str, float] | None = None  # (intent, confidence) of the last one taken
        self.urgent_intent: str | None = None  # the latest trusted urgent intent taken
        self.asks: dict[str, int] = {}  # field → ASK_DETAILS lines that named it
        self.clarifications = 0  # proposals taken that sent the call back to capture
        self.unknown_clarifications = 0  # proposals of an unknown intent that sent the call back to capture
        self.unconfirmed: set[str] = set()  # pre-filled from caller ID, not recorded by the engine since
        self.unread: set[str] = set()  # said for a read-back field, not confirmed since
        self.keyable_asked: set[str] = set()  # keyable fields named by the last line that asked, since no proposal
        self.unsure_urgent_clarifications = 0  # urgent proposals below urgent_min_confidence sent back to capture
        self.apply_effects(self.call.start())

    def trusted(self, intent: str, confidence: float) -> bool:
        return intent in self.policy.intents and confidence >= self.policy.min_confidence

    # -- the runner's side: effects have consequences ---------------------------------------

    def send(self, event) -> str:
        entry = len(self.call.trail)
        unsure_may_be_asked = self.unsure_urgent_may_be_clarified(event)
        effects = self.call.handle(event)
        note = self.call.trail[entry].note
        self.follow(event, note)
        if any(isinstance(effect, AnswerTool) and effect.detail == "urgent_unsure" for effect in effects):
            self.unsure_urgent_clarifications += 1
            assert Speak(Line.CLARIFY) in effects, effects  # the need is asked again, not its details
        elif unsure_may_be_asked and not note.startswith("absorbed"):
            raise AssertionError(f"an unsure urgent proposal was taken with a question left: {event}, {note}")
        self.apply_effects(effects)
        return note

    def unsure_urgent_may_be_clarified(self, event) -> bool:
        """An urgent intent proposed below urgent_min_confidence, its need not clarified yet, with a
        clarification and the time for it left: the machine must ask the need again before taking it."""
        policy, call = self.policy, self.call
        return (
            isinstance(event, ev.IntentProposed) and event.intent in policy.urgent_intents
            and policy.min_confidence <= event.confidence < policy.urgent_min_confidence
            and call.state in ("greeting", "capture") and self.realtime_open and not call.engine_broken
            and self.unsure_urgent_clarifications == 0 and call.clarifications < policy.max_clarifications
            and call.started_at + policy.budget_s - self.clock.now >= policy.clarify_needs_s
        )

    def follow(self, event, note: str) -> None:
        """What the event did to the caller's side of the call, as the trail and the state show it."""
        taken = not note.startswith("absorbed")
        if isinstance(event, ev.IntentProposed) and taken:
            self.proposal_taken(event.intent, event.confidence)
        elif isinstance(event, ev.KeyPressed) and note.startswith("key "):
            self.proposal_taken(self.policy.keys[event.digit], 1.0)
        elif isinstance(event, ev.CallerNumberKnown) and taken:
            self.unconfirmed.add(self.policy.caller_id_field)
        elif isinstance(event, ev.DetailsCaptured) and taken:
            self.unconfirmed.difference_update(event.fields)
            self.unread.update(name for name in event.fields if name in self.policy.read_back_fields)
            confirmed = {name for name in event.confirmed if self.call.captured.get(name)}
            self.unconfirmed -= confirmed
            self.unread -= confirmed
        elif isinstance(event, ev.TypedEntryChecked) and taken and event.value is not None:
            self.unconfirmed.discard(event.field)
            self.unread.discard(event.field)

    def proposal_taken(self, intent: str, confidence: float) -> None:
        self.keyable_asked = set()
        self.last_proposal = (intent, confidence)
        if intent in self.policy.urgent_intents and confidence >= self.policy.min_confidence:
            self.urgent_intent = intent
        clarified = self.call.state == "capture"
        if not self.trusted(intent, confidence) and self.unknown_clarifications:
            assert not clarified, "after an unknown intent was clarified, an unplaceable need must be decided"
        if clarified:
            self.clarifications += 1
            self.unknown_clarifications += intent not in self.policy.intents

    def apply_effects(self, effects) -> None:
        for effect in effects:
            self.effects_log.append((effect, self.realtime_open))
            if isinstance(effect, PersistDecision):
                self.decisions.append(effect.decision)
            elif isinstance(effect, CloseMedia):
                assert not self.realtime_open, "the call was handed back while Realtime was open"
            elif isinstance(effect, Speak):
                assert self.realtime_open, "asked to speak with no Realtime connection"
                if effect.line is Line.ASK_DETAILS:
                    self.no_soft_question_after_the_budget(effect.missing_fields)
                    for name in effect.missing_fields:
                        self.asks[name] = self.asks.get(name, 0) + 1
                elif effect.line is Line.KEYPAD_INVALID:  # the field typed wrong, asked again
                    for name in effect.missing_fields:
                        self.asks[name] = self.asks.get(name, 0) + 1
                if effect.line in ASKING_LINES:
                    self.keyable_asked = set(effect.missing_fields) & self.policy.keyable_fields
                    assert set(effect.confirm_fields) <= set(effect.missing_fields) & self.unconfirmed, effect
        for effect in effects:
            if isinstance(effect, CheckTypedEntry):
                assert effect.field in self.policy.keyable_fields and effect.digits.isdigit(), effect
                valid = len(effect.digits) >= VALID_TYPED_DIGITS
                self.send(ev.TypedEntryChecked(effect.field, f"+1{effect.digits}" if valid else None))
            elif isinstance(effect, CloseRealtime) and self.realtime_open:
                self.realtime_open = False
                self.send(ev.RealtimeClosed())
            elif isinstance(effect, CloseMedia) and self.media_open:
                self.media_open = False
                self.send(ev.MediaClosed())

    # -- the world's side: what the caller and the engine do ------------------------------------

    @rule(fields=FIELDS, tool=st.none() | st.just("call_1"))
    def details_captured(self, fields, tool) -> None:
        self.send(ev.DetailsCaptured(fields, tool))

    @rule(digit=st.sampled_from("0123456789*#"))
    def key_pressed(self, digit: str) -> None:
        self.press(digit)

    @rule(typed=TYPED)
    def caller_types(self, typed) -> None:
        digits, end = typed
        for key in digits + end:
            self.press(key)

    def press(self, digit: str) -> None:
        effects_before = len(self.effects_log)
        asked = any(self.awaited(name) for name in self.keyable_asked) and self.call.state in ("greeting", "capture")
        typing = asked or self.call.typed_field is not None
        note = self.send(ev.KeyPressed(digit))
        if typing:
            # Keys pressed while a keyable field is asked type it: they never choose a menu intent.
            assert not note.startswith("key "), note
        elif note.startswith("key "):
            assert self.call.proposal is not None
            assert (self.call.proposal.intent, self.call.proposal.confidence) == (self.policy.keys[digit], 1.0)
        elif digit not in self.policy.keys:
            assert note.startswith("absorbed") and len(self.effects_log) == effects_before

    def awaited(self, name: str) -> bool:
        return not self.call.captured.get(name) or name in self.unconfirmed or name in self.unread

    @rule(number=st.sampled_from(["+14155552671", ""]))
    def caller_number_known(self, number: str) -> None:
        self.send(ev.CallerNumberKnown(number))

    def no_soft_question_after_the_budget(self, asked: tuple[str, ...]) -> None:
        """Once the budget has run out, the agent asks only for what the route cannot work without: a
        person on the route can ask for the rest."""
        if self.clock.now < self.call.started_at + self.policy.budget_s or self.last_proposal is None:
            return
        route = self.policy.route_of(self.last_proposal[0])
        hard = {name for name in route.required_fields if not self.call.captured.get(name) or name in self.unconfirmed}
        assert hard & set(asked), (asked, self.clock.now - self.call.started_at)

    # -- invariants ----------------------------------------------------------------------------

    @invariant()
    def at_most_one_decision(self) -> None:
        assert len(self.decisions) <= 1

    @invariant()
    def the_budget_is_extended_at_most_by_the_details_time(self) -> None:
        policy = self.call.policy
        assert self.call.budget_deadline <= self.call.started_at + policy.budget_s + policy.details_budget_s + 1e-9

    @invariant()
    def no_call_is_triaged_past_the_details_time(self) -> None:
        # Waiting for the caller's turn, or for an answer under way, never outlasts budget + details time.
        policy, call = self.call.policy, self.call
        if self.clock.now >= call.started_at + policy.budget_s + policy.details_budget_s and call.trail:
            assert not call.triage_open, call.trail[-3:]

    @invariant()
    def nothing_raised_inside(self) -> None:
        assert self.call.faults == 0, [t for t in self.call.trail if t.note.startswith("internal_error")]

    @invariant()
    def reentry_guard_holds(self) -> None:
        for decision in self.decisions:
            node = self.policy.routes[decision.route].studio_node
            assert node not in (ENTRY_NODE, VISITED_NODE)

    @invariant()
    def decision_is_the_one_persisted(self) -> None:
        if self.decisions:
            assert self.call.decision is self.decisions[0]

    @invariant()
    def no_urgent_call_ends_in_voicemail_or_a_hang_up_not_its_own(self) -> None:
        if not self.decisions or self.urgent_intent is None:
            return
        decision, own = self.decisions[0], self.policy.intents[self.urgent_intent]
        assert decision.route_kind != "voicemail", (self.urgent_intent, decision)
        assert decision.route_kind != "resolve" or decision.route == own, (self.urgent_intent, decision)
        if decision.reason is not DecisionReason.ACCEPTED:
            assert decision.route in (own, self.policy.human_route), (self.urgent_intent, decision)
            assert decision.route_kind in PERSON_ROUTE_KINDS and decision.intent == self.urgent_intent

    @invariant()
    def no_route_is_taken_without_its_hard_fields(self) -> None:
        for decision in self.decisions:
            for name in self.policy.routes[decision.route].required_fields:
                assert decision.captured.get(name) and name not in self.unconfirmed, (name, decision)

    @invariant()
    def a_stranded_call_goes_to_its_trusted_route_or_a_person(self) -> None:
        """Budget, engine failure or a guard: a trusted intent lacking only soft fields takes its route, one
        lacking a hard field the human route, and a call with no trusted intent the fallback route."""
        if not self.decisions or self.urgent_intent is not None or self.decisions[0].reason not in STRANDED_REASONS:
            return
        decision = self.decisions[0]
        if self.last_proposal is None or not self.trusted(*self.last_proposal):
            assert decision.route == self.policy.fallback_route and decision.missing_fields == (), decision
            return
        route = self.policy.route_of(self.last_proposal[0])
        hard = {name for name in route.required_fields if not decision.captured.get(name) or name in self.unconfirmed}
        soft = {name for name in route.wanted_fields if not decision.captured.get(name)}
        assert set(decision.missing_fields) == hard | soft, decision
        if hard:
            assert (decision.route, decision.proposed_route) == (self.policy.human_route, route.name), decision
        else:
            assert decision.route == route.name, decision

    @invariant()
    def an_accepted_route_lacks_only_soft_fields_asked_for_enough(self) -> None:
        if not self.decisions or self.decisions[0].reason is not DecisionReason.ACCEPTED:
            return
        decision = self.decisions[0]
        if decision.route != self.policy.intents.get(decision.intent or ""):
            return  # turned by the urgent guard: checked above
        for name in decision.missing_fields:
            assert name in self.policy.routes[decision.route].wanted_fields, decision
            asked_enough = self.asks.get(name, 0) >= MAX_ASKS_PER_FIELD
            past_budget = decision.decided_after_s >= self.policy.budget_s  # soft fields are no longer asked
            assert asked_enough or past_budget or self.clarifications >= self.policy.max_clarifications, (
                name, self.asks, decision)

    @invariant()
    def unconfirmed_values_are_listed(self) -> None:
        """Caller-ID values not confirmed and read-back values not confirmed are captured, and listed."""
        for decision in self.decisions[:1]:
            listed = {name for name in self.unconfirmed | self.unread if decision.captured.get(name)}
            assert set(decision.unconfirmed_fields) == listed, (decision, self.unconfirmed, self.unread)

    @invariant()
    def no_field_is_asked_for_a_third_time(self) -> None:
        assert all(times <= MAX_ASKS_PER_FIELD for times in self.asks.values()), self.asks

    @invariant()
    def an_unknown_need_is_clarified_at_most_once(self) -> None:
        assert self.unknown_clarifications <= 1

    @invariant()
    def an_unsure_urgent_need_is_clarified_at_most_once(self) -> None:
        assert self.unsure_urgent_clarifications <= 1

    @invariant()
    def ended_only_when_both_streams_closed(self) -> None:
        if self.call.state == "ended":
            assert not self.realtime_open and not self.media_open

    def teardown(self) -> None:
        # Whatever happened, a hang-up now must bring the call to its end, and nothing may linger.
        if self.call.state != "ended":
            self.media_open = False
            self.send(ev.CallerHungUp())
        assert self.call.state == "ended", self.call.trail
        assert not self.realtime_open
        self.flow.dispose(self.call)
        assert self.flow.active_calls == 0


class CallMachineInvariants(CallHarness):
    """Any event at any time: streams opening, closing and dropping, marks, time leaping ahead."""

    @rule(text=st.text(max_size=10))
    def caller_speaks(self, text: str) -> None:
        self.send(ev.CallerSpoke(text))

    @rule()
    def caller_starts_speaking(self) -> None:
        self.send(ev.CallerStartedSpeaking())

    @rule(stops=st.booleans())
    def agent_speaks(self, stops: bool) -> None:
        self.send(ev.AgentStoppedSpeaking() if stops else ev.AgentStartedSpeaking())

    @rule(intent=INTENTS, confidence=st.floats(0, 1), tool=st.none() | st.just("call_2"))
    def intent_proposed(self, intent, confidence, tool) -> None:
        self.send(ev.IntentProposed(intent, confidence, "summary", tool))

    @precondition(lambda self: not self.realtime_open and self.call.state in ("greeting", "capture"))
    @rule()
    def realtime_opens(self) -> None:
        self.realtime_open = True
        self.send(ev.RealtimeOpened())

    @rule()
    def greeting_played(self) -> None:
        self.send(ev.GreetingPlayed())

    @rule(seconds=st.floats(0, 30))
    def time_passes(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.send(ev.TimerFired())

    @rule()
    def handoff_played(self) -> None:
        self.send(ev.HandoffPlayed())

    @rule(reason=st.sampled_from(["error_event", "refused", "invalid_tool_args"]))
    def engine_fails(self, reason: str) -> None:
        self.send(ev.EngineFailed(reason))

    @rule()
    def realtime_drops(self) -> None:
        self.realtime_open = False
        self.send(ev.RealtimeClosed())

    @rule()
    def caller_hangs_up(self) -> None:
        self.media_open = False
        self.send(ev.CallerHungUp())

    @rule()
    def media_closes(self) -> None:
        self.media_open = False
        self.send(ev.MediaClosed())


class RoutingPolicyInvariants(CallHarness):
    """A conversation under way in capture, with more clarifications allowed than asks per field."""

    policy = replace(POLICY, max_clarifications=MAX_ASKS_PER_FIELD + 2, urgent_min_confidence=0.8, details_budget_s=10.0)

    def __init__(self) -> None:
        super().__init__()
        self.realtime_open = True
        self.send(ev.RealtimeOpened())
        self.send(ev.GreetingPlayed())

    @initialize(number_known=st.booleans(), given=st.none() | GIVEN)
    def call_starts(self, number_known: bool, given) -> None:
        if number_known:
            self.send(ev.CallerNumberKnown("+14155552671"))
        if given:
            self.send(ev.DetailsCaptured(given))

    @rule(given=GIVEN, confirms=st.booleans())
    def caller_gives(self, given, confirms: bool) -> None:
        self.send(ev.DetailsCaptured(given, "call_1", frozenset(given) if confirms else frozenset()))

    @rule()
    def caller_starts_speaking(self) -> None:
        self.send(ev.CallerStartedSpeaking())

    @rule(seconds=st.floats(0, 4))
    def agent_asks(self, seconds: float) -> None:
        # The agent's words reach the caller: the budget may end while they do, or just after.
        self.send(ev.AgentStartedSpeaking())
        self.clock.advance(seconds)
        self.send(ev.AgentStoppedSpeaking())

    @rule(name=st.sampled_from(["callback_number", "preferred_date"]))
    def caller_confirms(self, name: str) -> None:
        self.send(ev.DetailsCaptured({}, "call_1", frozenset({name})))

    @rule(intent=POLICY_INTENTS, confidence=CONFIDENCES)
    def intent_proposed(self, intent, confidence) -> None:
        self.send(ev.IntentProposed(intent, confidence, "summary", "call_2"))

    @rule(seconds=st.floats(0, 6))
    def time_passes(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.send(ev.TimerFired())

    @rule()
    def caller_falls_silent_until_the_budget_runs_out(self) -> None:
        self.clock.now = max(self.clock.now, self.call.budget_deadline)
        self.send(ev.TimerFired())

    @rule(before=st.floats(0, 4), still_speaking=st.booleans())
    def agent_asks_as_the_budget_runs_out(self, before: float, still_speaking: bool) -> None:
        self.clock.now = max(self.clock.now, self.call.budget_deadline - before)
        self.send(ev.AgentStartedSpeaking())
        if not still_speaking:
            self.send(ev.AgentStoppedSpeaking())
        self.clock.now = max(self.clock.now, self.call.budget_deadline)
        self.send(ev.TimerFired())


CallMachineInvariants.TestCase.settings = settings(
    max_examples=1000,
    stateful_step_count=25,
)
TestCallMachineInvariants = CallMachineInvariants.TestCase
RoutingPolicyInvariants.TestCase.settings = settings(
    max_examples=1000,
    stateful_step_count=25,
)
TestRoutingPolicyInvariants = RoutingPolicyInvariants.TestCase
