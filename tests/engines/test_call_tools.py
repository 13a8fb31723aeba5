"""Tools offered to the voice model, validation of its tool calls, and the instructions it is given."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai.types.realtime.realtime_function_tool import RealtimeFunctionTool

from machines import events as ev
from machines.call_machine import CallFlow
from machines.effects import AnswerTool, Line, Speak
from machines.events import DetailsCaptured, IntentProposed
from orchestrator.config.routing import RoutingConfig, load_routing_config
from orchestrator.engines.tools import (
    PROPOSE_ROUTE,
    RECORD_DETAILS,
    ToolRejected,
    agent_instructions,
    interpret_tool_call,
    line_instructions,
    realtime_tools,
    tool_output,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "acme_plumbing.toml"
WORKFLOW_SID = "WW0123456789abcdef0123456789abcdef"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Overrides set in the developer's shell must not change the configs built here."""
    for name in list(os.environ):
        if name.upper().startswith("ORCHESTRATOR_"):
            monkeypatch.delenv(name)


BILLING = {"name": "billing", "description": "Questions about a bill.", "route": "desk"}


def small_config(
    fields: list[dict[str, Any]] | None = None,
    country: str = "US",
    intents: list[dict[str, Any]] | None = None,
    company_name: str | None = None,
) -> RoutingConfig:
    return RoutingConfig(
        triage={"fallback_route": "voicemail", "human_route": "desk"},
        routes={"voicemail": {"kind": "voicemail"}, "desk": {"kind": "flex", "workflow_sid": WORKFLOW_SID}},
        intents=[BILLING] if intents is None else intents,
        fields=fields or [],
        company={"country": country, "name": company_name},
    )


ALL_TYPES = [
    {"name": "full_name", "type": "text", "description": "The caller's name.", "required_for": ["desk"]},
    {"name": "phone", "type": "phone"},
    {"name": "email", "type": "email", "description": "Where to send the invoice."},
    {"name": "visit_date", "type": "date"},
    {"name": "area", "type": "choice", "choices": ["North", "South Bank", "East"]},
]


@pytest.fixture(scope="module")
def example() -> RoutingConfig:
    return load_routing_config(EXAMPLE)


@pytest.fixture(scope="module")
def typed() -> RoutingConfig:
    return small_config(ALL_TYPES)


def record(config: RoutingConfig, arguments: Any, call_id: str = "call_1"):
    text = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return interpret_tool_call(config, RECORD_DETAILS, text, call_id)


def propose(config: RoutingConfig, arguments: Any, call_id: str = "call_2"):
    text = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return interpret_tool_call(config, PROPOSE_ROUTE, text, call_id)


def rejected(result: object) -> ToolRejected:
    assert isinstance(result, ToolRejected), result
    output = json.loads(result.output)
    assert output["status"] == "invalid"
    assert output["problems"] == list(result.problems) and result.problems
    assert output["instruction"]
    return result


def recorded_value(config: RoutingConfig, field: str, value: str) -> str:
    result = record(config, {field: value})
    assert isinstance(result, DetailsCaptured), result
    return result.fields[field]


def problem_for(config: RoutingConfig, field: str, value: Any) -> str:
    (problem,) = rejected(record(config, {field: value})).problems
    assert problem.startswith(f"{field}: ")
    return problem


# --- Tool definitions ------------------------------------------------------------------------------


def tools_by_name(config: RoutingConfig) -> dict[str, dict[str, Any]]:
    return {tool["name"]: tool for tool in realtime_tools(config)}


def test_example_tools_validate_as_ga_function_tools(example: RoutingConfig) -> None:
    tools = realtime_tools(example)

    assert [tool["name"] for tool in tools] == [RECORD_DETAILS, PROPOSE_ROUTE]
    for tool in tools:
        parsed = RealtimeFunctionTool.model_validate(tool)
        assert parsed.type == "function" and parsed.name == tool["name"] and parsed.description
        assert parsed.parameters == tool["parameters"]
        json.dumps(tool)  # sent on the wire as is


def properties_description(parameters: dict) -> str:
    description = parameters["properties"]["confirmed"]["description"]
    assert "read the value back" in description and "calling from" in description
    return description


def test_record_details_offers_one_optional_string_per_field(example: RoutingConfig) -> None:
    parameters = tools_by_name(example)[RECORD_DETAILS]["parameters"]

    assert parameters["type"] == "object" and parameters["additionalProperties"] is False
    assert list(parameters["properties"]) == ["caller_name", "callback_number", "address", "preferred_date", "confirmed"]
    assert "required" not in parameters
    properties = dict(parameters["properties"])
    # The caller-ID number may be confirmed (caller_id = true), and the read-back one (read_back = true).
    assert properties.pop("confirmed") == {
        "type": "array", "items": {"type": "string", "enum": ["callback_number"]},
        "description": properties_description(parameters),
    }
    assert all(schema["type"] == "string" for schema in properties.values())
    assert properties["caller_name"]["description"] == "The caller's full name."
    assert properties["callback_number"]["description"].startswith("A number to call back on")
    assert "in international format, e.g. +14155552671" in properties["callback_number"]["description"].lower()
    assert "YYYY-MM-DD" in properties["preferred_date"]["description"]


def test_field_schemas_carry_format_and_choices(typed: RoutingConfig) -> None:
    properties = tools_by_name(typed)[RECORD_DETAILS]["parameters"]["properties"]

    assert properties["area"]["enum"] == ["North", "South Bank", "East"]
    assert all("enum" not in properties[name] for name in ("full_name", "phone", "email", "visit_date"))
    assert properties["email"]["description"].startswith("Where to send the invoice.")
    assert "email address" in properties["email"]["description"]
    assert properties["phone"]["description"]  # a field without a description still gets one
    assert properties["full_name"]["description"] == "The caller's name."


def test_propose_route_lists_the_intents_and_unknown(example: RoutingConfig) -> None:
    parameters = tools_by_name(example)[PROPOSE_ROUTE]["parameters"]

    assert parameters["required"] == ["intent", "confidence", "summary"]
    assert parameters["additionalProperties"] is False
    properties = parameters["properties"]
    assert properties["intent"] == {
        "type": "string",
        "enum": ["emergency", "schedule", "billing", "opening_hours", "unknown"],
        "description": properties["intent"]["description"],
    }
    assert properties["confidence"]["type"] == "number"
    assert (properties["confidence"]["minimum"], properties["confidence"]["maximum"]) == (0, 1)
    assert properties["summary"]["type"] == "string"


def test_an_intent_named_unknown_is_listed_once() -> None:
    config = small_config(intents=[{"name": "unknown", "description": "Not sure.", "route": "voicemail"}])
    assert tools_by_name(config)[PROPOSE_ROUTE]["parameters"]["properties"]["intent"]["enum"] == ["unknown"]


def test_no_record_details_without_fields() -> None:
    config = small_config()

    assert [tool["name"] for tool in realtime_tools(config)] == [PROPOSE_ROUTE]
    result = rejected(record(config, {"caller_name": "Ada"}))
    assert result.problems == ("unknown tool 'record_details'",)
    assert "propose_route" in json.loads(result.output)["instruction"]


# --- record_details: each field type -----------------------------------------------------------------


def test_valid_details_are_recorded_normalised_in_config_order(typed: RoutingConfig) -> None:
    result = record(
        typed,
        {"area": "south bank", "visit_date": "2030-02-01", "full_name": "  Ada \n  Lovelace ",
         "phone": "(415) 555-2671", "email": "Ada@Example.COM"},
        call_id="call_42",
    )

    assert result == DetailsCaptured(
        {"full_name": "Ada Lovelace", "phone": "+14155552671", "email": "Ada@example.com",
         "visit_date": "2030-02-01", "area": "South Bank"},
        "call_42",
    )
    assert list(result.fields) == ["full_name", "phone", "email", "visit_date", "area"]


def test_text_is_whitespace_collapsed_and_limited(typed: RoutingConfig) -> None:
    assert recorded_value(typed, "full_name", "\tAda\u00a0  Byron ") == "Ada Byron"
    assert recorded_value(typed, "full_name", "x" * 200) == "x" * 200
    assert problem_for(typed, "full_name", "x" * 201) == "full_name: is too long (at most 200 characters)"
    assert problem_for(typed, "full_name", "") == "full_name: is empty"
    assert problem_for(typed, "full_name", " \n\t ") == "full_name: is empty"


@pytest.mark.parametrize(
    ("spoken", "e164"),
    [
        ("(415) 555-2671", "+14155552671"),
        ("415.555.2671", "+14155552671"),
        ("+1 415 555 2671", "+14155552671"),
        ("+44 20 7946 0018", "+442079460018"),  # international format works from any default region
        ("  +33 1 42 68 53 00 ", "+33142685300"),
    ],
)
def test_phone_is_normalised_to_e164(typed: RoutingConfig, spoken: str, e164: str) -> None:
    assert recorded_value(typed, "phone", spoken) == e164


def test_phone_uses_the_configured_country_as_default_region() -> None:
    british = small_config([{"name": "phone", "type": "phone"}], country="GB")
    american = small_config([{"name": "phone", "type": "phone"}], country="US")

    assert recorded_value(british, "phone", "020 7946 0018") == "+442079460018"
    assert "not a valid phone number" in problem_for(american, "phone", "020 7946 0018")


@pytest.mark.parametrize(
    ("spoken", "problem"),
    [
        ("+1 555", "'+1 555' is not a valid phone number (too few digits)"),
        ("12", "'12' is not a valid phone number (too few digits)"),
        ("4155552671999999", "is not a valid phone number (too many digits)"),
        ("+999 123 4567", "'+999 123 4567' is not a"),
        ("+15551234567", "'+15551234567' is not a valid phone number"),  # possible, but no such number
        ("call me maybe", "'call me maybe' is not a phone number"),
    ],
)
def test_bad_phone_numbers_are_rejected(typed: RoutingConfig, spoken: str, problem: str) -> None:
    assert problem in problem_for(typed, "phone", spoken)


def test_email_is_normalised(typed: RoutingConfig) -> None:
    assert recorded_value(typed, "email", " Ada@Example.COM ") == "Ada@example.com"


@pytest.mark.parametrize("spoken", ["ada", "ada@example", "ada at example dot com", "ada@@example.com"])
def test_bad_emails_are_rejected(typed: RoutingConfig, spoken: str) -> None:
    assert problem_for(typed, "email", spoken).startswith(f"email: {spoken!r} is not a valid email address")


def test_date_must_be_iso(typed: RoutingConfig) -> None:
    assert recorded_value(typed, "visit_date", " 2030-02-01 ") == "2030-02-01"
    assert recorded_value(typed, "visit_date", "2028-02-29") == "2028-02-29"


@pytest.mark.parametrize(
    "spoken",
    ["tomorrow", "20300201", "2030-W05-1", "01/02/2030", "2030-02-30", "2030-2-1", "2030-02-01T10:00", "２０３０-０２-０１"],
)
def test_bad_dates_ask_for_yyyy_mm_dd(typed: RoutingConfig, spoken: str) -> None:
    problem = problem_for(typed, "visit_date", spoken)
    assert problem.startswith(f"visit_date: {spoken!r} is not a date")
    assert "YYYY-MM-DD" in problem


@pytest.mark.parametrize(
    ("spoken", "canonical"), [("north", "North"), ("  SOUTH   bank ", "South Bank"), ("East", "East")]
)
def test_choice_matches_case_insensitively(typed: RoutingConfig, spoken: str, canonical: str) -> None:
    assert recorded_value(typed, "area", spoken) == canonical


def test_unknown_choice_lists_the_choices(typed: RoutingConfig) -> None:
    assert problem_for(typed, "area", "West") == "area: 'West' is not one of: North, South Bank, East"


# --- record_details: rejected calls ------------------------------------------------------------------


def test_every_problem_is_listed_and_nothing_recorded(typed: RoutingConfig) -> None:
    result = rejected(
        record(typed, {"full_name": "Ada", "phone": "+1 555", "email": "nope", "visit_date": "soon", "area": "West"})
    )

    assert len(result.problems) == 4
    assert [problem.split(":")[0] for problem in result.problems] == ["phone", "email", "visit_date", "area"]
    assert result.call_id == "call_1"
    assert "ask the caller again" in json.loads(result.output)["instruction"].lower()


def test_unknown_field_is_rejected_and_named(typed: RoutingConfig) -> None:
    result = rejected(record(typed, {"full_name": "Ada", "shoe_size": "42"}))
    (problem,) = result.problems
    assert problem.startswith("unknown field 'shoe_size'")
    assert "full_name" in problem and "area" in problem  # says which fields exist


def test_null_means_not_given(typed: RoutingConfig) -> None:
    assert record(typed, {"full_name": "Ada", "phone": None}) == DetailsCaptured({"full_name": "Ada"}, "call_1")
    assert rejected(record(typed, {"phone": None})).problems == ("no details given (send at least one field)",)
    assert rejected(record(typed, {})).problems == ("no details given (send at least one field)",)


@pytest.mark.parametrize(
    ("value", "kind"), [(42, "a number"), (True, "a boolean"), (["Ada"], "an array"), ({"first": "Ada"}, "an object")]
)
def test_non_string_values_are_rejected(typed: RoutingConfig, value: Any, kind: str) -> None:
    assert problem_for(typed, "full_name", value) == f"full_name: must be a string (got {kind})"


JUNK_ARGUMENTS = {
    "empty": "",
    "not json": "caller_name=Ada",
    "truncated": '{"full_name": "Ada"',
    "array": '["full_name", "Ada"]',
    "null": "null",
    "string": '"Ada"',
    "number": "42",
    "deeply nested": "[" * 100_000 + "]" * 100_000,
    "nested object": '{"a": ' * 5000 + "1" + "}" * 5000,
    "huge": json.dumps({"full_name": "x" * 1_000_000}),
    "huge int": '{"full_name": ' + "9" * 4400 + "}",
}


@pytest.mark.parametrize("arguments", JUNK_ARGUMENTS.values(), ids=JUNK_ARGUMENTS.keys())
@pytest.mark.parametrize("tool", [RECORD_DETAILS, PROPOSE_ROUTE])
def test_junk_arguments_are_rejected_not_raised(typed: RoutingConfig, tool: str, arguments: str) -> None:
    result = rejected(interpret_tool_call(typed, tool, arguments, "call_9"))
    assert result.call_id == "call_9"
    assert len(result.output) < 2000  # nothing of the junk is echoed at length


def test_nested_junk_inside_an_object_is_rejected(typed: RoutingConfig) -> None:
    result = rejected(record(typed, {"full_name": [[{"a": None}]], "area": {"x": [1, 2]}, "": ""}))
    assert len(result.problems) == 3


def test_long_unknown_names_are_shortened_in_problems(typed: RoutingConfig) -> None:
    (problem,) = rejected(record(typed, {"k" * 5000: "v"})).problems
    assert len(problem) < 200


def test_unknown_tool_is_rejected(typed: RoutingConfig) -> None:
    result = rejected(interpret_tool_call(typed, "transfer_call", '{"to": "+15550100"}', "call_3"))
    assert result.problems == ("unknown tool 'transfer_call'",)
    assert json.loads(result.output)["instruction"] == "Use only the tools record_details and propose_route."


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)
FIELD_NAMES = st.sampled_from([field["name"] for field in ALL_TYPES] + ["intent", "confidence", "summary", "x"])
TOOL_NAMES = st.sampled_from([RECORD_DETAILS, PROPOSE_ROUTE, "other", ""])


@settings(max_examples=150, suppress_health_check=[*settings.default.suppress_health_check, HealthCheck.function_scoped_fixture])
@given(tool=TOOL_NAMES, arguments=st.text(max_size=200))
def test_arbitrary_text_never_raises(typed: RoutingConfig, tool: str, arguments: str) -> None:
    result = interpret_tool_call(typed, tool, arguments, "call_h")
    assert isinstance(result, (DetailsCaptured, IntentProposed, ToolRejected))
    if isinstance(result, ToolRejected):
        json.loads(result.output)


@settings(max_examples=300, suppress_health_check=[*settings.default.suppress_health_check, HealthCheck.function_scoped_fixture])
@given(
    tool=TOOL_NAMES,
    arguments=JSON_VALUES
    | st.dictionaries(FIELD_NAMES, JSON_VALUES | st.text(max_size=40) | st.floats(0, 1), max_size=6),
)
def test_arbitrary_json_never_raises(typed: RoutingConfig, tool: str, arguments: Any) -> None:
    result = interpret_tool_call(typed, tool, json.dumps(arguments), "call_h")

    assert result.tool_call_id == "call_h" if not isinstance(result, ToolRejected) else result.call_id == "call_h"
    if isinstance(result, DetailsCaptured):
        assert result.fields and all(isinstance(value, str) and value.strip() for value in result.fields.values())
        assert set(result.fields) <= {field["name"] for field in ALL_TYPES}
    elif isinstance(result, IntentProposed):
        assert isinstance(result.intent, str) and 0 <= result.confidence <= 1
        assert len(result.summary) <= 300
    else:
        json.loads(result.output)


# --- propose_route -------------------------------------------------------------------------------------


def test_proposal_happy_path(example: RoutingConfig) -> None:
    result = propose(example, {"intent": "emergency", "confidence": 0.92, "summary": " Burst pipe,\n  kitchen "})
    assert result == IntentProposed("emergency", 0.92, "Burst pipe, kitchen", "call_2")


def test_proposal_confidence_bounds_and_integers_are_accepted(example: RoutingConfig) -> None:
    for confidence in (0, 1, 0.0, 1.0):
        result = propose(example, {"intent": "billing", "confidence": confidence, "summary": "a bill"})
        assert isinstance(result, IntentProposed) and result.confidence == confidence
        assert isinstance(result.confidence, float)


def test_unknown_intents_are_passed_to_the_machine(example: RoutingConfig) -> None:
    assert propose(example, {"intent": "unknown", "confidence": 0.2, "summary": ""}) == IntentProposed(
        "unknown", 0.2, "", "call_2"
    )
    # Not in the config: the machine's own guard decides what happens to it.
    assert propose(example, {"intent": " pizza_order ", "confidence": 0.9, "summary": "pizza"}).intent == "pizza_order"


def test_summary_is_cut_to_300_characters(example: RoutingConfig) -> None:
    result = propose(example, {"intent": "billing", "confidence": 0.7, "summary": "word " * 500})
    assert isinstance(result, IntentProposed)
    assert len(result.summary) <= 300 and result.summary.startswith("word word")
    assert "  " not in result.summary and result.summary == result.summary.strip()


@pytest.mark.parametrize(
    ("confidence", "problem"),
    [
        ('"0.9"', "confidence: must be a number from 0 to 1 (got a string)"),
        ("true", "confidence: must be a number from 0 to 1 (got a boolean)"),
        ("null", "confidence: missing"),
        ("[0.9]", "confidence: must be a number from 0 to 1 (got an array)"),
        ("1.5", "confidence: must be from 0 to 1 (got 1.5)"),
        ("-0.1", "confidence: must be from 0 to 1 (got -0.1)"),
        ("NaN", "confidence: must be from 0 to 1 (got nan)"),
        ("Infinity", "confidence: must be from 0 to 1 (got inf)"),
        ("9" * 4000, "confidence: must be from 0 to 1 (got a very large number)"),
    ],
)
def test_bad_confidence_is_rejected(example: RoutingConfig, confidence: str, problem: str) -> None:
    arguments = '{"intent": "billing", "confidence": ' + confidence + ', "summary": "a bill"}'
    assert rejected(propose(example, arguments)).problems == (problem,)


def test_bad_proposal_lists_every_problem(example: RoutingConfig) -> None:
    result = rejected(propose(example, {"intent": 3, "summary": None, "route": "billing_desk"}))
    assert result.problems == (
        "unknown argument 'route'",
        "intent: must be a string (got a number)",
        "confidence: missing",
        "summary: missing",
    )
    assert "propose_route" in json.loads(result.output)["instruction"]


def test_empty_or_huge_intent_is_rejected(example: RoutingConfig) -> None:
    (empty,) = rejected(propose(example, {"intent": "  ", "confidence": 0.5, "summary": "s"})).problems
    assert empty.startswith("intent: is empty")
    (huge,) = rejected(propose(example, {"intent": "x" * 201, "confidence": 0.5, "summary": "s"})).problems
    assert huge.startswith("intent: is too long")


def test_valid_calls_drive_the_machine_and_its_answers_read_back(example: RoutingConfig) -> None:
    clock = iter(range(1000, 2000)).__next__
    call = CallFlow(example.triage_policy(), lambda: float(clock())).start_call("CA1")
    call.handle(ev.RealtimeOpened())
    call.handle(ev.GreetingPlayed())

    details = record(example, {"caller_name": "Ada", "callback_number": "(415) 555-2671", "address": "1 Main St"})
    (answer,) = call.handle(details)
    assert answer == AnswerTool("call_1", "recorded", "address, callback_number, caller_name")
    effects = call.handle(propose(example, {"intent": "emergency", "confidence": 0.9, "summary": "flood"}))

    assert effects[0] == AnswerTool("call_2", "accepted", "emergency_desk")
    assert call.decision is not None and call.decision.captured["callback_number"] == "+14155552671"
    assert "say nothing more" in json.loads(tool_output(effects[0]))["instruction"].lower()


# --- Instructions ---------------------------------------------------------------------------------------


SID = re.compile(r"\b(AC|WW|FW)[0-9a-fA-F]{32}\b")


def test_agent_instructions_cover_intents_fields_and_rules(example: RoutingConfig) -> None:
    text = agent_instructions(example)

    assert "Acme Plumbing" in text
    for intent in example.intents:
        assert f"- {intent.name}: {intent.description}" in text
        assert intent.examples[0] in text and intent.examples[2] in text
        assert intent.examples[3] not in text  # only a few examples each
    for field in example.fields:
        assert f"- {field.name} (" in text and (field.description or "") in text
    assert ("- caller_name (text): The caller's full name. Required for: schedule."
            " Wanted for: emergency (ask, but the call goes on without it).") in text
    assert "+14155552671. Wanted for: emergency (" in text  # callback_number, mapped from route emergency_desk
    assert "Urgent needs (emergency) are put through" in text and "at most twice" in text
    assert re.search(r"- preferred_date \(date\): .* Optional\.", text)
    for rule_word in (RECORD_DETAILS, PROPOSE_ROUTE, "'unknown'", "low confidence", "one question at a time",
                      "promise", "transfer"):
        assert rule_word in text
    assert "greet" in text  # the greeting is said separately


def test_agent_instructions_hold_nothing_secret(example: RoutingConfig) -> None:
    text = agent_instructions(example)
    assert not SID.search(text)
    assert example.twilio.account_sid not in text
    for route in example.routes.values():
        for secret in ("workflow_sid", "flow_sid"):
            if hasattr(route, secret):
                assert getattr(route, secret) not in text
    assert example.routes["opening_hours"].answer not in text  # the route answers, not the model


def test_agent_instructions_are_deterministic(example: RoutingConfig) -> None:
    assert agent_instructions(example) == agent_instructions(example)
    assert agent_instructions(example) == agent_instructions(load_routing_config(EXAMPLE))
    assert realtime_tools(example) == realtime_tools(load_routing_config(EXAMPLE))


def test_agent_instructions_without_company_or_fields() -> None:
    text = agent_instructions(small_config())

    assert "None" not in text and "company" in text
    assert "- billing: Questions about a bill." in text
    assert RECORD_DETAILS not in text and PROPOSE_ROUTE in text
    assert "YYYY-MM-DD" not in text


def test_agent_instructions_with_company_name() -> None:
    config = small_config(ALL_TYPES, company_name="Bright Sparks")
    text = agent_instructions(config)
    assert "Bright Sparks" in text
    assert "- full_name (text): The caller's name. Required for: billing." in text
    assert "North, South Bank, East" in text and "YYYY-MM-DD" in text


@pytest.mark.parametrize("line", [Line.GREETING, Line.HANDOFF, Line.CLARIFY, Line.ASK_DETAILS])
def test_fixed_lines_are_said_exactly(example: RoutingConfig, line: Line) -> None:
    configured = getattr(example.lines, line.value)
    assert line_instructions(example, Speak(line)) == f"Say exactly the following, then stop: «{configured}»"


def test_ask_details_asks_for_the_missing_fields_by_description(example: RoutingConfig) -> None:
    text = line_instructions(example, Speak(Line.ASK_DETAILS, ("callback_number", "address", "not_configured")))

    assert text.startswith(f"Say exactly the following: «{example.lines.ask_details}»")
    assert "one at a time" in text and RECORD_DETAILS in text
    lines = text.splitlines()[1:]
    assert lines[0].startswith("- callback_number: A number to call back on if the call drops")
    assert lines[1] == "- address: The address where the work is needed, including the postcode."
    assert lines[2] == "- not_configured: not configured."
    assert "caller_name" not in text


# --- Answers to the model ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "instruction"),
    [
        (AnswerTool("c", "accepted", "emergency_desk"), "say nothing more"),
        (AnswerTool("c", "handed_to_fallback", "low_confidence"), "say nothing more"),
        (AnswerTool("c", "clarify", "low_confidence"), "clarifying question"),
        (AnswerTool("c", "clarify", "unknown_intent"), "clarifying question"),
        (AnswerTool("c", "clarify", "missing_fields: address"), "record_details"),
        (AnswerTool("c", "recorded", "address"), "carry on"),
        (AnswerTool("c", "ignored", "the call has already been handed on"), "say nothing more"),
    ],
)
def test_tool_output_reports_the_outcome(answer: AnswerTool, instruction: str) -> None:
    output = json.loads(tool_output(answer))
    assert (output["status"], output["detail"]) == (answer.outcome, answer.detail)
    assert instruction in output["instruction"].lower()


def test_tool_output_for_an_unexpected_outcome_has_no_instruction() -> None:
    assert json.loads(tool_output(AnswerTool("c", "mystery", 'a "quoted" detail'))) == {
        "status": "mystery",
        "detail": 'a "quoted" detail',
    }


def test_an_internal_error_while_checking_becomes_a_rejection(
    typed: RoutingConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_parse(*_: Any) -> None:
        raise RuntimeError("library bug")

    monkeypatch.setattr("orchestrator.engines.tools.phonenumbers.parse", broken_parse)
    result = rejected(record(typed, {"phone": "(415) 555-2671"}))
    assert result.problems == ("the arguments could not be checked",)


# --- Keypad, read-back and caller ID --------------------------------------------------------------------


def test_instructions_offer_the_keypad_for_numbers_and_dates_and_ask_for_read_backs(example: RoutingConfig) -> None:
    text = agent_instructions(example)
    assert "When you ask for callback_number, preferred_date, end the question with «Or type it on your keypad" in text
    assert "Read back callback_number once the caller has said it" in text and "«I have 4 1 5, 5 5 5, 0 1 9 9." in text
    assert "callback_number is already known from the caller's own number" in text
    assert "«Is the number you're calling from the best one to reach you?»" in text


def test_asked_fields_say_how_to_offer_the_keypad_or_confirm_caller_id(example: RoutingConfig) -> None:
    asking = Speak(Line.ASK_DETAILS, ("callback_number", "preferred_date", "address"), ("callback_number",))
    lines = line_instructions(example, asking).splitlines()[1:]
    assert lines[0].endswith("Offer the keypad: «Or type it on your keypad and press pound.»")
    assert lines[1].startswith("- address: ") and "keypad" not in lines[1]
    # Known from caller ID, so usable already: confirmed after what is missing.
    assert lines[2].endswith(
        "It is known from caller ID: ask «Is the number you're calling from the best one to reach you?» Yes: call"
        " record_details with confirmed ['callback_number']. No: ask for the best number."
    )
    typed = line_instructions(example, Speak(Line.KEYPAD_THANKS, ("address",)))
    assert typed.startswith(f"Say exactly the following: «{example.lines.keypad_thanks}» (the caller typed a detail")
    assert line_instructions(example, Speak(Line.KEYPAD_THANKS)) == (
        f"Say exactly the following, then stop: «{example.lines.keypad_thanks}»"
    )


def test_confirmed_fields_reach_the_machine_with_or_without_a_value(example: RoutingConfig) -> None:
    alone = interpret_tool_call(example, RECORD_DETAILS, '{"confirmed": ["callback_number"]}', "c1")
    assert alone == DetailsCaptured({}, "c1", frozenset({"callback_number"}))
    both = interpret_tool_call(
        example, RECORD_DETAILS, '{"callback_number": "415 555 0199", "confirmed": ["callback_number"]}', "c2"
    )
    assert both == DetailsCaptured({"callback_number": "+14155550199"}, "c2", frozenset({"callback_number"}))


@pytest.mark.parametrize("confirmed", ['["address"]', '"callback_number"', "[1]", '["nope"]'])
def test_confirming_a_field_that_cannot_be_confirmed_is_rejected(example: RoutingConfig, confirmed: str) -> None:
    rejected = interpret_tool_call(example, RECORD_DETAILS, f'{{"confirmed": {confirmed}}}', "c1")
    assert isinstance(rejected, ToolRejected)
    assert rejected.problems == ("confirmed: must be a list of field names among callback_number",)
