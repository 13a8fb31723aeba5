"""Hypothesis strategies: digits as a caller says them or a transcript writes them (shared by the tests of
spoken numbers and of phone capture)."""
from __future__ import annotations

from hypothesis import strategies as st

from orchestrator.engines.offline.spoken_numbers import TEENS, TENS, UNITS

WORD_FOR = {value: word for word, value in UNITS.items() if word not in ("oh", "o", "nought")}
TEEN_FOR = {value: word for word, value in TEENS.items()}
TENS_FOR = {value: word for word, value in TENS.items()}


@st.composite
def spoken_group(draw: st.DrawFn, digits: str) -> str:
    """One group of digits as a caller or a transcript may give it."""
    style = draw(st.sampled_from(["words", "written", "dashed", "pairs", "round"]))
    if style == "written":
        return digits
    if style == "dashed":
        return "-".join(digits)
    if style == "round" and len(digits) in (3, 4) and digits[0] != "0" and set(digits[1:]) == {"0"}:
        return f"{WORD_FOR[int(digits[0])]} {'hundred' if len(digits) == 3 else 'thousand'}"
    if style == "pairs" and len(digits) % 2 == 0 and all(d != "0" for d in digits[::2]):
        return " ".join(_pair_words(digits[i : i + 2]) for i in range(0, len(digits), 2))
    words: list[str] = []
    index = 0
    while index < len(digits):
        digit = digits[index]
        repeat = len(digits[index:]) - len(digits[index:].lstrip(digit))
        word = draw(st.sampled_from(["oh", "zero"])) if digit == "0" else WORD_FOR[int(digit)]
        if repeat >= 2 and draw(st.booleans()):
            times = 3 if repeat >= 3 and draw(st.booleans()) else 2
            words.append(f"{'triple' if times == 3 else 'double'} {word}")
            index += times
        else:
            words.append(word)
            index += 1
    return " ".join(words)


def _pair_words(pair: str) -> str:
    """"26" → "twenty six", "15" → "fifteen", "40" → "forty" (a pair said as a number, tens digit not 0)."""
    value = int(pair)
    if value in TEEN_FOR:
        return TEEN_FOR[value]
    tens, unit = divmod(value, 10)
    return TENS_FOR[tens * 10] if unit == 0 else f"{TENS_FOR[tens * 10]} {WORD_FOR[unit]}"
