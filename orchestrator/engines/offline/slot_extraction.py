"""Captured-field values found in what a caller said, without a language model.

The offline triage engine hears one utterance at a time (speech recognition or typed text) and
must fill the routing config's captured fields. `extract_slots` returns canonical values (phone
E.164, a normalised email address, a date as YYYY-MM-DD, a choice spelled exactly as configured,
a title-cased name, an address with its numbers in digits and its street type written out), the same
forms `engines/tools.py` accepts from the Realtime engine, and only for fields it is confident about: an
ambiguous utterance (two numbers, two dates, two choices) yields nothing for that field, so the engine
asks again, and so does an answer that gives nothing ("sorry, I don't know the postcode"). Phone numbers
are read as a caller says them and as speech-to-text writes them (`spoken_numbers`), corrections
included ("..., no, sorry, 0198", or "no, it's 0198" in the next turn). `field_question` words the
question for a field; `listening_for` says what its answer will sound like, to steer the recogniser.

Pure computation: no I/O, nothing downloaded. Number words in dates are turned into digits by
`text_to_num` (the text2num package, offline rules).
"""
from __future__ import annotations

import datetime
import difflib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import phonenumbers
from email_validator import EmailNotValidError, validate_email
from text_to_num import alpha2digit

from orchestrator.config import CapturedField
from orchestrator.engines import MAX_VALUE_LENGTH
from orchestrator.engines.offline.speech import ListeningFor
from orchestrator.engines.offline.spoken_numbers import DigitRun, cardinal_words_to_digits, digit_runs

MAX_INPUT_CHARACTERS = 1_000  # bounds the work spent on one utterance; a spoken turn is far shorter
MAX_NAME_WORDS = 3

# --- Word tables ---------------------------------------------------------------------------------

MONTHS = {
    "january": 1, "jan": 1, "february": 2, "feb": 2, "march": 3, "mar": 3, "april": 4, "apr": 4, "may": 5,
    "june": 6, "jun": 6, "july": 7, "jul": 7, "august": 8, "aug": 8, "september": 9, "sept": 9, "sep": 9,
    "october": 10, "oct": 10, "november": 11, "nov": 11, "december": 12, "dec": 12,
}  # fmt: skip
# Abbreviated day names are left out: "sat", "sun" and "wed" are ordinary words too.
WEEKDAYS = {"monday": 0, "tuesday": 1, "wednesday": 2, "thursday": 3, "friday": 4, "saturday": 5, "sunday": 6}
# Regions that write numeric dates month first (the US and the territories that follow its usage).
MONTH_FIRST_REGIONS = frozenset({"US", "PR", "GU", "VI", "AS", "MP", "UM", "FM"})

# Words that never start or continue a name after a cue ("I'm calling about…", "this is urgent").
NOT_NAME_WORDS = frozenset(
    """
    a about actually after afraid again ah all also am an and any anyone are around as at available away
    back bad be because been being best both broken busy but by call called calling can cannot could
    currently did do doctor does doing done down dr during each else email emergency er erm even ever every
    fine for from funny get getting glad going gonna good got great had happy has have having he hello
    her here hey hi him his hmm home how i if important in interested into is it its just kind last like
    looking me meant mine miss more most mr mrs ms mx much my need needing new next no none not now
    number of oh ok okay on one only or other our out over phone phoning please quite rather ready really
    right ringing same she should so some someone something sorry still stuck such sure than thank thanks that
    the their them then there these they this those through to today tomorrow too trying uh um under
    up urgent us very want wanted wanting was we well were what when where which while who why will
    with wondering would yeah yep yes yet you your
    i'd i'll i've it's that's there's what's we're you're they're don't can't won't didn't isn't
    wasn't doesn't haven't couldn't wouldn't shouldn't let's
    """.split()
)
# Said around an answer but not part of it ("uh, it's mary smith, thanks").
LEADING_FILLERS = re.compile(
    r"^(?:(?:uh+|um+|er+m?|hmm+|ah+|oh|yeah|yes|yep|sure|okay|ok|well|so|right|hi|hello|alright|sorry|no|nope|"
    r"it'?s|it is|that'?s|that is)\b[\s,.!:;-]*)+",
    re.IGNORECASE,
)
NAME_CUE_PREFIX = re.compile(
    r"^(?:(?:my|the)\s+(?:full\s+)?name(?:'s|\s+is)|name'?s|this\s+is|i'?m|i\s+am|call\s+me)\b[\s,:-]*",
    re.IGNORECASE,
)
EMAIL_CUE_PREFIX = re.compile(
    r"^(?:(?:my|the)\s+)?(?:e-?mail(?:\s+address)?|address)(?:'s|\s+is)?\b[\s,:-]*", re.IGNORECASE
)
INNER_FILLERS = re.compile(r"(?<!\S)(?:uh+|um+|er+m?|hmm+)[,.]?(?!\S)", re.IGNORECASE)
TRAILING_COURTESY = re.compile(r"(?:[\s,.!-]*\b(?:thanks|thank you|please|cheers)\b)+[\s.!]*$", re.IGNORECASE)
EDGE_PUNCTUATION = " \t,.;:!?-\"'"

# A name cue must start where a sentence or clause does, so "that's what I'm told" is no cue.
NAME_CUES = re.compile(
    r"(?:^|(?<=[\s,.!?;:]))"
    r"(?:my\s+(?:full\s+)?name\s+is|my\s+name'?s|name'?s|this\s+is|i'?m|i\s+am|call\s+me)\s+",
    re.IGNORECASE,
)
NAME_WORD = re.compile(r"[^\W\d_]+(?:['-][^\W\d_]+)*")
NAME_GAP = re.compile(r" (?=\S)")
TITLES = {"mr": "Mr", "mrs": "Mrs", "ms": "Ms", "miss": "Miss", "mx": "Mx", "dr": "Dr", "doctor": "Dr"}
TITLE = re.compile(r"(?P<title>" + "|".join(TITLES) + r")\.? (?=\S)", re.IGNORECASE)


# --- Entry points --------------------------------------------------------------------------------


def extract_slots(
    text: str,
    fields: Sequence[CapturedField],
    *,
    asked_for: str | None = None,
    country: str = "US",
    today: datetime.date,
    previous: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Canonical values (field name → value, config order) confidently present in one utterance.

    `asked_for` names the field the agent just asked for: the whole answer may then be that field.
    `country` is the region for national phone numbers and numeric dates; `today` anchors relative
    dates; `previous` holds the values captured earlier in the call, which a correction ("no, it's
    0198") may refer to. Never raises on any `text`; a wrong argument type, an unknown `asked_for` or
    `country` raise TypeError / ValueError.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str (got {type(text).__name__})")
    if isinstance(today, datetime.datetime):
        today = today.date()
    elif not isinstance(today, datetime.date):
        raise TypeError(f"today must be a datetime.date (got {type(today).__name__})")
    region = country.strip().upper() if isinstance(country, str) else ""
    if region not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError(f"unknown country code {country!r} (use ISO 3166-1 alpha-2, e.g. 'US', 'GB')")
    fields = list(fields)
    asked = next((field for field in fields if field.name == asked_for), None)
    if asked_for is not None and asked is None:
        raise ValueError(
            f"asked_for {asked_for!r} is not one of the fields ({', '.join(f.name for f in fields)})"
        )

    utterance = _cleaned(text)
    phone_target = _target_field(_fields_of(fields, "phone"), asked)
    earlier_number = (previous or {}).get(phone_target.name) if phone_target is not None else None
    found: dict[str, str] = {}
    for field in fields:
        if field.type == "choice":
            choice = _choice_in(utterance, field.choices or [])
            if choice is not None:
                found[field.name] = choice

    extractors: dict[str, Callable[[bool], str | None]] = {
        "phone": lambda _whole_answer: _phone_in(utterance, region, earlier_number),
        "email": lambda whole_answer: _email_in(utterance, whole_answer=whole_answer),
        "date": lambda whole_answer: _date_in(utterance, today, region, whole_answer=whole_answer),
    }
    for kind, extract in extractors.items():
        target = _target_field(_fields_of(fields, kind), asked)
        if target is not None and (value := extract(asked is target)) is not None:
            found[target.name] = value
    corrected = phone_target is not None and found.get(phone_target.name, earlier_number) != earlier_number
    if earlier_number is not None and corrected and _corrects_previous(utterance):
        asked = None  # "no, it's 0198" answers no question: it corrects the number given before

    name_fields = [field for field in _fields_of(fields, "text") if _is_person_name_field(field)]
    name_target = _target_field(name_fields, asked)
    if name_target is not None:
        name = _spelled_out(utterance, whole_answer=asked is name_target)
        if name is not None:
            found[name_target.name] = name
    address_target = _target_field([f for f in _fields_of(fields, "text") if _is_address_field(f)], asked)
    if address_target is not None:
        address = _address_in(utterance, whole_answer=asked is address_target)
        if address is not None:
            found[address_target.name] = address
    if asked is not None and asked.type == "text" and asked not in (name_target, address_target):
        answer = _answer_text(utterance)
        if answer:
            found[asked.name] = answer
    return {field.name: found[field.name] for field in fields if field.name in found}


def listening_for(field: CapturedField) -> ListeningFor:
    """What a caller asked for `field` is about to say, to steer the recogniser toward it."""
    if field.type == "choice":
        return ListeningFor("choice", tuple(field.choices or ()))
    if field.type in ("phone", "email", "date"):
        return ListeningFor(field.type)
    if _is_person_name_field(field):
        return ListeningFor("name")
    if _is_address_field(field):
        return ListeningFor("address")
    words = set(field.name.split("_"))
    if words & {"number", "code", "zip", "postcode", "pin", "id"}:
        return ListeningFor("number")
    return ListeningFor("open")


def question_together(first: CapturedField, second: CapturedField) -> str | None:
    """One question for a name and an address asked one after the other ("Could I have your full name and
    your address, please?"), which callers answer in one breath and `extract_slots` takes apart when asked
    for the name; None for any other pair, or for fields the config words itself."""
    if first.question or second.question:
        return None
    if not (first.type == second.type == "text" and _is_person_name_field(first) and _is_address_field(second)):
        return None
    return f"Could I have your {_field_subject(first)} and your {_field_subject(second)}, please?"


def field_question(field: CapturedField) -> str:
    """A short, predictable question asking the caller for `field`."""
    if field.type == "choice":
        return f"Is it {_spoken_alternatives(field.choices or [])}?"
    if field.type == "phone":
        return "What's the best number to call you back on?"
    if field.type == "email":
        return "What's your email address?"
    if field.type == "date":
        return "What day would suit you?"
    subject = _field_subject(field)
    if subject.split()[-1] == "name":
        return f"Could I have your {subject}, please?"
    return f"Could you tell me your {subject}?"


# --- Helpers shared by the extractors ------------------------------------------------------------


def _cleaned(text: str) -> str:
    text = text[:MAX_INPUT_CHARACTERS].replace("\u2019", "'").replace("\u2018", "'")
    return " ".join(text.split())


def _fields_of(fields: Iterable[CapturedField], kind: str) -> list[CapturedField]:
    return [field for field in fields if field.type == kind]


def _target_field(candidates: list[CapturedField], asked: CapturedField | None) -> CapturedField | None:
    """The field a value of some type goes to: the one asked for, else the only one of that type."""
    if asked is not None and asked in candidates:
        return asked
    return candidates[0] if len(candidates) == 1 else None


def _the_only(values: Iterable[str]) -> str | None:
    distinct = set(values)
    return distinct.pop() if len(distinct) == 1 else None


def _spoken_numbers(text: str) -> str:
    # threshold=0: convert even lone small numbers ("the first" → "the 1st"), which dates need.
    return alpha2digit(text, "en", threshold=0)


# --- Names and free text -------------------------------------------------------------------------

PERSON_NAME_QUALIFIERS = frozenset(
    {"caller", "callers", "customer", "customers", "contact", "full", "your", "person"}
)


def _is_person_name_field(field: CapturedField) -> bool:
    """caller_name, full_name, name…: fields a self-introduction fills (not company_name, first_name)."""
    words = [word for word in field.name.split("_") if word not in PERSON_NAME_QUALIFIERS]
    return words == ["name"]


def _name_in(utterance: str, *, whole_answer: bool) -> str | None:
    has_case = _has_capitalised_words(utterance)
    names = [
        name
        for cue in NAME_CUES.finditer(utterance)
        if (name := _name_at(utterance, cue.end(), require_capitals=has_case)) is not None
    ]
    name = _the_only(names)
    if name is not None or names or not whole_answer:
        return name
    answer = NAME_CUE_PREFIX.sub("", LEADING_FILLERS.sub("", _without_non_answers(utterance)))
    answer = INNER_FILLERS.sub(" ", answer)
    # An answer to "what's your name?" needs no cue and no capitals.
    return _name_at(" ".join(answer.split()), 0, require_capitals=False)


# A word spelled out after it is said: "Kowalski, K-O-W-A-L-S-K-I" (as speech-to-text writes it), "K, O, W...".
SPELLED_WORD = re.compile(
    r"(?:\b(?:that'?s|that\s+is|it'?s|spelled|spelt|spelling)[\s,:]+)*(?<![\w'])"
    r"(?P<letters>[A-Za-z](?:(?:\s*[-,.]\s*|\s+)[A-Za-z]){2,})(?![\w'])",
    re.IGNORECASE,
)
MIN_SPELLING_LIKENESS = 0.5  # how alike a spelled word and a heard one must be for the one to correct the other


def _spelled_out(utterance: str, *, whole_answer: bool) -> str | None:
    """The name in `utterance`, its words spelled out by the caller taken as spelled: the name is read
    from the words without the spelling, then each spelled word replaces the name word it is most like
    (speech-to-text mishears names, but letters far less). A spelled word like none of them is the name
    only when the answer has no other."""
    # Case folding lets a few non-ASCII letters ("İ") match: letters are kept only when ASCII ones remain.
    letters = ("".join(re.findall(r"[A-Za-z]", match["letters"])) for match in SPELLED_WORD.finditer(utterance))
    spellings = [_title_cased(word.lower()) for word in letters if word]
    if not spellings:
        return _name_in(utterance, whole_answer=whole_answer)
    name = _name_in(" ".join(SPELLED_WORD.sub(" ", utterance).split()), whole_answer=whole_answer)
    if name is None:
        return spellings[-1] if whole_answer else None
    words = name.split()
    for spelled in spellings:
        likeness = [difflib.SequenceMatcher(None, word.lower(), spelled.lower()).ratio() for word in words]
        best = max(range(len(words)), key=likeness.__getitem__)
        if likeness[best] >= MIN_SPELLING_LIKENESS:
            words[best] = spelled
    return " ".join(words)


PRONOUN_I = re.compile(r"i(?:'(?:m|d|ve|ll))?", re.IGNORECASE)


def _has_capitalised_words(utterance: str) -> bool:
    """Whether the text was written with capitals, so that a lower-case word after a cue is no name.

    Sentence starts and the pronoun "I" are capitalised in any written text and say nothing.
    """
    for match in NAME_WORD.finditer(utterance):
        word = match.group()
        if (
            word[0].isupper()
            and not PRONOUN_I.fullmatch(word)
            and not _starts_sentence(utterance, match.start())
        ):
            return True
    return False


def _starts_sentence(utterance: str, position: int) -> bool:
    before = position - 1
    while before >= 0 and utterance[before] in " \"'(":
        before -= 1
    return before < 0 or utterance[before] in ".!?"


def _name_at(utterance: str, start: int, *, require_capitals: bool) -> str | None:
    """The 1–3 name words starting at `start`, or None when they are no name."""
    words = []
    position = start
    title = TITLE.match(utterance, position)
    if title is not None:
        position = title.end()
    while True:
        match = NAME_WORD.match(utterance, position)
        if match is None:
            break
        word = match.group()
        if _not_name_word(word, require_capitals=require_capitals):
            break
        words.append(word)
        if len(words) > MAX_NAME_WORDS:
            break
        gap = NAME_GAP.match(utterance, match.end())
        if gap is None:
            break  # punctuation or the end closes the name
        position = gap.end()
    if not words or len(words) > MAX_NAME_WORDS:
        return None  # too many words in a row: more likely a sentence than a name
    titled = [TITLES[title["title"].casefold()]] if title is not None else []
    return " ".join(titled + [_title_cased(word) for word in words])


def _not_name_word(word: str, *, require_capitals: bool) -> bool:
    lowered = word.casefold()
    if lowered in NOT_NAME_WORDS or len(lowered) < 2:
        return True
    if require_capitals:
        return not word[0].isupper()
    # "I'm calling", "this is regarding", "I'm locked out", "I'm worried": what the caller is doing or feeling.
    return lowered.endswith(("ing", "ed")) and len(lowered) > 5


def _title_cased(word: str) -> str:
    if word[0].isupper() and not word.isupper():
        return word  # the speaker's own capitals (McDonald, DeShawn) are kept
    return re.sub(r"[^\W\d_]+", lambda part: part.group().capitalize(), word)


def _answer_text(utterance: str) -> str:
    """A free-text answer without the fillers around it, within the validator's length limit; "" when the
    caller gave none ("sorry, I don't know", "go ahead")."""
    answer = TRAILING_COURTESY.sub("", LEADING_FILLERS.sub("", _without_non_answers(utterance)))
    answer = " ".join(INNER_FILLERS.sub(" ", answer).split()).strip(EDGE_PUNCTUATION)
    if len(answer) > MAX_VALUE_LENGTH:
        answer = answer[:MAX_VALUE_LENGTH].rsplit(" ", 1)[0].rstrip(EDGE_PUNCTUATION)
    return answer


# Said instead of an answer: not knowing, refusing, inviting the question, checking the line.
NON_ANSWER = re.compile(
    r"\b(?:(?:do|does|did)\s*n[o']?t|do\s+not)\s+(?:know|have|remember)\b|\bnot\s+sure\b|\bno\s+idea\b|"
    r"\brather\s+not\b|\bcan'?not\s+(?:remember|recall|say)\b|\bcan'?t\s+(?:remember|recall|say)\b|"
    r"\bgo\s+ahead\b|\bstill\s+there\b|\bsay\s+(?:that|it)\s+again\b|\bpardon\b|\bhello\b|"
    r"\bwhat\s+was\s+(?:that|the\s+question)\b",
    re.IGNORECASE,
)
CLAUSE = re.compile(r"[^,.;!?]+[,.;!?]*")
# Of those, the ones that say the answer will not come: asking again would only press the caller.
DECLINE = re.compile(
    r"\b(?:(?:do|does|did)\s*n[o']?t|do\s+not)\s+(?:know|have|remember|want\s+to\s+(?:give|say|share))\b|"
    r"\bnot\s+sure\b|\bno\s+idea\b|\b(?:rather|prefer)\s+not\b|\bcan(?:'?t|not)\s+(?:remember|recall|give|say)\b|"
    r"\bwon'?t\s+(?:give|say|share)\b|\bnone\s+of\s+your\s+business\b",
    re.IGNORECASE,
)


def declines_to_answer(utterance: str) -> bool:
    """Whether the caller says they cannot or will not give what was asked ("sorry, I don't know the
    postcode", "I'd rather not say"): an answer, though not the detail."""
    return isinstance(utterance, str) and DECLINE.search(utterance) is not None


def declining_clauses(utterance: str) -> str:
    """The clauses of `utterance` that decline ("I'd rather not give my name" of "I'd rather not give my name,
    the address is 5 Elm Street"); "" when none does."""
    return " ".join(clause.strip() for clause in CLAUSE.findall(utterance) if DECLINE.search(clause) is not None)


def _without_non_answers(utterance: str) -> str:
    """The utterance without its clauses that give no answer ("5 Station Road, but I don't know the postcode")."""
    if NON_ANSWER.search(utterance) is None:
        return utterance
    kept = [clause for clause in CLAUSE.findall(utterance) if NON_ANSWER.search(clause) is None]
    text = " ".join(" ".join(kept).split())
    return re.sub(r"(?:[\s,;]+(?:but|and|though))+[\s,.;]*$", "", text, flags=re.IGNORECASE)


# --- Addresses -----------------------------------------------------------------------------------

STREET_TYPES = {
    "street": "Street", "st": "Street", "road": "Road", "rd": "Road", "avenue": "Avenue", "ave": "Avenue",
    "lane": "Lane", "ln": "Lane", "drive": "Drive", "dr": "Drive", "court": "Court", "ct": "Court",
    "close": "Close", "way": "Way", "place": "Place", "pl": "Place", "boulevard": "Boulevard", "blvd": "Boulevard",
    "crescent": "Crescent", "terrace": "Terrace", "parkway": "Parkway", "pkwy": "Parkway", "highway": "Highway",
    "hwy": "Highway", "square": "Square", "sq": "Square", "circle": "Circle", "gardens": "Gardens", "grove": "Grove",
    "row": "Row", "mews": "Mews",
}  # fmt: skip
# Whisper often hears a street type with an "s" ("five station roads"); no street is named that way.
STREET_TYPE_PLURALS = {f"{name}s": STREET_TYPES[name] for name in ("street", "road", "avenue", "lane", "drive", "court")}
_STREET_TYPE = "(?:" + "|".join(sorted(STREET_TYPES, key=len, reverse=True)) + ")"
# An abbreviation after a street name ("Park St.") is the street type; "St Mary" after a number is a name.
STREET_ABBREVIATION = re.compile(
    r"(?<=[^\W\d_] )(?P<abbreviation>"
    + "|".join([*(k for k, v in STREET_TYPES.items() if k != v.lower()), *STREET_TYPE_PLURALS])
    + r")\b\.?(?=\s*(?:[,.;]|$))",
    re.IGNORECASE,
)
WRITTEN_STREET_TYPES = {**STREET_TYPES, **STREET_TYPE_PLURALS}
# A house number, up to four words and a street type: an address even when nobody asked for one.
STREET_ADDRESS = re.compile(
    r"(?<![\w-])[0-9]{1,5}[a-z]?\s+(?:[^\W\d_][\w'-]*\s+){1,4}?" + _STREET_TYPE + r"s?\b\.?"
    r"(?:,?\s+(?:(?:that'?s|which\s+is)\s+)?(?:in\s+)?(?!(?:and|my|the|i|it|that'?s|in)\b)[A-Z][\w'-]*"
    r"(?:\s+(?!(?:and|my|the|i|it)\b)[A-Z][\w'-]*)?)?(?:,?\s+[0-9]{5}(?:-[0-9]{4})?)?",
    re.IGNORECASE,
)
# Said before the town, not part of it: "14 Saguaro Way, in Tempe", "340 Linden Avenue. That's in Pittsburgh".
TOWN_LEAD_IN = re.compile(r"(?<=[\w.]),?\s+(?:(?i:that'?s|that\s+is|which\s+is|it'?s)\s+)?(?i:in)\s+(?=[A-Z])")
# A caller correcting what they just said: "forty one, sorry, no, fourteen Saguaro Way".
SELF_CORRECTION = re.compile(
    r"\b(?:sorry,?\s+no|no,?\s+sorry|no,?\s+wait|wait,?\s+no|i\s+mean|or\s+rather)\b[\s,.]*", re.IGNORECASE
)
REPEATED_HOUSE_NUMBER = re.compile(r"^([0-9]{1,5})[,.]?\s+(?=\1\b)")
# A house number said in pairs, as US callers do: "twenty seven fifteen East Camelback Road" is 2715.
HOUSE_NUMBER_PAIRS = re.compile(r"^([1-9][0-9])[ -]([0-9]{2})(?= [^\W\d_])")
ADDRESS_CUE = re.compile(
    r"(?:\b(?:my|the|our)\s+(?:full\s+)?address(?:\s+is|'s|es)|\baddress(?:'s|\s+is)|\b(?:i|we)\s+live\s+at|"
    r"\b(?:i'?m|i\s+am|we'?re|we\s+are|it'?s|it\s+is|located)\s+at)\b[\s,:-]*",
    re.IGNORECASE,
)
# Where another detail starts in the same breath ("..., and my number is ...").
OTHER_DETAIL = re.compile(
    r"[\s,;.]*\b(?:and\s+)?(?:my|the)\s+(?:full\s+)?(?:name|number|phone|mobile|cell|e-?mail)\b.*$|"
    r"[\s,;.]*\b(?:and\s+)?(?:this\s+is|call\s+me|you\s+can\s+reach\s+me)\b.*$",
    re.IGNORECASE,
)
ADDRESS_WORD = re.compile(r"[^\W\d_]{2,}")
PLACE_WORD = re.compile(
    rf"\b(?:{_STREET_TYPE}|flat|apartment|apt|unit|suite|floor|house|home|cottage|farm|building|block|estate|"
    r"village|town|city|county|state|near|above|below|behind|opposite|next\s+to|corner|by\s+the|post\s?code|zip)\b",
    re.IGNORECASE,
)
SENTENCE = re.compile(r".+?(?:[.!?](?=\s|$)|$)", re.DOTALL)
MAX_PLACE_WORDS = 3  # a town or a postcode said after a pause
# A pause Whisper wrote as a full stop inside an address ("60 Glen Road. Springfield"), not an abbreviation's.
PAUSE_STOP = re.compile(r"(?:(?<=[^\W\d_]{3})|(?<=[0-9]))\.\s+(?=\w)")
HOUSE_NUMBER_HYPHEN = re.compile(r"(?<![\w-])([0-9]{1,5})-(?=[^\W\d_])")  # "8-bird street": "8 bird street"
# A house number Whisper wrote as its homophone, before a street with no number: "for Birch Way" is 4 Birch Way.
HOUSE_NUMBER_HOMOPHONE = re.compile(
    r"^(?P<homophone>for|to|too)\s+(?=(?:[^\W\d_][\w'-]*\s+){1,4}?" + _STREET_TYPE + r"s?\b)", re.IGNORECASE
)
HOMOPHONE_DIGITS = {"for": "4", "to": "2", "too": "2"}
# Single letters and digits said one by one: a postcode or ZIP ("9 4 1 0 5", "N 1 9 G U").
SPELLED_CODE = re.compile(r"(?<![\w'])(?:[A-Z0-9][\s-]+){2,6}[A-Z0-9](?![\w'])")


def _is_address_field(field: CapturedField) -> bool:
    """address, home_address, service_address…: a postal address (not an email address)."""
    words = field.name.split("_")
    return "address" in words and not {"email", "mail", "e"} & set(words)


def _address_in(utterance: str, *, whole_answer: bool) -> str | None:
    text = _as_corrected(_without_non_answers(utterance))
    cued = [_address_after(text, cue.end()) for cue in ADDRESS_CUE.finditer(text)]
    addresses = [address for address in cued if address and _looks_like_address(address)]
    if not addresses and not whole_answer:
        shaped = cardinal_words_to_digits(text)
        addresses = [_canonical_address(match.group()) for match in STREET_ADDRESS.finditer(shaped)]
    if addresses or not whole_answer:
        return _the_only(addresses)
    answer = OTHER_DETAIL.sub("", NAME_CUE_PREFIX.sub("", LEADING_FILLERS.sub("", text)))
    address = _canonical_address(_answer_text(answer))
    # A number or a word of places is needed: "John Smith", said late, answers the question before, and
    # digits alone ("no, 0198") another one.
    if not ADDRESS_WORD.search(address) or not (re.search(r"[0-9]", address) or PLACE_WORD.search(address)):
        return None
    return address


def _as_corrected(text: str) -> str:
    """What the caller said after correcting themselves, when that still says an address."""
    corrections = list(SELF_CORRECTION.finditer(text))
    if corrections:
        after = text[corrections[-1].end():]
        if _looks_like_address(cardinal_words_to_digits(after)):
            return after
    return text


def _address_after(text: str, start: int) -> str:
    """The address said after a cue: to the end of its sentence, and the short ones after it (Whisper ends a
    sentence where the caller pauses: "42 Maple Avenue. Springfield.")."""
    sentences = SENTENCE.findall(OTHER_DETAIL.sub("", text[start:]))
    kept = sentences[:1]
    for sentence in sentences[1:]:
        if len(sentence.split()) > MAX_PLACE_WORDS:
            break
        kept.append(sentence)
    return _canonical_address(" ".join(kept))


def _looks_like_address(address: str) -> bool:
    return any(character.isdigit() for character in address) or re.search(
        rf"\b{_STREET_TYPE}\b", address, re.IGNORECASE
    ) is not None


def _canonical_address(text: str) -> str:
    """Digits for numbers said in words, spelled codes joined, street types written out."""
    text = HOUSE_NUMBER_HYPHEN.sub(r"\1 ", cardinal_words_to_digits(text))
    text = SPELLED_CODE.sub(lambda match: _spelled_code(match.group()), text)
    text = STREET_ABBREVIATION.sub(lambda match: WRITTEN_STREET_TYPES[match["abbreviation"].lower()], text)
    text = TOWN_LEAD_IN.sub(", ", PAUSE_STOP.sub(", ", text))
    if not re.search(r"[0-9]", text):
        text = HOUSE_NUMBER_HOMOPHONE.sub(lambda match: HOMOPHONE_DIGITS[match["homophone"].lower()] + " ", text.strip())
    return _answer_text(HOUSE_NUMBER_PAIRS.sub(r"\1\2", REPEATED_HOUSE_NUMBER.sub("", text.strip())))


def _spelled_code(spelled: str) -> str:
    code = re.sub(r"[\s-]+", "", spelled).upper()
    if code.isdigit():
        return code
    if not any(character.isdigit() for character in code) or not 5 <= len(code) <= 7:
        return spelled  # letters alone are initials, not a code
    return f"{code[:-3]} {code[-3:]}"  # a UK postcode: outward and inward parts


# --- Phone numbers -------------------------------------------------------------------------------


def _phone_in(utterance: str, region: str, previous: str | None) -> str | None:
    """The one valid phone number in the utterance, as E.164, corrections applied.

    A run of digits after a correction cue ("..., no, sorry, 0198") replaces the end of the number before
    it; at the start of a turn that opens with one ("no, it's 0198"), it corrects `previous`, the number
    captured earlier in the call.
    """
    runs = digit_runs(utterance)
    earlier = _national_digits(previous, region) if previous else None
    found: list[list[str]] = []  # the numbers each run gives
    for index, run in enumerate(runs):
        if index > 0:
            base: tuple[str, bool] | None = (runs[index - 1].digits, runs[index - 1].plus) if run.corrects else None
        else:
            base = earlier if earlier is not None and _corrects_previous(utterance) else None
        corrected = _corrected(*base, run, region) if base is not None else None
        if corrected is not None:
            if index > 0:
                found[-1] = []  # the number said before the correction was wrong
            found.append([corrected])
        else:
            found.append(_phones_in_run(run, region))
    return _the_only(number for numbers in found for number in numbers)


CORRECTION_OPENING = re.compile(r"^\W*(?:no|nope|sorry|actually|correction|wait|oops)\b|\bi mean\b", re.IGNORECASE)


def _corrects_previous(utterance: str) -> bool:
    return CORRECTION_OPENING.search(utterance) is not None


def _corrected(base: str, base_plus: bool, correction: DigitRun, region: str) -> str | None:
    """The number `correction` makes of `base`: itself when whole, else the end of `base` replaced."""
    whole = _valid_phone(correction.digits, correction.plus, region)
    if whole is not None or not MIN_CORRECTION_DIGITS <= len(correction.digits) < len(base):
        return whole
    return _valid_phone(base[: len(base) - len(correction.digits)] + correction.digits, base_plus, region)


def _phones_in_run(run: DigitRun, region: str) -> list[str]:
    """The run as one number; failing that, a valid number the run starts or ends with, when what is left
    over is a few digits (a house number after the number, a stray "oh" before it)."""
    whole = _valid_phone(run.digits, run.plus, region)
    if whole is not None:
        return [whole]
    spans = [(0, end) for end in range(len(run.groups) - 1, 0, -1)]
    spans += [(start, len(run.groups)) for start in range(1, len(run.groups))]
    for first, last in spans:
        digits = "".join(run.groups[first:last])
        if len(run.digits) - len(digits) <= MAX_LEFT_OVER_DIGITS:
            number = _valid_phone(digits, run.plus and first == 0, region)
            if number is not None:
                return [number]
    return []


MAX_LEFT_OVER_DIGITS = 4
MIN_CORRECTION_DIGITS = 3  # "no, 0198": fewer digits after a "sorry" are more likely a house number
MIN_PHONE_DIGITS = 5
MAX_PHONE_DIGITS = 17  # E.164 allows 15, plus an international prefix such as 011


def _valid_phone(digits: str, plus: bool, region: str) -> str | None:
    if not MIN_PHONE_DIGITS <= len(digits) <= MAX_PHONE_DIGITS:
        return None
    try:
        number = phonenumbers.parse(("+" if plus else "") + digits, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number) or not (plus or _full_length_in(number, region)):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _full_length_in(number: phonenumbers.PhoneNumber, region: str) -> bool:
    """A national number has a length the region dials ("310 5551" is some other +1 region's short number)."""
    if number.country_code != phonenumbers.country_code_for_region(region):
        return True  # dialled with an international prefix ("011 44 ..."): its own country's rules apply
    metadata = phonenumbers.PhoneMetadata.metadata_for_region(region)
    lengths = metadata.general_desc.possible_length if metadata is not None else ()
    return len(phonenumbers.national_significant_number(number)) in lengths


def _national_digits(e164: str, region: str) -> tuple[str, bool] | None:
    """The digits of a captured number as a caller of `region` says them, and whether "plus" leads them."""
    try:
        number = phonenumbers.parse(e164, region)
    except phonenumbers.NumberParseException:
        return None
    national = phonenumbers.national_significant_number(number)
    if phonenumbers.region_code_for_number(number) == region:
        return national, False
    return f"{number.country_code}{national}", True


# --- Email addresses -----------------------------------------------------------------------------

SPOKEN_AT = re.compile(r"\s*\bat\s+sign\b\s*|\s+at\s+|\s*@\s*")
SPOKEN_DOT = re.compile(r"\s*\bdot\b\s*")
SPOKEN_UNDERSCORE = re.compile(r"\s*\bunderscore\b\s*")
SPOKEN_DASH = re.compile(r"\s*\b(?:dash|hyphen)\b\s*")
SPELLED_LETTERS = re.compile(r"\b[a-z0-9](?: [a-z0-9]\b)+")  # "j o h n" → "john"
# Not part of a longer run of address characters ("a@b.c@d.e" is no address).
EMAIL_CANDIDATE = re.compile(r"(?<![\w.%+'@-])[a-z0-9._%+'-]+@[a-z0-9-]+(?:\.[a-z0-9-]+)+(?![\w@-])")


def _email_in(utterance: str, *, whole_answer: bool) -> str | None:
    text = SPELLED_LETTERS.sub(lambda m: m.group().replace(" ", ""), utterance.lower())
    spoken_forms = [(SPOKEN_DOT, "."), (SPOKEN_UNDERSCORE, "_"), (SPOKEN_DASH, "-")]
    if "@" not in text:  # a written address is there: "reach me at mary@…" has no spoken "at"
        spoken_forms.append((SPOKEN_AT, "@"))
    for spoken, written in spoken_forms:
        text = spoken.sub(written, text)
    if whole_answer:
        # "mary smith at example dot com", said as the answer, is one address: spaces dropped.
        answer = EMAIL_CUE_PREFIX.sub("", LEADING_FILLERS.sub("", text))
        answer = TRAILING_COURTESY.sub("", answer).strip(EDGE_PUNCTUATION).replace(" ", "")
        if EMAIL_CANDIDATE.fullmatch(answer):
            address = _valid_email(answer)
            if address is not None:
                return address
    addresses = [_valid_email(match.group()) for match in EMAIL_CANDIDATE.finditer(text)]
    return _the_only(address for address in addresses if address is not None)


def _valid_email(candidate: str) -> str | None:
    local, _, domain = candidate.partition("@")
    try:
        address = validate_email(f"{local.strip('.')}@{domain}", check_deliverability=False).normalized
    except EmailNotValidError:
        return None
    return address if len(address) <= MAX_VALUE_LENGTH else None


# --- Dates ---------------------------------------------------------------------------------------

_MONTH = "(?P<month>" + "|".join(sorted(MONTHS, key=len, reverse=True)) + r")\.?"
_WEEKDAY = "(?P<weekday>" + "|".join(WEEKDAYS) + ")"
_DAY = r"(?P<day>[0-9]{1,2})(?:st|nd|rd|th)?"
_YEAR = r"(?:,?\s+(?:of\s+)?(?P<year>[0-9]{4}|20 [0-9]{2})(?![0-9]))?"
_WEEKDAY_PREFIX = rf"(?:{_WEEKDAY.replace('?P<weekday>', '?:')},?\s+)?"


@dataclass(frozen=True, slots=True)
class _DateForm:
    pattern: re.Pattern[str]
    kind: str  # how the match becomes a date; see _date_from


# Most specific first: a span claimed by one form is not read again by a later one.
DATE_FORMS = [
    _DateForm(re.compile(r"\b(?P<year>[0-9]{4})-(?P<month>[0-9]{1,2})-(?P<day>[0-9]{1,2})\b"), "iso"),
    _DateForm(
        re.compile(rf"\b{_WEEKDAY_PREFIX}(?:the\s+)?{_DAY}\s+(?:of\s+)?{_MONTH}(?![a-z]){_YEAR}"), "calendar"
    ),
    _DateForm(re.compile(rf"\b{_WEEKDAY_PREFIX}{_MONTH}\s+(?:the\s+)?{_DAY}(?![0-9a-z]){_YEAR}"), "calendar"),
    _DateForm(
        re.compile(
            r"(?<![0-9/.-])(?P<first>[0-9]{1,2})(?P<sep>[/.-])(?P<second>[0-9]{1,2})"
            r"(?:(?P=sep)(?P<year>[0-9]{4}|[0-9]{2}))?(?![0-9/.-])"
        ),
        "numeric",
    ),
    _DateForm(re.compile(rf"\bnext\s+week\s+(?:on\s+)?{_WEEKDAY}\b"), "next_week"),
    _DateForm(re.compile(rf"\b{_WEEKDAY}\s+(?:of\s+)?next\s+week\b"), "next_week"),
    _DateForm(re.compile(rf"\b(?:(?P<this>this)\s+|(?:next|coming|on)\s+)?{_WEEKDAY}\b"), "weekday"),
    _DateForm(re.compile(r"\b(?:the\s+)?day\s+after\s+tomorrow\b"), "day_after_tomorrow"),
    _DateForm(re.compile(r"\btomorrow\b"), "tomorrow"),
    _DateForm(re.compile(r"\b(?:today|tonight|this\s+(?:morning|afternoon|evening))\b"), "today"),
]
ROUND_THE_CLOCK = re.compile(r"(?<![0-9/])24\s*/\s*7(?![0-9/])")
# A bare "the 15th" is only a date when the caller was asked for one.
BARE_DAY = re.compile(r"^(?:(?:on|for)\s+)?(?:the\s+)?(?P<day>[0-9]{1,2})(?:st|nd|rd|th)?$")


def _date_in(utterance: str, today: datetime.date, region: str, *, whole_answer: bool) -> str | None:
    # "24/7" is round-the-clock service, not the 24th of July.
    text = ROUND_THE_CLOCK.sub(" ", _spoken_numbers(utterance.lower()))
    claimed: list[tuple[int, int]] = []
    dates = []
    for form in DATE_FORMS:
        for match in form.pattern.finditer(text):
            if any(match.start() < end and start < match.end() for start, end in claimed):
                continue
            claimed.append(match.span())
            date = _date_from(form.kind, match, today, region)
            if date is not None:
                dates.append(date.isoformat())
    if not dates and whole_answer:
        answer = TRAILING_COURTESY.sub("", LEADING_FILLERS.sub("", text)).strip(EDGE_PUNCTUATION)
        bare = BARE_DAY.match(answer)
        if bare is not None:
            date = _next_day_of_month(int(bare["day"]), today)
            return date.isoformat() if date is not None else None
    return _the_only(dates)


def _date_from(kind: str, match: re.Match[str], today: datetime.date, region: str) -> datetime.date | None:
    if kind == "today":
        return today
    if kind == "tomorrow":
        return _days_later(today, 1)
    if kind == "day_after_tomorrow":
        return _days_later(today, 2)
    if kind == "weekday":
        ahead = (WEEKDAYS[match["weekday"]] - today.weekday()) % 7
        if ahead == 0 and not match["this"]:
            ahead = 7  # "tuesday" said on a Tuesday means next week's; "today" would have been said
        return _days_later(today, ahead)
    if kind == "next_week":
        return _days_later(today, 7 - today.weekday() + WEEKDAYS[match["weekday"]])
    if kind == "iso":
        return _calendar_date(int(match["year"]), int(match["month"]), int(match["day"]))
    if kind == "calendar":
        month, day = MONTHS[match["month"]], int(match["day"])
    else:  # numeric
        first, second = int(match["first"]), int(match["second"])
        if match["sep"] != "/" and match["year"] is None:
            return None  # "5-10" or "3.5" without a year is a range or a number, not a date
        month, day = (first, second) if region in MONTH_FIRST_REGIONS else (second, first)
    year = match["year"]
    if year is None:
        return _next_calendar_date(month, day, today)
    digits = year.replace(" ", "")
    return _calendar_date(int(digits) + (2000 if len(digits) == 2 else 0), month, day)


def _days_later(today: datetime.date, days: int) -> datetime.date | None:
    try:
        return today + datetime.timedelta(days=days)
    except OverflowError:  # past 9999-12-31
        return None


def _calendar_date(year: int, month: int, day: int) -> datetime.date | None:
    try:
        return datetime.date(year, month, day)
    except ValueError:
        return None


def _next_calendar_date(month: int, day: int, today: datetime.date) -> datetime.date | None:
    """The first such date from today on (a missing year means the future; 29 February may be years off)."""
    for year in range(today.year, today.year + 9):
        date = _calendar_date(year, month, day)
        if date is not None and date >= today:
            return date
    return None


def _next_day_of_month(day: int, today: datetime.date) -> datetime.date | None:
    year, month = today.year, today.month
    for _ in range(13):
        date = _calendar_date(year, month, day)
        if date is not None and date >= today:
            return date
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return None


# --- Choices -------------------------------------------------------------------------------------

WORD = re.compile(r"\w+")


def _choice_in(utterance: str, choices: Sequence[str]) -> str | None:
    """The one choice named as whole words (plural or singular), or None when none or several are."""
    words = WORD.findall(utterance.casefold())
    spans: list[tuple[int, int, str]] = []
    for choice in choices:
        wanted = [_word_forms(word) for word in WORD.findall(choice.casefold())]
        if not wanted:
            continue
        for start in range(len(words) - len(wanted) + 1):
            if all(words[start + offset] in forms for offset, forms in enumerate(wanted)):
                spans.append((start, start + len(wanted), choice))
    # "south bank" also names "bank": a match inside a longer one's words does not count.
    kept = [
        choice
        for start, end, choice in spans
        if not any(s <= start and end <= e and (e - s) > (end - start) for s, e, _ in spans)
    ]
    return _the_only(kept)


def _word_forms(word: str) -> frozenset[str]:
    forms = {word, word + "s", word + "es"}
    if word.endswith("y"):
        forms.add(word[:-1] + "ies")
    if word.endswith("ies"):
        forms.add(word[:-3] + "y")
    if word.endswith("es"):
        forms.add(word[:-2])
    if word.endswith("s") and len(word) > 1:
        forms.add(word[:-1])
    return frozenset(forms)


# --- Questions -----------------------------------------------------------------------------------

# "The caller's full name." → "full name": a description of that shape names the detail asked for.
DESCRIBED_SUBJECT = re.compile(
    r"(?:the\s+)?(?:caller's|customer's|your)\s+([a-z]+(?:\s+[a-z]+){0,3})\.?", re.IGNORECASE
)
SUBJECT_PREFIXES = frozenset({"caller", "customer", "your"})


def _field_subject(field: CapturedField) -> str:
    described = DESCRIBED_SUBJECT.fullmatch(field.description or "")
    if described is not None:
        return described[1].lower()
    words = field.name.split("_")
    while words and words[0] in SUBJECT_PREFIXES:
        words = words[1:]
    return " ".join(words) or "details"


def _spoken_alternatives(choices: Sequence[str]) -> str:
    if len(choices) <= 1:
        return "".join(choices)
    return f"{', '.join(choices[:-1])} or {choices[-1]}"
