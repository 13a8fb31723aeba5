"""The persona caller: what it makes of the agent's lines and what it answers (text-level rules), the verdict
on a call record, one whole call on the fake Realtime engine with a perfect model for the persona, and that
model's idle timeout on a silent line."""
from __future__ import annotations

import datetime
from pathlib import Path

import pytest
import trio

from bridge.twilio.mulaw import tone
from orchestrator.config.routing import load_routing_config
from orchestrator.engines.offline.slot_extraction import field_question
from orchestrator.engines.offline.speech import speech_support
from orchestrator.testing.fake_realtime import RecordedSession, Scenario
from orchestrator.testing.persona_answers import Heard, PersonaMind, hear, spoken_digits
from orchestrator.testing.persona_verdict import judge, same_value
from orchestrator.testing.personas import Persona
from orchestrator.testing.twilio_caller import (
    CallerOptions,
    HangUp,
    Say,
    SimulatedCaller,
    Wait,
    WaitForAgent,
    fetch_call_record,
)
from tests.live_call_support import ACME, front_desk, with_triage

TODAY = datetime.date(2026, 12, 3)  # a Thursday
ACME_CONFIG = load_routing_config(ACME)


def persona(**changes) -> Persona:
    data = {
        "name": "test_persona",
        "config": "acme_plumbing",
        "description": "A flooded basement.",
        "caller": {"from": "+14155550123"},
        "need": {"lines": ["My basement is flooding.", "There's water all over the basement."]},
        "details": [
            {"kind": "name", "say": "Maria Lopez", "field": "caller_name"},
            {"kind": "phone", "say": "four one five, five five five, oh one nine nine", "digits": "4155550199",
             "field": "callback_number"},
            {"kind": "address", "say": "twelve Baker Street, Springfield", "field": "address"},
            {"kind": "postcode", "unknown": True},
        ],
        "expect": {
            "route": "emergency_desk",
            "urgent": True,
            "fields": {"caller_name": "Maria Lopez", "callback_number": "+14155550199",
                       "address": "12 Baker Street, Springfield"},
        },
    }
    for key, value in changes.items():
        data[key] = {**data[key], **value} if isinstance(value, dict) and key in data else value
    return Persona.model_validate(data)


# --------------------------------------------------------------------------- what the caller hears


@pytest.mark.parametrize(
    ("line", "ask"),
    [
        (ACME_CONFIG.lines.greeting, "need"),
        (ACME_CONFIG.lines.ask_intent, "need"),
        (ACME_CONFIG.lines.clarify, "need"),  # "Is this about an emergency, booking a visit, or a bill?"
        (ACME_CONFIG.lines.taking_over, "need"),
        (ACME_CONFIG.lines.not_heard, "repeat"),
        (ACME_CONFIG.lines.handoff, None),
        (f"{ACME_CONFIG.lines.ask_details} Could I have your full name, please?", "name"),
        ("Thank you. What's the best number to call you back on?", "phone"),
        ("Sorry, I didn't get that. Could you tell me your address?", "address"),
        ("what they would suit you.", "date"),  # Whisper's "What day would suit you?"
        ("Could you tell me your postcode?", "postcode"),
        ("Is the number you're calling from the best one to reach you?", "caller_id"),
        ("I have 415-555-0199. Is that right?", "confirm"),
        ("Is there anything else?", "anything_else"),
        ("Is it checking or savings?", "account_type"),
        ("So we can help you quickly, could I take a few details first?", "details"),
    ],
)
def test_the_caller_hears_what_a_line_asks_from_its_last_question(line, ask):
    assert hear(line).ask == ask


def test_the_offline_engines_own_questions_are_each_heard_as_their_field():
    kinds = {"caller_name": "name", "callback_number": "phone", "address": "address", "preferred_date": "date"}
    for field in ACME_CONFIG.fields:
        assert hear(field_question(field)).ask == kinds[field.name]


def test_the_agents_keypad_offer_read_back_and_caller_id_question_are_heard_and_answered():
    from orchestrator.engines import CALLER_ID_QUESTION, asked_with_keypad, read_back_question

    phone = next(field for field in ACME_CONFIG.fields if field.name == "callback_number")
    offered = hear(f"{ACME_CONFIG.lines.keypad_thanks} {asked_with_keypad(phone, field_question(phone))}")
    assert (offered.ask, offered.keypad_offered) == ("phone", True)
    assert PersonaMind(persona(behaviour={"keypad": True})).reply(offered).keys == "4155550199#"
    assert hear(CALLER_ID_QUESTION).ask == "caller_id"
    mind = PersonaMind(persona())
    mind.reply(hear(field_question(phone)))
    wrong = read_back_question(phone, "+14155550198", "US")  # "I have 4 1 5, 5 5 5, 0 1 9 8. Is that right?"
    assert hear(wrong).ask == "confirm"
    assert mind.reply(hear(wrong)).say == "No, it's four one five, five five five, oh one nine nine."
    right = mind.reply(hear(read_back_question(phone, "+14155550199", "US")))
    assert (right.say, right.confirms) == ("Yes, that's right.", True)
    assert mind.reply(hear("I have 4-1-5, 5-5-5, 0-1-9-9. Is that right?")).confirms  # as Whisper writes it


def test_details_asked_together_are_answered_in_the_order_asked():
    heard = hear("So we can help you quickly, could I have your name and a number to reach you on?")
    assert (heard.ask, heard.also) == ("name", ("phone",))
    move = PersonaMind(persona()).reply(heard)
    assert move.say == "Maria Lopez, and my number is four one five, five five five, oh one nine nine."
    assert move.gives == ("name", "phone")


def test_spoken_digits_read_groups_oh_and_double():
    assert spoken_digits("four one five, double five five, oh one nine nine") == "4155550199"
    assert spoken_digits("415-555-0199") == "4155550199"


# --------------------------------------------------------------------------- what the caller answers


def test_a_caller_answers_only_what_is_asked_in_their_own_words():
    mind = PersonaMind(persona())
    need = mind.reply(hear(ACME_CONFIG.lines.greeting), first_line=True)
    assert (need.say, need.states_need) == ("My basement is flooding.", True)
    assert mind.reply(hear("So we can help you quickly, could I take a few details first?")).say == "Sure, go ahead."
    assert mind.reply(hear("Could I have your full name, please?")).say == "Maria Lopez"
    phone = mind.reply(hear("What's the best number to call you back on?"))
    assert (phone.say, phone.gives) == ("four one five, five five five, oh one nine nine", ("phone",))
    assert mind.reply(hear(ACME_CONFIG.lines.handoff)).silent
    again = mind.reply(hear(ACME_CONFIG.lines.clarify))  # the need again, in other words
    assert again.say == "There's water all over the basement."
    assert mind.reply(hear(ACME_CONFIG.lines.not_heard)).say == "My basement is flooding."  # the lines cycle


def test_a_caller_who_gives_everything_at_once_or_one_thing_per_turn():
    everything = PersonaMind(persona(behaviour={"style": "all_at_once"}, need={"gives": ["name"]}))
    opening = everything.reply(hear(ACME_CONFIG.lines.greeting), first_line=True)
    assert opening.say == "My basement is flooding. My name is Maria Lopez."
    rest = everything.reply(hear("What's the best number to call you back on?"))
    assert rest.gives == ("phone", "address")
    assert rest.say == ("Four one five, five five five, oh one nine nine, and the address is "
                        "twelve Baker Street, Springfield.")
    one_by_one = PersonaMind(persona(behaviour={"style": "one_per_turn"}))
    one_by_one.reply(hear(ACME_CONFIG.lines.greeting), first_line=True)
    first = one_by_one.reply(hear("Could I take a few details first?"))
    second = one_by_one.reply(hear("Could I take a few details first?"))
    assert (first.say, first.gives) == ("My name is Maria Lopez.", ("name",))
    assert second.gives == ("phone",)


def test_a_caller_refuses_or_does_not_know_a_detail_and_corrects_a_wrong_read_back():
    mind = PersonaMind(persona(details=[
        {"kind": "phone", "refuses": True},
        {"kind": "postcode", "unknown": True},
        {"kind": "account_number", "say": "one two three, four five six", "digits": "123456"},
    ], expect={"fields": {}}))
    refused = mind.reply(hear("What's the best number to call you back on?"))
    assert (refused.say, refused.declines) == ("I'd rather not give my number out.", ("phone",))
    assert mind.reply(hear("Sorry, what's the best number to reach you?")).say == "Sorry, I'd rather not say."
    assert mind.reply(hear("And the postcode?")).say == "Sorry, I don't know the postcode."
    assert mind.reply(hear("Is the number you're calling from the best one to reach you?")).say == "Yes, that's fine."
    mind.reply(hear("Could you give me your account number?"))
    corrected = mind.reply(hear("I have one two three four five seven, is that right?"))
    assert (corrected.say, corrected.gives) == ("No, it's one two three, four five six.", ("account_number",))
    assert mind.reply(hear("I have 123456, is that correct?")).say == "Yes, that's right."


def test_a_caller_whose_number_is_not_the_one_they_call_from_says_so():
    move = PersonaMind(persona()).reply(hear("Is the number you're calling from the best one to reach you?"))
    assert move.say == "No, it's better to call me on four one five, five five five, oh one nine nine."
    assert move.gives == ("phone",)


def test_keys_a_silence_and_a_nudge():
    keypad = PersonaMind(persona(behaviour={"keypad": True}))
    typed = keypad.reply(hear("What's the best number to call you back on? You can also type it on your keypad."))
    assert (typed.keys, typed.say, typed.gives) == ("4155550199#", "", ("phone",))
    said = keypad.reply(hear("What's the best number to call you back on?"))  # not offered: said
    assert said.say.startswith("four one five")

    menu = PersonaMind(persona(behaviour={"menu_key": "1", "silent_once": True}))
    pressed = menu.reply(hear(ACME_CONFIG.lines.greeting), first_line=True)
    assert (pressed.keys, pressed.answers) == ("1", False)
    silent = menu.reply(hear(ACME_CONFIG.lines.ask_intent))
    assert silent.silent and not silent.answers
    assert menu.reply(hear(ACME_CONFIG.lines.ask_intent)).states_need  # asked again: answers now

    quiet = PersonaMind(persona())
    assert quiet.nudge().states_need  # nobody spoke: the caller says why they called
    assert [quiet.nudge().say for _ in range(3)] == ["Hello? Are you still there?"] * 2 + [""]
    assert quiet.reply(Heard("mm", None)).silent


# --------------------------------------------------------------------------- the verdict


def record(route: str, kind: str, captured: dict[str, str], reason: str = "accepted") -> dict:
    decision = {"route": route, "route_kind": kind, "reason": reason, "intent": "emergency", "captured": captured,
                "decided_after_s": 12.5}
    return {"passes": [{"number": 1, "decision": decision, "outcome": {"state_path": ["greeting"]}}]}


def test_the_verdict_judges_the_route_and_each_field_on_normalised_values():
    captured = {"caller_name": "maria lopez", "callback_number": "+14155550199",
                "address": "Twelve Baker Street Springfield"}
    verdict = judge(persona(), record("emergency_desk", "flex", captured), questions=3, today=TODAY)
    assert verdict.route_right and not verdict.urgent_in_voicemail
    assert [(f.field, f.right) for f in verdict.fields] == [
        ("caller_name", True), ("callback_number", True), ("address", True)
    ]
    assert (verdict.decided_after_s, verdict.questions, verdict.fields_right) == (12.5, 3, 3)
    assert verdict.as_json()["route_right"] is True


def test_the_verdict_counts_an_urgent_call_in_voicemail_and_every_field_missed():
    verdict = judge(persona(), record("voicemail", "voicemail", {"callback_number": "+1415555"}, "budget_expired"),
                    questions=1, today=TODAY)
    assert not verdict.route_right and verdict.urgent_in_voicemail and verdict.reason == "budget_expired"
    assert verdict.fields_right == 0
    assert verdict.fields[1].captured == "+1415555"
    nothing = judge(persona(), None, questions=0, today=TODAY)
    assert nothing.route is None and not nothing.route_right and nothing.decided_after_s is None


def test_a_day_expected_is_the_date_of_that_day_after_the_call():
    booking = persona(details=[], expect={"route": "schedule_visit", "urgent": False, "fields": {},
                                          "days": {"preferred_date": "friday"}})
    friday, a_week_later = ({"preferred_date": day} for day in ("2026-12-04", "2026-12-11"))
    right = judge(booking, record("schedule_visit", "studio", friday), questions=0, today=TODAY)
    wrong = judge(booking, record("schedule_visit", "studio", a_week_later), questions=0, today=TODAY)
    assert right.fields[0].right and not wrong.fields[0].right
    assert same_value("+14155550199", "+1 415 555 0199") and not same_value("+14155550199", "+14155550198")


def test_the_caller_listens_to_the_agent_expecting_numbers_read_back():
    from orchestrator.commands.call import caller_ears
    from orchestrator.engines.offline.speech import ListeningFor

    class Recognizer:
        def transcribe(self, mulaw: bytes, *, listening_for: ListeningFor | None = None) -> str:
            return f"{len(mulaw)} bytes, steered for {listening_for.kind if listening_for else None}"

    assert caller_ears(Recognizer())(b"\xff" * 160) == "160 bytes, steered for phone"  # type: ignore[arg-type]


# --------------------------------------------------------------------------- one whole call


@pytest.mark.skipif(not speech_support().available, reason="the persona caller speaks and listens (speech extra)")
async def test_a_persona_converses_with_a_perfect_model_and_ends_where_it_should(tmp_path: Path):
    from orchestrator.commands.call import caller_ears
    from orchestrator.engines.offline.speech import SpeechRecognizer, SpeechSynthesizer
    from orchestrator.testing.persona_caller import PersonaCaller
    from orchestrator.testing.persona_model import ModelBrief, PersonaModel

    booking = persona(
        need={"lines": ["I'd like someone to look at a dripping tap."], "gives": ["address"]},
        details=[{"kind": "name", "say": "John Smith", "field": "caller_name"},
                 {"kind": "address", "say": "twenty one Elm Road", "volunteer": "I'm at twenty one Elm Road",
                  "field": "address"}],
        expect={"route": "schedule_visit", "urgent": False,
                "fields": {"caller_name": "John Smith", "address": "21 Elm Road"}},
    )
    voice, recognizer = SpeechSynthesizer.load(), SpeechRecognizer.load(threads=1)
    brief = ModelBrief(
        intent="schedule", confidence=0.95, summary="dripping tap",
        fields={"name": ("caller_name", "John Smith"), "address": ("address", "21 Elm Road")},
        questions={field.name: field_question(field) for field in ACME_CONFIG.fields},
        field_order=[field.name for field in ACME_CONFIG.fields],
    )
    lines = ACME_CONFIG.lines
    for line in (lines.greeting, f"{lines.ask_details} {brief.questions['caller_name']}", lines.handoff):
        await trio.to_thread.run_sync(voice.synthesize, line)  # the model's lines, rendered before the call
    config = with_triage(tmp_path, budget_seconds=90)  # the caller's ears may be slow on a busy machine
    # Speed 2 at most: the model's and the caller's own delays are wall-clock, so faster compresses only the rest.
    async with front_desk(tmp_path, Scenario(), config_path=config) as desk:
        options = CallerOptions(base_url=desk.server.base_url, auth_token=desk.server.auth_token, speed=2,
                                max_call_s=240)
        caller = PersonaCaller(booking, options, voice=voice, transcribe=caller_ears(recognizer))
        desk.fake.scenario = PersonaModel(desk.fake, brief, lambda: caller.turns, voice.synthesize).scenario()
        call = await caller.run()
        found = await fetch_call_record(desk.server.base_url, call.result.call_sid, desk.server.auth_token)
        assert desk.fake.violations == [] and call.result.violations == []

    said = [(turn.text, turn.gives) for turn in call.caller_turns]
    assert said[:2] == [("I'd like someone to look at a dripping tap. I'm at twenty one Elm Road.", ("address",)),
                        ("John Smith", ("name",))]
    # The model asked and the caller heard the question whole (its words are Whisper's: "full man" happens).
    assert call.agent_lines[1].ended_at is not None and call.agent_lines[1].text
    verdict = judge(booking, found, questions=call.questions, today=datetime.date.today())
    assert verdict.route_right and verdict.reason == "accepted"
    assert [(f.field, f.right) for f in verdict.fields] == [("caller_name", True), ("address", True)]
    assert verdict.questions == 1
    assert "<Redirect" in (call.result.final_twiml or "")


# --------------------------------------------------------------------------- a silent caller on Realtime


async def silent_line_call(tmp_path: Path, steps: list) -> tuple[RecordedSession, list[str]]:
    """One call on the persona model with a 1 s idle timeout; the model's lines are 400 ms of silence."""
    from orchestrator.testing.persona_model import ModelBrief, PersonaModel

    brief = ModelBrief(intent="emergency", confidence=0.95, summary="", fields={}, questions={}, field_order=[])
    async with front_desk(tmp_path, Scenario(), silent_answer_s=1.0) as desk:
        desk.fake.scenario = PersonaModel(desk.fake, brief, list, lambda words: b"\xff" * 8 * 400).scenario()
        options = CallerOptions(base_url=desk.server.base_url, auth_token=desk.server.auth_token, max_call_s=30)
        result = await SimulatedCaller(options, steps).run()
        assert desk.fake.violations == [] and result.violations == []
        session = desk.realtime_session_of(result)
    said = [event["transcript"] for event in session.sent if event.get("type") == "response.output_audio_transcript.done"]
    return session, said


async def test_a_caller_silent_after_the_agents_words_is_asked_again(tmp_path: Path):
    session, said = await silent_line_call(tmp_path, [WaitForAgent(quiet_ms=300), Wait(2600), HangUp()])
    vad = session.events_of_type("session.update")[0].data["session"]["audio"]["input"]["turn_detection"]
    assert vad["type"] == "server_vad" and vad["idle_timeout_ms"] == 1000
    assert [event["type"] for event in session.sent if "timeout_triggered" in event.get("type", "")]
    assert said[0] == ACME_CONFIG.lines.greeting
    assert said[1] == "Are you still there? What can I help you with today?"


async def test_a_caller_who_speaks_before_the_idle_timeout_is_not_asked_again(tmp_path: Path):
    session, said = await silent_line_call(tmp_path, [WaitForAgent(quiet_ms=300), Say(tone(700)), Wait(2200), HangUp()])
    assert not [event for event in session.sent if "timeout_triggered" in event.get("type", "")]
    assert said == [ACME_CONFIG.lines.greeting]
