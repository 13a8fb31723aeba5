"""How the agent makes sure of a detail, beyond hearing it: the keypad, the read-back, the caller-ID question.

Shared by both engines (the offline dialogue says these words itself; the Realtime model is told them) and
by the session, which checks what the caller typed:

- Phone and date fields may be typed on the keypad (`keypad_offered`, `KEYPAD_OFFER`). `typed_value` turns
  the digits into the field's value, checked as a spoken value is: a phone number as the config's country
  dials it (or with its country code), a date as 8 digits in the order the config's country writes dates
  (MMDDYYYY in the US and its territories, DDMMYYYY elsewhere) or 4 (MMDD / DDMM: the next such day).
- A field with `read_back = true` is read back after it is said (`read_back_question`), digit by digit for
  a phone number, and the caller's yes confirms it (`answer_is_yes`).
- A number pre-filled from caller ID is confirmed with one question (`CALLER_ID_QUESTION`).
"""
from __future__ import annotations

import datetime
import re

import phonenumbers

from orchestrator.config import KEYABLE_FIELD_TYPES, CapturedField, RoutingConfig

KEYPAD_OFFER = "Or type it on your keypad and press pound."
CALLER_ID_QUESTION = "Is the number you're calling from the best one to reach you?"
# Regions that write numeric dates month first (slot extraction reads spoken numeric dates the same way).
MONTH_FIRST_REGIONS = frozenset({"US", "PR", "GU", "VI", "AS", "MP", "UM", "FM"})

_YES = frozenset({"yes", "yeah", "yep", "yup", "correct", "right", "sure", "fine", "ok", "okay", "perfect",
                  "exactly", "absolutely", "sí", "si", "affirmative"})
_NO = frozenset({"no", "nope", "nah", "not", "wrong", "incorrect", "isn't", "don't"})


def keypad_offered(field: CapturedField) -> bool:
    """Whether the caller may type this field on the keypad."""
    return field.type in KEYABLE_FIELD_TYPES


def asked_with_keypad(field: CapturedField, question: str) -> str:
    """The question for a field, with the keypad offered when the field may be typed."""
    return f"{question} {KEYPAD_OFFER}" if keypad_offered(field) else question


def typed_value(config: RoutingConfig, name: str, digits: str, today: datetime.date | None = None) -> str | None:
    """The canonical value of `digits` typed for field `name`, or None when they are not a valid one."""
    field = next((field for field in config.fields if field.name == name), None)
    if field is None or not digits.isdigit():
        return None
    if field.type == "phone":
        return _typed_phone(digits, config.company.country)
    if field.type == "date":
        return _typed_date(digits, config.company.country, today or datetime.date.today())
    return None


def _typed_phone(digits: str, country: str) -> str | None:
    # As dialled from the config's country, else with a country code but no "+" (e.g. 44…).
    for text in (digits, f"+{digits}"):
        try:
            number = phonenumbers.parse(text, country)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(number):
            return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return None


def _typed_date(digits: str, country: str, today: datetime.date) -> str | None:
    month_first = country in MONTH_FIRST_REGIONS
    if len(digits) not in (4, 8):
        return None
    first, second = int(digits[:2]), int(digits[2:4])
    month, day = (first, second) if month_first else (second, first)
    try:
        if len(digits) == 8:
            return datetime.date(int(digits[4:]), month, day).isoformat()
        date = datetime.date(today.year, month, day)
        if date < today:
            date = datetime.date(today.year + 1, month, day)
        return date.isoformat()
    except ValueError:  # no such day (31 February, month 13, 29 February of a common year)
        return None


def spoken_value(field: CapturedField, value: str, country: str) -> str:
    """A captured value as the agent reads it back: a phone number digit by digit in its groups."""
    if field.type == "phone":
        try:
            number = phonenumbers.parse(value, country)
        except phonenumbers.NumberParseException:
            return value
        national = phonenumbers.region_code_for_number(number) == country
        style = phonenumbers.PhoneNumberFormat.NATIONAL if national else phonenumbers.PhoneNumberFormat.INTERNATIONAL
        groups = re.findall(r"\d+", phonenumbers.format_number(number, style))
        spoken = ", ".join(" ".join(group) for group in groups)
        return spoken if national else f"plus {spoken}"
    if field.type == "date":
        try:
            date = datetime.date.fromisoformat(value)
        except ValueError:
            return value
        return f"{date:%A}, {date:%B} {date.day}, {date.year}"
    return value


def read_back_question(field: CapturedField, value: str, country: str) -> str:
    """ "I have 4 1 5, 5 5 5, 0 1 9 9. Is that right?" """
    return f"I have {spoken_value(field, value, country)}. Is that right?"


def answer_is_yes(words: str) -> bool | None:
    """True for a yes ("yes, that's right"), False for a no ("no, it's…", "that's not right"), None when
    the answer says neither: the first yes or no word decides."""
    for word in re.findall(r"[a-zà-ÿ']+", words.lower()):
        if word in _NO:
            return False
        if word in _YES:
            return True
    return None
