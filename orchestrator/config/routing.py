"""The routing configuration: one TOML file, overridable by `ORCHESTRATOR_<KEY>__<KEY>…` environment variables.

Everything is validated at load time. Any problem surfaces as a one-line `ConfigError` naming the
file (or the environment variable that caused it), the key path and what is wrong, e.g.
``acme.toml: routes.billing.workflow_sid: must be 'WW' followed by 32 hex characters (got 'WX1')``.
"""
from __future__ import annotations

import contextvars
import json
import os
import re
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import phonenumbers
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)
from rich import box
from rich.console import Console
from rich.table import Table

from machines import PERSON_ROUTE_KINDS, RouteKind, RouteRule, TriagePolicy

ENV_PREFIX = "ORCHESTRATOR_"
ENV_NESTED_DELIMITER = "__"

# The human route is where the re-entry guard sends a call; it must not lead back into Studio,
# and "resolve" would hang up instead of reaching a person.
HUMAN_ROUTE_KINDS = (RouteKind.FLEX, RouteKind.SIP, RouteKind.VOICEMAIL)

# Task attributes the orchestrator sets itself on every Flex task (DESIGN.md section 5); a route's
# extra attributes must not silently replace them (a missing `from` is a known Flex pitfall).
RESERVED_TASK_ATTRIBUTES = frozenset(
    {"type", "name", "from", "call_sid", "intent", "summary", "priority", "ai_confidence"}
)

# The record_details argument that names the fields a caller confirmed: no field may have that name.
CONFIRMED_ARGUMENT = "confirmed"

# Field types a caller may type on the keypad ("or type it on your keypad and press pound").
KEYABLE_FIELD_TYPES = frozenset({"phone", "date"})

# Studio's name for the entry widget of a flow, where a fresh execution starts.
STUDIO_TRIGGER_NODE = "Trigger"


def studio_node_key(flow_sid: str, node: str | None = None) -> str:
    """Identity of a Studio node ("FW…/widget") as used by the re-entry guard; no node means the Trigger."""
    return f"{flow_sid}/{node or STUDIO_TRIGGER_NODE}"


class ConfigError(Exception):
    """A routing config that cannot be used. `str()` is one line: source, location, problem."""

    def __init__(self, source: str, location: str | None, problem: str) -> None:
        self.source = source  # the file path as given, or "$ENV_VAR" for a bad environment override
        self.location = location  # key path such as "intents[2].name", "line 3", or None
        self.problem = " ".join(problem.split())  # collapse any newline: the message is one line
        super().__init__(": ".join(part for part in (source, location, self.problem) if part))


KeyPath = tuple[str | int, ...]


def first_validation_problem(exc: ValidationError, *, prefix: KeyPath = (), nowhere: str = "") -> str:
    """One line for a pydantic error: where (a key path), what, and how many more problems there are."""
    error = exc.errors()[0]
    more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    where = format_key_path((*prefix, *error["loc"])) or nowhere
    message = error["msg"][:1].lower() + error["msg"][1:]
    return f"{where}: {message}{more}"


def format_key_path(keys: KeyPath) -> str:
    """("intents", 2, "name") -> "intents[2].name"; keys that are not bare TOML keys are quoted."""
    text = ""
    for key in keys:
        if isinstance(key, int):
            text += f"[{key}]"
        else:
            part = key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else '"' + key.replace('"', '\\"') + '"'
            text += f".{part}" if text else part
    return text


def _config_problem(at: KeyPath, reason: str, more: int = 0) -> PydanticCustomError:
    """A validation error whose key path (relative to where it is raised) we choose ourselves."""
    return PydanticCustomError("config_problem", "{reason}", {"at": at, "reason": reason, "more": more})


# --- Value types -------------------------------------------------------------------------------


def _sid(prefix: str) -> Any:
    pattern = re.compile(prefix + r"[0-9a-fA-F]{32}")

    def check(value: str) -> str:
        if not pattern.fullmatch(value):
            raise ValueError(f"must be {prefix!r} followed by 32 hex characters")
        return value

    return Annotated[str, AfterValidator(check)]


FlowSid = _sid("FW")
WorkflowSid = _sid("WW")
AccountSid = _sid("AC")


def _snake_case(value: str) -> str:
    # Single underscores only: "__" is the env override delimiter, so a name containing it could
    # never be overridden. Lowercase because env variable names are matched case-insensitively.
    if not re.fullmatch(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)*", value):
        raise ValueError("must be a snake_case name (lowercase letters, digits, single underscores)")
    return value


def _non_empty(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value.strip()


def _widget_name(value: str) -> str:
    # "/" separates flow and widget in studio_node_key, so it cannot appear in a widget name.
    if not value or re.search(r"[\s/]", value):
        raise ValueError("must be a Studio widget name (non-empty, no spaces or '/')")
    return value


def _sip_uri(value: str) -> str:
    if not re.match(r"sips?:.", value):
        raise ValueError("must start with 'sip:' or 'sips:'")
    return value


def _country_code(value: str) -> str:
    # The default region for callers' phone numbers: it must be one phonenumbers can parse with.
    code = value.strip().upper()
    if code not in phonenumbers.SUPPORTED_REGIONS:
        raise _config_problem((), f"unknown country code {value!r} (use ISO 3166-1 alpha-2, e.g. 'US', 'GB')")
    return code


Name = Annotated[str, AfterValidator(_snake_case)]
Text = Annotated[str, AfterValidator(_non_empty)]
WidgetName = Annotated[str, AfterValidator(_widget_name)]
SipUri = Annotated[str, AfterValidator(_sip_uri)]
CountryCode = Annotated[str, AfterValidator(_country_code)]


# BCP-47 as far as routing needs it: a 2-3 letter language, an optional 4-letter script and an optional
# 2-letter or 3-digit region. "_" is read as "-" (POSIX locales write "es_US", and an environment variable
# name cannot hold "-" in most shells).
_LANGUAGE_CODE = re.compile(r"([A-Za-z]{2,3})(?:[-_]([A-Za-z]{4}))?(?:[-_]([A-Za-z]{2}|[0-9]{3}))?")
# Any well-formed tag, extensions included ("en-US-u-ca-gregory"): what a caller's language may look like.
_LANGUAGE_TAG_SHAPE = re.compile(r"([A-Za-z]{2,3})(?:[-_][A-Za-z0-9]{1,8})*")


def _canonical_language(match: re.Match[str]) -> str:
    language, script, region = match.groups()
    return "-".join(
        part for part in (language.lower(), script and script.title(), region and region.upper()) if part
    )


def canonical_language_code(value: str) -> str | None:
    """ "es-us" -> "es-US", "zh_hant_tw" -> "zh-Hant-TW"; None for anything that is not such a code."""
    match = _LANGUAGE_CODE.fullmatch(value.strip())
    return _canonical_language(match) if match else None


def _language_code(value: str) -> str:
    code = canonical_language_code(value)
    if code is None:
        raise ValueError("must be a BCP-47 language code such as 'en-US', 'es' or 'fr-CA'")
    return code


def _keypad_key(value: str) -> str:
    if not re.fullmatch(r"[0-9*#]", value):
        raise ValueError("must be one keypad key: a digit 0-9, '*' or '#'")
    return value


def _caller_prefix(value: str) -> str:
    if not re.fullmatch(r"\+[0-9]{1,6}", value):
        raise ValueError("must be an E.164 prefix: '+' and 1 to 6 digits, such as '+52'")
    return value


def _merge_same_language(value: Any) -> Any:
    """Merge the tables of keys that name the same language ("es-us" from an environment variable, whose
    name is lowercased, and "es-US" from the file); later keys win, as the environment wins over the file."""
    if not isinstance(value, Mapping):
        return value  # the dict validator says what is wrong
    merged: dict[Any, Any] = {}
    for key, table in value.items():
        match = _LANGUAGE_CODE.fullmatch(key.strip()) if isinstance(key, str) else None
        code = _canonical_language(match) if match else key
        if isinstance(merged.get(code), Mapping) and isinstance(table, Mapping):
            table = {**merged[code], **table}
        merged[code] = table
    return merged


LanguageCode = Annotated[str, AfterValidator(_language_code)]
KeypadKey = Annotated[str, AfterValidator(_keypad_key)]
CallerPrefix = Annotated[str, AfterValidator(_caller_prefix)]

# What Twilio puts in `From` when the caller withheld their number (besides "anonymous" and empty).
WITHHELD_NUMBERS = frozenset({"+266696687", "+7378742833", "+8656696", "+2562533"})


def e164_number(text: str, region: str | None = None) -> str:
    """A phone number as E.164 ("+14155552671"); ValueError saying why not. Without `region` the number
    must be written internationally ("+1 415 555 2671")."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("must be a phone number, got nothing")
    try:
        number = phonenumbers.parse(text.strip(), region)
    except phonenumbers.NumberParseException:
        number = None
    if number is None or not phonenumbers.is_possible_number(number):
        how = "" if region else " in international format, such as '+14155552671'"
        raise ValueError(f"not a phone number{how}")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def caller_number(text: str | None) -> str | None:
    """The caller's number (Twilio's `From`) as E.164, or None when withheld or unreadable."""
    if not isinstance(text, str) or text.strip() in WITHHELD_NUMBERS:
        return None
    try:
        return e164_number(text)
    except ValueError:
        return None


PhoneNumber = Annotated[str, AfterValidator(e164_number)]


def _shorten(text: str, limit: int = 48) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- Sections ----------------------------------------------------------------------------------


class _Section(BaseModel):
    # Unknown keys are errors: a typo must not silently fall back to a default.
    model_config = ConfigDict(extra="forbid", frozen=True)


class TriageSettings(_Section):
    budget_seconds: float = Field(20.0, gt=0)
    # More time, once, when a trusted intent's details are being asked (0: none).
    details_seconds: float = Field(0.0, ge=0)
    min_confidence: float = Field(0.6, ge=0, le=1)
    # An urgent intent proposed with less is clarified once before its route is taken (the call is urgent
    # already): a non-urgent need taken for an emergency costs a person's time.
    urgent_min_confidence: float = Field(0.8, ge=0, le=1)
    max_clarifications: int = Field(2, ge=0)
    handoff_line_timeout_seconds: float = Field(8.0, gt=0)
    # A value typed on the keypad ends at "#" or after this long without a key.
    keypad_timeout_seconds: float = Field(5.0, gt=0)
    fallback_route: Name
    human_route: Name


class Lines(_Section):
    """What the AI says at fixed moments of the call."""

    greeting: Text = "Thanks for calling, how can I help you today?"
    handoff: Text = "Thanks, I'm putting you through now. Please hold."
    clarify: Text = "Sorry, could you tell me a little more about what you need?"
    ask_details: Text = "Before I put you through, could I take a few details?"
    # Said by the offline engine (the Realtime model words these moments itself).
    ask_intent: Text = "How can I help you today?"
    not_heard: Text = "Sorry, I didn't catch that. Could you say it again?"
    taking_over: Text = "Sorry about that, the line dropped for a moment. Could you tell me again what you need?"
    # After a value typed on the keypad (then the details still asked for), or one that is not valid.
    keypad_thanks: Text = "Thank you, I have that."
    keypad_invalid: Text = "Sorry, that doesn't look right."


class EngineSettings(_Section):
    """What listens to the caller besides the Realtime model."""

    # When Realtime refuses a call or drops mid-call: go on with the offline engine, or take the fallback route.
    failover: Literal["offline", "fallback-route"] = "offline"
    # A model file written by `orchestrator engine fit` (relative to this config file); without one the
    # offline engine learns from the intents' descriptions and examples when the server starts.
    intent_model: Path | None = None
    # Calls the offline engine takes at once; more are refused (fallback route). Speech-to-text is the
    # limit: about 0.4 s of CPU per caller turn on 2 cores (benchmarks/offline_turn_latency.py).
    offline_max_calls: int = Field(6, gt=0)


DEFAULT_ROLLOUT_SALT = "front-desk-rollout-1"


class BrakeSettings(_Section):
    """When the AI arm fails too often, its percentage drops to 0 by itself (machines/rollout.py)."""

    window_calls: int = Field(50, gt=0)  # the AI arm's last finished passes looked at
    min_calls: int = Field(20, gt=0)  # fewer than this in the window: no verdict yet
    max_failure_rate: float = Field(0.25, ge=0, le=1)
    enabled: bool = True

    @model_validator(mode="after")
    def _min_within_window(self) -> BrakeSettings:
        if self.min_calls > self.window_calls:
            raise _config_problem(("min_calls",), f"must be at most window_calls ({self.window_calls})")
        return self


class RolloutSettings(_Section):
    """Which callers the AI answers; the rest reach the legacy path. The live setting in the call store
    (`orchestrator rollout set`) overrides these values once written."""

    percent: float = Field(100.0, ge=0, le=100, allow_inf_nan=False)
    salt: Text = DEFAULT_ROLLOUT_SALT  # a new salt draws new arms for every caller
    allow: list[PhoneNumber] = []  # always the AI (testers)
    deny: list[PhoneNumber] = []  # always the legacy path
    legacy_route: Name | None = None  # where legacy calls to our own number go (default: the fallback route)
    brake: BrakeSettings = BrakeSettings()

    @model_validator(mode="after")
    def _allow_or_deny(self) -> RolloutSettings:
        for index, number in enumerate(self.deny):
            if number in self.allow:
                raise _config_problem(("deny", index), f"{number} is also in allow (a number is one or the other)")
        return self


class CompanySettings(_Section):
    name: Text | None = None
    country: CountryCode = "US"  # default region for phone numbers the caller gives


class TwilioSettings(_Section):
    account_sid: AccountSid | None = None


# Keys of a route that a language's override may not change.
_NOT_OVERRIDABLE = ("kind", "by_language")


class _RouteSection(_Section):
    """What every route kind has: per-language overrides of its target, e.g. a Spanish workflow."""

    by_language: Annotated[dict[LanguageCode, dict[str, JsonValue]], BeforeValidator(_merge_same_language)] = {}

    # The route as each language in by_language sees it, merged and validated once, at load time.
    _language_routes: dict[str, Any] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _merge_language_overrides(self) -> Any:
        merged_routes = {}
        for code, override in self.by_language.items():
            for key in override:
                if key in _NOT_OVERRIDABLE:
                    raise _config_problem(("by_language", code, key), "cannot be overridden per language")
                if key not in type(self).model_fields:
                    raise _config_problem(("by_language", code, key), f"unknown key for a {self.kind} route")
            fields = self.model_dump(exclude={"by_language"}, exclude_unset=True) | {"kind": self.kind}
            try:
                merged_routes[code] = type(self).model_validate(fields | override)
            except ValidationError as exc:
                at, reason = _explain(exc.errors()[0])
                raise _config_problem(("by_language", code, *at), reason, more=exc.error_count() - 1) from None
        self._language_routes = merged_routes
        return self

    @property
    def language_routes(self) -> Mapping[str, Route]:
        """The route as each language of `by_language` sees it (the override merged over this route)."""
        return self._language_routes


class ResolveRoute(_RouteSection):
    """The AI answers the question itself, then hangs up."""

    kind: Literal[RouteKind.RESOLVE]
    answer: Text

    def target(self) -> str:
        return f'AI answers "{_shorten(self.answer)}"'


class StudioRoute(_RouteSection):
    """Back into a Studio flow: `resume` continues the execution that handed us the call, `fresh` starts one."""

    kind: Literal[RouteKind.STUDIO]
    flow_sid: FlowSid
    mode: Literal["resume", "fresh"]
    node: WidgetName | None = None

    @model_validator(mode="after")
    def _resume_needs_node(self) -> StudioRoute:
        if self.mode == "resume" and self.node is None:
            raise _config_problem(("node",), 'missing (required when mode = "resume")')
        return self

    @property
    def studio_node(self) -> str:
        return studio_node_key(self.flow_sid, self.node)

    def target(self) -> str:
        return f"{self.studio_node} ({self.mode})"


class FlexRoute(_RouteSection):
    """Enqueue the live call into Flex through a TaskRouter workflow."""

    kind: Literal[RouteKind.FLEX]
    workflow_sid: WorkflowSid
    priority: int = Field(0, ge=0)
    timeout: int = Field(3600, gt=0)
    attributes: dict[str, JsonValue] = {}

    @field_validator("attributes")
    @classmethod
    def _no_reserved_attributes(cls, attributes: dict[str, JsonValue]) -> dict[str, JsonValue]:
        for key in attributes:
            if key in RESERVED_TASK_ATTRIBUTES:
                raise _config_problem((key,), "reserved task attribute (the orchestrator sets it)")
        return attributes

    def target(self) -> str:
        extra = "".join(f", {key}={value}" for key, value in self.attributes.items())
        return f"{self.workflow_sid} priority {self.priority}, timeout {self.timeout} s{extra}"


class VoicemailRoute(_RouteSection):
    kind: Literal[RouteKind.VOICEMAIL]
    max_length: int = Field(120, gt=0, le=14400)  # Twilio's <Record maxLength> limit is 4 hours
    prompt: Text | None = None

    def target(self) -> str:
        return f"up to {self.max_length} s"


class SipRoute(_RouteSection):
    kind: Literal[RouteKind.SIP]
    uri: SipUri

    def target(self) -> str:
        return self.uri


Route = Annotated[
    ResolveRoute | StudioRoute | FlexRoute | VoicemailRoute | SipRoute, Field(discriminator="kind")
]
ROUTE_KINDS = tuple(RouteKind)


class Intent(_Section):
    name: Name
    description: Text
    examples: list[Text] = []
    route: Name
    # Never ends in voicemail or a hang-up: any failure sends the call to its route or the human route.
    urgent: bool = False
    keys: list[KeypadKey] = []  # keypad keys that choose this intent, as on the old menu


class CapturedField(_Section):
    """A detail the AI collects from the caller before routing.

    `required_for`: routes that cannot work without it (hard: a Studio node reads it); a call that cannot
    give it goes to the human route. `wanted_for`: routes where a person can ask for it (soft): it is
    asked for, but the call goes on without it, named as missing.
    """

    name: Name
    type: Literal["text", "phone", "email", "date", "choice"]
    description: Text | None = None
    choices: list[Text] | None = None
    required_for: list[Name] = []  # route names
    wanted_for: list[Name] = []  # route names
    caller_id: bool = False  # a phone field pre-filled from the caller's number, to be confirmed
    # The agent reads a spoken value back and the caller confirms it; unconfirmed values are listed as such.
    read_back: bool = False
    question: Text | None = None  # how the offline engine asks for it (default: worded from the name and type)

    @model_validator(mode="after")
    def _choices_iff_choice_type(self) -> CapturedField:
        if self.type == "choice" and self.choices is None:
            raise _config_problem(("choices",), 'missing (required when type = "choice")')
        if self.type == "choice" and not self.choices:
            raise _config_problem(("choices",), "must list at least one choice")
        if self.type != "choice" and self.choices is not None:
            raise _config_problem(("choices",), f'only allowed when type = "choice" (type is {self.type!r})')
        if self.caller_id and self.type != "phone":
            raise _config_problem(("caller_id",), f'only allowed when type = "phone" (type is {self.type!r})')
        for position, route in enumerate(self.wanted_for):
            if route in self.required_for:
                raise _config_problem(
                    ("wanted_for", position), f"route {route!r} is also in required_for (a field is one or the other)"
                )
        return self


class LanguageLines(_Section):
    """A language's own lines; any line left out is the default [lines] one."""

    greeting: Text | None = None
    handoff: Text | None = None
    clarify: Text | None = None
    ask_details: Text | None = None
    ask_intent: Text | None = None
    not_heard: Text | None = None
    taking_over: Text | None = None
    keypad_thanks: Text | None = None
    keypad_invalid: Text | None = None


class LanguageSettings(_Section):
    """The languages the front desk answers in."""

    default: LanguageCode = "en-US"
    supported: list[LanguageCode] = ["en-US"]
    lines: Annotated[dict[LanguageCode, LanguageLines], BeforeValidator(_merge_same_language)] = {}
    by_caller_prefix: dict[CallerPrefix, LanguageCode] = {}  # "+52" -> "es-MX": the greeting's language

    @model_validator(mode="after")
    def _only_supported_languages(self) -> LanguageSettings:
        first_index: dict[str, int] = {}
        for index, code in enumerate(self.supported):
            if code in first_index:
                raise _config_problem(
                    ("supported", index), f"duplicate language {code!r} (first at supported[{first_index[code]}])"
                )
            first_index[code] = index
        listed = ", ".join(self.supported)
        if self.default not in first_index:
            raise _config_problem(("default",), f"{self.default!r} is not in supported ({listed})")
        for code in self.lines:
            if code not in first_index:
                raise _config_problem(("lines", code), f"language {code!r} is not in supported ({listed})")
        for prefix, code in self.by_caller_prefix.items():
            if code not in first_index:
                raise _config_problem(("by_caller_prefix", prefix), f"language {code!r} is not in supported ({listed})")
        return self

    def match(self, code: str | None) -> str | None:
        """See RoutingConfig.match_language."""
        shape = _LANGUAGE_TAG_SHAPE.fullmatch(code.strip()) if isinstance(code, str) else None
        if shape is None:
            return None
        exact = _LANGUAGE_CODE.fullmatch(shape[0])
        if exact and _canonical_language(exact) in self.supported:
            return _canonical_language(exact)
        primary = shape[1].lower()
        if primary in self.supported:  # "es" is supported and the caller said "es-MX"
            return primary
        return next((known for known in self.supported if known.split("-")[0] == primary), None)


# The TOML source of the load in progress; settings_customise_sources can only see the class.
_toml_source: contextvars.ContextVar[TomlConfigSettingsSource | None] = contextvars.ContextVar(
    "routing_config_toml_source", default=None
)


def is_config_override(variable: str) -> bool:
    """`ORCHESTRATOR_<KEY>__<KEY>…` names a config key. A bare `ORCHESTRATOR_<NAME>` never does: those
    names are the server settings' (`ORCHESTRATOR_ENGINE` is the engine choice, not the [engine] table),
    so a config key and a server setting can never read the same variable."""
    return variable.upper().startswith(ENV_PREFIX) and ENV_NESTED_DELIMITER in variable[len(ENV_PREFIX) :]


class _NestedKeyEnvSource(EnvSettingsSource):
    """The environment as the routing config reads it: config overrides only (`is_config_override`)."""

    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        super().__init__(settings_cls)
        self.env_vars = {name: value for name, value in self.env_vars.items() if is_config_override(name)}


class RoutingConfig(BaseSettings):
    """The whole routing configuration. Load it with `load_routing_config`."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_NESTED_DELIMITER,
        extra="forbid",
        frozen=True,
    )

    twilio: TwilioSettings = TwilioSettings()
    company: CompanySettings = CompanySettings()
    triage: TriageSettings
    lines: Lines = Lines()
    languages: LanguageSettings = LanguageSettings()
    engine: EngineSettings = EngineSettings()
    rollout: RolloutSettings = RolloutSettings()
    routes: dict[Name, Route]
    intents: list[Intent] = []
    fields: list[CapturedField] = []

    _source_path: Path | None = PrivateAttr(default=None)
    # The default lines with each language's own over them, built once at load time.
    _language_lines: dict[str, Lines] = PrivateAttr(default_factory=dict)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Earlier sources win: environment overrides the TOML file. No .env or secrets files.
        toml = _toml_source.get()
        overrides = _NestedKeyEnvSource(settings_cls)
        return (init_settings, overrides, toml) if toml is not None else (init_settings, overrides)

    @property
    def config_source_path(self) -> Path | None:
        """The TOML file this config was loaded from (None when built in code)."""
        return self._source_path

    @model_validator(mode="after")
    def _check_references(self) -> RoutingConfig:
        problems = list(self._reference_problems())
        if problems:
            at, reason = problems[0]
            raise _config_problem(at, reason, more=len(problems) - 1)
        self._language_lines = {
            code: self.lines.model_copy(update=own.model_dump(exclude_none=True))
            for code, own in self.languages.lines.items()
        }
        return self

    def _reference_problems(self) -> Iterator[tuple[KeyPath, str]]:
        defined = ", ".join(sorted(self.routes))

        def unknown(name: str) -> str:
            return f"unknown route {name!r} (defined: {defined})"

        for key in ("fallback_route", "human_route"):
            name = getattr(self.triage, key)
            if name not in self.routes:
                yield ("triage", key), unknown(name)
        if self.rollout.legacy_route is not None and self.rollout.legacy_route not in self.routes:
            yield ("rollout", "legacy_route"), unknown(self.rollout.legacy_route)
        human = self.routes.get(self.triage.human_route)
        if human is not None and human.kind not in HUMAN_ROUTE_KINDS:
            yield ("triage", "human_route"), (
                f"route {self.triage.human_route!r} is of kind {human.kind.value!r};"
                f" the human route must be of kind {', '.join(HUMAN_ROUTE_KINDS[:-1])} or {HUMAN_ROUTE_KINDS[-1]}"
            )

        first_index: dict[str, int] = {}
        key_owner: dict[str, str] = {}
        for index, intent in enumerate(self.intents):
            if intent.name in first_index:
                yield ("intents", index, "name"), (
                    f"duplicate intent {intent.name!r} (first at intents[{first_index[intent.name]}])"
                )
            first_index.setdefault(intent.name, index)
            if intent.route not in self.routes:
                yield ("intents", index, "route"), unknown(intent.route)
            elif intent.urgent and self.routes[intent.route].kind == "voicemail":
                yield ("intents", index, "route"), (
                    f"route {intent.route!r} is of kind 'voicemail'; an urgent intent never ends in voicemail"
                )
            for position, key in enumerate(intent.keys):
                if key in key_owner:
                    yield ("intents", index, "keys", position), f"key {key!r} is already on intent {key_owner[key]!r}"
                key_owner.setdefault(key, intent.name)
        urgent = [intent.name for intent in self.intents if intent.urgent]
        if urgent and human is not None and human.kind not in PERSON_ROUTE_KINDS:
            yield ("triage", "human_route"), (
                f"route {self.triage.human_route!r} is of kind '{human.kind}'; with urgent intents"
                f" ({', '.join(urgent)}) the human route must reach a person (flex or sip)"
            )

        first_index = {}
        for index, field in enumerate(self.fields):
            if field.name in first_index:
                yield ("fields", index, "name"), (
                    f"duplicate field {field.name!r} (first at fields[{first_index[field.name]}])"
                )
            first_index.setdefault(field.name, index)
            if field.name == CONFIRMED_ARGUMENT:
                yield ("fields", index, "name"), f"{field.name!r} is reserved (the agent names confirmed fields with it)"
            for key in ("required_for", "wanted_for"):
                for position, route in enumerate(getattr(field, key)):
                    if route not in self.routes:
                        yield ("fields", index, key, position), unknown(route)
            if field.caller_id and field.name != self.caller_id_field:
                yield ("fields", index, "caller_id"), (
                    f"field {self.caller_id_field!r} already takes the caller's number"
                )

        supported = ", ".join(self.languages.supported)
        for name, route in self.routes.items():
            for code in route.by_language:
                if code not in self.languages.supported:
                    yield ("routes", name, "by_language", code), (
                        f"language {code!r} is not in languages.supported ({supported})"
                    )

    @property
    def multilingual(self) -> bool:
        """Whether the front desk answers in more than one language."""
        return len(self.languages.supported) > 1

    def match_language(self, code: str | None) -> str | None:
        """The supported language a caller's language code means, or None: an exact match (any case), else
        one with the same primary subtag ("es-MX" -> "es-US"), the bare subtag first ("es") and otherwise the
        first listed. Junk ("", None, "klingon!") gives None."""
        return self.languages.match(code)

    def lines_for(self, language: str | None) -> Lines:
        """The default [lines] with the language's own over them; the default lines for None or a language
        that is not supported."""
        matched = self.match_language(language)
        return self._language_lines.get(matched, self.lines) if matched else self.lines

    def route_for(self, name: str, language: str | None) -> Route:
        """The route `name` with the language's override applied, if it has one; KeyError for an unknown name."""
        route = self.routes[name]
        matched = self.match_language(language)
        return route.language_routes.get(matched, route) if matched else route

    def language_for_caller(self, caller: str | None) -> str | None:
        """The language of the longest `by_caller_prefix` the caller's number starts with, else None."""
        if not isinstance(caller, str):
            return None
        number = re.sub(r"[\s().-]", "", caller)
        prefixes = [prefix for prefix in self.languages.by_caller_prefix if number.startswith(prefix)]
        return self.languages.by_caller_prefix[max(prefixes, key=len)] if prefixes else None

    @property
    def legacy_route(self) -> str:
        """Where a legacy-arm call to our own number goes: `rollout.legacy_route`, else the fallback route."""
        return self.rollout.legacy_route or self.triage.fallback_route

    def intent_model_path(self) -> Path | None:
        """`engine.intent_model`, relative to the config file it was written in."""
        path = self.engine.intent_model
        if path is None:
            return None
        path = path.expanduser()
        if not path.is_absolute() and self._source_path is not None:
            path = self._source_path.parent / path
        return path

    def required_fields(self, route: str) -> frozenset[str]:
        """The route's hard fields: it cannot work without them."""
        return frozenset(field.name for field in self.fields if route in field.required_for)

    def wanted_fields(self, route: str) -> frozenset[str]:
        """The route's soft fields: asked for, but a person on the route can ask for them too."""
        return frozenset(field.name for field in self.fields if route in field.wanted_for)

    @property
    def keyable_fields(self) -> frozenset[str]:
        """Fields the caller may type on the keypad: phone numbers and dates."""
        return frozenset(field.name for field in self.fields if field.type in KEYABLE_FIELD_TYPES)

    @property
    def caller_id_field(self) -> str | None:
        """The phone field pre-filled from the caller's number (`caller_id = true`), if any."""
        return next((field.name for field in self.fields if field.caller_id), None)

    def triage_policy(self) -> TriagePolicy:
        """The routing rules as the machine sees them."""
        return TriagePolicy(
            intents={intent.name: intent.route for intent in self.intents},
            routes={
                name: RouteRule(
                    name=name,
                    kind=route.kind,
                    required_fields=self.required_fields(name),
                    wanted_fields=self.wanted_fields(name),
                    studio_node=route.studio_node if isinstance(route, StudioRoute) else None,
                    studio_node_by_language={
                        language: routed.studio_node
                        for language, routed in route.language_routes.items()
                        if isinstance(routed, StudioRoute)
                    },
                )
                for name, route in self.routes.items()
            },
            fallback_route=self.triage.fallback_route,
            human_route=self.triage.human_route,
            min_confidence=self.triage.min_confidence,
            urgent_min_confidence=self.triage.urgent_min_confidence,
            max_clarifications=self.triage.max_clarifications,
            budget_s=self.triage.budget_seconds,
            details_budget_s=self.triage.details_seconds,
            handoff_line_timeout_s=self.triage.handoff_line_timeout_seconds,
            supported_languages=frozenset(self.languages.supported) if self.multilingual else frozenset(),
            urgent_intents=frozenset(intent.name for intent in self.intents if intent.urgent),
            keys={key: intent.name for intent in self.intents for key in intent.keys},
            caller_id_field=self.caller_id_field,
            keyable_fields=self.keyable_fields,
            keypad_timeout_s=self.triage.keypad_timeout_seconds,
            read_back_fields=frozenset(field.name for field in self.fields if field.read_back),
        )


# --- Loading -----------------------------------------------------------------------------------


def load_routing_config(path: str | os.PathLike[str]) -> RoutingConfig:
    """Load and validate the routing config from `path` plus ORCHESTRATOR_* overrides, or raise ConfigError."""
    source = os.fspath(path)
    file = Path(source).expanduser()
    if not file.exists():
        raise ConfigError(source, None, "file not found")
    if not file.is_file():
        raise ConfigError(source, None, "not a file")
    try:
        toml = TomlConfigSettingsSource(RoutingConfig, toml_file=file)
    except tomllib.TOMLDecodeError as exc:
        raise _toml_syntax_error(source, exc) from None
    except UnicodeDecodeError:
        raise ConfigError(source, None, "invalid TOML (not UTF-8 text)") from None
    except OSError as exc:
        raise ConfigError(source, None, f"cannot read ({exc.strerror or exc})") from None

    overrides = _env_overrides(os.environ)
    token = _toml_source.set(toml)
    try:
        config = RoutingConfig()
    except ValidationError as exc:
        raise _validation_error(source, toml.toml_data, overrides, os.environ, exc) from None
    except SettingsError as exc:  # an override that is not valid JSON for a table or list
        raise _settings_error(overrides, os.environ, exc) from None
    finally:
        _toml_source.reset(token)
    config._source_path = file
    return config


def _toml_syntax_error(source: str, exc: tomllib.TOMLDecodeError) -> ConfigError:
    # tomllib (3.11) only carries the position in its message: "Invalid value (at line 3, column 9)".
    message = str(exc)
    position = re.search(r"\s*\(at line (\d+), column (\d+)\)$", message)
    if position is None:
        return ConfigError(source, None, f"invalid TOML ({message})")
    detail = f"{message[: position.start()]} at column {position[2]}"
    return ConfigError(source, f"line {position[1]}", f"invalid TOML ({detail})")


def _env_overrides(environ: Mapping[str, str]) -> dict[tuple[str, ...], str]:
    """Key path -> name of each ORCHESTRATOR_* variable that overrides a config key."""
    overrides = {}
    for name in environ:
        if is_config_override(name):
            keys = tuple(_blame_key(key) for key in name[len(ENV_PREFIX) :].split(ENV_NESTED_DELIMITER))
            if keys[0] in RoutingConfig.model_fields:
                overrides[keys] = name
    return overrides


def _blame_key(key: str | int) -> str:
    # Variable names are matched case-insensitively, and "ES_US" in a name means the language "es-US".
    return str(key).lower().replace("-", "_")


def _blamed_override(
    keys: KeyPath,
    toml_data: Mapping[str, Any],
    overrides: dict[tuple[str, ...], str],
    environ: Mapping[str, str],
) -> str | None:
    """The override responsible for the problem at `keys`, or None when the file is."""
    lowered = tuple(_blame_key(key) for key in keys)
    # An override that set this value, directly or as part of a JSON value.
    for path in sorted(overrides, key=len, reverse=True):
        if lowered[: len(path)] == path:
            value = _json_or_text(environ.get(overrides[path], ""))
            if _override_decides(value, keys[len(path) :]) or not _contains(toml_data, keys):
                return overrides[path]
    # Overriding a route's kind changes which keys the rest of its table may have.
    if len(keys) > 2 and keys[0] == "routes":
        kind_override = overrides.get(lowered[:2] + ("kind",))
        if kind_override:
            return kind_override
    if _contains(toml_data, keys):
        return None
    # The key is nowhere. If its table is not in the file either, an override created that table
    # (e.g. a misspelt route name in a variable). Top-level sections are left to the file.
    first_missing = next(depth for depth in range(len(keys) + 1) if not _contains(toml_data, keys[:depth]))
    if first_missing >= 2:
        for path, name in overrides.items():
            if path[:first_missing] == lowered[:first_missing]:
                return name
    return None


def _json_or_text(value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        return value


def _looks_like_broken_json(value: str) -> bool:
    return value.lstrip()[:1] in ("{", "[") and isinstance(_json_or_text(value), str)


def _override_decides(value: Any, keys: KeyPath) -> bool:
    """Whether an override's value decides what is at `keys` below it, rather than the file."""
    for key in keys:
        if not isinstance(value, Mapping):
            return True  # lists and scalars replace the file's value whole
        if key not in value:
            return False  # tables are merged: this key comes from the file
        value = value[key]
    return True


def _contains(data: Any, keys: KeyPath) -> bool:
    for key in keys:
        if isinstance(data, Mapping) and key in data:
            data = data[key]
        elif isinstance(data, list) and isinstance(key, int) and 0 <= key < len(data):
            data = data[key]
        else:
            return False
    return True


def _validation_error(
    source: str,
    toml_data: Mapping[str, Any],
    overrides: dict[tuple[str, ...], str],
    environ: Mapping[str, str],
    exc: ValidationError,
) -> ConfigError:
    errors = exc.errors()
    first = errors[0]
    keys, problem = _explain(first)
    more = len(errors) - 1 + int((first.get("ctx") or {}).get("more", 0))
    if more:
        problem += f" (+{more} more)"
    env_variable = _blamed_override(keys, toml_data, overrides, environ)
    return ConfigError(f"${env_variable}" if env_variable else source, format_key_path(keys) or None, problem)


def _explain(error: ErrorDetails) -> tuple[KeyPath, str]:
    """The key path in the config and a readable reason for one pydantic error."""
    loc: KeyPath = tuple(error["loc"])
    # A discriminated union puts the tag in the location: routes.billing.flex.workflow_sid.
    if len(loc) >= 3 and loc[0] == "routes" and loc[2] in ROUTE_KINDS:
        loc = loc[:2] + loc[3:]
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind == "config_problem":
        return loc + tuple(ctx["at"]), ctx["reason"]
    if kind == "missing":
        return loc, "missing"
    if kind == "extra_forbidden":
        return loc, "unknown key"
    if kind == "union_tag_not_found":
        return loc + ("kind",), f"missing (one of: {', '.join(ROUTE_KINDS)})"
    if kind == "union_tag_invalid":
        return loc + ("kind",), f"unknown route kind {ctx.get('tag')!r} (one of: {', '.join(ROUTE_KINDS)})"

    reason = error["msg"].removeprefix("Value error, ")
    reason = reason[:1].lower() + reason[1:]
    value = error.get("input")
    if isinstance(value, (str, int, float, bool)):
        reason += f" (got {_shorten(repr(value), 60)})"
    if loc and loc[-1] == "[key]":  # a bad table key, e.g. a route name
        return loc[:-1], f"invalid name: {reason}"
    return loc, reason


def _settings_error(
    overrides: dict[tuple[str, ...], str], environ: Mapping[str, str], exc: SettingsError
) -> ConfigError:
    # pydantic-settings names only the top-level field: 'error parsing value for field "rollout" from source ...'.
    field = re.search(r'field "([^"]+)"', str(exc))
    if field:
        under = sorted((path, name) for path, name in overrides.items() if path[0] == field[1])
        # The culprit is a table or list whose JSON does not parse; a plain text value parses as text.
        broken = [(path, name) for path, name in under if _looks_like_broken_json(environ.get(name, ""))]
        for path, name in broken or under:
            return ConfigError(f"${name}", format_key_path(path), "invalid JSON value")
    return ConfigError("environment", None, str(exc))


# --- Summary -----------------------------------------------------------------------------------


def describe_config(config: RoutingConfig, width: int = 110) -> str:
    """A short plain-text summary: intents -> routes -> targets, fields and triage settings."""
    # No markup: config text such as "[urgent]" must print as written.
    console = Console(width=width, color_system=None, markup=False, highlight=False, emoji=False)
    source = str(config.config_source_path) if config.config_source_path else "(built in code)"
    company = f" for {config.company.name}" if config.company.name else ""

    routes = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    routes.add_column("Intent", no_wrap=True)
    routes.add_column("Route", no_wrap=True)
    routes.add_column("Target", overflow="fold")

    def add_row(label: str, name: str) -> None:
        route = config.routes[name]
        target = f"{route.kind}: {route.target()}"
        needs = config.required_fields(name)
        if needs:
            target += f"\nneeds {', '.join(sorted(needs))}"
        wants = config.wanted_fields(name)
        if wants:
            target += f"\nasks for {', '.join(sorted(wants))} (goes on without)"
        routes.add_row(label, name, target)
        for code, language_route in route.language_routes.items():
            routes.add_row("", f"{name} [{code}]", f"{language_route.kind}: {language_route.target()}")

    for intent in config.intents:
        add_row(intent.name, intent.route)
    add_row("(anything else)", config.triage.fallback_route)
    add_row("(human fallback)", config.triage.human_route)
    used = {intent.route for intent in config.intents} | {config.triage.fallback_route, config.triage.human_route}
    for name in config.routes:
        if name not in used:
            add_row("(unused)", name)

    fields = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("Field", "Type", "Required for", "Wanted for"):
        fields.add_column(column, overflow="fold")
    for field in config.fields:
        kind = f"choice of {', '.join(field.choices or ())}" if field.type == "choice" else field.type
        if field.caller_id:
            kind += " (caller ID, to confirm)"
        if field.type in KEYABLE_FIELD_TYPES:
            kind += " (keypad)"
        if field.read_back:
            kind += " (read back)"
        fields.add_row(field.name, kind, ", ".join(field.required_for) or "-", ", ".join(field.wanted_for) or "-")

    triage = config.triage
    with console.capture() as capture:
        console.print(f"Routing config {source}{company}")
        if config.twilio.account_sid:
            console.print(f"Twilio account {config.twilio.account_sid}")
        console.print(routes)
        urgent = [intent.name for intent in config.intents if intent.urgent]
        if urgent:
            console.print(
                f"Urgent: {', '.join(urgent)} (never voicemail or a hang-up: their route or {triage.human_route})"
            )
        keys = [f"{key} → {intent.name}" for intent in config.intents for key in intent.keys]
        if keys:
            console.print(f"Keypad: {', '.join(keys)}")
        languages = config.languages
        if languages != LanguageSettings():  # a config without [languages] prints as before
            parts = [f"default {languages.default}", f"supported {', '.join(languages.supported)}"]
            if languages.lines:
                parts.append(f"own lines for {', '.join(languages.lines)}")
            if languages.by_caller_prefix:
                by_prefix = ", ".join(f"{prefix} → {code}" for prefix, code in languages.by_caller_prefix.items())
                parts.append(f"by caller number {by_prefix}")
            console.print(f"Languages: {'; '.join(parts)}")
        if config.fields:
            console.print(fields)
        else:
            console.print("No fields to capture.\n")
        urgent_bar = any(intent.urgent for intent in config.intents) and (
            triage.urgent_min_confidence > triage.min_confidence
        )
        console.print(
            f"Triage: budget {triage.budget_seconds:g} s"
            + (f" (+{triage.details_seconds:g} s while details are asked)" if triage.details_seconds else "")
            + f", min confidence {triage.min_confidence:g}"
            + (f" ({triage.urgent_min_confidence:g} for an urgent intent, else its need is clarified once)"
               if urgent_bar else "")
            + f", up to {triage.max_clarifications} clarifications,"
            f" handoff line timeout {triage.handoff_line_timeout_seconds:g} s"
        )
        console.print(
            "Policy: a field is asked for at most twice; without a required field the call goes to"
            f" {triage.human_route}, without a wanted one it goes on to its route; a need that matches no"
            f" intent is clarified once, then goes to {triage.fallback_route}"
        )
        engine = config.engine
        model = engine.intent_model or "fit on the intents above at start"
        console.print(
            f"Engine: failover {engine.failover}; offline engine up to {engine.offline_max_calls} calls,"
            f" intent model {model}; phone numbers read as {config.company.country}"
        )
        rollout = config.rollout
        if rollout != RolloutSettings():  # a config without [rollout] prints as before
            lists = ""
            if rollout.allow or rollout.deny:
                lists = f"; {len(rollout.allow)} numbers always AI, {len(rollout.deny)} always legacy"
            brake = rollout.brake
            brake_text = (
                f"brake at over {brake.max_failure_rate:.0%} failures of the last {brake.window_calls} AI calls"
                f" (at least {brake.min_calls})" if brake.enabled else "brake off"
            )
            console.print(
                f"Rollout: {rollout.percent:g} % of callers to the AI{lists}; legacy calls go to"
                f" {config.legacy_route}; {brake_text} (the live setting in the store overrides these)"
            )
    # Rich pads every table line to full width; trailing blanks only get in the way of a summary.
    return "\n".join(line.rstrip() for line in capture.get().splitlines()) + "\n"
