"""The routing config's languages: settings, per-language lines and route targets, and their diagram."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from orchestrator.commands.cli import main
from orchestrator.commands.diagram import routing_mermaid
from orchestrator.config.routing import (
    ConfigError,
    RoutingConfig,
    describe_config,
    load_routing_config,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
BILINGUAL = EXAMPLES / "bilingual_plumbing.toml"
WORKFLOW_SID = "WW0123456789abcdef0123456789abcdef"
SPANISH_WORKFLOW_SID = "WWfedcba9876543210fedcba9876543210"
FLOW_SID = "FW0123456789abcdef0123456789abcdef"

# A small config with two languages; cases below add to it.
BASE = f"""
[triage]
fallback_route = "voicemail"
human_route = "desk"

[languages]
default = "en-US"
supported = ["en-US", "es-US"]

[routes.voicemail]
kind = "voicemail"

[routes.desk]
kind = "flex"
workflow_sid = "{WORKFLOW_SID}"
priority = 10
attributes = {{ skill = "front_desk" }}

[routes.booking]
kind = "studio"
flow_sid = "{FLOW_SID}"
mode = "resume"
node = "book"
"""


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Overrides set in the developer's shell must not change what these tests load."""
    for name in list(os.environ):
        if name.upper().startswith("ORCHESTRATOR_"):
            monkeypatch.delenv(name)


def load(tmp_path: Path, text: str) -> RoutingConfig:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return load_routing_config(path)


def load_error(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text)
    return str(caught.value)


def with_languages(languages: str) -> str:
    """BASE with its [languages] table replaced."""
    return BASE.replace('[languages]\ndefault = "en-US"\nsupported = ["en-US", "es-US"]\n', languages)


# --- The example ---------------------------------------------------------------------------------


def test_bilingual_example_has_spanish_lines_and_targets() -> None:
    config = load_routing_config(BILINGUAL)
    acme = load_routing_config(EXAMPLES / "acme_plumbing.toml")

    assert config.multilingual and not acme.multilingual
    assert config.languages.default == "en-US" and config.languages.supported == ["en-US", "es-US"]
    # Acme's routing, with language overrides added to some routes.
    def without_languages(routes: dict) -> dict:
        return {name: route.model_dump(exclude={"by_language"}) for name, route in routes.items()}

    assert without_languages(config.routes) == without_languages(acme.routes)
    assert config.intents == acme.intents and config.fields == acme.fields
    spanish = config.lines_for("es-US")
    for line in ("greeting", "handoff", "clarify", "ask_details"):
        assert getattr(spanish, line) != getattr(config.lines, line)
    billing = config.route_for("billing_desk", "es-US")
    assert billing.workflow_sid != config.routes["billing_desk"].workflow_sid
    assert billing.priority == config.routes["billing_desk"].priority  # the rest of the route is kept
    assert config.route_for("schedule_visit", "es-US").node == "schedule_visit_es"
    assert config.language_for_caller("+525512345678") == "es-US"


def test_check_config_accepts_the_bilingual_example(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(BILINGUAL)]) == 0
    out = capsys.readouterr().out
    assert "Languages: default en-US; supported en-US, es-US" in out
    spanish_sid = load_routing_config(BILINGUAL).route_for("billing_desk", "es-US").workflow_sid
    assert "billing_desk [es-US]" in out and spanish_sid in out


def test_config_without_languages_is_english_only_and_prints_no_languages(tmp_path: Path) -> None:
    config = load(tmp_path, with_languages(""))
    assert config.languages.supported == ["en-US"] and not config.multilingual
    assert config.route_for("desk", "es-US") is config.routes["desk"]
    assert config.lines_for("es-US") == config.lines
    assert "Languages:" not in describe_config(config)


# --- Language codes ------------------------------------------------------------------------------


def test_language_codes_are_normalised(tmp_path: Path) -> None:
    config = load(tmp_path, with_languages(
        '[languages]\ndefault = "EN-us"\nsupported = ["en-us", "ES", "zh-hant-tw", "es-419", "fr_ca"]\n'
    ))
    assert config.languages.default == "en-US"
    assert config.languages.supported == ["en-US", "es", "zh-Hant-TW", "es-419", "fr-CA"]


@pytest.mark.parametrize("code", ["english", "e", "en-USA1", "en--US", "", "12-US"])
def test_bad_language_code_is_an_error_at_its_key(tmp_path: Path, code: str) -> None:
    message = load_error(tmp_path, with_languages(f'[languages]\nsupported = ["en-US", "{code}"]\n'))
    assert "languages.supported[1]: must be a BCP-47 language code" in message


# --- Validation errors with key paths ------------------------------------------------------------


@pytest.mark.parametrize(
    ("languages", "expected"),
    [
        ('default = "fr-CA"\nsupported = ["en-US", "es-US"]',
         "languages.default: 'fr-CA' is not in supported (en-US, es-US)"),
        ('supported = ["en-US", "es-US", "ES-us"]',
         "languages.supported[2]: duplicate language 'es-US' (first at supported[1])"),
        ('supported = ["en-US"]\n[languages.lines.es-US]\ngreeting = "Hola"',
         "languages.lines.es-US: language 'es-US' is not in supported (en-US)"),
        ('supported = ["en-US"]\nby_caller_prefix = { "+52" = "es-MX" }',
         "languages.by_caller_prefix.\"+52\": language 'es-MX' is not in supported (en-US)"),
        ('by_caller_prefix = { "52" = "es-US" }',
         "languages.by_caller_prefix.52: invalid name: must be an E.164 prefix"),
        ('by_caller_prefix = { "+1234567" = "es-US" }',
         "languages.by_caller_prefix.\"+1234567\": invalid name: must be an E.164 prefix"),
        ('supported = ["en-US", "es-US"]\n[languages.lines.es-US]\ngreeting = "  "',
         "languages.lines.es-US.greeting: must not be empty"),
        ('supported = ["en-US", "es-US"]\n[languages.lines.es-US]\ngreting = "Hola"',
         "languages.lines.es-US.greting: unknown key"),
    ],
)
def test_language_settings_errors_name_the_key(tmp_path: Path, languages: str, expected: str) -> None:
    message = load_error(tmp_path, with_languages(f"[languages]\n{languages}\n"))
    assert message.startswith(str(tmp_path / "config.toml")) and expected in message


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ('[routes.desk.by_language.fr-CA]\npriority = 5',
         "routes.desk.by_language.fr-CA: language 'fr-CA' is not in languages.supported (en-US, es-US)"),
        ('[routes.desk.by_language.es-US]\nkind = "sip"',
         "routes.desk.by_language.es-US.kind: cannot be overridden per language"),
        ('[routes.desk.by_language.es-US]\nby_language = {}',
         "routes.desk.by_language.es-US.by_language: cannot be overridden per language"),
        ('[routes.desk.by_language.es-US]\nworkflow_sid = "WX1"',
         "routes.desk.by_language.es-US.workflow_sid: must be 'WW' followed by 32 hex characters (got 'WX1')"),
        ('[routes.desk.by_language.es-US]\nnode = "desk_es"',
         "routes.desk.by_language.es-US.node: unknown key for a flex route"),
        ('[routes.desk.by_language.es-US]\nattributes = { name = "x" }',
         "routes.desk.by_language.es-US.attributes.name: reserved task attribute"),
        ('[routes.booking.by_language.es-US]\nnode = "book es"',
         "routes.booking.by_language.es-US.node: must be a Studio widget name"),
        ('[routes.booking.by_language.es-US]\nnode = {}',
         "routes.booking.by_language.es-US.node: input should be a valid string"),
        ('[routes.booking.by_language.spanish]\nnode = "book_es"',
         "routes.booking.by_language.spanish: invalid name: must be a BCP-47 language code"),
    ],
)
def test_route_override_errors_name_the_key(tmp_path: Path, override: str, expected: str) -> None:
    assert expected in load_error(tmp_path, BASE + override + "\n")


# --- match_language, lines_for, route_for, language_for_caller ----------------------------------


@pytest.fixture
def multilingual(tmp_path: Path) -> RoutingConfig:
    return load(tmp_path, with_languages(
        '[languages]\ndefault = "en-US"\nsupported = ["en-US", "es-US", "es-MX", "fr", "fr-CA", "pt-BR"]\n'
        'by_caller_prefix = { "+52" = "es-MX", "+1" = "en-US", "+1514" = "fr-CA", "+1418" = "fr-CA" }\n'
        '[languages.lines.es-US]\ngreeting = "Hola"\nhandoff = "Le comunico."\n'
        '[languages.lines.fr]\ngreeting = "Bonjour"\n'
    ) + f'[routes.desk.by_language.es-US]\nworkflow_sid = "{SPANISH_WORKFLOW_SID}"\npriority = 20\n'
        '[routes.booking.by_language.fr-CA]\nnode = "book_fr"\n')


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("es-US", "es-US"),            # exact
        ("ES-us", "es-US"),            # any case
        ("es_mx", "es-MX"),            # "_" as in POSIX locales
        (" pt-br ", "pt-BR"),
        ("es", "es-US"),               # primary subtag: the first listed Spanish
        ("es-419", "es-US"),
        ("fr-FR", "fr"),               # the bare subtag wins over the first listed French
        ("pt", "pt-BR"),
        ("en-GB", "en-US"),
        ("en-US-u-ca-gregory", "en-US"),  # extensions do not stop a match
        ("de-DE", None),               # not served
        ("zz-ZZ-1234567", None),
        ("", None),
        ("   ", None),
        ("español", None),
        ("e", None),
        (None, None),
        (42, None),
    ],
)
def test_match_language(multilingual: RoutingConfig, code: object, expected: str | None) -> None:
    assert multilingual.match_language(code) == expected  # type: ignore[arg-type]


def test_lines_for_falls_back_line_by_line(multilingual: RoutingConfig) -> None:
    default = multilingual.lines
    spanish = multilingual.lines_for("es-us")
    assert (spanish.greeting, spanish.handoff) == ("Hola", "Le comunico.")
    assert spanish.clarify == default.clarify and spanish.not_heard == default.not_heard
    assert multilingual.lines_for("es-MX") == default  # supported, but no lines of its own
    assert multilingual.lines_for("fr-BE").greeting == "Bonjour"
    for nothing in (None, "de", "junk!"):
        assert multilingual.lines_for(nothing) == default


def test_route_for_merges_the_override(multilingual: RoutingConfig) -> None:
    desk = multilingual.routes["desk"]
    spanish = multilingual.route_for("desk", "es")
    assert (spanish.workflow_sid, spanish.priority) == (SPANISH_WORKFLOW_SID, 20)
    assert spanish.attributes == desk.attributes and spanish.timeout == desk.timeout
    assert spanish.by_language == {}
    assert multilingual.route_for("desk", "es") is spanish  # merged once, at load time
    assert multilingual.route_for("desk", "fr-CA") is desk
    assert multilingual.route_for("desk", None) is desk
    assert multilingual.route_for("booking", "fr-CA").node == "book_fr"
    assert multilingual.route_for("booking", "fr-CA").studio_node == f"{FLOW_SID}/book_fr"
    assert multilingual.route_for("booking", "fr").node == "book"  # "fr" has no override of its own
    with pytest.raises(KeyError):
        multilingual.route_for("nowhere", "es-US")


@pytest.mark.parametrize(
    ("caller", "expected"),
    [
        ("+525512345678", "es-MX"),
        ("+15145550123", "fr-CA"),     # the longest prefix wins over "+1"
        ("+1 (418) 555-0123", "fr-CA"),
        ("+12125550123", "en-US"),
        ("+445550123", None),
        ("anonymous", None),
        ("client:alice", None),
        ("", None),
        (None, None),
    ],
)
def test_language_for_caller(multilingual: RoutingConfig, caller: str | None, expected: str | None) -> None:
    assert multilingual.language_for_caller(caller) == expected


# --- Environment overrides -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "variable",
    [
        "ORCHESTRATOR_LANGUAGES__LINES__ES_US__GREETING",  # what a shell can export
        "ORCHESTRATOR_LANGUAGES__LINES__es-US__GREETING",  # needs `env` or a process manager: "-" in the name
    ],
)
def test_env_overrides_one_language_line(monkeypatch: pytest.MonkeyPatch, variable: str) -> None:
    file_lines = load_routing_config(BILINGUAL).lines_for("es-US")
    monkeypatch.setenv(variable, "¡Hola desde el entorno!")
    lines = load_routing_config(BILINGUAL).lines_for("es-US")
    assert lines.greeting == "¡Hola desde el entorno!"
    assert lines.handoff == file_lines.handoff  # the file's other Spanish lines are kept


def test_env_overrides_a_language_target_and_is_blamed_for_its_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    variable = "ORCHESTRATOR_ROUTES__BILLING_DESK__BY_LANGUAGE__ES_US__WORKFLOW_SID"
    monkeypatch.setenv(variable, SPANISH_WORKFLOW_SID)
    assert load_routing_config(BILINGUAL).route_for("billing_desk", "es-US").workflow_sid == SPANISH_WORKFLOW_SID
    monkeypatch.setenv(variable, "WX1")
    with pytest.raises(ConfigError) as caught:
        load_routing_config(BILINGUAL)
    assert caught.value.source == f"${variable}"
    assert caught.value.location == "routes.billing_desk.by_language.es-US.workflow_sid"


def test_env_adding_an_unsupported_language_is_blamed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCHESTRATOR_LANGUAGES__LINES__FR_CA__GREETING", "Bonjour")
    with pytest.raises(ConfigError) as caught:
        load_routing_config(BILINGUAL)
    assert caught.value.source == "$ORCHESTRATOR_LANGUAGES__LINES__FR_CA__GREETING"
    assert caught.value.location == "languages.lines.fr-CA"


def test_env_json_value_sets_the_supported_languages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCHESTRATOR_LANGUAGES__SUPPORTED", '["en-US", "es-US", "fr-CA"]')
    assert load_routing_config(BILINGUAL).languages.supported == ["en-US", "es-US", "fr-CA"]


# --- The routing diagram -------------------------------------------------------------------------


def test_routing_diagram_shows_per_language_targets() -> None:
    config = load_routing_config(BILINGUAL)
    text = routing_mermaid(config)
    spanish_billing = config.route_for("billing_desk", "es-US")
    assert (
        f'route_billing_desk -->|es-US| target_billing_desk__es_US[("Flex {spanish_billing.workflow_sid}'
        f' priority {spanish_billing.priority}")]'
    ) in text
    assert "route_schedule_visit -->|es-US| target_schedule_visit__es_US" in text
    assert "/ schedule_visit_es (resume)" in text
    # Every language override is drawn, once.
    overrides = [(name, code) for name, route in config.routes.items() for code in route.by_language]
    assert text.count("-->|") == len(overrides)


def test_routing_diagram_of_a_config_without_languages_is_unchanged(tmp_path: Path) -> None:
    checked_in = (EXAMPLES.parent / "diagrams" / "routing-acme_plumbing.mmd").read_text(encoding="utf-8")
    assert main(["diagram", "--config", str(EXAMPLES / "acme_plumbing.toml"), "--out", str(tmp_path)]) == 0
    assert (tmp_path / "routing-acme_plumbing.mmd").read_text(encoding="utf-8") == checked_in
    assert "-->|" not in checked_in
