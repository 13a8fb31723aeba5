"""The offline engine's dialogue policy, turn by turn, against the real call machine's answers.

The classifier is scripted here (keyword → prediction) so each test pins one policy decision; the real
classifier has its own tests. Tool calls go through `interpret_tool_call` and the machine, exactly as on
a live call, and the machine's answers come back through `tool_output`."""
from __future__ import annotations

import datetime
import json
from dataclasses import dataclass

from machines import events as ev
from machines.call_machine import CallFlow
from machines.effects import AnswerTool, Line, Speak
from orchestrator.config.routing import load_routing_config
from orchestrator.engines.offline.dialogue import OfflineDialogue, Reply
from orchestrator.engines.offline.intent_model import IntentPrediction
from orchestrator.engines.offline.speech import ListeningFor
from orchestrator.engines.tools import PROPOSE_ROUTE, RECORD_DETAILS, interpret_tool_call, spoken_line, tool_output
from tests.live_call_support import ACME

TODAY = datetime.date(2026, 12, 1)


@dataclass
class ScriptedModel:
    """Predicts the intent whose keyword appears in the text, with a fixed confidence; else unsure."""

    keywords: dict[str, tuple[str, float]]

    def predict(self, text: str) -> IntentPrediction:
        for keyword, (intent, confidence) in self.keywords.items():
            if keyword in text:
                return IntentPrediction(intent, confidence, {intent: confidence})
        return IntentPrediction("billing", 0.2, {"billing": 0.2})


MODEL = ScriptedModel({
    "flooding": ("emergency", 0.95),
    "invoice": ("billing", 0.9),
    "maybe": ("schedule", 0.4),
    "dripping tap": ("schedule", 0.9),
})


class Call:
    """One call: the dialogue on one side, the machine on the other, the tool round trip between."""

    def silence(self) -> tuple[Reply, list[str]]:
        """The caller says nothing after the agent's words."""
        return self._answered(self.dialogue.on_silence())

    def __init__(self, caller_id: str | None = None) -> None:
        self.config = load_routing_config(ACME)
        self.clock = 0.0
        self.machine = CallFlow(self.config.triage_policy(), lambda: self.clock).start_call("CA" + "0" * 32)
        if caller_id is not None:
            self.machine.handle(ev.CallerNumberKnown(caller_id))
        # What the engine is told at the start (EngineCall.captured): the caller-ID number among it.
        self.dialogue = OfflineDialogue(self.config, MODEL, lambda: TODAY, dict(self.machine.captured))  # type: ignore[arg-type]
        self.lines: list[Speak] = []
        self.machine.handle(ev.RealtimeOpened())
        self.machine.handle(ev.GreetingPlayed())

    def caller(self, text: str, *, answering: bool = True) -> tuple[Reply, list[str]]:
        """The caller says `text`; returns the dialogue's reply and the names of the tools it called."""
        return self._answered(self.dialogue.on_caller_turn(text, answering=answering))

    def _answered(self, reply: Reply) -> tuple[Reply, list[str]]:
        for call in reply.tool_calls:
            interpreted = interpret_tool_call(self.config, call.name, call.arguments_json, call.call_id)
            for effect in self.machine.handle(interpreted):
                if isinstance(effect, AnswerTool):
                    self.dialogue.on_tool_output(effect.tool_call_id, tool_output(effect))
                elif isinstance(effect, Speak):
                    self.lines.append(effect)
        return reply, [call.name for call in reply.tool_calls]

    def answer_line(self) -> tuple[Reply, list[str]]:
        """The engine's response to the machine's last line (`reply_to_line`), its tool calls answered."""
        return self._answered(self.dialogue.reply_to_line(spoken_line(self.config, self.lines[-1])))

    def line(self) -> str:
        return self.dialogue.on_line(spoken_line(self.config, self.lines[-1]))


def number_given() -> Call:
    """A flooding call in which the caller has given a name, then 415 555 2671 (read back next)."""
    call = Call()
    call.caller("my basement is flooding")
    call.line()
    call.caller("it's Ann Lee")
    call.dialogue.on_continue()
    call.caller("four one five five five five two six seven one")
    return call


def test_a_clear_need_is_proposed_at_once_and_the_machine_dispatches():
    call = Call()
    reply, tools = call.caller("I have a question about my invoice")
    assert tools == [PROPOSE_ROUTE] and reply.say == ""
    arguments = json.loads(reply.tool_calls[0].arguments_json)
    assert arguments["intent"] == "billing" and arguments["confidence"] == 0.9
    assert call.machine.state == "dispatch" and call.machine.decision.route == "billing_desk"
    assert call.dialogue.on_continue().is_empty  # decided: the agent says nothing more of its own


def test_an_unclear_first_turn_is_asked_about_once_then_the_machine_judges_the_guess():
    call = Call()
    reply, tools = call.caller("hello there")
    assert tools == [] and reply.say == call.config.lines.ask_intent
    reply, tools = call.caller("maybe something")
    assert tools == [PROPOSE_ROUTE]
    # 0.4 is under Acme's 0.6: the machine asks its clarifying question; the dialogue says the line.
    assert call.machine.state == "capture" and call.lines[-1].line == "clarify"
    assert call.line() == call.config.lines.clarify
    reply, tools = call.caller("the invoice is wrong")
    assert tools == [PROPOSE_ROUTE] and call.machine.decision.route == "billing_desk"


def test_a_need_said_unclearly_goes_to_the_machine_at_once_whose_clarifying_question_names_the_choices():
    call = Call()
    reply, tools = call.caller("maybe someone could come round and have a look at it")
    assert tools == [PROPOSE_ROUTE] and reply.say == ""  # not "how can I help?" first
    assert call.lines[-1].line == "clarify" and call.line() == call.config.lines.clarify


def test_the_answer_to_the_clarifying_question_is_weighed_on_its_own_words():
    class Blurred(ScriptedModel):
        def predict(self, text: str) -> IntentPrediction:
            if "maybe" in text and "invoice" in text:  # the first words blur the answer when joined to it
                return IntentPrediction("schedule", 0.45, {"schedule": 0.45})
            return super().predict(text)

    call = Call()
    call.dialogue.model = Blurred(MODEL.keywords)  # type: ignore[assignment]
    call.caller("maybe someone could come round and have a look at it")
    assert call.lines[-1].line == "clarify"
    call.line()
    reply, tools = call.caller("it's about the invoice")
    assert tools == [PROPOSE_ROUTE] and json.loads(reply.tool_calls[0].arguments_json)["intent"] == "billing"
    assert call.machine.decision is not None and call.machine.decision.route == "billing_desk"


def test_a_clear_answer_to_the_clarifying_question_outweighs_earlier_words_read_as_no_need():
    class Blurred(ScriptedModel):
        def predict(self, text: str) -> IntentPrediction:
            if "maybe" in text and "invoice" in text:  # joined, the words read as a need no intent serves
                return IntentPrediction("schedule", 0.7, {"schedule": 0.7}, unknown=0.6)
            return super().predict(text)

    call = Call()
    call.dialogue.model = Blurred(MODEL.keywords)  # type: ignore[assignment]
    call.caller("maybe someone could come round and have a look at it")
    call.line()
    reply, tools = call.caller("it's about the invoice")
    assert json.loads(reply.tool_calls[0].arguments_json)["intent"] == "billing"


def test_a_need_said_unsure_twice_the_same_way_is_taken_on_both_sayings():
    class Unsure(ScriptedModel):
        def predict(self, text: str) -> IntentPrediction:  # each saying alone under Acme's 0.6, both billing
            confidence = 0.57 if "card" in text else 0.2
            return IntentPrediction("billing", confidence, {"billing": confidence, "schedule": 1 - confidence})

    call = Call()
    call.dialogue.model = Unsure({})  # type: ignore[assignment]
    call.caller("my card got hit two times for the same job")
    assert call.lines[-1].line == "clarify"
    call.line()
    reply, _ = call.caller("you took the money off my card twice")
    arguments = json.loads(reply.tool_calls[0].arguments_json)
    assert arguments["intent"] == "billing" and arguments["confidence"] == round(0.57**2 / (0.57**2 + 0.43**2), 4)
    assert call.machine.decision is not None and call.machine.decision.route == "billing_desk"


def test_an_emergency_heard_unsure_is_asked_about_and_the_answer_alone_names_the_need():
    call = Call()
    call.dialogue.model = ScriptedModel({  # type: ignore[assignment]
        "water just sits": ("emergency", 0.7),  # under Acme's urgent_min_confidence, 0.8
        "dishwasher": ("schedule", 0.95),
    })
    call.caller("the water just sits in the drain since we put the dishwasher in")
    assert call.machine.state == "capture" and call.lines[-1].line == "clarify"
    assert call.machine.urgent_proposal is not None  # urgent meanwhile: a failure would still reach a person
    assert call.line() == call.config.lines.clarify
    reply, tools = call.caller("I need a dishwasher installed")
    assert tools == [PROPOSE_ROUTE] and json.loads(reply.tool_calls[0].arguments_json)["intent"] == "schedule"
    assert call.machine.proposal.intent == "schedule" and call.lines[-1].line == "ask_details"


def test_a_need_said_unclearly_with_a_detail_in_it_goes_to_the_machine_with_the_detail():
    call = Call()
    reply, tools = call.caller("maybe your man could come round on Thursday instead, I won't be in on the day")
    assert tools == [RECORD_DETAILS, PROPOSE_ROUTE] and "preferred_date" in call.machine.captured
    assert call.lines[-1].line == "clarify"


def test_a_name_alone_is_no_need_and_gets_the_question():
    call = Call()
    reply, tools = call.caller("hi, my name is Ann Lee")
    assert tools == [RECORD_DETAILS] and call.machine.captured == {"caller_name": "Ann Lee"}
    assert call.dialogue.on_continue().say == f"Thank you. {call.config.lines.ask_intent}"


def test_a_question_met_with_silence_is_asked_again_once_then_the_call_moves_on():
    call = Call()
    call.caller("my basement is flooding")
    assert "name" in call.line()
    reply, tools = call.silence()
    assert tools == [] and reply.say.startswith("Sorry") and "name" in reply.say
    reply, tools = call.silence()  # asked twice: the next field
    assert tools == [] and "number" in reply.say and "name" not in reply.say
    call.silence()
    reply, tools = call.silence()
    assert "address" in reply.say
    call.silence()
    reply, tools = call.silence()  # nothing left to ask: the need goes back to the machine
    assert tools == [PROPOSE_ROUTE]
    # The machine asks for the details once more; the dialogue, having asked each twice, asks none of them
    # and says nothing: it proposes the need again, and the machine decides.
    reply, tools = call.answer_line()
    assert tools == [PROPOSE_ROUTE] and reply.say == ""
    decision = call.machine.decision
    assert decision is not None and decision.route == "emergency_desk"
    assert set(decision.missing_fields) == {"caller_name", "callback_number", "address"}


def test_a_number_said_again_at_its_read_back_confirms_it_even_after_a_no():
    call = number_given()
    assert call.dialogue.on_continue().say.startswith("I have 4 1 5")
    reply, tools = call.caller("no, it's four one five, five five five, two six seven one")  # misheard the read-back
    assert tools == [RECORD_DETAILS] and json.loads(reply.tool_calls[0].arguments_json) == {"confirmed": ["callback_number"]}
    assert "callback_number" not in call.machine.unread and call.machine.captured["callback_number"] == "+14155552671"


def test_a_caller_id_question_met_with_silence_keeps_the_number_unconfirmed():
    call = Call(caller_id="+14155550123")
    call.caller("my basement is flooding")
    call.line()
    call.caller("it's Ann Lee")
    call.dialogue.on_continue()
    call.caller("12 Elm Street, Springfield")
    assert call.dialogue.on_continue().say == "Is the number you're calling from the best one to reach you?"
    reply, tools = call.silence()
    assert tools == [PROPOSE_ROUTE]
    decision = call.machine.decision
    assert decision is not None and decision.route == "emergency_desk"
    assert decision.captured["callback_number"] == "+14155550123" and decision.unconfirmed_fields == ("callback_number",)


def test_silence_after_the_greeting_is_met_with_the_question_once():
    call = Call()
    assert call.silence()[0].say == call.config.lines.ask_intent
    assert call.silence()[0].is_empty  # then the budget decides


def test_missing_details_are_asked_one_at_a_time_then_the_intent_is_proposed_again():
    call = Call()
    _, tools = call.caller("my basement is flooding")
    assert tools == [PROPOSE_ROUTE] and call.machine.state == "capture"
    assert set(call.lines[-1].missing_fields) == {"caller_name", "callback_number", "address"}
    first = call.line()
    assert first.startswith(call.config.lines.ask_details) and "name" in first  # the config's first field first
    reply, tools = call.caller("it's Ann Lee")
    assert tools == [RECORD_DETAILS] and call.machine.captured == {"caller_name": "Ann Lee"}
    assert "number" in call.dialogue.on_continue().say
    call.caller("four one five five five five two six seven one")
    assert call.machine.captured["callback_number"] == "+14155552671"
    assert call.dialogue.on_continue().say == "I have 4 1 5, 5 5 5, 2 6 7 1. Is that right?"  # read_back = true
    call.caller("yes, that's right")
    assert "address" in call.dialogue.on_continue().say
    reply, tools = call.caller("12 Elm Street, Springfield")
    assert tools == [RECORD_DETAILS, PROPOSE_ROUTE]
    assert call.machine.decision.route == "emergency_desk" and call.machine.captured["address"] == "12 Elm Street, Springfield"


def booking_asked_for_details() -> tuple[Call, str]:
    call = Call()
    call.caller("I'd like to book a visit for a dripping tap")
    assert set(call.lines[-1].missing_fields) >= {"caller_name", "address"}
    return call, call.line()


def test_a_name_and_an_address_are_asked_for_in_one_question_and_taken_from_one_answer():
    call, first = booking_asked_for_details()
    assert first == f"{call.config.lines.ask_details} Could I have your full name and your address, please?"
    assert call.dialogue.listening_for() == ListeningFor("name")  # the answer is read as the name's
    reply, tools = call.caller("Ann Lee, 12 Elm Street, Springfield")
    assert tools == [RECORD_DETAILS, PROPOSE_ROUTE] and call.machine.decision.route == "schedule_visit"
    assert {k: call.machine.captured[k] for k in ("caller_name", "address")} == {
        "caller_name": "Ann Lee", "address": "12 Elm Street, Springfield"}


def test_an_address_left_out_of_the_answer_is_asked_for_on_its_own_once():
    call, _ = booking_asked_for_details()
    call.caller("Ann Lee")
    assert call.dialogue.on_continue().say == "Could you tell me your address?"  # no "sorry": not asked alone yet
    assert call.dialogue.listening_for() == ListeningFor("address")
    _, tools = call.caller("uh")  # asked twice, with the name and alone: not asked a third time
    assert tools == [PROPOSE_ROUTE] and call.lines[-1].missing_fields == ("address",)
    reply, _ = call.answer_line()  # the machine's own second ask: the dialogue says nothing, the machine decides
    assert reply.say == "" and call.machine.decision.route == call.config.triage.human_route


def test_a_sure_to_the_question_puts_it_again_once_without_counting_it():
    call = Call()
    call.caller("my basement is flooding")
    first = call.line()
    reply, tools = call.caller("Sure, go ahead.")  # agreed to be asked, answered nothing
    assert tools == [] and first.endswith(reply.say) and not reply.say.startswith("Sorry")
    reply, _ = call.caller("okay")  # a second time it counts: the name was asked once before, so "sorry"
    assert reply.say.startswith("Sorry, I didn't get that.") and "name" in reply.say
    call.caller("it's Ann Lee")
    assert call.machine.captured["caller_name"] == "Ann Lee"


def test_a_sure_to_a_name_and_address_question_puts_both_again():
    call, first = booking_asked_for_details()
    reply, _ = call.caller("yeah sure")
    assert first.endswith(reply.say) and "address" in reply.say
    _, tools = call.caller("Ann Lee, 12 Elm Street, Springfield")
    assert tools == [RECORD_DETAILS, PROPOSE_ROUTE] and call.machine.decision.route == "schedule_visit"


def test_a_caller_who_will_not_give_the_details_is_not_asked_again_and_the_machine_decides():
    call, _ = booking_asked_for_details()
    _, tools = call.caller("Sorry, I'd rather not say.")  # to the name and the address: neither comes
    assert tools == [PROPOSE_ROUTE] and call.lines[-1].missing_fields == ("address", "caller_name")
    reply, _ = call.answer_line()  # the machine asks once more: nothing is said, the machine decides
    assert reply.say == "" and call.machine.decision.route == call.config.triage.human_route


def test_a_caller_who_does_not_know_one_detail_is_asked_only_for_the_other():
    call, _ = booking_asked_for_details()
    reply, tools = call.caller("I don't know the address, sorry.")
    assert tools == [] and reply.say == "No problem. Could I have your full name, please?"
    _, tools = call.caller("Ann Lee")
    assert tools == [RECORD_DETAILS, PROPOSE_ROUTE] and call.machine.captured["caller_name"] == "Ann Lee"
    assert "address" not in call.dialogue.on_line(spoken_line(call.config, call.lines[-1])).removeprefix(
        call.config.lines.ask_details
    )


def test_a_number_refused_is_not_asked_for_again_and_the_next_question_has_no_sorry():
    call = Call()
    call.caller("my basement is flooding")
    call.line()
    call.caller("Ann Lee")
    assert "number" in call.dialogue.on_continue().say
    reply, tools = call.caller("I'd rather not give my number out.")
    assert tools == [] and reply.say == "No problem. Could you tell me your address?"
    assert call.dialogue.listening_for() == ListeningFor("address")


def test_details_in_words_begun_before_the_question_are_kept_and_the_question_stays_open():
    call, _ = booking_asked_for_details()
    reply, tools = call.caller("and we're at 12 Elm Street, Springfield", answering=False)
    assert tools == [RECORD_DETAILS] and reply.say == ""  # no "sorry": the name was not asked for yet
    assert call.machine.captured["address"] == "12 Elm Street, Springfield"
    _, tools = call.caller("Ann Lee")
    assert tools == [RECORD_DETAILS, PROPOSE_ROUTE] and call.machine.decision.route == "schedule_visit"


def test_a_name_and_a_number_are_still_asked_one_at_a_time():
    call = Call()
    call.caller("my basement is flooding")  # name, number, address: the number comes between them
    assert call.line().endswith("Could I have your full name, please?")


def test_a_field_not_heard_twice_is_given_up_and_the_machine_decides():
    call = Call()
    call.caller("my basement is flooding")
    call.line()
    reply, tools = call.caller("uh")  # nothing usable as a name? "uh" is a filler
    assert tools == [] and reply.say.startswith("Sorry")
    reply, tools = call.caller("um")
    # Asked twice: the dialogue moves to the next field.
    assert "number" in (reply.say or call.dialogue.on_continue().say)


def test_a_field_asked_twice_is_not_asked_again_when_the_machine_asks_for_it_again():
    call = Call()
    call.caller("my basement is flooding")
    call.line()
    call.caller("uh")  # the name, asked a second time
    call.caller("um")  # given up: the dialogue goes on to the next field
    again = spoken_line(call.config, Speak(Line.ASK_DETAILS, ("caller_name", "address")))
    words = call.dialogue.on_line(again)
    assert "name" not in words.removeprefix(call.config.lines.ask_details) and "address" in words


def test_an_empty_turn_gets_the_not_heard_line_and_nothing_is_proposed():
    call = Call()
    reply, tools = call.caller("[noise] <unk>")
    assert tools == [] and reply.say == call.config.lines.not_heard
    assert call.machine.state == "capture"


def test_taking_over_with_a_clear_need_already_heard_proposes_it_without_asking():
    config = load_routing_config(ACME)
    dialogue = OfflineDialogue(config, MODEL, lambda: TODAY, {"caller_name": "Ann Lee"}, True)  # type: ignore[arg-type]
    dialogue.seed(["hi, there is a problem with my invoice"])
    reply = dialogue.on_continue()
    assert [call.name for call in reply.tool_calls] == [PROPOSE_ROUTE] and reply.say == ""


def test_taking_over_with_nothing_clear_asks_the_caller_to_say_it_again():
    config = load_routing_config(ACME)
    dialogue = OfflineDialogue(config, MODEL, lambda: TODAY, {}, True)  # type: ignore[arg-type]
    dialogue.seed(["hello"])
    assert dialogue.on_continue().say == config.lines.taking_over
    assert dialogue.on_continue().is_empty  # said once


def test_the_recogniser_listens_for_the_answer_to_the_field_just_asked():
    call = Call()
    assert call.dialogue.listening_for() is None  # an open question: how can I help?
    call.caller("my basement is flooding")
    call.line()
    assert call.dialogue.listening_for() == ListeningFor("name")
    call.caller("it's Ann Lee")
    call.dialogue.on_continue()
    assert call.dialogue.listening_for() == ListeningFor("phone")


def test_a_phone_question_offers_the_keypad_and_a_name_question_does_not():
    call = Call()
    call.caller("my basement is flooding")
    assert "keypad" not in call.line()  # the name first
    call.caller("it's Ann Lee")
    assert call.dialogue.on_continue().say == (
        "What's the best number to call you back on? Or type it on your keypad and press pound."
    )


def test_a_number_read_back_wrong_is_corrected_in_the_answer_and_read_back_again():
    call = number_given()
    assert call.dialogue.on_continue().say.startswith("I have 4 1 5, 5 5 5, 2 6 7 1.")
    assert call.machine.decision is None  # not proposed again before the read-back is answered
    reply, tools = call.caller("no, it's four one five five five five zero one nine nine")
    assert tools == [RECORD_DETAILS] and call.machine.captured["callback_number"] == "+14155550199"
    assert call.dialogue.on_continue().say == "I have 4 1 5, 5 5 5, 0 1 9 9. Is that right?"
    call.caller("yes")
    assert "address" in call.dialogue.on_continue().say
    call.caller("12 Elm Street, Springfield")
    assert call.machine.decision is not None and call.machine.decision.unconfirmed_fields == ()


def test_a_number_not_confirmed_is_captured_and_listed_unconfirmed():
    call = number_given()
    call.dialogue.on_continue()  # the read-back
    call.clock = 100.0  # the budget ends before the caller answers it
    call.machine.handle(ev.TimerFired())
    decision = call.machine.decision
    assert decision is not None and decision.route == "emergency_desk"
    assert decision.captured["callback_number"] == "+14155552671"
    assert decision.unconfirmed_fields == ("callback_number",)


def test_a_caller_id_number_is_confirmed_with_one_question():
    call = Call(caller_id="+14155550123")
    call.caller("my basement is flooding")
    assert call.lines[-1].confirm_fields == ("callback_number",)
    call.line()  # the name first
    call.caller("it's Ann Lee")
    # What is missing before the number known from caller ID, which is usable already.
    assert "address" in call.dialogue.on_continue().say
    call.caller("12 Elm Street, Springfield")
    assert call.dialogue.on_continue().say == "Is the number you're calling from the best one to reach you?"
    reply, tools = call.caller("yes, that's fine")
    assert [name for name in tools] == [RECORD_DETAILS, PROPOSE_ROUTE]
    assert json.loads(reply.tool_calls[0].arguments_json) == {"confirmed": ["callback_number"]}
    assert call.machine.decision is not None and call.machine.decision.unconfirmed_fields == ()


def test_a_caller_id_number_refused_is_asked_for_with_the_keypad_offered():
    call = Call(caller_id="+14155550123")
    call.caller("my basement is flooding")
    call.line()
    call.caller("it's Ann Lee")
    call.dialogue.on_continue()  # the address
    call.caller("12 Elm Street, Springfield")
    call.dialogue.on_continue()  # is the number you're calling from the best one?
    assert call.dialogue.listening_for() == ListeningFor("phone")  # "yes", or "no, it's 415 ..."
    reply, tools = call.caller("no")
    assert tools == [] and reply.say.startswith("What's the best number") and "keypad" in reply.say
    call.caller("four one five five five five zero one nine nine")
    assert call.machine.captured["callback_number"] == "+14155550199"


def test_other_details_said_instead_of_a_yes_are_recorded_and_the_number_stays_unconfirmed():
    call = Call()
    call.caller("my basement is flooding")
    call.line()
    call.caller("four one five five five five two six seven one")  # the number before the name
    call.dialogue.on_continue()  # the read-back
    assert call.dialogue.listening_for() == ListeningFor("phone")
    reply, tools = call.caller("my name is Ann Lee")  # neither yes nor no
    assert tools == [RECORD_DETAILS] and call.machine.captured["caller_name"] == "Ann Lee"
    assert "address" in call.dialogue.on_continue().say  # the number is not asked again
    call.caller("12 Elm Street, Springfield")
    assert call.machine.decision is not None and call.machine.decision.unconfirmed_fields == ("callback_number",)


def test_a_number_corrected_at_the_read_back_replaces_only_what_was_corrected():
    call = number_given()
    assert call.machine.captured["callback_number"] == "+14155552671"
    call.dialogue.on_continue()  # the read-back
    call.caller("no, sorry, the end is two six seven two")
    assert call.machine.captured["callback_number"] == "+14155552672"
    assert "address" not in call.machine.captured


def test_a_detail_declined_in_an_answer_that_gives_another_is_not_asked_again():
    call = Call()
    call.caller("my basement is flooding")
    call.line()
    call.caller("I'd rather not give my name out, and the address is 50 Harbor View Road, Madison.")
    assert call.machine.captured["address"] == "50 Harbor View Road, Madison"
    follow_up = call.dialogue.on_continue().say
    assert "name" not in follow_up and "number" in follow_up  # the name is not pressed for: the number is next
