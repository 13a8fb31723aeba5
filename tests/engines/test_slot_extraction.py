"""Slot extraction from a caller's words: names, phone numbers, emails, dates and choices, offline."""
from __future__ import annotations

import datetime
import json
import os
from collections.abc import Sequence
from typing import Any

import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from machines.events import DetailsCaptured
from orchestrator.config.routing import CapturedField, RoutingConfig
from orchestrator.engines.offline.slot_extraction import (
    MAX_INPUT_CHARACTERS,
    declines_to_answer,
    extract_slots,
    field_question,
    listening_for,
)
from orchestrator.engines.offline.speech import ListeningFor
from orchestrator.engines.tools import RECORD_DETAILS, interpret_tool_call
from tests.engines.spoken_forms import spoken_group

WORKFLOW_SID = "WW0123456789abcdef0123456789abcdef"
TODAY = datetime.date(2025, 3, 12)  # a Wednesday

FIELD_SPECS: list[dict[str, Any]] = [
    {"name": "caller_name", "type": "text", "description": "The caller's full name."},
    {"name": "callback_number", "type": "phone"},
    {"name": "email", "type": "email"},
    {"name": "preferred_date", "type": "date"},
    {"name": "address", "type": "text"},
    {"name": "area", "type": "choice", "choices": ["North", "South Bank", "East"]},
    {"name": "problem", "type": "choice", "choices": ["Leak", "Boiler", "Radiator"]},
]
FIELDS = [CapturedField(**spec) for spec in FIELD_SPECS]
FIELD_NAMES = [field.name for field in FIELDS]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Overrides set in the developer's shell must not change the configs built here."""
    for name in list(os.environ):
        if name.upper().startswith("ORCHESTRATOR_"):
            monkeypatch.delenv(name)


def config_for(country: str, fields: Sequence[CapturedField] = FIELDS) -> RoutingConfig:
    return RoutingConfig(
        triage={"fallback_route": "voicemail", "human_route": "desk"},
        routes={"voicemail": {"kind": "voicemail"}, "desk": {"kind": "flex", "workflow_sid": WORKFLOW_SID}},
        fields=[field.model_dump() for field in fields],
        company={"country": country},
    )


CONFIGS = {country: config_for(country) for country in ("US", "GB", "DE")}


def assert_accepted_as_recorded(values: dict[str, str], config: RoutingConfig) -> None:
    """What the extractor produces is what record_details accepts, unchanged."""
    if not values:
        return
    result = interpret_tool_call(config, RECORD_DETAILS, json.dumps(values), "c1")
    assert isinstance(result, DetailsCaptured), result
    assert dict(result.fields) == values


def slots(
    text: str,
    asked_for: str | None = None,
    country: str = "US",
    today: datetime.date = TODAY,
    fields: Sequence[CapturedField] = FIELDS,
) -> dict[str, str]:
    values = extract_slots(text, fields, asked_for=asked_for, country=country, today=today)
    config = CONFIGS[country] if fields is FIELDS else config_for(country, fields)
    assert_accepted_as_recorded(values, config)
    return values


# --- Names -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("my name is mary smith", "Mary Smith"),
        ("Hi, this is Mary Smith calling about a leak.", "Mary Smith"),
        ("hello I'm john and I've got a problem", "John"),
        ("I am Anna-Lise O'Connor.", "Anna-Lise O'Connor"),
        ("yeah my name's DeShawn McDonald", "DeShawn McDonald"),
        ("MY NAME IS MARY ANN SMITH", "Mary Ann Smith"),
        ("call me bob", "Bob"),
        ("Hello, this is Dr. Jones.", "Dr Jones"),
        ("this is mrs smith", "Mrs Smith"),
    ],
)
def test_a_name_is_taken_after_a_cue(text: str, name: str) -> None:
    assert slots(text).get("caller_name") == name


@pytest.mark.parametrize(
    "text",
    [
        "I'm calling about my bill",
        "I'm looking to book a visit",
        "this is urgent, water everywhere",
        "this is about my invoice",
        "I'm not sure",
        "I'm locked out of my online banking",  # no capitals but the sentence's: "locked" is no name
        "I'm worried about the leak",
        "I'm wondering if you do boilers",  # a choice named, but no name
        "Hi, this is really bad",
        "This is the plumber? I have a question",  # case present, "the" is lower-case and a stop word
        "my name is mary jane anne smith",  # four words in a row: more a sentence than a name
        "mary smith",  # a name without a cue, not asked for: not guessed
        "my name is Miss",  # a title alone
    ],
)
def test_no_name_without_a_real_cue(text: str) -> None:
    assert "caller_name" not in slots(text)


def test_with_case_in_the_text_only_capitalised_words_are_a_name() -> None:
    assert slots("Hello, I'm John and my sink is blocked") == {"caller_name": "John"}
    assert "caller_name" not in slots("Hello, I'm stuck with a blocked sink")


def test_two_different_introductions_are_ambiguous() -> None:
    assert "caller_name" not in slots("this is mary smith, I'm john smith's wife")


@pytest.mark.parametrize(
    ("answer", "name"),
    [
        ("it's mary smith", "Mary Smith"),
        ("uh yeah it's mary o'brien thanks", "Mary O'Brien"),
        ("Mary", "Mary"),
        ("um, john um doe", "John Doe"),
        ("sure, my name is Priya Patel.", "Priya Patel"),
        ("mary smith and I have a leak", "Mary Smith"),
    ],
)
def test_asked_for_a_name_the_whole_answer_is_the_name(answer: str, name: str) -> None:
    values = slots(answer, asked_for="caller_name")
    assert values["caller_name"] == name


@pytest.mark.parametrize(
    ("answer", "name"),
    [
        ("It's Dorothy Kalski. K-O-W-A-L-S-K-I.", "Dorothy Kowalski"),  # the letters correct what was misheard
        ("Fatima Benali, B, E, N, A, L, I.", "Fatima Benali"),
        ("Ann Lee, that's L E E", "Ann Lee"),
        ("That I'm a Benali, B-E-N-A-L-I.", "Benali"),  # the name heard as no name: the spelled word is it
    ],
)
def test_a_name_spelled_out_is_taken_as_spelled(answer: str, name: str) -> None:
    assert slots(answer, asked_for="caller_name")["caller_name"] == name


def test_a_spelled_word_unlike_the_name_heard_changes_nothing_unasked() -> None:
    assert slots("this is Sam Ward, my postcode is S W 1 A")["caller_name"] == "Sam Ward"


@pytest.mark.parametrize(
    "answer", ["I'd rather not say", "why do you need it", "I'm calling about my boiler", "uh"]
)
def test_asked_for_a_name_an_answer_that_is_no_name_gives_none(answer: str) -> None:
    assert "caller_name" not in slots(answer, asked_for="caller_name")


def test_fields_that_are_not_a_persons_name_are_not_filled_by_an_introduction() -> None:
    fields = [CapturedField(name="company_name", type="text"), CapturedField(name="first_name", type="text")]
    assert slots("my name is mary smith", fields=fields) == {}


# --- Free text -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "address"),
    [
        ("uh it's 12 main street, springfield thanks", "12 main street, springfield"),
        ("Yeah, 4 Elm Road, London N1 9GU.", "4 Elm Road, London N1 9GU"),
        ("um the flat above the um bakery", "the flat above the bakery"),
    ],
)
def test_asked_for_a_text_field_the_answer_is_cleaned_of_fillers(answer: str, address: str) -> None:
    assert slots(answer, asked_for="address")["address"] == address


def test_a_free_text_field_not_asked_for_is_never_guessed() -> None:
    notes = CapturedField(name="notes", type="text")
    assert slots("the boiler makes a noise when I run the tap", fields=[notes]) == {}


def test_a_long_text_answer_is_cut_at_a_word_to_fit_the_validator() -> None:
    answer = "the house " * 40
    address = slots(answer, asked_for="address")["address"]
    assert len(address) <= 200 and answer.startswith(address) and address.endswith("house")


@pytest.mark.parametrize(
    ("answer", "address"),
    [
        ("fifteen Park Street, Springfield", "15 Park Street, Springfield"),
        ("15 Park St., Springfield.", "15 Park Street, Springfield"),
        ("two hundred Pine Road, Cupertino", "200 Pine Road, Cupertino"),
        ("thirty three Hill Street, Springfield", "33 Hill Street, Springfield"),
        ("60 Glen Road. Springfield.", "60 Glen Road, Springfield"),  # a pause Whisper wrote as a full stop
        ("8-bird Street, Cambridge.", "8 bird Street, Cambridge"),
        ("It's 42 Maple Ave, zip code nine four one oh five.", "42 Maple Avenue, zip code 94105"),
        ("4 Elm Rd, London N 1 9 G U.", "4 Elm Road, London N1 9GU"),
        ("12 St Mary St, Bristol", "12 St Mary Street, Bristol"),
        ("Five station roads. Springfield.", "5 station Road, Springfield"),  # Whisper's extra "s"
        ("I'm at 9 Cedar Court, Portland.", "9 Cedar Court, Portland"),
        ("Five Station Road, Springfield, but I don't know the postcode.", "5 Station Road, Springfield"),
        ("19 Ocean Drive, Springfield, and my name is Ruth Adler.", "19 Ocean Drive, Springfield"),
        ("Fourteen Saguaro Way, in Tempe.", "14 Saguaro Way, Tempe"),  # "in" says where the town is
        ("340 Linden Avenue. That's in Pittsburgh.", "340 Linden Avenue, Pittsburgh"),
        ("Forty one, sorry, no, fourteen. Fourteen Saguaro Way, Tempe.", "14 Saguaro Way, Tempe"),  # corrected
        ("Twenty seven fifteen East Camelback Road, Phoenix.", "2715 East Camelback Road, Phoenix"),  # in pairs
        ("for Birch Way, Springfield", "4 Birch Way, Springfield"),  # Whisper wrote the number's homophone
        ("To Coral Way, Miami.", "2 Coral Way, Miami"),
        ("For a new one on Oak Street.", "For a new 1 on Oak Street"),  # no street right after: not a number
    ],
)
def test_an_address_answer_is_written_the_same_way_however_it_was_heard(answer: str, address: str) -> None:
    assert slots(answer, asked_for="address")["address"] == address


@pytest.mark.parametrize(
    "text",
    [
        "This is Tom Becker, I'm at forty two Maple Avenue, Springfield, and my number is 212 555 4412.",
        "My basement is flooding, the address is 42 Maple Avenue, Springfield.",
        "Water everywhere at 42 Maple Avenue, Springfield, please hurry",
        "I live at 42 Maple Avenue. Springfield.",
        "Tom Becker and the addresses forty two Maple Avenue, Springfield.",  # Whisper's "address is"
    ],
)
def test_an_address_is_taken_unasked_after_a_cue_or_in_a_streets_shape(text: str) -> None:
    assert slots(text)["address"] == "42 Maple Avenue, Springfield"


@pytest.mark.parametrize(
    "text", ["I'm at work right now", "my pipe burst at 5 this morning", "I live on my own", "the address is wrong"]
)
def test_no_address_is_guessed_from_words_that_are_not_one(text: str) -> None:
    assert "address" not in slots(text)


@pytest.mark.parametrize(
    ("answer", "asked_for"),
    [
        ("Sorry, I don't know the postcode.", "address"),
        ("I'd rather not say.", "address"),
        ("Hello? Are you still there?", "address"),
        ("Sure, go ahead.", "caller_name"),
        ("Sure, go ahead.", "address"),
        ("I'm not sure, sorry.", "caller_name"),
        ("Sorry, can you say that again?", "address"),
        ("John Smith", "address"),  # a late answer to the question before
        ("Call him Fraser.", "address"),
    ],
)
def test_an_answer_that_gives_nothing_records_nothing(answer: str, asked_for: str) -> None:
    assert asked_for not in slots(answer, asked_for=asked_for)


def test_an_answer_of_only_fillers_records_nothing() -> None:
    assert slots("uh, um, yeah", asked_for="address") == {}


# --- Phone numbers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "country", "number"),
    [
        ("my number is (415) 555-2671", "US", "+14155552671"),
        ("call me back on 415.555.2671 please", "US", "+14155552671"),
        ("it's four one five five five five two six seven one", "US", "+14155552671"),
        ("four one five, five five five, two six seven one", "US", "+14155552671"),
        ("four one five five five five twenty six seventy one", "US", "+14155552671"),
        ("eight hundred five five five one two one two", "US", "+18005551212"),
        ("Plus one 415 555 2671", "GB", "+14155552671"),
        ("020 7946 0958", "GB", "+442079460958"),
        ("oh two oh, seven nine four six, oh nine five eight", "GB", "+442079460958"),
        ("oh seven nine double one, one two three four five six", "GB", "+447911123456"),
        ("oh seven nine one one triple one two three four", "GB", "+447911111234"),
        ("plus four four two zero seven nine four six zero nine five eight", "US", "+442079460958"),
        ("030 901820", "DE", "+4930901820"),
    ],
)
def test_phone_numbers_written_or_spoken_come_out_as_e164(text: str, country: str, number: str) -> None:
    assert slots(text, country=country) == {"callback_number": number}


@pytest.mark.parametrize(
    ("text", "country"),
    [
        ("five five five one two three four", "US"),  # no area code
        ("my number is 123 456 7890", "US"),  # no such area code
        ("oh seven nine one one one two three", "GB"),  # too short
        ("call 415-555-2671 or 415-555-2672", "US"),  # two numbers: ambiguous
        ("I paid two hundred dollars on the third", "US"),
        ("oh, I've got one leak and two taps dripping", "US"),
    ],
)
def test_no_phone_number_when_none_is_valid_or_several_are_given(text: str, country: str) -> None:
    assert "callback_number" not in slots(text, country=country)


@pytest.mark.parametrize(
    "text",
    [
        # As a caller says it.
        "four one five, five five five, oh one nine nine",
        "four one five five five five zero one nine nine",
        "my number is four one five, triple five, oh one nine nine",
        "four one five, double five five, oh one nine nine",
        "it's four fifteen, five five five, oh one ninety nine",
        "four one five, uh, five five five, um, oh one nine nine",
        # As Whisper writes it.
        "My number is 415-555-0199.",
        "(415) 555-0199",
        "415.555.0199",
        "4-1-5, 5-5-5, 0-1-9-9.",
        "4 1 5 5 5 5 0 1 9 9",
        "My number is 415 555 0199, and I'm at 12 Elm Street.",
        "My number is 415-555, a 1-9-9.",  # an "oh" heard as "a"
        "Plus 1 415 555 0199.",
        "1-415-555-0199",
        "Oh, it's 415-555-0199.",
    ],
)
def test_a_number_in_groups_words_or_transcript_form_is_captured(text: str) -> None:
    assert slots(text, asked_for="callback_number")["callback_number"] == "+14155550199"


@pytest.mark.parametrize(
    "text",
    [
        "three one two, five five five, zero one eight nine, no, sorry, zero one nine eight",
        "312-555-0189. No, sorry, 0198.",
        "312 555 0189, I mean 312 555 0198",
        "312 555 0189, actually, 0198",
        "312 555 0100, no wait, 555 0198",
    ],
)
def test_a_correction_in_the_same_breath_replaces_the_end_of_the_number(text: str) -> None:
    assert slots(text, asked_for="callback_number") == {"callback_number": "+13125550198"}


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("No, 0198.", "+13125550198"),
        ("Sorry, it's zero one nine eight.", "+13125550198"),
        ("No, it's 312 555 0177.", "+13125550177"),
        ("no, the number is six four six, five five five, oh one eight seven", "+16465550187"),
    ],
)
def test_a_correction_in_the_next_turn_applies_to_the_number_captured_before(text: str, number: str) -> None:
    values = extract_slots(
        text, FIELDS, asked_for="callback_number", today=TODAY, previous={"callback_number": "+13125550189"}
    )
    assert values == {"callback_number": number}


@pytest.mark.parametrize(
    "heard",
    [
        "4 1 5 5 5 5 5 0 1 9 9",  # an extra five heard, an "oh" lost: eleven digits
        "3 1 0 5 5 5 1 4 2",  # an "oh" lost: nine digits, whose first seven are a short number elsewhere in +1
        "My number is 646-55-0187.",  # a five lost
    ],
)
def test_a_number_heard_with_a_digit_too_many_or_too_few_is_not_captured_as_another(heard: str) -> None:
    assert "callback_number" not in slots(heard, asked_for="callback_number")


def test_digits_without_a_correction_cue_never_patch_an_earlier_number() -> None:
    values = extract_slots("0198", FIELDS, asked_for="callback_number", today=TODAY,
                           previous={"callback_number": "+13125550189"})
    assert values == {}


def test_a_sorry_far_from_the_number_corrects_nothing() -> None:
    text = "415 555 2671, sorry about all the mess in the kitchen, the tap, it is 12"
    assert slots(text, asked_for="callback_number") == {"callback_number": "+14155552671"}


US_AREA_CODES = ["212", "312", "415", "617", "646", "305", "408", "917", "503", "713"]


@settings(max_examples=200)
@given(
    area=st.sampled_from(US_AREA_CODES),
    exchange=st.integers(200, 999).map(str),
    line=st.integers(0, 9999).map(lambda n: f"{n:04d}"),
    data=st.data(),
)
def test_any_us_number_said_in_groups_is_captured_as_itself(area: str, exchange: str, line: str, data) -> None:
    digits = area + exchange + line
    separator = data.draw(st.sampled_from([", ", ". ", " - "]))  # a pause, as a transcript writes it
    said = separator.join(data.draw(spoken_group(group)) for group in (area, exchange, line))
    expected = "+1" + digits
    values = extract_slots(said, FIELDS, asked_for="callback_number", today=TODAY)
    if phonenumbers.is_valid_number(phonenumbers.parse(expected)):
        assert values == {"callback_number": expected}, said
    else:
        assert values == {}, said


def test_the_same_number_said_twice_is_one_number() -> None:
    assert slots("415 555 2671, that's four one five five five five two six seven one") == {
        "callback_number": "+14155552671"
    }


def test_with_two_phone_fields_a_number_goes_only_to_the_one_asked_for() -> None:
    fields = [CapturedField(name="mobile", type="phone"), CapturedField(name="landline", type="phone")]
    assert slots("415 555 2671", fields=fields) == {}
    assert slots("415 555 2671", asked_for="landline", fields=fields) == {"landline": "+14155552671"}


# --- Email addresses -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "email"),
    [
        ("mary dot smith at example dot com", "mary.smith@example.com"),
        ("my email is j o h n at gmail dot com", "john@gmail.com"),
        ("it's mary_smith@example.co.uk.", "mary_smith@example.co.uk"),
        ("Send it to Mary.Smith@Example.com thanks", "mary.smith@example.com"),  # spoken text has no case
        ("bob underscore jones at mail dash box dot org", "bob_jones@mail-box.org"),
        ("mary dot smith at sign example dot com", "mary.smith@example.com"),
        # "at" before a written address is no spoken "@"
        ("You can reach me at mary.smith@gmail.com.", "mary.smith@gmail.com"),
    ],
)
def test_emails_written_or_spoken_are_normalised(text: str, email: str) -> None:
    assert slots(text) == {"email": email}


@pytest.mark.parametrize(
    "text",
    [
        "I'm at home at the moment",  # "at" without an address
        "mary at example",  # no domain dot
        "mary at example dot com or john at example dot org",  # two addresses
        "dot dot at dot",
        "a@b.com@c.org",
    ],
)
def test_no_email_when_none_is_valid_or_several_are_given(text: str) -> None:
    assert "email" not in slots(text)


def test_asked_for_an_email_the_spaces_of_the_whole_answer_are_dropped() -> None:
    assert slots("it's mary smith at example dot com", asked_for="email") == {
        "email": "marysmith@example.com"
    }
    assert slots("my email address is mary smith at example dot com", asked_for="email") == {
        "email": "marysmith@example.com"
    }
    # Not asked for, only the word joined to "at" is the address.
    assert slots("it's mary smith at example dot com") == {"email": "smith@example.com"}


# --- Dates -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "date"),
    [
        ("today if possible", "2025-03-12"),
        ("tomorrow morning", "2025-03-13"),
        ("the day after tomorrow", "2025-03-14"),
        ("friday", "2025-03-14"),
        ("next tuesday", "2025-03-18"),
        ("on Wednesday", "2025-03-19"),  # said on a Wednesday: next week's
        ("this wednesday", "2025-03-12"),
        ("next week monday", "2025-03-17"),
        ("friday next week", "2025-03-21"),
        ("december the third", "2025-12-03"),
        ("the 3rd of december", "2025-12-03"),
        ("the third of december", "2025-12-03"),
        ("december 3rd 2026", "2026-12-03"),
        ("the twenty first of march twenty twenty six", "2026-03-21"),
        ("March 1st", "2026-03-01"),  # already past this year: next year's
        ("march the twelfth", "2025-03-12"),
        ("Tuesday, the 3rd of June", "2025-06-03"),  # the day name only describes the date
        ("sept 9", "2025-09-09"),
        ("3 april", "2025-04-03"),
        ("12/03", "2025-12-03"),
        ("3/1", "2026-03-01"),
        ("12/3/25", "2025-12-03"),
        ("2025-04-30", "2025-04-30"),
        ("february 29th", "2028-02-29"),  # the next one that exists
    ],
)
def test_dates_in_the_us(text: str, date: str) -> None:
    assert slots(text) == {"preferred_date": date}


@pytest.mark.parametrize(
    ("text", "date"),
    [
        ("11/03", "2026-03-11"),
        ("12/03", "2025-03-12"),
        ("13/04", "2025-04-13"),
        ("1.5.2025", "2025-05-01"),
        ("the 3rd of december", "2025-12-03"),
    ],
)
def test_numeric_dates_are_day_first_outside_the_us(text: str, date: str) -> None:
    assert slots(text, country="GB") == {"preferred_date": date}


@pytest.mark.parametrize(
    "text",
    [
        "february 30th",  # no such day
        "13/13",
        "5-10 minutes",  # a range, not a date
        "we need someone 24/7",
        "tomorrow or friday",  # two dates: ambiguous
        "the 15th",  # a bare day, not asked for
        "the first thing is the leak",
        "I may have a leak",
    ],
)
def test_no_date_when_invalid_ambiguous_or_only_a_number(text: str) -> None:
    assert "preferred_date" not in slots(text, country="GB")


def test_asked_for_a_date_a_bare_day_of_the_month_is_the_next_one() -> None:
    assert slots("the 15th", asked_for="preferred_date") == {"preferred_date": "2025-03-15"}
    assert slots("on the tenth please", asked_for="preferred_date") == {"preferred_date": "2025-04-10"}
    assert slots("the 31st", asked_for="preferred_date", today=datetime.date(2025, 4, 2)) == {
        "preferred_date": "2025-05-31"
    }


# --- Choices ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "values"),
    [
        ("I'm in the north", {"area": "North"}),
        ("SOUTH BANK", {"area": "South Bank"}),
        ("one of my radiators is cold", {"problem": "Radiator"}),
        ("there are leaks in the east", {"area": "East", "problem": "Leak"}),
        ("the boilers on the south bank", {"area": "South Bank", "problem": "Boiler"}),
    ],
)
def test_a_choice_named_as_words_is_taken(text: str, values: dict[str, str]) -> None:
    assert slots(text) == values


@pytest.mark.parametrize(
    "text",
    [
        "north or east, not sure",  # two choices: ambiguous
        "northern ireland",  # a word containing a choice is not the choice
        "the bank",  # part of a choice is not the choice
        "easterly winds",
    ],
)
def test_no_choice_when_none_or_several_are_named(text: str) -> None:
    assert "area" not in slots(text)


def test_plural_choices_match_singular_words() -> None:
    fields = [CapturedField(name="service", type="choice", choices=["Repairs", "Quotes", "Emergencies"])]
    assert slots("I need a repair", fields=fields) == {"service": "Repairs"}
    assert slots("it's an emergency", fields=fields) == {"service": "Emergencies"}


# --- Several details at once, and bad arguments ----------------------------------------------------


def test_one_utterance_can_fill_several_fields_in_config_order() -> None:
    values = slots(
        "Hi, this is Mary Smith, my boiler is broken, I'm on the South Bank,"
        " call me on 415 555 2671 or mary at example dot com, ideally next Tuesday"
    )
    assert list(values) == ["caller_name", "callback_number", "email", "preferred_date", "area", "problem"]
    assert values == {
        "caller_name": "Mary Smith",
        "callback_number": "+14155552671",
        "email": "mary@example.com",
        "preferred_date": "2025-03-18",
        "area": "South Bank",
        "problem": "Boiler",
    }


def test_asked_for_a_text_field_other_details_are_still_found() -> None:
    values = slots("it's 12 main street, and my number is 415 555 2671", asked_for="address")
    assert values == {"callback_number": "+14155552671", "address": "12 main street"}


def test_only_the_first_characters_of_a_huge_input_are_read() -> None:
    text = "a" * MAX_INPUT_CHARACTERS + " my number is 415 555 2671"
    assert slots(text) == {}
    assert slots(text[MAX_INPUT_CHARACTERS:]) == {"callback_number": "+14155552671"}


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ({"text": b"bytes"}, TypeError, "text must be a str"),
        ({"today": "2025-03-12"}, TypeError, "today must be a datetime.date"),
        ({"asked_for": "shoe_size"}, ValueError, "asked_for 'shoe_size' is not one of the fields"),
        ({"country": "XX"}, ValueError, "unknown country code 'XX'"),
    ],
)
def test_bad_arguments_raise_a_clear_error(
    arguments: dict[str, Any], error: type[Exception], message: str
) -> None:
    call: dict[str, Any] = {"text": "hello", "asked_for": None, "country": "US", "today": TODAY, **arguments}
    with pytest.raises(error, match=message):
        extract_slots(call.pop("text"), FIELDS, **call)


def test_a_datetime_for_today_counts_as_its_date() -> None:
    values = extract_slots("tomorrow", FIELDS, today=datetime.datetime(2025, 3, 12, 23, 59))
    assert values == {"preferred_date": "2025-03-13"}


@pytest.mark.parametrize("text", ["tomorrow", "the day after tomorrow", "next tuesday", "friday next week"])
def test_a_relative_date_past_the_last_calendar_day_is_no_date(text: str) -> None:
    assert slots(text, today=datetime.date.max) == {}


# --- Never raises ----------------------------------------------------------------------------------

SPOKEN_PIECES = [
    "my name is", "this is", "I'm", "at", "dot", "double", "triple", "oh", "o", "plus", "hundred", "one",
    "two", "five", "nine", "twenty", "first", "thirty first", "of", "the", "next week", "tuesday", "tomorrow",
    "december", "may", "feb", "12/03", "2025-02-30", "31/12/99", "24/7", "@", ".", ",", "-", "'", "north",
    "south bank", "leaks", "uh", "um", "thanks", "415 555 2671", "+44", "0", "9" * 30, "é", "İ", "ß",
    "\u0301", "٣", "\x00", "\u2019",
]  # fmt: skip


@pytest.mark.parametrize(("text", "name"), [("İ İ İ", "İ İ İ"), ("ı-ı-ı", "I-I-I"), ("K-İ-M", "Km")])
def test_letters_that_fold_to_no_ascii_letter_are_no_spelling(text: str, name: str) -> None:
    # "İ" matches [A-Za-z] under case folding; a "spelling" of no letter A-Z once raised IndexError.
    assert slots(text, asked_for="caller_name") == {"caller_name": name}
    assert "caller_name" not in slots(text)


@settings(max_examples=300)
@given(
    text=st.one_of(
        st.text(max_size=1_500),
        st.lists(st.one_of(st.sampled_from(SPOKEN_PIECES), st.text(max_size=4)), max_size=80).map(" ".join),
    ),
    asked_for=st.sampled_from([None, *FIELD_NAMES]),
    country=st.sampled_from(sorted(CONFIGS)),
    today=st.one_of(st.dates(), st.sampled_from([datetime.date.min, datetime.date.max])),
)
def test_any_text_gives_values_record_details_accepts(
    text: str, asked_for: str | None, country: str, today: datetime.date
) -> None:
    values = extract_slots(text, FIELDS, asked_for=asked_for, country=country, today=today)
    assert set(values) <= set(FIELD_NAMES)
    assert_accepted_as_recorded(values, CONFIGS[country])


# --- Steering the recogniser ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "kind", "words"),
    [
        ({"name": "callback_number", "type": "phone"}, "phone", ()),
        ({"name": "preferred_date", "type": "date"}, "date", ()),
        ({"name": "email", "type": "email"}, "email", ()),
        ({"name": "caller_name", "type": "text"}, "name", ()),
        ({"name": "service_address", "type": "text"}, "address", ()),
        ({"name": "email_address", "type": "text"}, "open", ()),
        ({"name": "account_number", "type": "text"}, "number", ()),
        ({"name": "zip_code", "type": "text"}, "number", ()),
        ({"name": "notes", "type": "text"}, "open", ()),
        ({"name": "area", "type": "choice", "choices": ["North", "South Bank"]}, "choice", ("North", "South Bank")),
    ],
)
def test_each_field_steers_the_recogniser_toward_its_kind_of_answer(
    spec: dict[str, Any], kind: str, words: tuple[str, ...]
) -> None:
    assert listening_for(CapturedField(**spec)) == ListeningFor(kind, words)


# --- Questions -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "question"),
    [
        ({"name": "caller_name", "type": "text"}, "Could I have your name, please?"),
        (
            {"name": "caller_name", "type": "text", "description": "The caller's full name."},
            "Could I have your full name, please?",
        ),
        ({"name": "customer_address", "type": "text"}, "Could you tell me your address?"),
        (
            {"name": "address", "type": "text", "description": "The address where the work is needed."},
            "Could you tell me your address?",
        ),
        ({"name": "account_number", "type": "text"}, "Could you tell me your account number?"),
        ({"name": "callback_number", "type": "phone"}, "What's the best number to call you back on?"),
        (
            {"name": "email", "type": "email", "description": "Where to send the invoice."},
            "What's your email address?",
        ),
        ({"name": "preferred_date", "type": "date"}, "What day would suit you?"),
        (
            {"name": "area", "type": "choice", "choices": ["North", "South Bank", "East"]},
            "Is it North, South Bank or East?",
        ),
        ({"name": "plan", "type": "choice", "choices": ["Basic", "Plus"]}, "Is it Basic or Plus?"),
        ({"name": "confirm", "type": "choice", "choices": ["Yes"]}, "Is it Yes?"),
    ],
)
def test_field_questions_speak_to_the_caller(spec: dict[str, Any], question: str) -> None:
    assert field_question(CapturedField(**spec)) == question


@pytest.mark.parametrize(
    ("said", "declines"),
    [
        ("Sorry, I don't know the postcode.", True),
        ("I'd rather not give my number out.", True),
        ("I dont have one", True),
        ("no idea, sorry", True),
        ("I can't remember it", True),
        ("I won't give that to you", True),
        ("I'd prefer not to", True),
        ("Ann Lee", False),
        ("Sure, go ahead.", False),  # invites the question: not an answer, not a refusal
        ("Sorry, can you say that again?", False),
        ("I know it, it's 12 Elm Street", False),
    ],
)
def test_a_caller_declining_to_answer_is_told_from_one_who_answers_or_asks_again(said: str, declines: bool) -> None:
    assert declines_to_answer(said) is declines
