"""Every environment variable the README documents, set at once with a valid value, is accepted by
`orchestrator serve` and `orchestrator check-config`; and no two settings read the same variable (the
server settings read `ORCHESTRATOR_<NAME>`, routing config overrides only `ORCHESTRATOR_<KEY>__<KEY>…`)."""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import httpx
import pytest
import trustme

from orchestrator.config.routing import ENV_NESTED_DELIMITER, ENV_PREFIX, RoutingConfig, load_routing_config
from orchestrator.config.server_settings import ServerSettings, load_server_settings
from tests.cli_support import BIN, clean_environment, serving

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
EXAMPLE = ROOT / "examples" / "acme_plumbing.toml"
DOCUMENTED = re.compile(r"\b(?:ORCHESTRATOR|TWILIO|OPENAI)_\w+")


def documented_variables() -> list[str]:
    return sorted(set(DOCUMENTED.findall(README.read_text(encoding="utf-8"))))


def valid_values(tmp_path: Path) -> dict[str, str]:
    """A valid value for each documented variable (a variable documented later needs one here)."""
    return {
        "OPENAI_API_KEY": "sk-documented-environment",
        "OPENAI_ORG_ID": "org-documented",
        "OPENAI_PROJECT_ID": "proj_documented",
        "TWILIO_ACCOUNT_SID": "AC" + "0" * 32,
        "TWILIO_AUTH_TOKEN": "documented-auth-token",
        "ORCHESTRATOR_BATCH_SCHEDULING": "true",
        "ORCHESTRATOR_CALLER_AUDIO_BATCH_CPU": "0.5",
        "ORCHESTRATOR_CONFIG": str(EXAMPLE),
        "ORCHESTRATOR_DATA_DIR": str(tmp_path / "data"),
        "ORCHESTRATOR_ENGINE": "fake",
        "ORCHESTRATOR_HANDOFF_TOKEN": "documented-handoff-token",
        "ORCHESTRATOR_INSECURE_SKIP_SIGNATURE_CHECK": "true",
        "ORCHESTRATOR_MAX_CONCURRENT_CALLS": "50",
        "ORCHESTRATOR_OPS_TOKEN": "documented-ops-token",
        "ORCHESTRATOR_PUBLIC_URL": "https://desk.example.com",
        "ORCHESTRATOR_REALTIME_KEEPALIVE_SECONDS": "10",
        "ORCHESTRATOR_STORE_TIMEOUT_SECONDS": "3",
        "ORCHESTRATOR_REALTIME_CA_FILE": str(tmp_path / "ca.pem"),
        "ORCHESTRATOR_REALTIME_HEADERS": '{"api-key": "documented-azure-key"}',
        "ORCHESTRATOR_REALTIME_MODEL": "",
        "ORCHESTRATOR_REALTIME_URL": "wss://acme.openai.azure.com/openai/realtime?deployment=gpt-realtime",
        "ORCHESTRATOR_REALTIME_VOICE": "marin",
        "ORCHESTRATOR_RETENTION_DAYS": "14",
        "ORCHESTRATOR_STORE": str(tmp_path / "shared" / "calls.sqlite3"),
        "ORCHESTRATOR_TRANSCRIPTION_MODEL": "gpt-live-transcribe",
        "ORCHESTRATOR_TRIAGE__BUDGET_SECONDS": "15",
        "ORCHESTRATOR_TWILIO_API_URL": "https://api.twilio.com",
        "ORCHESTRATOR_TWILIO_SILENCE_SECONDS": "3",
        "ORCHESTRATOR_WORKERS": "2",
    }


def documented_environment(tmp_path: Path) -> dict[str, str]:
    values = valid_values(tmp_path)
    missing = [name for name in documented_variables() if name not in values]
    assert not missing, f"the README documents {missing}: give each a valid value in valid_values()"
    (tmp_path / "shared").mkdir()
    trustme.CA().cert_pem.write_to_path(values["ORCHESTRATOR_REALTIME_CA_FILE"])
    return {name: values[name] for name in documented_variables()}


def test_the_readme_documents_the_variables_this_test_knows():
    assert {"ORCHESTRATOR_ENGINE", "ORCHESTRATOR_STORE", "TWILIO_AUTH_TOKEN", "OPENAI_API_KEY"} <= set(
        documented_variables())


def test_serve_and_check_config_accept_every_documented_variable(tmp_path):
    environment = documented_environment(tmp_path)

    checked = subprocess.run(
        [str(BIN / "orchestrator"), "check-config", environment["ORCHESTRATOR_CONFIG"]], cwd=tmp_path,
        env={**clean_environment(), **environment}, capture_output=True, text=True, timeout=60,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"{environment['ORCHESTRATOR_CONFIG']}: OK" in checked.stdout

    server = serving(tmp_path, environment=environment)
    base_url, printed = next(server)
    try:
        health = httpx.get(f"{base_url}/healthz", timeout=10)
        assert health.status_code == 200, health.text
        assert health.json()["engine"] == "fake"  # ORCHESTRATOR_ENGINE reached the server setting
        assert health.json()["signature_check"] is False
        assert any("2 workers sharing" in line for line in printed), printed
        assert "voice webhook: https://desk.example.com/voice/incoming" in "\n".join(printed)
    finally:
        server.close()


# --- No two settings share a variable -------------------------------------------------------------


def server_setting_variables() -> set[str]:
    names = set()
    for name, field in ServerSettings.model_fields.items():
        aliases = getattr(field.validation_alias, "choices", None)
        names |= set(aliases) if aliases else {(ENV_PREFIX + name).upper()}
    return names


def test_server_setting_names_are_never_config_override_names():
    overridable = [(ENV_PREFIX + key + ENV_NESTED_DELIMITER).upper() for key in RoutingConfig.model_fields]
    for variable in server_setting_variables():
        assert ENV_NESTED_DELIMITER not in variable
        assert not variable.startswith(tuple(overridable)), variable


@pytest.fixture
def no_orchestrator_environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.upper().startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    return monkeypatch


def test_the_routing_config_reads_no_server_setting_variable(no_orchestrator_environment):
    expected = load_routing_config(EXAMPLE)
    for variable in server_setting_variables():
        no_orchestrator_environment.setenv(variable, "{not a value any config key takes")
    assert load_routing_config(EXAMPLE) == expected


def test_a_bare_section_name_overrides_nothing(no_orchestrator_environment):
    """`ORCHESTRATOR_<KEY>` is a server setting's name (or no one's): config keys are overridden by
    `ORCHESTRATOR_<KEY>__<KEY>`, so a server setting added later can never collide with a config section."""
    expected = load_routing_config(EXAMPLE)
    for key in RoutingConfig.model_fields:
        no_orchestrator_environment.setenv(ENV_PREFIX + key.upper(), "{not json")
    assert load_routing_config(EXAMPLE) == expected
    no_orchestrator_environment.setenv("ORCHESTRATOR_ENGINE__FAILOVER", "fallback-route")
    assert load_routing_config(EXAMPLE).engine.failover == "fallback-route"


def test_the_engine_setting_and_the_engine_section_are_set_apart(no_orchestrator_environment):
    no_orchestrator_environment.setenv("ORCHESTRATOR_ENGINE", "offline")
    no_orchestrator_environment.setenv("ORCHESTRATOR_ENGINE__FAILOVER", "fallback-route")
    assert load_server_settings().engine == "offline"
    assert load_routing_config(EXAMPLE).engine.failover == "fallback-route"
