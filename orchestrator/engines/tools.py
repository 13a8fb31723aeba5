"""What the voice model is told and offered, and how its tool calls are checked before the machine sees them.

The model proposes; the machine decides. Two function tools are offered: `record_details` (the
configured captured fields) and `propose_route` (an intent with a confidence). A call whose
arguments are invalid never reaches the machine: `interpret_tool_call` turns it into a
`ToolRejected`, whose `output` goes back to the model as the `function_call_output` so it asks the
caller again. Valid calls become `DetailsCaptured` / `IntentProposed` with normalised values, and
`tool_output` words the machine's `AnswerTool` for the model.

Everything here is deterministic text and data built from the routing config; no I/O.
"""
from __future__ import annotations

import datetime
import json
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import phonenumbers
from email_validator import EmailNotValidError, validate_email

from machines import (
    LANGUAGE_FIELD,
    AnswerTool,
    DetailsCaptured,
    IntentProposed,
    Line,
    Speak,
)
from orchestrator.config import CONFIRMED_ARGUMENT as CONFIRMED
from orchestrator.config import CapturedField, RoutingConfig, canonical_language_code
from orchestrator.engines.field_capture import CALLER_ID_QUESTION, KEYPAD_OFFER, keypad_offered
from orchestrator.engines.interface import SpokenLine

log = logging.getLogger(__name__)

RECORD_DETAILS = "record_details"
PROPOSE_ROUTE = "propose_route"

UNKNOWN_INTENT = "unknown"
MAX_VALUE_LENGTH = 200  # per captured value, after whitespace is collapsed
MAX_SUMMARY_LENGTH = 300
MAX_ARGUMENTS_LENGTH = 20_000  # far above any honest call; bounds the work spent on junk
MAX_EXAMPLES_PER_INTENT = 3
QUOTED_VALUE_LIMIT = 40  # how much of a bad value a problem repeats back

FORMAT_HINTS = {
    "phone": "In international format, e.g. +14155552671.",
    "email": "An email address, e.g. name@example.com.",
    "date": "As YYYY-MM-DD.",
}
TYPE_LABELS = {"text": "text", "phone": "phone number", "email": "email address", "date": "date", "choice": "choice"}


# --- Tool definitions ----------------------------------------------------------------------------


def records_details(config: RoutingConfig) -> bool:
    """`record_details` is offered when there are fields to capture, or languages to tell apart."""
    return bool(config.fields) or config.multilingual


def _details_properties(config: RoutingConfig) -> dict[str, Any]:
    properties = {field.name: _field_schema(field) for field in config.fields}
    if config.multilingual:
        supported = ", ".join(config.languages.supported)
        properties[LANGUAGE_FIELD] = {
            "type": "string",
            "description": (
                "The language the caller speaks, as a BCP-47 code (e.g. en-US, es-US). Record it once you are"
                f" sure, whichever it is, even when it is not one of those served here ({supported})."
            ),
        }
    confirmable = _confirmable_fields(config)
    if confirmable:
        properties[CONFIRMED] = {
            "type": "array",
            "items": {"type": "string", "enum": confirmable},
            "description": (
                "Fields the caller confirmed: they said yes when you read the value back, or yes to whether the"
                " number they are calling from is the best one. With or without the value itself."
            ),
        }
    return properties


def _confirmable_fields(config: RoutingConfig) -> list[str]:
    return [field.name for field in config.fields if field.read_back or field.caller_id]


def realtime_tools(config: RoutingConfig) -> list[dict[str, Any]]:
    """The function tools offered to the model (GA shape); no `record_details` without fields or languages."""
    tools = []
    if records_details(config):
        tools.append(
            {
                "type": "function",
                "name": RECORD_DETAILS,
                "description": (
                    "Record details the caller has given. Call it as soon as the caller gives any of them,"
                    " with only the fields you actually heard (at least one). Never guess a value."
                ),
                "parameters": {
                    "type": "object",
                    "properties": _details_properties(config),
                    "additionalProperties": False,
                },
            }
        )
    tools.append(
        {
            "type": "function",
            "name": PROPOSE_ROUTE,
            "description": (
                "Propose what the caller needs as soon as it is clear. The system decides what happens next"
                " and tells you in the result."
            ),
            "parameters": {
                "type": "object",
                "properties": {
                    "intent": {
                        "type": "string",
                        "enum": _intent_choices(config),
                        "description": f"The caller's intent; {UNKNOWN_INTENT!r} when it matches none or is unclear.",
                    },
                    "confidence": {
                        "type": "number",
                        "minimum": 0,
                        "maximum": 1,
                        "description": "How sure you are of the intent, from 0 to 1.",
                    },
                    "summary": {
                        "type": "string",
                        "description": "One line: what the caller wants, for the person or system taking the call.",
                    },
                },
                "required": ["intent", "confidence", "summary"],
                "additionalProperties": False,
            },
        }
    )
    return tools


def _field_schema(field: CapturedField) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string", "description": _field_description(field)}
    if field.type == "choice":
        schema["enum"] = list(field.choices or ())
    return schema


def _field_description(field: CapturedField) -> str:
    description = field.description or field.name.replace("_", " ").capitalize() + "."
    if field.type == "choice":
        return f"{description} One of: {', '.join(field.choices or ())}."
    hint = FORMAT_HINTS.get(field.type)
    return f"{description} {hint}" if hint else description


def _intent_choices(config: RoutingConfig) -> list[str]:
    names = [intent.name for intent in config.intents]
    return names if UNKNOWN_INTENT in names else [*names, UNKNOWN_INTENT]


# --- Instructions --------------------------------------------------------------------------------


def agent_instructions(config: RoutingConfig) -> str:
    """The session instructions. Same config, same text; nothing secret (no SIDs, no route targets)."""
    company = config.company.name
    who = f"You answer the phone for {company}." if company else "You answer the phone for a company."
    parts = [
        f"{who} You are speaking with a caller on a phone line. The greeting has already been said: do not"
        " greet the caller again.",
        "Your job is to find out what the caller needs, in natural conversation. Keep every turn short, one or"
        " two sentences, and ask one question at a time.",
        "What callers may need (intent: description):\n" + "\n".join(_intent_lines(config)),
    ]
    if config.fields:
        parts.append("Details to capture:\n" + "\n".join(_field_lines(config)))
    rules = []
    if config.multilingual:
        served = ", ".join(config.languages.supported)
        rules += [
            f"Callers may speak any language. This front desk serves {served}; the greeting is in"
            f" {config.languages.default}. Answer in the caller's language.",
            f"Call {RECORD_DETAILS} with {LANGUAGE_FIELD!r} as soon as you are sure which language the caller"
            " speaks, whichever it is.",
        ]
    if config.fields:
        rules += [
            f"Call {RECORD_DETAILS} as soon as the caller gives any of these details, with only what you heard."
            " If the result says a value is invalid, ask the caller for it again.",
            "Ask for a detail at most twice. If the caller cannot give it, do not press: say that is fine and"
            f" call {PROPOSE_ROUTE} again; the system decides where the call goes without it.",
        ]
    keyable = [field.name for field in config.fields if keypad_offered(field)]
    if keyable:
        rules.append(
            f"When you ask for {', '.join(keyable)}, end the question with «{KEYPAD_OFFER}» The system takes"
            " what the caller types, confirmed, and tells you what to say next: never read a typed value back."
        )
    read_back = [field.name for field in config.fields if field.read_back]
    if read_back:
        rules.append(
            f"Read back {', '.join(read_back)} once the caller has said it, a number digit by digit in its groups"
            " (e.g. «I have 4 1 5, 5 5 5, 0 1 9 9. Is that right?»). Call record_details with the value as soon as"
            f" you hear it, and again with {CONFIRMED} naming the field when the caller says yes. If they say no,"
            " take the corrected value, or ask again."
        )
    caller_id = config.caller_id_field
    if caller_id:
        rules.append(
            f"{caller_id} is already known from the caller's own number. When the system asks you to confirm it,"
            f" ask «{CALLER_ID_QUESTION}» Yes: call record_details with {CONFIRMED} [{caller_id!r}]. No: ask for"
            " the best number."
        )
    if any(field.type == "date" for field in config.fields):
        rules.append("Dates are YYYY-MM-DD. If the caller names a day and you are not sure of its exact date, ask.")
    urgent = [intent.name for intent in config.intents if intent.urgent]
    if urgent:
        rules.append(
            f"Urgent needs ({', '.join(urgent)}) are put through to a person even without details: propose one"
            " as soon as you hear it, and keep any question short."
        )
    rules += [
        f"Call {PROPOSE_ROUTE} as soon as the caller's need is clear. When it is not clear, use"
        f" {UNKNOWN_INTENT!r} with a low confidence.",
        "Follow the instruction in each tool result. When it says the system will speak, say nothing more.",
        "When you are asked to go on and the caller has said nothing since you spoke, they have been silent:"
        " check in a few words that they can hear you and ask your last question again. A silence is not an"
        " answer: record nothing and propose nothing for it.",
        "Never promise an outcome: no times, prices, refunds, visits or callbacks.",
        "Do not answer the caller's questions yourself, not even ones you think you know: find out what they"
        " need and propose it; the right team or the system answers.",
        "Do not announce transfers or say goodbye: the system tells the caller when they are put through.",
    ]
    parts.append("Rules:\n" + "\n".join(f"- {rule}" for rule in rules))
    return "\n\n".join(parts) + "\n"


def _intent_lines(config: RoutingConfig) -> list[str]:
    lines = []
    for intent in config.intents:
        line = f"- {intent.name}: {intent.description}"
        examples = intent.examples[:MAX_EXAMPLES_PER_INTENT]
        if examples:
            line += " Examples: " + "; ".join(f'"{example}"' for example in examples) + "."
        lines.append(line)
    if UNKNOWN_INTENT not in {intent.name for intent in config.intents}:
        lines.append(f"- {UNKNOWN_INTENT}: anything else, or you cannot tell yet.")
    return lines


def _field_lines(config: RoutingConfig) -> list[str]:
    lines = []
    for field in config.fields:
        # The machine checks fields per route; the model thinks in intents.
        required = [intent.name for intent in config.intents if intent.route in field.required_for]
        wanted = [intent.name for intent in config.intents if intent.route in field.wanted_for]
        needs = []
        if required:
            needs.append(f"Required for: {', '.join(required)}.")
        if wanted:
            needs.append(f"Wanted for: {', '.join(wanted)} (ask, but the call goes on without it).")
        needed = " ".join(needs) or "Optional."
        lines.append(f"- {field.name} ({TYPE_LABELS[field.type]}): {_field_description(field)} {needed}")
    return lines


def line_text(config: RoutingConfig, line: Line, language: str | None = None) -> str:
    lines = config.lines_for(language)
    return getattr(lines, str(line), None) or lines.clarify


def _worded_in(config: RoutingConfig, line: Line, language: str) -> bool:
    """Whether the config has this line in `language` (the default language's lines are the [lines])."""
    matched = config.match_language(language)
    if matched == config.languages.default:
        return True
    own = config.languages.lines.get(matched) if matched else None
    return own is not None and getattr(own, str(line), None) is not None


def spoken_line(config: RoutingConfig, speak: Speak, language: str | None = None) -> SpokenLine:
    """The same request as `line_instructions`, as data, for engines that say lines themselves."""
    asks = speak.line in _ASKING_LINES
    return SpokenLine(
        line_text(config, speak.line, language),
        speak.missing_fields if asks else (),
        speak.confirm_fields if asks else (),
    )


# Lines after which the agent asks for the fields the machine names.
_ASKING_LINES = frozenset({Line.ASK_DETAILS, Line.KEYPAD_THANKS, Line.KEYPAD_INVALID})


def line_instructions(config: RoutingConfig, speak: Speak, language: str | None = None) -> str:
    """Per-response instructions that make the agent say one fixed line from the config (in the caller's
    language when the config words it in that language)."""
    line = line_text(config, speak.line, language)
    say = "Say exactly the following"
    if language is not None and not _worded_in(config, speak.line, language):
        say = f"Say the following in the caller's language ({language}), translated faithfully"
    if speak.line not in _ASKING_LINES or not speak.missing_fields:
        return f"{say}, then stop: «{line}»"
    by_name = {field.name: field for field in config.fields}
    wanted = []
    # A number known from caller ID is usable already: confirming it comes after what is missing.
    for name in sorted(speak.missing_fields, key=lambda name: name in speak.confirm_fields):
        field = by_name.get(name)
        described = _field_description(field) if field else name.replace("_", " ") + "."
        if name in speak.confirm_fields:
            described += (
                f" It is known from caller ID: ask «{CALLER_ID_QUESTION}» Yes: call {RECORD_DETAILS} with"
                f" {CONFIRMED} [{name!r}]. No: ask for the best number."
            )
        elif field is not None and keypad_offered(field):
            described += f" Offer the keypad: «{KEYPAD_OFFER}»"
        wanted.append(f"- {name}: {described}")
    typed = " (the caller typed a detail on the keypad: it is recorded; do not read it back)"
    return (
        f"{say}: «{line}»{typed if speak.line is Line.KEYPAD_THANKS else ''} Then ask the caller for these"
        f" details, one at a time, waiting for each answer, and call {RECORD_DETAILS} as soon as you have one:\n"
        + "\n".join(wanted)
    )


# --- Tool calls ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ToolRejected:
    """A tool call that does not reach the machine; `output` tells the model what to fix."""

    call_id: str
    output: str
    problems: tuple[str, ...]


class _Invalid(Exception):
    def __init__(self, *problems: str, instruction: str) -> None:
        super().__init__(*problems)
        self.problems = problems
        self.instruction = instruction


ASK_AGAIN = "Ask the caller again for the details named above, one at a time, then call record_details again."
RESEND_DETAILS = "Call record_details again with an object of the details the caller gave (field name to text)."
PROPOSE_AGAIN = "Call propose_route again with valid arguments; ask the caller first if their need is unclear."


def interpret_tool_call(
    config: RoutingConfig, name: str, arguments_json: str, call_id: str
) -> DetailsCaptured | IntentProposed | ToolRejected:
    """Validate one completed tool call. Never raises: bad input becomes a `ToolRejected`."""
    try:
        if name == RECORD_DETAILS and records_details(config):
            arguments = _arguments(arguments_json, RESEND_DETAILS)
            confirmed = _confirmed(config, arguments.pop(CONFIRMED, None))
            return DetailsCaptured(_recorded_details(config, arguments, bool(confirmed)), call_id, confirmed)
        if name == PROPOSE_ROUTE:
            return _proposal(_arguments(arguments_json, PROPOSE_AGAIN), call_id)
        offered = " and ".join(tool["name"] for tool in realtime_tools(config))
        raise _Invalid(f"unknown tool {_quoted(name)}", instruction=f"Use only the tools {offered}.")
    except _Invalid as invalid:
        return _rejected(call_id, invalid.problems, invalid.instruction)
    except Exception:  # a bug here must not reach the call; the model is asked to try again
        log.exception("tool call %s could not be checked", _quoted(name))
        return _rejected(call_id, ("the arguments could not be checked",), "Try the tool call again.")


def _rejected(call_id: str, problems: tuple[str, ...], instruction: str) -> ToolRejected:
    output = json.dumps({"status": "invalid", "problems": list(problems), "instruction": instruction})
    return ToolRejected(call_id, output, problems)


def _arguments(arguments_json: str, instruction: str) -> dict[str, Any]:
    if not isinstance(arguments_json, (str, bytes, bytearray)):
        raise _Invalid("the arguments are not JSON text", instruction=instruction)
    if len(arguments_json) > MAX_ARGUMENTS_LENGTH:
        raise _Invalid("the arguments are too long", instruction=instruction)
    try:
        arguments = json.loads(arguments_json)
    except (ValueError, RecursionError):  # RecursionError: absurdly nested arrays or objects
        raise _Invalid("the arguments are not valid JSON", instruction=instruction) from None
    if not isinstance(arguments, dict):
        raise _Invalid("the arguments must be a JSON object", instruction=instruction)
    return arguments


def _confirmed(config: RoutingConfig, names: Any) -> frozenset[str]:
    """The fields named as confirmed by the caller; [] or none at all is nothing confirmed."""
    if names is None:
        return frozenset()
    confirmable = _confirmable_fields(config)
    if not isinstance(names, list) or not all(isinstance(name, str) and name in confirmable for name in names):
        raise _Invalid(
            f"{CONFIRMED}: must be a list of field names among {', '.join(confirmable) or 'none'}",
            instruction=RESEND_DETAILS,
        )
    return frozenset(names)


def _recorded_details(config: RoutingConfig, arguments: dict[str, Any], confirming: bool = False) -> dict[str, str]:
    fields = {field.name: field for field in config.fields}
    problems = []
    values = {}
    for key, value in arguments.items():
        field = fields.get(key)
        if key == LANGUAGE_FIELD and config.multilingual and field is None:
            if value is not None:
                try:
                    values[key] = _language(value, config)
                except ValueError as problem:
                    problems.append(f"{key}: {problem}")
            continue
        if field is None:
            problems.append(f"unknown field {_quoted(key)} (fields: {', '.join(fields)})")
        elif value is None:
            continue  # the model's way of saying "not given"; nothing to record
        elif not isinstance(value, str):
            problems.append(f"{key}: must be a string (got {_json_kind(value)})")
        else:
            try:
                values[key] = _normalised_value(field, value, config.company.country)
            except ValueError as problem:
                problems.append(f"{key}: {problem}")
    if problems:
        raise _Invalid(*problems, instruction=ASK_AGAIN)
    if not values and not confirming:
        raise _Invalid("no details given (send at least one field)", instruction=RESEND_DETAILS)
    return {name: values[name] for name in (*fields, LANGUAGE_FIELD) if name in values}  # config order


def _normalised_value(field: CapturedField, value: str, country: str) -> str:
    """The canonical form of one captured value, or ValueError with a short reason (no field name)."""
    text = " ".join(value.split())
    if not text:
        raise ValueError("is empty")
    if len(text) > MAX_VALUE_LENGTH:
        raise ValueError(f"is too long (at most {MAX_VALUE_LENGTH} characters)")
    return _NORMALISERS[field.type](text, field, country)


def _language(value: Any, config: RoutingConfig) -> str:
    """A supported language as the config writes it, else the caller's language in canonical case
    (the machine then sends the call to a person, with the language recorded)."""
    code = canonical_language_code(value) if isinstance(value, str) else None
    if code is None:
        raise ValueError(f"{_quoted(str(value))} is not a language code such as en-US or es-US")
    return config.match_language(code) or code


def _text(text: str, _field: CapturedField, _country: str) -> str:
    return text


def _phone(text: str, _field: CapturedField, country: str) -> str:
    try:
        number = phonenumbers.parse(text, country)
    except phonenumbers.NumberParseException:
        raise ValueError(f"{_quoted(text)} is not a phone number") from None
    reason = phonenumbers.is_possible_number_with_reason(number)
    if reason == phonenumbers.ValidationResult.TOO_SHORT:
        raise ValueError(f"{_quoted(text)} is not a valid phone number (too few digits)")
    if reason == phonenumbers.ValidationResult.TOO_LONG:
        raise ValueError(f"{_quoted(text)} is not a valid phone number (too many digits)")
    if reason == phonenumbers.ValidationResult.INVALID_COUNTRY_CODE:
        raise ValueError(f"{_quoted(text)} is not a valid phone number (unknown country code)")
    if reason != phonenumbers.ValidationResult.IS_POSSIBLE or not phonenumbers.is_valid_number(number):
        raise ValueError(f"{_quoted(text)} is not a valid phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _email(text: str, _field: CapturedField, _country: str) -> str:
    try:
        return validate_email(text, check_deliverability=False).normalized
    except EmailNotValidError as error:
        raise ValueError(f"{_quoted(text)} is not a valid email address ({error})") from None


ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)


def _date(text: str, _field: CapturedField, _country: str) -> str:
    # fromisoformat alone also takes "20240105" and week dates; only YYYY-MM-DD is asked for.
    try:
        if ISO_DATE.fullmatch(text):
            return datetime.date.fromisoformat(text).isoformat()
    except ValueError:
        pass
    raise ValueError(f"{_quoted(text)} is not a date as YYYY-MM-DD (e.g. 2030-01-31)")


def _choice(text: str, field: CapturedField, _country: str) -> str:
    choices = field.choices or []
    for choice in choices:
        if " ".join(choice.split()).casefold() == text.casefold():
            return choice
    raise ValueError(f"{_quoted(text)} is not one of: {', '.join(choices)}")


_NORMALISERS: dict[str, Callable[[str, CapturedField, str], str]] = {
    "text": _text,
    "phone": _phone,
    "email": _email,
    "date": _date,
    "choice": _choice,
}


def _proposal(arguments: dict[str, Any], call_id: str) -> IntentProposed:
    known = ("intent", "confidence", "summary")
    problems = [f"unknown argument {_quoted(key)}" for key in arguments if key not in known]

    intent = arguments.get("intent")
    if intent is None:
        problems.append("intent: missing")
    elif not isinstance(intent, str):
        problems.append(f"intent: must be a string (got {_json_kind(intent)})")
    else:
        intent = intent.strip()
        if not intent:
            problems.append(f"intent: is empty (use {UNKNOWN_INTENT!r} when the need is unclear)")
        elif len(intent) > MAX_VALUE_LENGTH:
            problems.append(f"intent: is too long (at most {MAX_VALUE_LENGTH} characters)")

    confidence = arguments.get("confidence")
    if confidence is None:
        problems.append("confidence: missing")
    elif isinstance(confidence, bool) or not isinstance(confidence, (int, float)):
        problems.append(f"confidence: must be a number from 0 to 1 (got {_json_kind(confidence)})")
    elif not 0 <= confidence <= 1:  # also false for NaN
        problems.append(f"confidence: must be from 0 to 1 (got {_number_text(confidence)})")

    summary = arguments.get("summary")
    if summary is None:
        problems.append("summary: missing")
    elif not isinstance(summary, str):
        problems.append(f"summary: must be a string (got {_json_kind(summary)})")

    if problems:
        raise _Invalid(*problems, instruction=PROPOSE_AGAIN)
    summary_line = " ".join(summary.split())[:MAX_SUMMARY_LENGTH].rstrip()
    return IntentProposed(intent, float(confidence), summary_line, call_id)


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    if value is None:
        return "null"
    return "a string"


def _number_text(value: int | float) -> str:
    # str() of a huge int raises (Python's digit limit) and would be noise anyway.
    if isinstance(value, int) and value.bit_length() > 64:
        return "a very large number"
    return repr(value)


def _quoted(value: Any) -> str:
    text = str(value)
    if len(text) > QUOTED_VALUE_LIMIT:
        text = text[: QUOTED_VALUE_LIMIT - 1] + "…"
    return repr(text)


# --- Answers to the model ------------------------------------------------------------------------

_SPEAKS_NEXT = "Say nothing more; the system will speak to the caller."
_OUTCOME_INSTRUCTIONS: Mapping[str, str] = {
    "recorded": "Carry on the conversation; ask for anything still needed, one question at a time.",
    "accepted": _SPEAKS_NEXT,
    "handed_to_fallback": _SPEAKS_NEXT,
    "ignored": "Say nothing more; the call has already been handed on.",
}


def tool_output(answer: AnswerTool) -> str:
    """The `function_call_output` text for the machine's answer to a tool call."""
    output = {"status": answer.outcome, "detail": answer.detail}
    instruction = _OUTCOME_INSTRUCTIONS.get(answer.outcome)
    if answer.outcome == "clarify":
        instruction = (
            f"Ask the caller for the missing details, one at a time, and call {RECORD_DETAILS} with them;"
            f" if the caller cannot give one, do not press: call {PROPOSE_ROUTE} again."
            if answer.detail.startswith("missing_fields")
            else f"Ask the caller a short clarifying question, then call {PROPOSE_ROUTE} again."
        )
    if instruction:
        output["instruction"] = instruction
    return json.dumps(output)
