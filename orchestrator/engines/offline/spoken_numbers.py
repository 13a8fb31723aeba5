"""Digits as callers say them and as speech-to-text writes them, read back into digit strings.

    runs = digit_runs("four one five, double five five, oh one nine nine")   # one run: "4155550199"
    runs = digit_runs("415-555-0189, no, sorry, 0198")                       # two runs, the second a correction
    cardinal_words_to_digits("two hundred Pine Road")                        # "200 Pine Road"

A caller gives a number in groups ("four one five, five five five, ..."), says "oh" for zero, "double five",
"triple one", pairs as words ("twenty six seventy one", "fifteen"), round groups ("eight hundred", "two
thousand"), and corrects themselves ("... no, sorry, zero one nine eight"). Whisper writes the same number
as "415-555-0199", "415.555.0199", "(415) 555 0199", "4-1-5", or in words. `digit_runs` reads every such
stretch of a text as one `DigitRun`: its digits, the groups it was said in, whether "plus" came first, and
whether a correction cue ("no", "sorry", "I mean"...) came between it and the run before. Pure text work.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

UNITS = {
    "zero": 0, "oh": 0, "o": 0, "nought": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5,
    "six": 6, "seven": 7, "eight": 8, "nine": 9,
}  # fmt: skip
TEENS = {
    "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15, "sixteen": 16,
    "seventeen": 17, "eighteen": 18, "nineteen": 19,
}  # fmt: skip
TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90}
SCALES = {"hundred": 100, "thousand": 1000}
REPEATS = {"double": 2, "triple": 3}
ZERO_INTERJECTIONS = frozenset({"oh", "o"})  # zero only beside another digit: "oh, and..." is no number
# How speech-to-text sometimes writes an "oh" it heard between digits ("555, a 187"): zero only between two.
ZERO_BETWEEN_DIGITS = frozenset({"a"})
FILLERS = frozenset({"uh", "um", "er", "erm", "ah", "hmm"})
# Words between two runs that make the second one replace (part of) the first.
CORRECTION_WORDS = frozenset({"no", "sorry", "mean", "actually", "correction", "wait", "rather", "oops", "scratch"})
MAX_CORRECTION_GAP = 6  # words between a number and its correction ("no, sorry, it's, uh, ...")
SEPARATORS = frozenset(",.-–()/:;")

TOKEN = re.compile(r"[0-9]+|[a-z]+(?:'[a-z]+)?|\+|[^\s\w]", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class DigitRun:
    """A stretch of a text that says digits, as digits."""

    digits: str
    groups: tuple[str, ...]  # the digits of each group as said (between pauses or separators)
    plus: bool = False  # "plus" or "+" right before it: an international number
    corrects: bool = False  # a correction cue between the previous run and this one


def digit_runs(text: str) -> list[DigitRun]:
    """Every stretch of `text` that says digits (fillers and separators inside it allowed), in order."""
    tokens = [token.lower() for token in TOKEN.findall(text)]
    tokens = ["oh" if t in ZERO_BETWEEN_DIGITS and _between_digits(tokens, i) else t for i, t in enumerate(tokens)]
    runs: list[DigitRun] = []
    position = 0
    gap: list[str] = []
    while position < len(tokens):
        end = _run_end(tokens, position)
        if end == position:
            gap.append(tokens[position])
            position += 1
            continue
        groups = _groups(tokens[position:end])
        digits = "".join(groups)
        if digits:
            plus = bool(gap) and gap[-1] in ("plus", "+")
            words = [word for word in gap if word not in SEPARATORS]
            corrects = bool(runs) and len(words) <= MAX_CORRECTION_GAP and any(w in CORRECTION_WORDS for w in words)
            runs.append(DigitRun(digits, tuple(groups), plus, corrects))
            gap = []
        else:
            gap.extend(tokens[position:end])
        position = end
    return runs


def cardinal_words_to_digits(text: str) -> str:
    """`text` with each number said in words written in digits ("thirty three Hill Street" → "33 Hill
    Street"); a run of single digits ("nine four one oh five") becomes one number ("94105"). Punctuation
    and the words around the numbers are kept as they are."""
    tokens = list(TOKEN.finditer(text))
    words = [token.group().lower() for token in tokens]
    pieces: list[str] = []
    last = 0
    position = 0
    while position < len(tokens):
        end = position
        while end < len(tokens) and (_is_numeric(words[end]) or words[end] in FILLERS or words[end] == "and"):
            end += 1
        while end > position and not _is_numeric(words[end - 1]):
            end -= 1  # a stretch ends on a number
        stretch = words[position:end]
        if not any(_is_number_word(word) for word in stretch) or (
            stretch[0] in ZERO_INTERJECTIONS and not _beside_digit(words, position)
        ):
            position = max(end, position + 1)
            continue
        pieces += [text[last : tokens[position].start()], "".join(_groups(stretch))]
        last = tokens[end - 1].end()
        position = end
    return "".join([*pieces, text[last:]])


def _is_number_word(word: str) -> bool:
    return word in UNITS or word in TEENS or word in TENS or word in SCALES or word in REPEATS


def _is_numeric(token: str) -> bool:
    return token.isdigit() or _is_number_word(token)


def _between_digits(tokens: list[str], position: int) -> bool:
    """Whether the token at `position` has a digit on both sides (across separators)."""
    sides = []
    for step in (-1, 1):
        index = position + step
        while 0 <= index < len(tokens) and tokens[index] in SEPARATORS:
            index += step
        sides.append(0 <= index < len(tokens) and _is_numeric(tokens[index]) and tokens[index] not in ZERO_INTERJECTIONS)
    return all(sides)


def _run_end(tokens: list[str], start: int) -> int:
    """The end of the digit run starting at `start` (== start when none starts there)."""
    position = start
    last_numeric = start - 1
    while position < len(tokens):
        token = tokens[position]
        if _is_numeric(token):
            if token in ZERO_INTERJECTIONS and not _beside_digit(tokens, position):
                break
            last_numeric = position
        elif token == "and" and 0 <= last_numeric == position - 1 and tokens[last_numeric] in SCALES:
            pass  # "two hundred and five"
        elif token not in SEPARATORS and token not in FILLERS:
            break
        position += 1
    return last_numeric + 1 if last_numeric >= start else start


def _beside_digit(tokens: list[str], position: int) -> bool:
    """Whether the "oh" at `position` has a digit next to it (across separators, fillers and other "oh"s)."""
    for step in (-1, 1):
        index = position + step
        while 0 <= index < len(tokens) and (
            tokens[index] in SEPARATORS or tokens[index] in FILLERS or tokens[index] in ZERO_INTERJECTIONS
        ):
            index += step
        if 0 <= index < len(tokens) and _is_numeric(tokens[index]) and tokens[index] not in ZERO_INTERJECTIONS:
            return True
    return False


def _groups(tokens: list[str]) -> list[str]:
    """The digits of each group of a run; a separator closes a group, and so does a number written with
    several digits."""
    groups: list[str] = []
    current: list[str] = []
    index = 0

    def close() -> None:
        if current:
            groups.append("".join(current))
            current.clear()

    while index < len(tokens):
        token = tokens[index]
        following = tokens[index + 1] if index + 1 < len(tokens) else None
        if token in SEPARATORS:
            close()
        elif token in REPEATS and following is not None and (following in UNITS or following.isdigit()):
            current.append(_digit_text(following) * REPEATS[token])
            index += 1
        elif token.isdigit() and len(token) == 1 and not (current and len(current[-1]) > 1):
            current.append(token)  # "4 1 5": digits written one by one are one group, as said
        elif token.isdigit():
            close()
            groups.append(token)
        elif token in UNITS:
            current.append(str(UNITS[token]))
        elif token in TEENS:
            current.append(str(TEENS[token]))
        elif token in TENS:
            value = TENS[token]
            if following in UNITS and UNITS[following] > 0 and following not in ZERO_INTERJECTIONS:
                value += UNITS[following]
                index += 1
            current.append(str(value))
        elif token in SCALES:
            if not current and groups and index > 0 and tokens[index - 1].isdigit():
                current.append(groups.pop())  # "8 hundred"
            index = _scaled(tokens, index, current)
        index += 1
    close()
    return groups


def _digit_text(token: str) -> str:
    return token if token.isdigit() else str(UNITS[token])


def _scaled(tokens: list[str], index: int, current: list[str]) -> int:
    """"eight hundred", "nineteen hundred", "two thousand and five": the number said before the scale word,
    times the scale, plus a tens or teens word (or anything after "and") said right after it. Returns the
    index of the last token used."""
    scale = SCALES[tokens[index]]
    before = int(current.pop()) if current else 1
    value = before * scale
    rest = tokens[index + 1 :]
    if rest[:1] == ["and"] and len(rest) > 1 and _is_number_word(rest[1]) and rest[1] not in SCALES:
        rest, index = rest[1:], index + 1
        added = _small_number(rest)
    elif rest and (rest[0] in TENS or rest[0] in TEENS):
        added = _small_number(rest)
    else:
        added = None
    if added is not None:
        number, used = added
        value += number
        index += used
    current.append(str(value))
    return index


def _small_number(tokens: list[str]) -> tuple[int, int] | None:
    """A number below 100 said in words at the start of `tokens`, and how many tokens it took."""
    first = tokens[0]
    if first in TEENS:
        return TEENS[first], 1
    if first in TENS:
        if len(tokens) > 1 and tokens[1] in UNITS and UNITS[tokens[1]] > 0:
            return TENS[first] + UNITS[tokens[1]], 2
        return TENS[first], 1
    if first in UNITS:
        return UNITS[first], 1
    return None
