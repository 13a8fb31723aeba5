"""Settings of the running server: accounts, URLs, engine, storage. The routing itself is `routing.py`.

Read from the environment: Twilio's and OpenAI's standard variables (`TWILIO_ACCOUNT_SID`,
`TWILIO_AUTH_TOKEN`, `OPENAI_API_KEY`) and the project's own, prefixed `ORCHESTRATOR_` (for example
`ORCHESTRATOR_PUBLIC_URL`, `ORCHESTRATOR_REALTIME_URL`, `ORCHESTRATOR_CONFIG`). Every default works on a
laptop with no account at all.
"""
from __future__ import annotations

import re
import secrets
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from pydantic import AliasChoices, Field, FilePath, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from orchestrator.config.routing import ENV_PREFIX, ConfigError

# The example routing shipped in the repository: the server starts on it when no config is given.
DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "examples" / "acme_plumbing.toml"
DEV_AUTH_TOKEN_FILE = "dev-twilio-auth-token"

EngineChoice = Literal["auto", "realtime", "offline", "fake"]
# A URL query parameter that carries a credential (`?password=` on a Redis URL, `?api-key=` on Azure's).
_CREDENTIAL_PARAMETER = re.compile(r"(?i)password|api[-_]?key|token|secret")


class ServerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    # Twilio signs the URL it requested, i.e. the public one: signatures are checked against this base.
    # None: the address the server listens on (good for local runs only).
    public_url: str | None = None
    config: Path = DEFAULT_CONFIG
    data_dir: Path = Path("var")
    # Where call records live: empty for `calls.sqlite3` in data_dir, a SQLite file path, or a
    # redis://, rediss:// or unix:// URL for a Redis that several instances share (see `store/location.py`).
    store: str = ""
    # Seconds one store operation may take (a lock wait on SQLite, a round trip to Redis) before the call
    # gets its fallback instead: a store that hangs must not hang the call's TwiML.
    store_timeout_seconds: float = Field(2.0, gt=0, le=10)
    engine: EngineChoice = "auto"

    realtime_url: str = "wss://api.openai.com/v1/realtime"
    # Current models (no announced shutdown; `model_shutdowns.py` lists the ones that have one). Empty: the URL
    # names the model (Azure deployments).
    realtime_model: str | None = "gpt-realtime-1.5"
    realtime_voice: str = "marin"
    # JSON object of extra handshake headers, e.g. {"api-key": "…"} for Azure OpenAI.
    realtime_headers: dict[str, str] = {}
    # A PEM file of CA certificates trusted beside the system's (SSL_CERT_FILE) for a private wss:// endpoint.
    realtime_ca_file: FilePath | None = None
    transcription_model: str | None = "gpt-live-transcribe"
    # The share of one core a worker uses before it sends caller audio two 20 ms frames per append instead of
    # each at once (fewer messages, 20 ms more latency on every other frame). 0: always two.
    caller_audio_batch_cpu: float = Field(0.4, ge=0)
    # Seconds between pings on an idle or busy Realtime socket; a peer that leaves one unanswered until the
    # next is lost (the call fails over within twice this). 0: no pings.
    realtime_keepalive_seconds: float = Field(15.0, ge=0)

    twilio_account_sid: str | None = Field(None, validation_alias=AliasChoices("TWILIO_ACCOUNT_SID"))
    twilio_auth_token: SecretStr | None = Field(None, validation_alias=AliasChoices("TWILIO_AUTH_TOKEN"))
    openai_api_key: SecretStr | None = Field(None, validation_alias=AliasChoices("OPENAI_API_KEY"))
    # Read from the variables the `openai` package reads, sent as it sends them.
    openai_org_id: str | None = Field(None, validation_alias=AliasChoices("OPENAI_ORG_ID"))
    openai_project_id: str | None = Field(None, validation_alias=AliasChoices("OPENAI_PROJECT_ID"))
    # A bearer token a Studio flow sends to read handoff data (GET /calls/{CallSid}/handoff).
    handoff_token: SecretStr | None = None
    # Opens /ops (bearer, or HTTP Basic with this as the password) and posts CSAT scores (bearer).
    ops_token: SecretStr | None = None

    # Development only: accept unsigned requests. Announced loudly at start.
    insecure_skip_signature_check: bool = False

    # Seconds the action URL waits for the call's Realtime socket to close before answering anyway.
    after_wait_seconds: float = Field(5.0, gt=0)
    # Seconds Twilio has to send `start` after opening the stream.
    stream_start_timeout_seconds: float = Field(10.0, gt=0)
    # A Media Stream with no message for this long while the call is up is a dead peer (Twilio sends media
    # every 20 ms): the call is moved to its route over the REST API. 0: never.
    twilio_silence_seconds: float = Field(5.0, ge=0)
    # Where Twilio's REST API is reached (None: https://api.twilio.com, as twilio-python says); a relay or a test double.
    twilio_api_url: str | None = None
    retention_days: float = Field(30.0, gt=0)
    max_concurrent_calls: int = Field(500, gt=0)
    graceful_shutdown_seconds: float = Field(10.0, ge=0)
    # `serve --workers N`: processes sharing the port; they meet in the call store.
    workers: int = Field(1, ge=1, le=64)
    # Linux SCHED_BATCH for the serving processes: a wake-up for one media frame then does not preempt
    # whatever runs, so frames batch per wake-up. Off by default: its benefit did not reproduce (README, Scale).
    batch_scheduling: bool = False

    @field_validator("public_url")
    @classmethod
    def _http_base(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL (the address Twilio reaches this server at)")
        if parts.query or parts.fragment:
            raise ValueError("must not carry a query string or fragment")
        return urlunsplit(parts._replace(path=parts.path.rstrip("/")))

    @field_validator("twilio_api_url")
    @classmethod
    def _http_origin(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.path.strip("/") or parts.query:
            raise ValueError("must be an http:// or https:// origin (scheme, host and port only)")
        return urlunsplit((parts.scheme, parts.netloc, "", "", ""))

    @field_validator("realtime_url")
    @classmethod
    def _websocket_url(cls, value: str) -> str:
        if urlsplit(value).scheme not in ("ws", "wss"):
            raise ValueError("must be a ws:// or wss:// URL")
        return value

    @field_validator("realtime_model", "transcription_model", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value

    def secret_values(self) -> list[str]:
        """What the logs must never show: the tokens and keys, the handshake headers' values, and the
        passwords or keys in the store's and the Realtime URLs."""
        tokens = (self.twilio_auth_token, self.openai_api_key, self.handoff_token, self.ops_token)
        values = [token.get_secret_value() for token in tokens if token is not None]
        values += self.realtime_headers.values()
        for url in (self.store, self.realtime_url):
            parts = urlsplit(url)
            values += [parts.password or ""]
            values += [value for name, value in parse_qsl(parts.query) if _CREDENTIAL_PARAMETER.search(name)]
        return [value for value in values if value]


def load_server_settings(**overrides: object) -> ServerSettings:
    """Settings from the environment plus explicit overrides (CLI flags); ConfigError on a bad value."""
    try:
        return ServerSettings(**{key: value for key, value in overrides.items() if value is not None})
    except ValidationError as exc:
        error = exc.errors()[0]
        name = str(error["loc"][0]) if error["loc"] else "settings"
        variable = name if name.isupper() else ENV_PREFIX + name.upper()
        problem = error["msg"].removeprefix("Value error, ")
        raise ConfigError(f"${variable}", None, problem) from None


def development_auth_token(data_dir: Path) -> str:
    """A local stand-in for TWILIO_AUTH_TOKEN, kept in the data folder so `orchestrator call` can sign
    with it. Real Twilio requests fail the check until the real token is configured, which is the point."""
    path = data_dir / DEV_AUTH_TOKEN_FILE
    if path.is_file():
        token = path.read_text(encoding="utf-8").strip()
        if token:
            return token
    data_dir.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(16)
    path.touch(mode=0o600)
    path.write_text(token + "\n", encoding="utf-8")
    return token


def media_stream_url(public_url: str) -> str:
    """The `<Stream url>`: the public base with a WebSocket scheme and no query string."""
    parts = urlsplit(public_url)
    scheme = "wss" if parts.scheme == "https" else "ws"
    return urlunsplit(parts._replace(scheme=scheme, path=parts.path + "/media"))
