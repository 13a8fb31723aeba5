"""Invariants of the call machine over arbitrary event sequences (DESIGN section 4).

The harness plays the session runner: it carries out CloseRealtime/CloseMedia by feeding back the
matching closed events, so every effect has the consequence it has on a live call.
"""
from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from machines import events as ev
from machines.call_machine import CallFlow
from machines.effects import CloseMedia, CloseRealtime, PersistDecision, Speak
from tests.machine_fixtures import ENTRY_NODE, HISTORY, POLICY, VISITED_NODE, FakeClock

INTENTS = st.sampled_from([*POLICY.intents, "no_such_intent"])
FIELDS = st.dictionaries(st.sampled_from(["caller_name", "callback_number", "address", "other"]),
                         st.text(max_size=5), max_size=3)


class CallMachineInvariants(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.flow = CallFlow(POLICY, self.clock)
        self.call = self.flow.start_call("CA_prop", HISTORY)
        self.realtime_open = False  # as the world sees it, not as the machine believes
        self.media_open = True
        self.decisions: list = []
        self.effects_log: list = []
        self.apply_effects(self.call.start())

    # -- the runner's side: effects have consequences ---------------------------------------

    def send(self, event) -> None:
        effects = self.call.handle(event)
        self.apply_effects(effects)

    def apply_effects(self, effects) -> None:
        for effect in effects:
            self.effects_log.append((effect, self.realtime_open))
            if isinstance(effect, PersistDecision):
                self.decisions.append(effect.decision)
            elif isinstance(effect, CloseMedia):
                assert not self.realtime_open, "the call was handed back while Realtime was open"
            elif isinstance(effect, Speak):
                assert self.realtime_open, "asked to speak with no Realtime connection"
        for effect in effects:
            if isinstance(effect, CloseRealtime) and self.realtime_open:
                self.realtime_open = False
                self.send(ev.RealtimeClosed())
            elif isinstance(effect, CloseMedia) and self.media_open:
                self.media_open = False
                self.send(ev.MediaClosed())

    # -- the world's side: arbitrary events ----------------------------------------------------

    @precondition(lambda self: not self.realtime_open and self.call.state in ("greeting", "capture"))
    @rule()
    def realtime_opens(self) -> None:
        self.realtime_open = True
        self.send(ev.RealtimeOpened())

    @rule()
    def greeting_played(self) -> None:
        self.send(ev.GreetingPlayed())

    @rule(text=st.text(max_size=10))
    def caller_speaks(self, text: str) -> None:
        self.send(ev.CallerSpoke(text))

    @rule(fields=FIELDS, tool=st.none() | st.just("call_1"))
    def details_captured(self, fields, tool) -> None:
        self.send(ev.DetailsCaptured(fields, tool))

    @rule(intent=INTENTS, confidence=st.floats(0, 1), tool=st.none() | st.just("call_2"))
    def intent_proposed(self, intent, confidence, tool) -> None:
        self.send(ev.IntentProposed(intent, confidence, "summary", tool))

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

    # -- invariants ----------------------------------------------------------------------------

    @invariant()
    def at_most_one_decision(self) -> None:
        assert len(self.decisions) <= 1

    @invariant()
    def nothing_raised_inside(self) -> None:
        assert self.call.faults == 0, [t for t in self.call.trail if t.note.startswith("internal_error")]

    @invariant()
    def reentry_guard_holds(self) -> None:
        for decision in self.decisions:
            node = POLICY.routes[decision.route].studio_node
            assert node not in (ENTRY_NODE, VISITED_NODE)

    @invariant()
    def decision_is_the_one_persisted(self) -> None:
        if self.decisions:
            assert self.call.decision is self.decisions[0]

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


CallMachineInvariants.TestCase.settings = settings(
    max_examples=1000,
    stateful_step_count=25,
)
TestCallMachineInvariants = CallMachineInvariants.TestCase
