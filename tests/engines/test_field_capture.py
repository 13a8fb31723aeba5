"""Typed values, read-backs and yes/no answers (`orchestrator.engines.field_capture`)."""
from __future__ import annotations

import datetime

import pytest

from orchestrator.config.routing import RoutingConfig, load_routing_config
from orchestrator.engines.field_capture import answer_is_yes, read_back_question, spoken_value, typed_value
from tests.live_call_support import ACME

TODAY = datetime.date(2026, 12, 5)


@pytest.fixture(scope="module")
def acme() -> RoutingConfig:
    return load_routing_config(ACME)


def with_country(config: RoutingConfig, country: str) -> RoutingConfig:
    return config.model_copy(update={"company": config.company.model_copy(update={"country": country})})


@pytest.mark.parametrize(
    ("digits", "value"),
    [
        ("4155550199", "+14155550199"),  # as dialled in the US
        ("14155550199", "+14155550199"),  # with the trunk prefix
        ("442079460958", "+442079460958"),  # with a country code, no "+"
        ("415555", None),  # too short
        ("1234567890", None),  # no such area code
        ("", None),
    ],
)
def test_typed_phone_numbers_are_checked_as_spoken_ones(acme: RoutingConfig, digits: str, value: str | None) -> None:
    assert typed_value(acme, "callback_number", digits, TODAY) == value


@pytest.mark.parametrize(
    ("country", "digits", "value"),
    [
        ("US", "12102026", "2026-12-10"),  # MMDDYYYY where dates are written month first
        ("GB", "10122026", "2026-12-10"),  # DDMMYYYY elsewhere
        ("US", "1210", "2026-12-10"),  # MMDD: the next such day
        ("US", "0102", "2027-01-02"),  # already past this year: next year
        ("US", "02302026", None),  # no 30 February
        ("GB", "12132026", None),  # no month 13
        ("US", "121", None),
    ],
)
def test_typed_dates_follow_the_order_the_country_writes_them(
    acme: RoutingConfig, country: str, digits: str, value: str | None
) -> None:
    assert typed_value(with_country(acme, country), "preferred_date", digits, TODAY) == value


def test_fields_that_cannot_be_typed_take_no_typed_value(acme: RoutingConfig) -> None:
    assert typed_value(acme, "caller_name", "1234", TODAY) is None
    assert typed_value(acme, "no_such_field", "4155550199", TODAY) is None


def test_read_backs_say_a_number_digit_by_digit_in_its_groups(acme: RoutingConfig) -> None:
    phone = next(field for field in acme.fields if field.name == "callback_number")
    day = next(field for field in acme.fields if field.name == "preferred_date")
    assert read_back_question(phone, "+14155550199", "US") == "I have 4 1 5, 5 5 5, 0 1 9 9. Is that right?"
    assert spoken_value(phone, "+442079460958", "US") == "plus 4 4, 2 0, 7 9 4 6, 0 9 5 8"
    assert spoken_value(day, "2026-12-10", "US") == "Thursday, December 10, 2026"


@pytest.mark.parametrize(
    ("answer", "yes"),
    [
        ("Yes, that's right.", True),
        ("yeah", True),
        ("That's correct", True),
        ("No, it's four one five, five five five, oh one nine nine.", False),
        ("That's not right", False),
        ("Nope", False),
        ("Hmm, say again?", None),
    ],
)
def test_the_first_yes_or_no_word_decides(answer: str, yes: bool | None) -> None:
    assert answer_is_yes(answer) is yes
