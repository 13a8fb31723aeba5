"""What a persona caller makes of an agent's line, and what they say back: a small set of rules on text.

    heard = hear("Thank you. What's the best number to call you back on?")   # Heard(ask="phone", ...)
    move = PersonaMind(persona).reply(heard)                                    # Move(say="four one five, ...")

`hear` reads the words the caller heard (a transcript of the agent's audio, with its mistakes) and says what
was asked, if anything: the caller's need, a detail (name, phone, address...), a yes/no confirmation, the
caller-ID question, a repeat. The question is looked for from the last sentence backwards, so "Thank you.
Could I have your name?" asks for the name. `PersonaMind` answers as the persona would: in their words, one
detail or all of them depending on their style, refusing or not knowing what the persona withholds,
correcting a wrong read-back, typing a number when the agent offers the keypad and the persona does that.
Pure: no audio, no Trio, no clock.
"""

from __future__ import annotations

import copy
import re
from collections import Counter
from dataclasses import dataclass, field

from orchestrator.testing.personas import Detail, Persona

__all__ = ["Heard", "Move", "PersonaMind", "hear", "spoken_digits"]

# Ask kinds besides the detail kinds: the need, "anything else?", a general "a few details", a yes/no
# read-back, "is the number you're calling from the best one?", and "say that again".
# Checked in this order within a sentence: the first that matches is what the sentence asks.
_ASK_CUES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (ask, re.compile(pattern))
    for ask, pattern in (
        ("caller_id", r"calling from|number you(?:'re| are) (?:calling|ringing)"),
        ("confirm", r"is (?:that|this) (?:right|correct)|did i get (?:that|it)|have i got (?:that|it)|"
                    r"got that right|can you confirm|is that ok|correct\s*$"),
        ("postcode", r"post ?code|zip"),
        ("account_number", r"account number"),
        ("account_type", r"checking or savings|savings or checking|which account"),
        ("email", r"e-?mail"),
        ("phone", r"\bnumber\b|\bphone\b|reach you|call you back|contact you"),
        ("name", r"\bname\b|your full\b"),
        ("address", r"address|where (?:are you|is (?:the|your) (?:property|house|home))|location|where do you live"),
        ("time", r"what time"),
        ("date", r"what day|which day|\bdate\b|when would|suit you|when (?:can|should|do you want)"),
        ("need", r"how (?:can|may|could) (?:i|we) help|help you with|what (?:can|do) (?:i|we) do for|"
                 r"what do you need|what you need|is (?:this|it) about|what(?:'s| is) (?:this|it) about|"
                 r"what seems to be|what are you calling about|reason for your call"),
        ("anything_else", r"anything else"),
        ("details", r"(?:few|some|your) details"),
        ("repeat", r"catch that|say (?:it|that) again|repeat|pardon|come again|didn't (?:hear|get) (?:you|that)"),
    )
)
_KEYPAD_CUES = re.compile(r"key ?pad|press (?:the )?(?:pound|hash)|type it|enter it|dial it")
_SENTENCE = re.compile(r"[^.?!]+[.?!]?")

_LABELS = {
    "name": "name", "phone": "number", "address": "address", "postcode": "postcode", "date": "date",
    "time": "time", "account_number": "account number", "account_type": "account type", "email": "email",
}  # fmt: skip
# How a detail sounds when the caller offers it without being asked ("{}" is what they say).
_VOLUNTEERED = {
    "name": "my name is {}", "phone": "my number is {}", "address": "the address is {}",
    "postcode": "the postcode is {}", "date": "ideally {}", "time": "ideally {}",
    "account_number": "my account number is {}", "account_type": "it's my {} account", "email": "my email is {}",
}  # fmt: skip
_DIGIT_WORDS = {
    "zero": "0", "oh": "0", "o": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9",
}  # fmt: skip
_REPEATS = {"double": 2, "triple": 3}
MIN_READ_BACK_DIGITS = 6  # fewer digits in a read-back is a house number or a date, not a phone number


@dataclass(frozen=True)
class Heard:
    """What the caller understood from one agent line."""

    text: str
    ask: str | None  # a detail kind, or need / anything_else / details / confirm / caller_id / repeat
    keypad_offered: bool = False
    also: tuple[str, ...] = ()  # other details asked in the same breath ("your name and a number")


@dataclass(frozen=True)
class Move:
    """What the caller does next: words, keys pressed after them, or nothing (silent)."""

    say: str = ""
    keys: str = ""
    gives: tuple[str, ...] = ()  # detail kinds this move gives
    declines: tuple[str, ...] = ()  # detail kinds asked for and refused or not known
    states_need: bool = False
    confirms: bool = False  # a yes to a read-back or to the caller-ID question
    answers: bool = True  # False: the question is still open (a menu key pressed at the greeting)

    @property
    def silent(self) -> bool:
        return not self.say and not self.keys


def hear(text: str) -> Heard:
    """What an agent line asks, from the last sentence that asks anything."""
    words = " ".join(text.lower().replace("\u2019", "'").split())
    sentences = [sentence.strip() for sentence in _SENTENCE.findall(words) if sentence.strip()]
    ask: str | None = None
    also: tuple[str, ...] = ()
    for sentence in reversed(sentences):
        bare = sentence.rstrip(".?! ")
        ask = next((kind for kind, cue in _ASK_CUES if cue.search(bare)), None)
        if ask in _LABELS:  # details are answered in the order they were asked for
            ask, *rest = _details_in_order(bare)
            also = tuple(rest)
        if ask is not None:
            break
    return Heard(text, ask, bool(_KEYPAD_CUES.search(words)), also)


def _details_in_order(sentence: str) -> list[str]:
    found = []
    for kind, cue in _ASK_CUES:
        match = cue.search(sentence) if kind in _LABELS else None
        if match is not None:
            found.append((match.start(), kind))
    return [kind for _, kind in sorted(found)]


def spoken_digits(text: str) -> str:
    """The digits in `text`, written or spoken ("four one five", "double five", "oh")."""
    digits: list[str] = []
    repeat = 1
    for token in re.findall(r"[a-z]+|[0-9]", text.lower()):
        if token in _REPEATS:
            repeat = _REPEATS[token]
            continue
        digit = token if token.isdigit() else _DIGIT_WORDS.get(token)
        if digit is not None:
            digits.append(digit * repeat)
        repeat = 1
    return "".join(digits)


@dataclass
class PersonaMind:
    """The persona's side of the conversation: what they have said so far, and what they say next."""

    persona: Persona
    need_said: bool = False
    given: set[str] = field(default_factory=set)
    last_move: Move | None = None
    _paraphrase: int = 0
    _asked: Counter[str] = field(default_factory=Counter)
    _silent_used: bool = False
    _key_pressed: bool = False
    _hellos: int = 0

    def reply(self, heard: Heard, *, first_line: bool = False) -> Move:
        """The answer to one agent line (`first_line`: the greeting)."""
        behaviour = self.persona.behaviour
        if first_line and behaviour.menu_key and not self._key_pressed:
            self._key_pressed = True
            return self._made(Move(keys=behaviour.menu_key, answers=False))
        if heard.ask is None:
            return Move()
        if behaviour.silent_once and not self._silent_used:
            self._silent_used = True
            return Move(answers=False)
        self._asked[heard.ask] += 1
        return self._made(self._answer(heard))

    def rehearsal(self) -> list[str]:
        """What this persona is likely to say from here on, to render before the call (each answer worked
        out on a copy of this mind, so the words are exactly those it will use)."""
        def answer(mind: PersonaMind, ask: str) -> str:
            mind._asked[ask] += 1
            return mind._made(mind._answer(Heard("", ask))).say

        opened = copy.deepcopy(self)
        said = [answer(opened, "need"), *self.persona.need.lines[1:]]
        for ask in ["details", "confirm", "caller_id", "anything_else", *(d.kind for d in self.persona.details)]:
            asked_twice = copy.deepcopy(opened)
            said += [answer(asked_twice, ask), answer(asked_twice, ask)]
        one_by_one = copy.deepcopy(opened)
        said += [answer(one_by_one, "details") for _ in self.persona.details]
        said += [f"No, it's {d.say}." for d in self.persona.details if d.digits and not d.withheld]
        said += ["Yes, that's right.", "Hello? Are you still there?"]
        return list(dict.fromkeys(line for line in said if line))

    def nudge(self) -> Move:
        """The agent has gone quiet and nothing is open: say the need, or check someone is there (twice)."""
        if not self.need_said:
            return self._made(self._need())
        if self._hellos < 2:
            self._hellos += 1
            return self._made(Move(say="Hello? Are you still there?"))
        return Move()

    # ------------------------------------------------------------------ answers

    def _answer(self, heard: Heard) -> Move:
        ask = heard.ask
        if ask == "need" or (ask == "anything_else" and not self.need_said):
            return self._need()
        if ask == "anything_else":
            return Move(say="No, that's everything, thanks.")
        if ask == "repeat":
            last = self.last_move
            if last is None or last.states_need or not last.say:
                return self._need()
            return last
        if ask == "details":
            return self._details_offered()
        if ask == "confirm":
            return self._confirm(heard.text)
        if ask == "caller_id":
            return self._caller_id()
        assert ask is not None
        move = self._detail_asked(ask, keypad=heard.keypad_offered)
        for kind in heard.also:  # "your name and a number": both, in the caller's words
            detail = self.persona.detail(kind)
            if detail is not None and not detail.withheld and kind not in move.gives and move.say:
                said = _listed([move.say.rstrip("."), self._volunteered(kind)])
                move = Move(say=_sentences([said]), gives=(*move.gives, kind))
        return move

    def _need(self) -> Move:
        lines = self.persona.need.lines
        if not self.need_said:
            gives = tuple(self.persona.need.gives)
            extra = [self._volunteered(kind) for kind in gives]
            self._paraphrase = 1
            return Move(say=_sentences([lines[0], _listed(extra)]), gives=gives, states_need=True)
        line = lines[self._paraphrase % len(lines)]
        self._paraphrase += 1
        return Move(say=line, states_need=True)

    def _details_offered(self) -> Move:
        remaining = self._remaining()
        style = self.persona.behaviour.style
        if style == "answers_what_is_asked" or not remaining:
            return Move(say="Sure, go ahead.")
        if style == "one_per_turn":
            remaining = remaining[:1]
        kinds = tuple(detail.kind for detail in remaining)
        return Move(say=_sentences([_listed([self._volunteered(kind) for kind in kinds])]), gives=kinds)

    def _detail_asked(self, kind: str, *, keypad: bool) -> Move:
        detail = self.persona.detail(kind)
        if detail is None or detail.withheld:
            return self._decline(kind, detail)
        if keypad and self.persona.behaviour.keypad and detail.digits:
            return Move(keys=detail.digits + "#", gives=(kind,))
        if self.persona.behaviour.style == "all_at_once":
            others = [other.kind for other in self._remaining() if other.kind != kind]
            said = _listed([detail.say or "", *(self._volunteered(other) for other in others)])
            return Move(say=_sentences([said]), gives=(kind, *others))
        return Move(say=detail.say or "", gives=(kind,))

    def _decline(self, kind: str, detail: Detail | None) -> Move:
        label = _LABELS[kind]
        if detail is not None and detail.refuses:
            words = f"I'd rather not give my {label} out." if self._asked[kind] == 1 else "Sorry, I'd rather not say."
        elif detail is not None:
            words = f"Sorry, I don't know the {label}."
        else:
            words = f"Sorry, I don't have a {label} to give you."
        return Move(say=words, declines=(kind,))

    def _confirm(self, text: str) -> Move:
        """Yes, unless the agent read back a number that is not the caller's: then the right one."""
        heard_digits = spoken_digits(text)
        numbers = [detail for detail in self.persona.details if detail.digits and not detail.withheld]
        if len(heard_digits) < MIN_READ_BACK_DIGITS or not numbers:
            return Move(say="Yes, that's right.", confirms=True)
        if any(_same_number(heard_digits, detail.digits or "") for detail in numbers):
            return Move(say="Yes, that's right.", confirms=True)
        last_given = self.last_move.gives if self.last_move else ()
        wrong = next((detail for detail in numbers if detail.kind in last_given), numbers[0])
        return Move(say=f"No, it's {wrong.say}.", gives=(wrong.kind,))

    def _caller_id(self) -> Move:
        phone = self.persona.detail("phone")
        caller_digits = re.sub(r"\D", "", self.persona.caller.caller_id)
        if phone is None or phone.withheld or (phone.digits and _same_number(caller_digits, phone.digits)):
            return Move(say="Yes, that's fine.", confirms=True)
        return Move(say=f"No, it's better to call me on {phone.say}.", gives=("phone",))

    # ------------------------------------------------------------------ helpers

    def _remaining(self) -> list[Detail]:
        return [d for d in self.persona.details if not d.withheld and d.kind not in self.given]

    def _volunteered(self, kind: str) -> str:
        detail = self.persona.detail(kind)
        assert detail is not None and detail.say is not None
        return detail.volunteer or _VOLUNTEERED[kind].format(detail.say)

    def _made(self, move: Move) -> Move:
        if move.states_need:
            self.need_said = True
        self.given.update(move.gives)
        if not move.silent:
            self.last_move = move
        return move


def _same_number(heard: str, true: str) -> bool:
    """A read-back matches when one number ends the other (a country code may be added or dropped)."""
    return heard.endswith(true) or true.endswith(heard)


def _listed(parts: list[str]) -> str:
    parts = [part for part in parts if part]
    if len(parts) <= 1:
        return "".join(parts)
    return f"{', '.join(parts[:-1])}, and {parts[-1]}"


def _sentences(parts: list[str]) -> str:
    """Parts joined as sentences, each capitalised and ended."""
    said = []
    for part in parts:
        part = part.strip()
        if part:
            part = part[0].upper() + part[1:]
            said.append(part if part[-1] in ".?!" else part + ".")
    return " ".join(said)
