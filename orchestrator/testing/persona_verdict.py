"""Did the persona's call end in the right place, with the right details? Judged from the server's record.

    verdict = judge(persona, record, questions=call.questions, today=datetime.date.today())
    verdict.route_right, [(f.field, f.right) for f in verdict.fields]

`record` is the call's JSON from GET /calls/{sid} (what the server decided, and when): the route of the last
pass that has a decision, what it captured, how long the decision took. A field is right when its captured
value equals an expected one once both are normalised (case, punctuation, spacing, number words as digits;
phone numbers by their digits). An urgent caller who ends in voicemail is counted as such. Pure: no I/O.
"""

from __future__ import annotations

import datetime
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from text_to_num import alpha2digit

from orchestrator.testing.personas import Persona

__all__ = ["FieldVerdict", "Verdict", "judge", "same_value"]

_PHONE = re.compile(r"^\+?[0-9][0-9 ()-]{5,}$")
_NOT_WORD = re.compile(r"[^\w\s]|_")


@dataclass(frozen=True)
class FieldVerdict:
    field: str
    expected: tuple[str, ...]
    captured: str | None
    right: bool


@dataclass(frozen=True)
class Verdict:
    persona: str
    config: str
    expected_route: str
    route: str | None  # None: the server decided nothing (or has no record of the call)
    route_kind: str | None
    reason: str | None
    intent: str | None
    decided_after_s: float | None
    fields: tuple[FieldVerdict, ...]
    questions: int
    urgent: bool

    @property
    def route_right(self) -> bool:
        return self.route == self.expected_route

    @property
    def urgent_in_voicemail(self) -> bool:
        return self.urgent and self.route_kind == "voicemail"

    @property
    def fields_right(self) -> int:
        return sum(verdict.right for verdict in self.fields)

    def as_json(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "route_right": self.route_right,
            "urgent_in_voicemail": self.urgent_in_voicemail,
            "fields": [asdict(verdict) for verdict in self.fields],
        }


def judge(persona: Persona, record: Mapping[str, Any] | None, *, questions: int, today: datetime.date) -> Verdict:
    decision = _last_decision(record)
    captured = decision.get("captured") if isinstance(decision.get("captured"), Mapping) else {}
    fields = []
    for name in persona.expect.expected_fields:
        expected = persona.expect.accepted(name, today)
        value = captured.get(name)
        value = None if value is None else str(value)
        right = value is not None and any(same_value(one, value) for one in expected)
        fields.append(FieldVerdict(name, expected, value, right))
    after = decision.get("decided_after_s")
    return Verdict(
        persona=persona.name,
        config=persona.config,
        expected_route=persona.expect.route,
        route=_text(decision.get("route")),
        route_kind=_text(decision.get("route_kind")),
        reason=_text(decision.get("reason")),
        intent=_text(decision.get("intent")),
        decided_after_s=float(after) if isinstance(after, (int, float)) and not isinstance(after, bool) else None,
        fields=tuple(fields),
        questions=questions,
        urgent=persona.expect.urgent,
    )


def same_value(expected: str, captured: str) -> bool:
    """Equal once normalised; phone numbers compare their digits."""
    if _PHONE.match(expected.strip()) and _PHONE.match(captured.strip()):
        return re.sub(r"\D", "", expected) == re.sub(r"\D", "", captured)
    return _normalised(expected) == _normalised(captured)


def _normalised(value: str) -> str:
    text = unicodedata.normalize("NFKC", value).lower().replace("\u2019", "'")
    text = _NOT_WORD.sub(" ", text.replace("'", ""))
    return " ".join(alpha2digit(" ".join(text.split()), "en").split())


def _last_decision(record: Mapping[str, Any] | None) -> Mapping[str, Any]:
    passes = record.get("passes") if isinstance(record, Mapping) else None
    if not isinstance(passes, list):
        return {}
    decisions = [p.get("decision") for p in passes if isinstance(p, Mapping) and isinstance(p.get("decision"), Mapping)]
    return decisions[-1] if decisions else {}


def _text(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)
