"""Text taken from a Studio flow, made fit for one-line messages and names, and told apart from templates."""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable, Iterator
from typing import Any

# Deployment templates (Terraform, scripts): ${WORKFLOW_SID}.
PLACEHOLDER = re.compile(r"\$\{[^}]*\}")
_LIQUID = re.compile(r"\{\{.*?\}\}|\{%.*?%\}", re.DOTALL)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def one_line(text: str) -> str:
    return _CONTROL.sub("", " ".join(str(text).split()))


def truncate(text: str, limit: int) -> str:
    text = one_line(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def short(value: Any, limit: int = 60) -> str:
    """A value from the flow, quoted and cut short, for a message."""
    text = repr(value) if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return truncate(text, limit)


def templated(text: str) -> bool:
    """Whether Studio (Liquid) or a deployment script fills the text in."""
    return bool(PLACEHOLDER.search(text) or _LIQUID.search(text))


def strings(value: Any, path: str) -> Iterator[tuple[str, str]]:
    """(key path, text) of every string inside a JSON value."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from strings(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from strings(item, f"{path}[{index}]")


def snake_case(text: str, *, fallback: str) -> str:
    """A config name from any text: ASCII words joined by `_`, starting with a letter."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", ascii_text)  # camelCase → camel_Case
    words = re.findall(r"[a-z0-9]+", spaced.lower())
    name = "_".join(words)
    if not name:
        return fallback
    return name if name[0].isalpha() else f"{fallback}_{name}"


def unique(name: str, taken: Iterable[str]) -> str:
    """`name`, or `name_2`, `name_3`… when it is taken."""
    taken = set(taken)
    candidate, number = name, 2
    while candidate in taken:
        candidate, number = f"{name}_{number}", number + 1
    return candidate


# Words that say how a choice was made or what a widget is, not what the caller wants ("pressed_taxi",
# "If value equal_to 1", "send_call_to_support", "gather_city_english").
_NOT_MEANING = frozenset(
    """
    a an and any are as at be by caller choice chose chosen contains digit digits does dtmf equal equals for from
    gather go goes if in input is key keypress keys match matches menu my not of on option or press pressed
    presses said say says selected selection speech spoke split starts that the then to user value wants with
    widget you your call calls send sends forward transfer connect route routing redirect set play flex enqueue
    function run http request make subflow studio twiml state
    """.split()
)


def name_words(text: str) -> list[str]:
    """The words of a friendly name or widget name that can name a need: "pressed_taxi" → ["taxi"],
    "send_call_to_support" → ["support"], "If value equal_to 1" → []."""
    words = snake_case(text, fallback="x").split("_")
    return [word for word in words if word not in _NOT_MEANING and not word.isdigit() and len(word) > 1]
