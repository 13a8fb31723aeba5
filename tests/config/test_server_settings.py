"""Server settings: accounts and URLs from the environment, with one-line errors; the composition's choices."""
from __future__ import annotations

import stat

import pytest

from orchestrator.composition import choose_engine, realtime_settings
from orchestrator.config.routing import ConfigError
from orchestrator.config.server_settings import (
    DEV_AUTH_TOKEN_FILE,
    development_auth_token,
    load_server_settings,
    media_stream_url,
)


@pytest.fixture(autouse=True)
def no_accounts(monkeypatch):
    for name in ("OPENAI_API_KEY", "TWILIO_AUTH_TOKEN", "TWILIO_ACCOUNT_SID", "ORCHESTRATOR_PUBLIC_URL",
                 "ORCHESTRATOR_ENGINE", "ORCHESTRATOR_REALTIME_URL", "ORCHESTRATOR_REALTIME_HEADERS"):
        monkeypatch.delenv(name, raising=False)


def test_defaults_need_no_account_and_choose_the_offline_engine():
    settings = load_server_settings()
    assert settings.twilio_auth_token is None and settings.openai_api_key is None
    assert settings.public_url is None and settings.config.name == "acme_plumbing.toml"
    assert choose_engine(settings) == "offline"
    assert settings.insecure_skip_signature_check is False


def test_standard_and_prefixed_variables_are_read(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-x")
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "tok")
    monkeypatch.setenv("ORCHESTRATOR_PUBLIC_URL", "https://desk.example.com/")
    monkeypatch.setenv("ORCHESTRATOR_REALTIME_URL", "wss://proxy.example.com/v1/realtime")
    monkeypatch.setenv("ORCHESTRATOR_REALTIME_HEADERS", '{"api-key": "azure"}')
    monkeypatch.setenv("ORCHESTRATOR_REALTIME_MODEL", "")
    settings = load_server_settings()
    assert settings.openai_api_key.get_secret_value() == "sk-x"
    assert settings.twilio_auth_token.get_secret_value() == "tok"
    assert settings.public_url == "https://desk.example.com"
    assert choose_engine(settings) == "realtime"
    realtime = realtime_settings(settings)
    assert realtime.endpoint() == "wss://proxy.example.com/v1/realtime"  # no model: the URL names it
    assert realtime.extra_headers == {"api-key": "azure"}


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("ORCHESTRATOR_PUBLIC_URL", "ftp://desk", "$ORCHESTRATOR_PUBLIC_URL: must be an http:// or https:// URL"),
        ("ORCHESTRATOR_PUBLIC_URL", "https://desk?x=1", "$ORCHESTRATOR_PUBLIC_URL: must not carry a query string"),
        ("ORCHESTRATOR_REALTIME_URL", "https://api", "$ORCHESTRATOR_REALTIME_URL: must be a ws:// or wss:// URL"),
        ("ORCHESTRATOR_ENGINE", "magic", "$ORCHESTRATOR_ENGINE: "),
        ("ORCHESTRATOR_MAX_CONCURRENT_CALLS", "0", "$ORCHESTRATOR_MAX_CONCURRENT_CALLS: "),
    ],
)
def test_a_bad_setting_is_one_line_naming_the_variable(monkeypatch, variable, value, message):
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as raised:
        load_server_settings()
    assert str(raised.value).startswith(message) and "\n" not in str(raised.value)


def test_the_realtime_engine_without_a_key_is_a_clear_error():
    with pytest.raises(ConfigError, match=r"\$OPENAI_API_KEY: not set"):
        realtime_settings(load_server_settings(engine="realtime"))


@pytest.mark.parametrize(
    ("public", "stream"),
    [
        ("http://127.0.0.1:8080", "ws://127.0.0.1:8080/media"),
        ("https://desk.example.com", "wss://desk.example.com/media"),
        ("https://desk.example.com/frontdesk", "wss://desk.example.com/frontdesk/media"),
    ],
)
def test_the_stream_url_follows_the_public_url_and_has_no_query(public, stream):
    assert media_stream_url(public) == stream


def test_the_development_token_is_private_and_kept(tmp_path):
    first = development_auth_token(tmp_path / "var")
    path = tmp_path / "var" / DEV_AUTH_TOKEN_FILE
    assert len(first) == 32 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert development_auth_token(tmp_path / "var") == first


def test_the_realtime_leg_takes_the_openai_packages_organisation_project_and_proxy_variables(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-x")
    monkeypatch.setenv("OPENAI_ORG_ID", "org-1")
    monkeypatch.setenv("OPENAI_PROJECT_ID", "proj_1")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    for name in ("NO_PROXY", "no_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    realtime = realtime_settings(load_server_settings())
    assert ("OpenAI-Organization", "org-1") in realtime.handshake_headers()
    assert ("OpenAI-Project", "proj_1") in realtime.handshake_headers()
    assert realtime.proxy == "http://proxy.internal:3128"
    monkeypatch.setenv("NO_PROXY", "api.openai.com")
    assert realtime_settings(load_server_settings()).proxy is None
