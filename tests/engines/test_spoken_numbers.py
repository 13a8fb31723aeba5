"""Digits as callers say them and as speech-to-text writes them, read back into digit strings."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.engines.offline.spoken_numbers import DigitRun, cardinal_words_to_digits, digit_runs
from tests.engines.spoken_forms import TEEN_FOR, TENS_FOR, WORD_FOR, spoken_group


@pytest.mark.parametrize(
    ("text", "digits"),
    [
        ("four one five, five five five, oh one nine nine", "4155550199"),
        ("four one five five five five oh one nine nine", "4155550199"),
        ("six one seven, double five five, oh three oh four", "6175550304"),
        ("two one two, five five five, double four one two", "2125554412"),
        ("oh seven nine one one triple one two three four", "07911111234"),
        ("415-555-0199", "4155550199"),
        ("415.555.0199", "4155550199"),
        ("(415) 555 0199", "4155550199"),
        ("4-1-5, 5-5-5, 0-1-9-9", "4155550199"),
        ("6 0 4, 8 7 2, 3 1 9 0", "6048723190"),
        ("six one seven, double 5 5", "617555"),
        ("four one five five five five twenty six seventy one", "4155552671"),
        ("eight hundred five five five one two one two", "8005551212"),
        ("8 hundred 555 1212", "8005551212"),
        ("nineteen hundred", "1900"),
        ("two thousand and five", "2005"),
        ("two hundred and fifty", "250"),
        ("fifteen", "15"),
        ("four one five, uh, five five five, um, oh one nine nine", "4155550199"),
        ("646-555, a 1-8-7", "6465550187"),  # an "oh" heard as "a", between digits
    ],
)
def test_a_number_said_or_written_any_way_is_one_run_of_its_digits(text: str, digits: str) -> None:
    assert [run.digits for run in digit_runs(text)] == [digits]


@pytest.mark.parametrize(
    ("text", "runs"),
    [
        ("oh, I've got one leak and two taps", ["1", "2"]),  # "oh" alone is no zero, "a" alone no digit
        ("I have a leak", []),
        ("call 415-555-2671 or 415-555-2672", ["4155552671", "4155552672"]),
        ("I paid two hundred dollars on the third", ["200"]),
    ],
)
def test_words_between_numbers_end_a_run(text: str, runs: list[str]) -> None:
    assert [run.digits for run in digit_runs(text)] == runs


@pytest.mark.parametrize(
    ("text", "groups"),
    [
        ("four one five, five five five, oh one nine nine", ("415", "555", "0199")),
        ("415 555 0199", ("415", "555", "0199")),
        ("4 1 5 5 5 5 0 1 9 9", ("4155550199",)),  # digits written one by one are one group
        ("4 1 5, 5 5 5, 0 1 9 9", ("415", "555", "0199")),
    ],
)
def test_the_groups_of_a_run_are_kept(text: str, groups: tuple[str, ...]) -> None:
    assert digit_runs(text)[0].groups == groups


@pytest.mark.parametrize(
    ("text", "plus"),
    [("plus four four, two oh seven nine", True), ("+44 20 7946", True), ("four four two oh", False)],
)
def test_plus_before_a_run_marks_it_international(text: str, plus: bool) -> None:
    assert digit_runs(text)[0].plus is plus


@pytest.mark.parametrize(
    ("text", "corrects"),
    [
        ("three one two, five five five, zero one eight nine, no, sorry, zero one nine eight", True),
        ("415 555 0189, I mean 0198", True),
        ("415 555 0189, actually 0198", True),
        ("415 555 0189 and flat 2", False),
        # A "sorry" far from the number is no correction of it.
        ("415 555 0189, sorry about all the mess in the kitchen, the tap, it is 12", False),
    ],
)
def test_a_run_after_a_correction_cue_corrects_the_one_before(text: str, corrects: bool) -> None:
    runs = digit_runs(text)
    assert len(runs) == 2
    assert runs[1].corrects is corrects
    assert runs[0].corrects is False


@pytest.mark.parametrize(
    ("text", "written"),
    [
        ("two hundred Pine Road, Cupertino", "200 Pine Road, Cupertino"),
        ("thirty three Hill Street", "33 Hill Street"),
        ("Flat two, forty two Maple Avenue", "Flat 2, 42 Maple Avenue"),
        ("zip code nine four one oh five", "zip code 94105"),
        ("Oh, it's fifteen Park Street", "Oh, it's 15 Park Street"),
        ("12 Baker Street", "12 Baker Street"),
        ("O'Neill Road", "O'Neill Road"),
    ],
)
def test_numbers_said_in_words_are_written_in_digits(text: str, written: str) -> None:
    assert cardinal_words_to_digits(text) == written


# --- Property: a number said in any of these forms reads back as itself ---------------------------


@st.composite
def spoken_number(draw: st.DrawFn) -> tuple[str, str]:
    # Not all zeros: "oh" is a zero only beside another digit.
    digits = draw(st.text(alphabet="0123456789", min_size=3, max_size=12).filter(lambda d: d.strip("0")))
    cuts = sorted(draw(st.sets(st.integers(1, len(digits) - 1), max_size=3)))
    groups = [digits[start:end] for start, end in zip([0, *cuts], [*cuts, len(digits)], strict=True)]
    separator = draw(st.sampled_from([", ", ". ", " - ", ", uh, "]))
    return digits, separator.join(draw(spoken_group(group)) for group in groups)


@settings(max_examples=400)
@given(spoken_number())
def test_any_number_said_in_groups_reads_back_as_itself(number: tuple[str, str]) -> None:
    digits, said = number
    assert [run.digits for run in digit_runs(said)] == [digits], said


def test_digit_runs_are_plain_values() -> None:
    assert digit_runs("five five") == [DigitRun("55", ("55",))]


def _house_number_words(number: int, joiner: str) -> str:
    """1–999 as said before a street name: "forty two", "two hundred", "three hundred and five"."""
    if number < 100:
        return _below_hundred(number)
    hundreds, rest = divmod(number, 100)
    said = f"{WORD_FOR[hundreds]} hundred"
    if rest == 0:
        return said
    # "two hundred five" reads as 2 0 0 5 in a phone number; a house number said that way takes "and".
    return f"{said}{' and ' if rest < 10 else joiner}{_below_hundred(rest)}"


def _below_hundred(number: int) -> str:
    if number < 10:
        return WORD_FOR[number]
    if number < 20:
        return TEEN_FOR[number]
    tens, unit = divmod(number, 10)
    return TENS_FOR[tens * 10] + (f" {WORD_FOR[unit]}" if unit else "")


@settings(max_examples=300)
@given(number=st.integers(1, 999), joiner=st.sampled_from([" ", " and "]), street=st.sampled_from(
    ["Park Street, Springfield", "Oak Lane", "Harbor Road, Bayview 94105"]))
def test_a_house_number_said_in_words_is_written_in_digits(number: int, joiner: str, street: str) -> None:
    said = f"{_house_number_words(number, joiner)} {street}"
    assert cardinal_words_to_digits(said) == f"{number} {street}"
