"""What the offline engine says and which tools it calls, turn by turn: the part a voice model does itself.

Plain state and text, no I/O, no Trio: `OfflineEngine` feeds it the caller's words, the machine's tool
answers and the session's line requests, and speaks what it returns. The machine still decides
everything that matters (accept, clarify, fallback); this policy only words the conversation:

- words the caller began before the agent's last question began (a need said in several breaths) → the
  details in them, and nothing more: they are not an answer to that question;
- a caller turn → the details heard (`record_details`) and, once the intent is clear enough or the caller
  was already asked once, a proposal (`propose_route`) with the classifier's calibrated confidence;
- a turn that says a need unclearly → the best guess goes to the machine at once, whose minimum-confidence
  guard clarifies (naming what the desk does) and whose clarification cap decides;
- a turn with no need in it (a hello, details alone) → "how can I help?" once, then as above;
- a need that none of the intents serves → `unknown` at once: the machine clarifies once, then takes
  the fallback route (a hello, a name or a number alone is no need: it gets "how can I help?");
- the machine asks for missing details → one question per field, each asked at most twice (a phone number
  or a date with "or type it on your keypad and press pound"; a name and an address next in line are asked
  for in one question the first time; a mere "sure, go ahead" gets the question again, once, uncounted), then
  the same intent is proposed again; a caller who says they cannot or will not give one ("I don't know
  the postcode") is not asked for it again;
- a number known from caller ID that the machine asks to confirm → "Is the number you're calling from the
  best one to reach you?": yes confirms it, no asks for the number;
- a value said for a read-back field → "I have 4 1 5, 5 5 5, 0 1 9 9. Is that right?" (at most twice per
  field): yes confirms it, a correction in the answer replaces it, a no asks again; the intent is proposed
  again only once the read-back is answered;
- silence after the agent's words (`on_silence`) → the question asked again once, then the call moves on
  without the answer, or the need proposed again for the machine to decide;
- taking over a call from a failed engine → the intent from what was already heard, else one line asking
  the caller to say again what they need.
"""
from __future__ import annotations

import datetime
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from orchestrator.config import CONFIRMED_ARGUMENT, RoutingConfig
from orchestrator.engines import (
    CALLER_ID_QUESTION,
    PROPOSE_ROUTE,
    RECORD_DETAILS,
    UNKNOWN_INTENT,
    SpokenLine,
    answer_is_yes,
    asked_with_keypad,
    read_back_question,
)
from orchestrator.engines.offline.intent_model import IntentModel, agreeing
from orchestrator.engines.offline.slot_extraction import (
    declines_to_answer,
    declining_clauses,
    extract_slots,
    field_question,
    listening_for,
    question_together,
)
from orchestrator.engines.offline.speech import ListeningFor
from orchestrator.engines.offline.transcript import clean_transcript

MAX_ASKS_PER_FIELD = 2
DIGIT_ANSWERS = frozenset({"phone", "number"})  # kinds whose read-back is answered with digits when it is wrong
MAX_READ_BACKS_PER_FIELD = 2  # a value corrected twice is taken as said, unconfirmed
MAX_SUMMARY_CHARS = 200
MAX_WORDS_WITHOUT_A_NEED = 3  # "hello", "hi there", "good morning": no need said yet
MIN_NEED_LEAN = 0.1  # the classifier's confidence above uniform for a turn to read as a need
DETAIL_LEAD_IN_WORDS = 3  # "my name is", "I live at": words that come with a detail, not with a need
# A turn made only of these agrees to be asked ("sure, go ahead" to "could I take a few details first?"): it
# answers no question, so the question is put again, once, without counting as an ask.
ACKNOWLEDGEMENT_WORDS = frozenset({
    "sure", "ok", "okay", "yes", "yeah", "yep", "yup", "right", "alright", "fine", "go", "ahead", "of", "course",
    "certainly", "absolutely", "please", "that's", "thats", "so",
})
_DECIDED = frozenset({"accepted", "handed_to_fallback", "ignored"})
FIELD_TYPE_WORDS = {"phone": {"number", "phone"}, "date": {"date", "day"}, "email": {"email"}}


@dataclass(frozen=True, slots=True)
class ToolRequest:
    call_id: str
    name: str
    arguments_json: str


@dataclass(frozen=True, slots=True)
class Reply:
    """One response of the agent: tool calls, words, or both (tool calls come first)."""

    tool_calls: tuple[ToolRequest, ...] = ()
    say: str = ""

    @property
    def is_empty(self) -> bool:
        return not self.tool_calls and not self.say


@dataclass
class _Proposal:
    intent: str
    confidence: float
    summary: str


@dataclass
class OfflineDialogue:
    config: RoutingConfig
    model: IntentModel
    today: Callable[[], datetime.date] = datetime.date.today
    captured: dict[str, str] = field(default_factory=dict)
    taking_over: bool = False

    def __post_init__(self) -> None:
        self._fields = {f.name: f for f in self.config.fields}
        self._intent_turns: list[str] = []
        self._asking: list[str] = []  # fields the machine asked for, still to ask the caller
        self._asks: dict[str, int] = {}
        self._tool_calls: dict[str, tuple[str, Mapping[str, str]]] = {}  # call_id → (tool, details sent)
        self._proposal: _Proposal | None = None
        self._prompted_for_intent = False
        self._silence_prompted = False
        self._heard: Mapping[str, str] = {}  # every value in the caller's last words, new or not
        self._clarified = False
        self._decided = False
        self._said_anything = False
        self._call_ids = 0
        self._heard_details = False  # the last turn gave details: the next words thank and go on
        self._read_back_fields = {f.name for f in self.config.fields if f.read_back}
        self._read_backs: dict[str, int] = {}
        self._read_back_due: str | None = None  # a value heard, to be read back at the next words
        self._to_confirm: set[str] = set()  # caller-ID values the machine asked to confirm
        self._confirming: str | None = None  # the field whose yes or no the caller is about to say
        self._asked_in_passing: set[str] = set()  # the second field of such a question, not asked on its own yet
        self._last_question: tuple[str, ...] = ()  # the fields the last question counted an ask for
        self._acknowledged: set[str] = set()  # fields whose question a mere "sure" already had put again

    # ------------------------------------------------------------------ inputs

    def seed(self, caller_turns: Sequence[str]) -> None:
        """What the caller said to a previous engine (a takeover): it counts toward the intent."""
        self._intent_turns.extend(text for text in map(clean_transcript, caller_turns) if text)

    def on_caller_turn(self, text: str, *, answering: bool = True) -> Reply:
        """`answering`: the caller began these words after the agent's last ones began, so they may answer
        them; words begun before are the rest of what the caller was saying."""
        words = clean_transcript(text)
        if self._decided:
            return Reply()
        if not answering and (self._asking or self._confirming is not None):
            return self._said_before_the_question(text, words)
        if not words:
            return self._said(self.config.lines.not_heard)
        if self._confirming is not None:
            return self._after_confirmation(self._confirming, text, words)
        calls: list[ToolRequest] = []
        asked_for = self._asking[0] if self._asking else None
        details = self._details_in(text, asked_for)
        if details:
            calls.append(self._tool(RECORD_DETAILS, details))
            self._note_read_back(details)
        self._heard_details = bool(details)
        if asked_for is not None and not calls and _is_acknowledgement(words) and asked_for not in self._acknowledged:
            self._acknowledged.add(asked_for)
            return self._said(self._question_again(asked_for))
        if asked_for is not None and not calls and declines_to_answer(words):
            return self._after_decline(asked_for, words)
        if asked_for is not None:
            if details and declines_to_answer(words):
                self._decline_named(words, details)  # "I'd rather not give my name, the address is ..."
            return self._after_field_answer(asked_for, details, calls)
        self._intent_turns.append(words)
        proposal = self._classify()
        if (
            proposal.intent == UNKNOWN_INTENT
            or proposal.confidence >= self.config.triage.min_confidence
            or self._prompted_for_intent
            or self._clarified
            or self._says_a_need(words, details, proposal)
        ):
            # A need said unclearly goes to the machine now: its clarifying question names what the front
            # desk does, which helps the caller more than "how can I help?" and leaves time in the budget.
            calls.append(self._propose(proposal))
            return Reply(tuple(calls))
        # No need said yet (a hello, or details alone): ask once before the machine has to judge a guess.
        self._prompted_for_intent = True
        if calls:
            return Reply(tuple(calls))  # the question comes after the details are answered (on_continue)
        return self._said(self.config.lines.ask_intent)

    def on_silence(self) -> Reply:
        """The caller said nothing after the agent's words: a question unanswered is asked again once, then
        the call goes on without its answer (a caller-ID number stays, unconfirmed); with nothing left to
        ask, the need is proposed again for the machine to decide; an open question is asked again once."""
        if self._decided:
            return Reply()
        if self._confirming is not None:
            name, self._confirming = self._confirming, None
            self._to_confirm.discard(name)
            return self._after_field_answer(name, {}, [])
        if self._asking:
            return self._after_field_answer(self._asking[0], {}, [])
        if self._proposal is not None:  # nothing left to ask: the machine weighs the need again and decides
            return Reply((self._proposed_again(),))
        if self._silence_prompted:
            return Reply()
        self._silence_prompted = True
        return self._said(self.config.lines.not_heard if self._intent_turns else self.config.lines.ask_intent)

    def is_waiting_for_an_answer(self) -> bool:
        """A question put to the caller (a detail, a yes or no) is still open."""
        return not self._decided and (bool(self._asking) or self._confirming is not None)

    def ask_again(self) -> Reply:
        """The open question once more, not counted as asked: the caller talked through it."""
        if self._decided:
            return Reply()
        name = self._confirming
        if name is not None and name in self._to_confirm:
            return self._said(CALLER_ID_QUESTION)
        if name is not None:  # a read-back: the value read again
            country = self.config.company.country
            return self._said(read_back_question(self._fields[name], self.captured.get(name, ""), country))
        if self._asking:
            return self._said(self._question_again(self._asking[0]))
        return Reply()

    def on_tool_output(self, call_id: str, output: str) -> None:
        sent = self._tool_calls.pop(call_id, None)
        if sent is None:
            return
        tool, details = sent
        try:
            answer = json.loads(output)
            status = str(answer.get("status", "")) if isinstance(answer, dict) else ""
            detail = str(answer.get("detail", "")) if isinstance(answer, dict) else ""
        except ValueError:
            status, detail = "", ""
        if tool == RECORD_DETAILS:
            if status == "invalid":  # the machine's checks refused a value: it counts as not heard
                for name in details:
                    self.captured.pop(name, None)
                    if name in self._fields and name not in self._asking and self._asks.get(name):
                        self._asking.insert(0, name)
            return
        if status in _DECIDED:
            self._decided = True
        elif status == "clarify" and not detail.startswith("missing_fields"):
            self._clarified = True

    def on_line(self, line: SpokenLine) -> str:
        """The words for a fixed line the session asked for, plus the first question it asks for."""
        self._said_anything = True
        self._confirming = None  # the machine moved on (e.g. the caller typed the value instead)
        if not line.asks_for:
            return line.text
        self._to_confirm = set(line.confirms)
        # In the config's order (the machine lists them sorted): a business orders its questions. A number
        # known from caller ID is usable already: confirming it comes after what is missing.
        order = {name: position for position, name in enumerate(self._fields)}
        wanted = sorted(line.asks_for, key=lambda name: (name in self._to_confirm, order.get(name, len(order))))
        # A field already asked twice is not asked a third time, whatever line asks for it again.
        self._asking = [
            name for name in wanted
            if (name not in self.captured or name in self._to_confirm) and self._asks.get(name, 0) < MAX_ASKS_PER_FIELD
        ]
        if self._read_back_due is not None:
            return f"{line.text} {self._read_back()}"
        if not self._asking:
            return line.text
        return f"{line.text} {self._question(self._asking[0])}"

    def reply_to_line(self, line: SpokenLine) -> Reply:
        """`on_line` as a response: when the machine asks for details the caller was already asked twice
        each, nothing is asked; the need goes back to the machine, which can then decide, in silence (not
        "could I take a few details first?" followed by no question)."""
        words = self.on_line(line)
        exhausted = line.asks_for and not self._asking and self._read_back_due is None and self._confirming is None
        if exhausted and self._proposal is not None and not self._decided:
            return Reply((self._proposed_again(),))
        return Reply(say=words)

    def listening_for(self) -> ListeningFor | None:
        """What the caller's next words likely are: the answer to the field just asked for (None: open). A
        number read back or the caller-ID question is answered "yes", or "no, it's ..." with another number:
        steered for digits, which leaves a yes a yes (benchmarks/README.md, 2026-12-06 10:45)."""
        confirmed = self._fields.get(self._confirming) if self._confirming is not None else None
        if confirmed is not None:
            confirming = listening_for(confirmed)
            return confirming if confirming.kind in DIGIT_ANSWERS else None
        asked = self._fields.get(self._asking[0]) if self._asking else None
        return listening_for(asked) if asked is not None else None

    def on_continue(self) -> Reply:
        """The session asks the agent to go on (after tool answers, or after a takeover)."""
        if self._decided:
            return Reply()
        if self.taking_over and not self._said_anything:
            self._said_anything = True
            if self._intent_turns:
                proposal = self._classify()
                if proposal.confidence >= self.config.triage.min_confidence:
                    return Reply((self._propose(proposal),))
            return self._said(self.config.lines.taking_over)
        if self._read_back_due is not None:
            return self._said(self._read_back())
        if self._asking:
            return self._said(self._question(self._asking[0]))
        if self._heard_details and self._proposal is None:
            self._heard_details = False
            return self._said(f"Thank you. {self.config.lines.ask_intent}")
        return Reply()

    # ------------------------------------------------------------------ helpers

    def _after_field_answer(self, asked_for: str, details: Mapping[str, str], calls: list[ToolRequest]) -> Reply:
        self._to_confirm.difference_update(details)
        self._drop_answered()
        if asked_for in self._asking and self._asks.get(asked_for, 0) >= MAX_ASKS_PER_FIELD:
            self._asking.remove(asked_for)  # asked twice: go on without it; the machine decides
        if self._read_back_due is not None:
            return Reply(tuple(calls))  # the read-back comes with on_continue; the proposal after its answer
        if self._asking:
            if calls:
                return Reply(tuple(calls))  # the next question comes with on_continue
            return self._said(self._question(self._asking[0]))
        if self._proposal is not None:
            calls.append(self._proposed_again())
        return Reply(tuple(calls))

    def _said_before_the_question(self, text: str, words: str) -> Reply:
        """More of what the caller was saying when the agent asked: details it volunteers are kept, the rest
        is more of their need; the question asked stays open, neither answered nor counted as unanswered."""
        if not words:
            return Reply()
        self._intent_turns.append(words)
        details = self._details_in(text, None)
        if not details:
            return Reply()
        self._drop_answered()
        calls = [self._tool(RECORD_DETAILS, details)]
        if not self._asking and self._confirming is None and self._proposal is not None:
            calls.append(self._proposed_again())
        return Reply(tuple(calls))

    def _after_decline(self, asked_for: str, words: str) -> Reply:
        """The caller cannot or will not give what was just asked: it is not asked again (the machine then
        decides without it), and the next question, if any, follows without a "sorry"."""
        asked = [name for name in self._last_question if name in self._asking] or [asked_for]
        named = [name for name in asked if self._names_field(words, name)]
        for name in named or asked:
            self._asks[name] = MAX_ASKS_PER_FIELD
            self._asked_in_passing.discard(name)
        self._asking = [name for name in self._asking if self._asks.get(name, 0) < MAX_ASKS_PER_FIELD]
        if self._asking:
            return self._said(f"No problem. {self._question(self._asking[0], sorry=False)}")
        if self._proposal is not None:
            return Reply((self._proposed_again(),))
        return Reply()

    def _decline_named(self, words: str, details: Mapping[str, str]) -> None:
        """An answer that gives one detail and declines another: the field a declining clause names is not
        asked again (asking would only press the caller)."""
        declining = declining_clauses(words)
        for name in self._last_question:
            if name in self._asking and name not in details and self._names_field(declining, name):
                self._asks[name] = MAX_ASKS_PER_FIELD
                self._asked_in_passing.discard(name)

    def _names_field(self, words: str, name: str) -> bool:
        """Whether the caller's words mention the field ("I don't have a number"): by its name's words, or
        by what its type is called."""
        captured_field = self._fields.get(name)
        mentions = set(name.lower().split("_")) - {"caller", "callback", "preferred", "your"}
        if captured_field is not None:
            mentions |= FIELD_TYPE_WORDS.get(captured_field.type, set())
        said = {word.strip(",.!?'") for word in words.lower().split()}
        return bool(mentions & said)

    def _after_confirmation(self, name: str, text: str, words: str) -> Reply:
        """The answer to a read-back or to the caller-ID question: a new value, a yes, or a no."""
        self._confirming = None
        details = self._details_in(text, name)
        if name in details:  # "no, it's 0199": the correction replaces the value (and is read back in turn)
            self._note_read_back(details)
            return self._after_field_answer(name, details, [self._tool(RECORD_DETAILS, details)])
        # The same value said again ("no, it's 415 555 0199" to a read-back of it) confirms it, whatever the
        # words around it: the caller misheard the read-back, or is just repeating it.
        value = self.captured.get(name)
        verdict = True if value is not None and self._heard.get(name) == value else answer_is_yes(words)
        if verdict:
            self._to_confirm.discard(name)
            confirmed = {**details, CONFIRMED_ARGUMENT: [name]}
            return self._after_field_answer(name, details, [self._tool(RECORD_DETAILS, confirmed)])
        calls = [self._tool(RECORD_DETAILS, details)] if details else []
        if verdict is None and details:  # neither yes nor no, but other details: the value stays, unconfirmed
            return self._after_field_answer(name, details, calls)
        # A no, or no answer to it at all: the value is asked for (again), as a question about it would.
        self._to_confirm.discard(name)
        self.captured.pop(name, None)
        if self._asks.get(name, 0) >= MAX_ASKS_PER_FIELD:
            return self._after_field_answer(name, details, calls)
        self._asking = [name, *(other for other in self._asking if other != name)]
        self._said_anything = True
        return Reply(tuple(calls), say=self._question(name))

    def _note_read_back(self, details: Mapping[str, str]) -> None:
        due = [name for name in details if name in self._read_back_fields]
        if due and self._read_backs.get(due[0], 0) < MAX_READ_BACKS_PER_FIELD:
            self._read_back_due = due[0]

    def _read_back(self) -> str:
        name, self._read_back_due = self._read_back_due, None
        assert name is not None
        self._read_backs[name] = self._read_backs.get(name, 0) + 1
        self._confirming = name
        return read_back_question(self._fields[name], self.captured.get(name, ""), self.config.company.country)

    def _details_in(self, text: str, asked_for: str | None) -> dict[str, str]:
        found = extract_slots(
            text, self.config.fields, asked_for=asked_for, country=self.config.company.country, today=self.today(),
            previous=self.captured,
        )
        self._heard = found
        new = {name: value for name, value in found.items() if self.captured.get(name) != value}
        self.captured.update(new)
        return new

    def _classify(self) -> _Proposal:
        text = " ".join(self._intent_turns)
        prediction = self.model.predict(text)
        if self._clarified and len(self._intent_turns) > 1:
            # The answer to the clarifying question ("a bill") is the best evidence; earlier words can blur it.
            answer = self.model.predict(self._intent_turns[-1])
            trusted = not answer.needs_no_intent and answer.confidence >= self.config.triage.min_confidence
            if trusted and (prediction.needs_no_intent or answer.confidence > prediction.confidence):
                prediction = answer
            # The need said before and the answer, leaning the same way, each confirm the other.
            agreed = agreeing(self.model.predict(" ".join(self._intent_turns[:-1])), answer)
            if agreed is not None and agreed.confidence > prediction.confidence:
                prediction = agreed
        if prediction.needs_no_intent:
            return _Proposal(UNKNOWN_INTENT, round(prediction.unknown, 4), text[:MAX_SUMMARY_CHARS])
        return _Proposal(prediction.intent, round(prediction.confidence, 4), text[:MAX_SUMMARY_CHARS])

    def _says_a_need(self, words: str, details: Mapping[str, str], proposal: _Proposal) -> bool:
        """Whether a turn reads as a need at all: more than a few words besides the details it gave (and
        their lead-in, "my name is"), and the classifier leans somewhere (words said on any call, such as
        a hello, are trained towards no intent in particular)."""
        other_words = len(words.split())
        if details:
            other_words -= DETAIL_LEAD_IN_WORDS + sum(len(value.split()) for value in details.values())
        uniform = 1 / max(1, len(self.config.intents))
        return other_words > MAX_WORDS_WITHOUT_A_NEED and proposal.confidence - uniform >= MIN_NEED_LEAN

    def _propose(self, proposal: _Proposal) -> ToolRequest:
        self._proposal = proposal
        return self._tool(PROPOSE_ROUTE, self._proposal_arguments(proposal))

    def _proposed_again(self) -> ToolRequest:
        """The need already proposed, proposed again (the machine weighs it anew)."""
        assert self._proposal is not None
        return self._tool(PROPOSE_ROUTE, self._proposal_arguments(self._proposal))

    def _drop_answered(self) -> None:
        """Fields given since they were asked leave the questions still to put (a caller-ID one stays to confirm)."""
        self._asking = [name for name in self._asking if name not in self.captured or name in self._to_confirm]

    @staticmethod
    def _proposal_arguments(proposal: _Proposal) -> dict[str, object]:
        return {"intent": proposal.intent, "confidence": proposal.confidence, "summary": proposal.summary}

    def _tool(self, name: str, arguments: Mapping[str, object]) -> ToolRequest:
        self._call_ids += 1
        call_id = f"offline_call_{self._call_ids}"
        details = {k: str(v) for k, v in arguments.items()} if name == RECORD_DETAILS else {}
        self._tool_calls[call_id] = (name, details)
        return ToolRequest(call_id, name, json.dumps(dict(arguments)))

    def _question(self, name: str, *, sorry: bool = True) -> str:
        if name in self._to_confirm:  # known from caller ID: one question to confirm it, not counted as an ask
            self._confirming = name
            return CALLER_ID_QUESTION
        together = self._question_together(name)
        if together is not None:
            return together
        asks = self._asks[name] = self._asks.get(name, 0) + 1
        self._last_question = (name,)
        captured_field = self._fields.get(name)
        if captured_field is None:
            question = f"Could you tell me your {name.replace('_', ' ')}?"
        else:
            question = asked_with_keypad(captured_field, captured_field.question or field_question(captured_field))
        if asks == 1 or (asks == 2 and name in self._asked_in_passing) or not sorry:
            self._asked_in_passing.discard(name)  # asked with a name the caller gave alone: no "sorry" yet
            return question
        return f"Sorry, I didn't get that. {question}"

    def _question_together(self, name: str) -> str | None:
        """A name and an address next in line, neither asked yet: one question for both, which saves the
        caller a turn. The answer is heard and read as the name's (steering the recogniser for a name hears
        both better than a prompt for both did), and that reading takes the address apart too."""
        if len(self._asking) < 2 or self._asking[0] != name:
            return None
        partner = self._asking[1]
        first, second = self._fields.get(name), self._fields.get(partner)
        if first is None or second is None or partner in self._to_confirm or self._asks.get(name) or self._asks.get(partner):
            return None
        question = question_together(first, second)
        if question is not None:
            self._asks[name] = self._asks[partner] = 1
            self._asked_in_passing.add(partner)
            self._last_question = (name, partner)
        return question

    def _question_again(self, name: str) -> str:
        """The last question put again as it was first put, its asks not counted twice."""
        for asked in self._last_question:
            self._asks[asked] = max(0, self._asks.get(asked, 0) - 1)
            if not self._asks[asked]:
                self._asked_in_passing.discard(asked)
        return self._question(name)

    def _said(self, text: str) -> Reply:
        self._said_anything = True
        return Reply(say=text)


def _is_acknowledgement(words: str) -> bool:
    said = [word.strip(",.!?") for word in words.lower().split()]
    return bool(said) and all(word in ACKNOWLEDGEMENT_WORDS for word in said)
