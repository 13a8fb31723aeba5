"""A caller described in a TOML file: what they need in their own words, their details as they would say
them, how they behave on the phone, and where their call should end.

    persona = load_persona("benchmarks/outcomes/acme_flooded_basement.toml")

The persona caller (`persona_caller.py`) plays one against a running server; the verdict
(`persona_verdict.py`) judges the call against its `[expect]` table. A file looks like this:

    config = "acme_plumbing"                      # the example config it is written for (examples/<config>.toml)
    description = "Basement flooding; answers only what is asked."
    tags = ["demo", "urgent"]

    [caller]
    from = "+14155550100"                         # caller ID
    pace = 1.0                                    # speaking rate (the voice's length scale: > 1 is slower)

    [need]
    lines = ["My basement is flooding.", "There's water all over the basement floor."]   # 1st opens; others rephrase
    gives = []                                    # detail kinds said along with the opening line

    [behaviour]
    style = "answers_what_is_asked"               # | "one_per_turn" | "all_at_once"
    barge_in = false                              # talks over the agent
    silent_once = false                           # says nothing the first time they are asked something
    patience_s = 4.0                              # silence, once the agent stops, before they speak up anyway
    menu_key = "1"                                # presses a key at the greeting (an IVR habit)
    keypad = false                                # types numbers when the agent offers the keypad

    [[details]]
    kind = "phone"
    say = "four one five, five five five, oh one nine nine"   # as they answer the question
    digits = "4155550199"                         # the number itself: keypad entry, read-back checks
    field = "callback_number"                     # the config field it should end up in

    [[details]]
    kind = "postcode"
    unknown = true                                # "sorry, I don't know it"; `refuses = true`: won't give it

    [expect]
    route = "emergency_desk"
    urgent = true
    fields = { callback_number = "+14155550199" }   # normalised values; a list means any of them
    days = { preferred_date = "thursday" }        # a date field, as a day relative to the call
"""

from __future__ import annotations

import datetime
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

__all__ = [
    "DETAIL_KINDS",
    "Behaviour",
    "CallerProfile",
    "Detail",
    "DetailKind",
    "Expectation",
    "Need",
    "Persona",
    "PersonaError",
    "RelativeDay",
    "load_persona",
    "load_personas",
    "resolve_day",
]

DetailKind = Literal[
    "name", "phone", "address", "postcode", "date", "time", "account_number", "account_type", "email"
]
DETAIL_KINDS: tuple[str, ...] = DetailKind.__args__  # type: ignore[attr-defined]
NUMBER_KINDS = frozenset({"phone", "account_number"})  # details a caller can type on a keypad
RelativeDay = Literal["today", "tomorrow", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
E164 = r"^\+[1-9][0-9]{6,14}$"
KEYS = r"^[0-9*#]+$"


class PersonaError(ValueError):
    """A persona file that cannot be used; the message names the file and every problem in it."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class CallerProfile(_Strict):
    caller_id: str = Field("+14155550100", alias="from", pattern=E164)
    pace: float = Field(1.0, ge=0.6, le=1.6)
    language: str = "en-US"


class Need(_Strict):
    lines: list[str] = Field(min_length=1)
    gives: list[DetailKind] = []

    @field_validator("lines")
    @classmethod
    def _said_lines(cls, lines: list[str]) -> list[str]:
        if any(not line.strip() for line in lines):
            raise ValueError("a need line is empty")
        return [" ".join(line.split()) for line in lines]


class Behaviour(_Strict):
    style: Literal["answers_what_is_asked", "one_per_turn", "all_at_once"] = "answers_what_is_asked"
    barge_in: bool = False
    silent_once: bool = False
    patience_s: float = Field(4.0, gt=0, le=60)
    menu_key: str | None = Field(None, pattern=r"^[0-9*#]$")
    keypad: bool = False


class Detail(_Strict):
    kind: DetailKind
    say: str | None = None
    volunteer: str | None = None
    digits: str | None = Field(None, pattern=KEYS)
    field: str | None = None
    refuses: bool = False
    unknown: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> Detail:
        if self.refuses and self.unknown:
            raise ValueError(f"{self.kind}: a caller either refuses a detail or does not know it, not both")
        withheld = self.refuses or self.unknown
        if not withheld and not self.say:
            raise ValueError(f"{self.kind}: `say` is needed (how the caller says it), unless refuses or unknown")
        if self.kind in NUMBER_KINDS and not withheld and not self.digits:
            raise ValueError(f"{self.kind}: `digits` is needed (the number itself, for the keypad and read-backs)")
        return self

    @property
    def withheld(self) -> bool:
        return self.refuses or self.unknown


class Expectation(_Strict):
    route: str
    urgent: bool = False
    fields: dict[str, str | list[str]] = {}
    days: dict[str, RelativeDay] = {}

    @field_validator("fields")
    @classmethod
    def _values(cls, fields: dict[str, str | list[str]]) -> dict[str, str | list[str]]:
        for name, value in fields.items():
            values = [value] if isinstance(value, str) else value
            if not values or any(not item.strip() for item in values):
                raise ValueError(f"{name}: an expected value is empty")
        return fields

    @model_validator(mode="after")
    def _once(self) -> Expectation:
        both = sorted(set(self.fields) & set(self.days))
        if both:
            raise ValueError(f"expected in both `fields` and `days`: {', '.join(both)}")
        return self

    def accepted(self, field: str, today: datetime.date) -> tuple[str, ...]:
        """The values that count as right for `field` on a call made on `today` (empty: not expected)."""
        if field in self.days:
            return (resolve_day(self.days[field], today).isoformat(),)
        value = self.fields.get(field)
        if value is None:
            return ()
        return (value,) if isinstance(value, str) else tuple(value)

    @property
    def expected_fields(self) -> list[str]:
        return [*self.fields, *self.days]


class Persona(_Strict):
    name: str
    config: str
    description: str
    tags: list[str] = []
    caller: CallerProfile = CallerProfile()
    need: Need
    behaviour: Behaviour = Behaviour()
    details: list[Detail] = []
    expect: Expectation

    @model_validator(mode="after")
    def _coherent(self) -> Persona:
        kinds = [detail.kind for detail in self.details]
        repeated = sorted({kind for kind in kinds if kinds.count(kind) > 1})
        if repeated:
            raise ValueError(f"details: one entry per kind, {', '.join(repeated)} repeated")
        for kind in self.need.gives:
            detail = self.detail(kind)
            if detail is None or detail.withheld:
                raise ValueError(f"need.gives: {kind!r} is not a detail the caller gives")
        expected = set(self.expect.expected_fields)
        for detail in self.details:
            if detail.field is not None and not detail.withheld and detail.field not in expected:
                raise ValueError(
                    f"details: {detail.kind} fills {detail.field!r}, which [expect] does not list "
                    "(fields or days)"
                )
        if self.behaviour.keypad and not any(d.digits for d in self.details):
            raise ValueError("behaviour.keypad: the caller has no digits to type (no detail has `digits`)")
        return self

    def detail(self, kind: str) -> Detail | None:
        return next((detail for detail in self.details if detail.kind == kind), None)


def resolve_day(day: str, today: datetime.date) -> datetime.date:
    """The date a caller means by `day` on `today`: a weekday is the next one after today (1 to 7 days)."""
    if day == "today":
        return today
    if day == "tomorrow":
        return today + datetime.timedelta(days=1)
    ahead = (WEEKDAYS.index(day) - today.weekday()) % 7 or 7
    return today + datetime.timedelta(days=ahead)


def load_persona(path: str | Path) -> Persona:
    """Read and validate one persona file; PersonaError says what is wrong, with the file's name."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise PersonaError(f"{path}: cannot read it: {error.strerror or error}") from None
    except tomllib.TOMLDecodeError as error:
        raise PersonaError(f"{path}: not valid TOML: {error}") from None
    if "name" in data:
        raise PersonaError(f"{path}: `name` is not written in the file: a persona is named after its file")
    return _validated(path, {**data, "name": path.stem})


def load_personas(folder: str | Path) -> list[Persona]:
    """Every `*.toml` persona in `folder`, by name."""
    return [load_persona(path) for path in sorted(Path(folder).glob("*.toml"))]


def _validated(path: Path, data: Mapping[str, Any]) -> Persona:
    try:
        return Persona.model_validate(data)
    except ValidationError as error:
        problems = [
            f"  {'.'.join(str(part) for part in problem['loc']) or '(file)'}: {problem['msg']}"
            for problem in error.errors(include_url=False)
        ]
        raise PersonaError(f"{path}: not a valid persona:\n" + "\n".join(problems)) from None
