"""The routing config: the example file, environment overrides, and one-line errors with key paths."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from machines.policy import RouteRule
from orchestrator.config.routing import (
    ConfigError,
    RoutingConfig,
    StudioRoute,
    describe_config,
    load_routing_config,
    studio_node_key,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "acme_plumbing.toml"
FLOW_SID = "FW0123456789abcdef0123456789abcdef"
WORKFLOW_SID = "WW0123456789abcdef0123456789abcdef"

# The smallest valid config; error cases below add to it or replace parts of it.
MINIMAL = f"""
[triage]
fallback_route = "voicemail"
human_route = "desk"

[routes.voicemail]
kind = "voicemail"

[routes.desk]
kind = "flex"
workflow_sid = "{WORKFLOW_SID}"

[[intents]]
name = "billing"
description = "Questions about a bill."
route = "desk"
"""


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Overrides set in the developer's shell must not change what these tests load."""
    for name in list(os.environ):
        if name.upper().startswith("ORCHESTRATOR_"):
            monkeypatch.delenv(name)


def write(tmp_path: Path, text: str, name: str = "bad.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load_error(path: Path | str) -> str:
    with pytest.raises(ConfigError) as caught:
        load_routing_config(path)
    message = str(caught.value)
    assert "\n" not in message
    return message


# --- The example ---------------------------------------------------------------------------------


def test_example_loads_with_its_settings() -> None:
    config = load_routing_config(EXAMPLE)

    assert config.config_source_path == EXAMPLE
    assert config.company.name == "Acme Plumbing"
    assert config.twilio.account_sid is not None and config.twilio.account_sid.startswith("AC")
    assert config.lines.greeting.startswith("Thanks for calling Acme Plumbing")
    assert {intent.name for intent in config.intents} == {"emergency", "schedule", "billing", "opening_hours"}
    assert all(8 <= len(intent.examples) <= 12 for intent in config.intents)
    emergency = config.routes["emergency_desk"]
    assert emergency.kind == "flex" and emergency.priority == 100
    assert emergency.attributes == {"skill": "emergency", "queue_hint": "on_call_engineers"}
    assert config.routes["billing_desk"].priority == 30
    assert config.routes["opening_hours"].kind == "resolve"


def test_example_triage_policy() -> None:
    config = load_routing_config(EXAMPLE)
    policy = config.triage_policy()
    schedule = config.routes["schedule_visit"]
    assert isinstance(schedule, StudioRoute)

    assert policy.intents == {
        "emergency": "emergency_desk",
        "schedule": "schedule_visit",
        "billing": "billing_desk",
        "opening_hours": "opening_hours",
    }
    assert policy.routes == {
        "emergency_desk": RouteRule(
            "emergency_desk", "flex", wanted_fields=frozenset({"caller_name", "callback_number", "address"})
        ),
        "schedule_visit": RouteRule(
            "schedule_visit",
            "studio",
            frozenset({"caller_name", "address"}),
            studio_node=f"{schedule.flow_sid}/schedule_visit",
        ),
        "billing_desk": RouteRule("billing_desk", "flex"),
        "opening_hours": RouteRule("opening_hours", "resolve"),
        "front_desk": RouteRule("front_desk", "flex"),
        "voicemail": RouteRule("voicemail", "voicemail"),
    }
    assert policy.fallback_route == "voicemail"
    assert policy.human_route == "front_desk"
    assert (policy.min_confidence, policy.urgent_min_confidence, policy.max_clarifications) == (0.6, 0.8, 2)
    assert (policy.budget_s, policy.handoff_line_timeout_s) == (20.0, 8.0)
    assert policy.urgent_intents == {"emergency"}
    assert policy.keys == {"1": "emergency", "2": "schedule", "3": "billing"}
    assert policy.caller_id_field == "callback_number"


def test_describe_config_summarises_routing() -> None:
    summary = describe_config(load_routing_config(EXAMPLE))

    assert str(EXAMPLE) in summary and "Acme Plumbing" in summary
    for text in ("emergency", "emergency_desk", "priority 100", "schedule_visit (resume)", "opening_hours",
                 "(anything else)", "voicemail", "front_desk", "callback_number", "preferred_date",
                 "budget 20 s", "needs address, caller_name", "asks for address, callback_number, caller_name",
                 "Urgent: emergency", "Keypad: 1 → emergency, 2 → schedule, 3 → billing", "caller ID",
                 "(0.8 for an urgent intent",
                 "asked for at most twice"):
        assert text in summary


def test_describe_config_prints_brackets_literally(tmp_path: Path) -> None:
    text = MINIMAL + '\n[routes.hours]\nkind = "resolve"\nanswer = "[bold]We open at 8[/bold]"\n'
    summary = describe_config(load_routing_config(write(tmp_path, text, "ok.toml")))
    assert "[bold]We open at 8" in summary
    assert "(unused)" in summary


# --- Defaults and Studio node keys --------------------------------------------------------------


def test_minimal_config_gets_defaults(tmp_path: Path) -> None:
    config = load_routing_config(write(tmp_path, MINIMAL, "ok.toml"))

    assert config.triage.budget_seconds == 20
    assert config.triage.min_confidence == 0.6
    assert config.triage.max_clarifications == 2
    assert config.triage.handoff_line_timeout_seconds == 8
    assert config.lines.greeting and config.lines.handoff and config.lines.clarify and config.lines.ask_details
    assert config.company.name is None and config.twilio.account_sid is None
    assert config.routes["desk"].priority == 0 and config.routes["desk"].timeout == 3600
    assert config.routes["voicemail"].max_length == 120
    assert config.fields == []


def test_studio_node_key() -> None:
    assert studio_node_key(FLOW_SID, "schedule_visit") == f"{FLOW_SID}/schedule_visit"
    assert studio_node_key(FLOW_SID, None) == f"{FLOW_SID}/Trigger"
    assert studio_node_key(FLOW_SID) == f"{FLOW_SID}/Trigger"


def test_fresh_studio_route_without_node_enters_at_the_trigger(tmp_path: Path) -> None:
    text = MINIMAL + f'\n[routes.restart]\nkind = "studio"\nflow_sid = "{FLOW_SID}"\nmode = "fresh"\n'
    policy = load_routing_config(write(tmp_path, text, "ok.toml")).triage_policy()
    assert policy.routes["restart"].studio_node == studio_node_key(FLOW_SID, None)


# --- Environment overrides ----------------------------------------------------------------------


def test_env_overrides_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCHESTRATOR_TRIAGE__BUDGET_SECONDS", "15")
    monkeypatch.setenv("ORCHESTRATOR_ROUTES__EMERGENCY_DESK__PRIORITY", "250")
    monkeypatch.setenv("ORCHESTRATOR_LINES__GREETING", "Acme Plumbing, hello!")

    config = load_routing_config(EXAMPLE)

    assert config.triage.budget_seconds == 15
    assert config.triage_policy().budget_s == 15
    assert config.routes["emergency_desk"].priority == 250
    assert config.routes["emergency_desk"].workflow_sid.startswith("WW")  # the rest of the table stays
    assert config.lines.greeting == "Acme Plumbing, hello!"


def test_unrelated_orchestrator_variables_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCHESTRATOR_LOG_LEVEL", "debug")
    assert load_routing_config(EXAMPLE).triage.budget_seconds == 20


@pytest.mark.parametrize(
    ("variable", "value", "key_path"),
    [
        ("ORCHESTRATOR_TRIAGE__BUDGET_SECONDS", "-3", "triage.budget_seconds"),
        ("ORCHESTRATOR_TRIAGE__BUDGET_SECONDS", "soon", "triage.budget_seconds"),
        ("ORCHESTRATOR_TRIAGE__HUMAN_ROUTE", "schedule_visit", "triage.human_route"),
        ("ORCHESTRATOR_TRIAGE__BUDGET", "3", "triage.budget"),
        ("ORCHESTRATOR_ROUTES__BILLING_DESK__WORKFLOW_SID", "WX123", "routes.billing_desk.workflow_sid"),
        # A misspelt route name creates a new route without a kind: the variable is to blame.
        ("ORCHESTRATOR_ROUTES__BILING_DESK__PRIORITY", "5", "routes.biling_desk.kind"),
        # A new kind makes the route's other keys wrong: the variable is to blame.
        ("ORCHESTRATOR_ROUTES__BILLING_DESK__KIND", "voicemail", "routes.billing_desk.workflow_sid"),
        ("ORCHESTRATOR_ROLLOUT__BRAKE", '{"max_failure_rate": 2}', "rollout.brake.max_failure_rate"),
        ("ORCHESTRATOR_ROLLOUT__BRAKE", "{not json", "rollout.brake"),
    ],
)
def test_bad_env_override_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, key_path: str
) -> None:
    monkeypatch.setenv(variable, value)

    message = load_error(EXAMPLE)

    assert message.startswith(f"${variable}: {key_path}: ")
    assert "acme_plumbing.toml" not in message


def test_file_error_is_not_blamed_on_an_override_of_the_same_table(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ORCHESTRATOR_ROUTES__DESK", '{"priority": 10}')
    path = write(tmp_path, MINIMAL.replace(f'workflow_sid = "{WORKFLOW_SID}"', 'workflow_sid = "WX1"'))

    assert load_error(path).startswith(f"{path}: routes.desk.workflow_sid: must be 'WW' followed by 32 hex")


# --- One-line errors with key paths -------------------------------------------------------------


def studio_route(name: str, mode: str = "resume", node: str | None = "x") -> str:
    node_line = f'node = "{node}"\n' if node else ""
    return f'\n[routes.{name}]\nkind = "studio"\nflow_sid = "{FLOW_SID}"\nmode = "{mode}"\n{node_line}'


def intent(name: str, route: str) -> str:
    return f'\n[[intents]]\nname = "{name}"\ndescription = "Something."\nroute = "{route}"\n'


ERROR_CASES = {
    "bad workflow sid": (
        MINIMAL.replace(WORKFLOW_SID, "WX123"),
        "routes.desk.workflow_sid: must be 'WW' followed by 32 hex characters (got 'WX123')",
    ),
    "bad flow sid": (
        MINIMAL + studio_route("visit").replace(FLOW_SID, "FW12"),
        "routes.visit.flow_sid: must be 'FW' followed by 32 hex characters (got 'FW12')",
    ),
    "bad account sid": (
        MINIMAL + '\n[twilio]\naccount_sid = "AC12"\n',
        "twilio.account_sid: must be 'AC' followed by 32 hex characters (got 'AC12')",
    ),
    "duplicate intent": (
        MINIMAL + intent("other", "desk") + intent("billing", "desk"),
        "intents[2].name: duplicate intent 'billing'",
    ),
    "intent name not snake_case": (
        MINIMAL.replace('name = "billing"', 'name = "Billing-Question"'),
        "intents[0].name: must be a snake_case name",
    ),
    "intent without description": (
        MINIMAL.replace('description = "Questions about a bill."', ""),
        "intents[0].description: missing",
    ),
    "intent with unknown route": (
        MINIMAL + intent("other", "nope"),
        "intents[1].route: unknown route 'nope' (defined: desk, voicemail)",
    ),
    "human route missing": (
        MINIMAL.replace('human_route = "desk"', ""),
        "triage.human_route: missing",
    ),
    "human route unknown": (
        MINIMAL.replace('human_route = "desk"', 'human_route = "nope"'),
        "triage.human_route: unknown route 'nope'",
    ),
    "human route is studio": (
        MINIMAL.replace('human_route = "desk"', 'human_route = "visit"') + studio_route("visit"),
        "triage.human_route: route 'visit' is of kind 'studio'",
    ),
    "human route is resolve": (
        MINIMAL.replace('human_route = "desk"', 'human_route = "hours"')
        + '\n[routes.hours]\nkind = "resolve"\nanswer = "Nine to five."\n',
        "triage.human_route: route 'hours' is of kind 'resolve'",
    ),
    "fallback route unknown": (
        MINIMAL.replace('fallback_route = "voicemail"', 'fallback_route = "vm"'),
        "triage.fallback_route: unknown route 'vm'",
    ),
    "budget not positive": (
        MINIMAL.replace("[triage]", "[triage]\nbudget_seconds = 0"),
        "triage.budget_seconds: input should be greater than 0 (got 0)",
    ),
    "confidence above one": (
        MINIMAL.replace("[triage]", "[triage]\nmin_confidence = 1.5"),
        "triage.min_confidence: input should be less than or equal to 1 (got 1.5)",
    ),
    "negative clarifications": (
        MINIMAL.replace("[triage]", "[triage]\nmax_clarifications = -1"),
        "triage.max_clarifications: input should be greater than or equal to 0",
    ),
    "misspelt key": (
        MINIMAL.replace("[triage]", "[triage]\nbudget_second = 10"),
        "triage.budget_second: unknown key",
    ),
    "unknown route kind": (
        MINIMAL + '\n[routes.fax]\nkind = "fax"\n',
        "routes.fax.kind: unknown route kind 'fax'",
    ),
    "route without kind": (
        MINIMAL + '\n[routes.other]\nuri = "sip:desk@example.com"\n',
        "routes.other.kind: missing",
    ),
    "route name not snake_case": (
        MINIMAL + '\n[routes."Front Desk"]\nkind = "voicemail"\n',
        'routes."Front Desk": invalid name: must be a snake_case name',
    ),
    "resolve without answer": (
        MINIMAL + '\n[routes.hours]\nkind = "resolve"\n',
        "routes.hours.answer: missing",
    ),
    "studio resume without node": (
        MINIMAL + studio_route("visit", node=None),
        'routes.visit.node: missing (required when mode = "resume")',
    ),
    "studio bad mode": (
        MINIMAL + studio_route("visit", mode="restart"),
        "routes.visit.mode: input should be 'resume' or 'fresh' (got 'restart')",
    ),
    "flex negative priority": (
        MINIMAL.replace("[routes.desk]", "[routes.desk]\npriority = -1"),
        "routes.desk.priority: input should be greater than or equal to 0 (got -1)",
    ),
    "flex reserved attribute": (
        MINIMAL.replace("[routes.desk]", '[routes.desk]\nattributes = { from = "+15550100" }'),
        "routes.desk.attributes.from: reserved task attribute",
    ),
    "sip uri without scheme": (
        MINIMAL + '\n[routes.pbx]\nkind = "sip"\nuri = "desk@pbx.example.com"\n',
        "routes.pbx.uri: must start with 'sip:' or 'sips:' (got 'desk@pbx.example.com')",
    ),
    "required_for unknown route": (
        MINIMAL + '\n[[fields]]\nname = "caller_name"\ntype = "text"\nrequired_for = ["desk", "nope"]\n',
        "fields[0].required_for[1]: unknown route 'nope' (defined: desk, voicemail)",
    ),
    "choice field without choices": (
        MINIMAL + '\n[[fields]]\nname = "area"\ntype = "choice"\n',
        'fields[0].choices: missing (required when type = "choice")',
    ),
    "choice field with empty choices": (
        MINIMAL + '\n[[fields]]\nname = "area"\ntype = "choice"\nchoices = []\n',
        "fields[0].choices: must list at least one choice",
    ),
    "choices on a text field": (
        MINIMAL + '\n[[fields]]\nname = "area"\ntype = "text"\nchoices = ["north"]\n',
        'fields[0].choices: only allowed when type = "choice"',
    ),
    "unknown field type": (
        MINIMAL + '\n[[fields]]\nname = "area"\ntype = "postcode"\n',
        "fields[0].type: input should be 'text', 'phone', 'email', 'date' or 'choice' (got 'postcode')",
    ),
    "duplicate field": (
        MINIMAL + '\n[[fields]]\nname = "a"\ntype = "text"\n\n[[fields]]\nname = "a"\ntype = "phone"\n',
        "fields[1].name: duplicate field 'a'",
    ),
    "missing triage": (
        MINIMAL.replace('[triage]\nfallback_route = "voicemail"\nhuman_route = "desk"\n', ""),
        "triage: missing",
    ),
    "wanted_for unknown route": (
        MINIMAL + '\n[[fields]]\nname = "caller_name"\ntype = "text"\nwanted_for = ["nope"]\n',
        "fields[0].wanted_for[0]: unknown route 'nope' (defined: desk, voicemail)",
    ),
    "field both required and wanted": (
        MINIMAL + '\n[[fields]]\nname = "a"\ntype = "text"\nrequired_for = ["desk"]\nwanted_for = ["desk"]\n',
        "fields[0].wanted_for[0]: route 'desk' is also in required_for (a field is one or the other)",
    ),
    "caller id on a text field": (
        MINIMAL + '\n[[fields]]\nname = "a"\ntype = "text"\ncaller_id = true\n',
        'fields[0].caller_id: only allowed when type = "phone" (type is \'text\')',
    ),
    "two caller id fields": (
        MINIMAL + '\n[[fields]]\nname = "a"\ntype = "phone"\ncaller_id = true\n'
        '\n[[fields]]\nname = "b"\ntype = "phone"\ncaller_id = true\n',
        "fields[1].caller_id: field 'a' already takes the caller's number",
    ),
    "key not on the keypad": (
        MINIMAL.replace('\nroute = "desk"', '\nroute = "desk"\nkeys = ["10"]'),
        "intents[0].keys[0]: must be one keypad key: a digit 0-9, '*' or '#' (got '10')",
    ),
    "key on two intents": (
        MINIMAL.replace('\nroute = "desk"', '\nroute = "desk"\nkeys = ["1"]')
        + intent("sales", "desk").replace('\nroute = "desk"', '\nroute = "desk"\nkeys = ["#", "1"]'),
        "intents[1].keys[1]: key '1' is already on intent 'billing'",
    ),
    "urgent intent to voicemail": (
        MINIMAL.replace('\nroute = "desk"', '\nroute = "voicemail"\nurgent = true'),
        "intents[0].route: route 'voicemail' is of kind 'voicemail'; an urgent intent never ends in voicemail",
    ),
    "urgent intents with a voicemail human route": (
        MINIMAL.replace('human_route = "desk"', 'human_route = "voicemail"').replace(
            '\nroute = "desk"', '\nroute = "desk"\nurgent = true'
        ),
        "triage.human_route: route 'voicemail' is of kind 'voicemail'; with urgent intents (billing) the human"
        " route must reach a person (flex or sip)",
    ),
}


@pytest.mark.parametrize(("text", "expected"), ERROR_CASES.values(), ids=ERROR_CASES.keys())
def test_config_error_names_file_and_key_path(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    assert load_error(path).startswith(f"{path}: {expected}")


def test_wanted_fields_keys_and_urgency_reach_the_policy(tmp_path: Path) -> None:
    text = (
        MINIMAL.replace('\nroute = "desk"', '\nroute = "desk"\nurgent = true\nkeys = ["1", "*"]')
        + '\n[[fields]]\nname = "number"\ntype = "phone"\nwanted_for = ["desk"]\ncaller_id = true\nread_back = true\n'
        + '\n[[fields]]\nname = "account"\ntype = "text"\nrequired_for = ["desk"]\n'
        + '\n[[fields]]\nname = "day"\ntype = "date"\n'
    )
    config = load_routing_config(write(tmp_path, text, "ok.toml"))
    policy = config.triage_policy()
    assert policy.routes["desk"].required_fields == {"account"}
    assert policy.routes["desk"].wanted_fields == {"number"}
    assert (policy.urgent_intents, policy.keys) == ({"billing"}, {"1": "billing", "*": "billing"})
    assert policy.caller_id_field == config.caller_id_field == "number"
    fields = next(line for line in describe_config(config).splitlines() if line.startswith(" number"))
    assert fields.split() == [
        "number", "phone", "(caller", "ID,", "to", "confirm)", "(keypad)", "(read", "back)", "-", "desk"
    ]
    # Phone numbers and dates may be typed on the keypad; only fields that say so are read back.
    assert policy.keyable_fields == {"number", "day"} and policy.read_back_fields == {"number"}
    assert policy.keypad_timeout_s == config.triage.keypad_timeout_seconds == 5.0


def test_a_field_may_not_take_the_name_of_the_confirmed_argument(tmp_path: Path) -> None:
    text = MINIMAL + '\n[[fields]]\nname = "confirmed"\ntype = "text"\n'
    assert "fields[0].name: 'confirmed' is reserved" in load_error(write(tmp_path, text))


def test_a_config_without_the_new_keys_keeps_its_meaning(tmp_path: Path) -> None:
    text = MINIMAL + '\n[[fields]]\nname = "account"\ntype = "text"\nrequired_for = ["desk"]\n'
    policy = load_routing_config(write(tmp_path, text, "ok.toml")).triage_policy()
    assert (policy.routes["desk"].required_fields, policy.routes["desk"].wanted_fields) == ({"account"}, frozenset())
    assert (policy.urgent_intents, dict(policy.keys), policy.caller_id_field) == (frozenset(), {}, None)


def test_unused_route_is_fine(tmp_path: Path) -> None:
    config = load_routing_config(write(tmp_path, MINIMAL + '\n[routes.spare]\nkind = "voicemail"\n', "ok.toml"))
    assert "spare" in config.triage_policy().routes


def test_further_errors_are_counted(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        MINIMAL.replace('fallback_route = "voicemail"', 'fallback_route = "vm"') + intent("other", "nope"),
    )
    assert load_error(path) == (
        f"{path}: triage.fallback_route: unknown route 'vm' (defined: desk, voicemail) (+1 more)"
    )


def test_further_field_errors_are_counted(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL.replace("[triage]", "[triage]\nbudget_seconds = -1\nmin_confidence = 2"))
    assert load_error(path).endswith("(+1 more)")


def test_single_error_has_no_count(tmp_path: Path) -> None:
    assert "more)" not in load_error(write(tmp_path, MINIMAL.replace(WORKFLOW_SID, "WX123")))


def test_broken_toml_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL.replace('kind = "voicemail"', "kind = voicemail"))
    line = MINIMAL.splitlines().index('kind = "voicemail"') + 1

    message = load_error(path)

    assert message.startswith(f"{path}: line {line}: invalid TOML (")


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "missing.toml"
    assert load_error(path) == f"{path}: file not found"


def test_path_is_reported_as_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_error("missing.toml") == "missing.toml: file not found"


def test_error_message_is_one_line_even_for_multiline_values(tmp_path: Path) -> None:
    text = MINIMAL + '\n[routes.pbx]\nkind = "sip"\nuri = """\ndesk\n@pbx"""\n'
    assert load_error(write(tmp_path, text)).startswith(f"{tmp_path / 'bad.toml'}: routes.pbx.uri: ")


def test_config_error_exposes_its_parts(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL.replace('human_route = "desk"', ""))
    with pytest.raises(ConfigError) as caught:
        load_routing_config(path)
    assert (caught.value.source, caught.value.location, caught.value.problem) == (
        str(path),
        "triage.human_route",
        "missing",
    )


def test_routing_config_without_a_file_has_no_source_path() -> None:
    config = RoutingConfig(
        triage={"fallback_route": "vm", "human_route": "vm"},
        routes={"vm": {"kind": "voicemail"}},
    )
    assert config.config_source_path is None
    assert config.triage_policy().fallback_route == "vm"


# --- Company country (default region for phone numbers) ---------------------------------------


def test_company_country_defaults_to_us(tmp_path: Path) -> None:
    assert load_routing_config(write(tmp_path, MINIMAL, "ok.toml")).company.country == "US"
    assert load_routing_config(EXAMPLE).company.country == "US"


@pytest.mark.parametrize(("written", "loaded"), [("GB", "GB"), ("de", "DE"), (" fr ", "FR")])
def test_company_country_is_normalised_to_upper_case(tmp_path: Path, written: str, loaded: str) -> None:
    text = MINIMAL + f'\n[company]\ncountry = "{written}"\n'
    assert load_routing_config(write(tmp_path, text, "ok.toml")).company.country == loaded


@pytest.mark.parametrize("code", ["XX", "USA", "", "001", "U"])
def test_unknown_company_country_names_the_key(tmp_path: Path, code: str) -> None:
    path = write(tmp_path, MINIMAL + f'\n[company]\ncountry = "{code}"\n')
    assert load_error(path) == (
        f"{path}: company.country: unknown country code {code!r} (use ISO 3166-1 alpha-2, e.g. 'US', 'GB')"
    )


def test_company_country_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCHESTRATOR_COMPANY__COUNTRY", "GB")
    config = load_routing_config(EXAMPLE)
    assert (config.company.country, config.company.name) == ("GB", "Acme Plumbing")

    monkeypatch.setenv("ORCHESTRATOR_COMPANY__COUNTRY", "XX")
    assert load_error(EXAMPLE).startswith("$ORCHESTRATOR_COMPANY__COUNTRY: company.country: unknown country code")


# --- Rollout -------------------------------------------------------------------------------------


def test_without_a_rollout_section_every_caller_goes_to_the_ai(tmp_path: Path) -> None:
    config = load_routing_config(write(tmp_path, MINIMAL, "ok.toml"))
    rollout = config.rollout
    assert (rollout.percent, rollout.allow, rollout.deny, rollout.brake.enabled) == (100, [], [], True)
    assert config.legacy_route == "voicemail"  # the fallback route
    assert "Rollout" not in describe_config(config)


def test_rollout_numbers_are_normalised_to_e164_and_summarised(tmp_path: Path) -> None:
    text = MINIMAL + """
[rollout]
percent = 5
allow = ["+1 (415) 555-2671"]
deny = ["+44 20 7183 8750"]
legacy_route = "desk"

[rollout.brake]
window_calls = 40
min_calls = 10
max_failure_rate = 0.3
"""
    config = load_routing_config(write(tmp_path, text, "ok.toml"))
    assert (config.rollout.allow, config.rollout.deny) == (["+14155552671"], ["+442071838750"])
    assert config.legacy_route == "desk"
    assert (config.rollout.brake.window_calls, config.rollout.brake.min_calls) == (40, 10)
    summary = describe_config(config)
    assert "Rollout: 5 % of callers to the AI" in summary and "legacy calls go to desk" in summary


def test_rollout_percent_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ORCHESTRATOR_ROLLOUT__PERCENT", "25")
    assert load_routing_config(write(tmp_path, MINIMAL, "ok.toml")).rollout.percent == 25
    monkeypatch.setenv("ORCHESTRATOR_ROLLOUT__PERCENT", "150")
    assert load_error(tmp_path / "ok.toml").startswith("$ORCHESTRATOR_ROLLOUT__PERCENT: rollout.percent: ")


ROLLOUT_ERRORS = {
    "percent above 100": ("[rollout]\npercent = 101", "rollout.percent: input should be less than or equal to 100"),
    "percent nan": ("[rollout]\npercent = nan", "rollout.percent: "),
    "bad number": ('[rollout]\nallow = ["+1", "415 555"]', "rollout.allow[0]: not a phone number in international"),
    "national number": ('[rollout]\ndeny = ["(415) 555-2671"]', "rollout.deny[0]: not a phone number in international"),
    "allowed and denied": (
        '[rollout]\nallow = ["+14155552671"]\ndeny = ["+1 415 555 2671"]',
        "rollout.deny[0]: +14155552671 is also in allow",
    ),
    "unknown legacy route": ('[rollout]\nlegacy_route = "nope"', "rollout.legacy_route: unknown route 'nope'"),
    "min above window": (
        "[rollout.brake]\nwindow_calls = 10\nmin_calls = 11", "rollout.brake.min_calls: must be at most window_calls"
    ),
    "rate above 1": ("[rollout.brake]\nmax_failure_rate = 1.5", "rollout.brake.max_failure_rate: "),
    "unknown key": ("[rollout]\npercentage = 5", "rollout.percentage: unknown key"),
}


@pytest.mark.parametrize(("extra", "expected"), ROLLOUT_ERRORS.values(), ids=ROLLOUT_ERRORS.keys())
def test_rollout_errors_name_the_key(tmp_path: Path, extra: str, expected: str) -> None:
    path = write(tmp_path, MINIMAL + "\n" + extra + "\n")
    assert load_error(path).startswith(f"{path}: {expected}")
