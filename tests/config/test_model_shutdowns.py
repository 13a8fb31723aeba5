"""Models with an announced shutdown: never a default, and a warning when configured."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from orchestrator.config import ANNOUNCED_SHUTDOWNS, ServerSettings, model_shutdown_warnings

ROOT = Path(__file__).resolve().parents[2]


def test_the_default_models_have_no_announced_shutdown(monkeypatch):
    for name in ("ORCHESTRATOR_REALTIME_MODEL", "ORCHESTRATOR_TRANSCRIPTION_MODEL"):
        monkeypatch.delenv(name, raising=False)
    settings = ServerSettings()
    assert settings.realtime_model not in ANNOUNCED_SHUTDOWNS
    assert settings.transcription_model not in ANNOUNCED_SHUTDOWNS
    assert model_shutdown_warnings(settings) == []


def test_a_configured_model_with_an_announced_shutdown_is_warned_about():
    settings = ServerSettings(realtime_model="gpt-realtime", transcription_model="gpt-4o-mini-transcribe")
    warnings = model_shutdown_warnings(settings)
    assert len(warnings) == 2
    assert "ORCHESTRATOR_REALTIME_MODEL=gpt-realtime" in warnings[0] and "2027-01-20" in warnings[0]
    assert "ORCHESTRATOR_TRANSCRIPTION_MODEL=gpt-4o-mini-transcribe" in warnings[1] and "2027-02-26" in warnings[1]


def test_a_model_named_by_the_url_is_not_warned_about():
    assert model_shutdown_warnings(ServerSettings(realtime_model="", transcription_model="")) == []


def test_check_config_warns_about_a_model_with_an_announced_shutdown():
    env = {**os.environ, "ORCHESTRATOR_REALTIME_MODEL": "gpt-realtime-mini"}
    result = subprocess.run(
        [sys.executable, "-m", "orchestrator.commands.cli", "check-config", str(ROOT / "examples/acme_plumbing.toml")],
        capture_output=True, text=True, cwd=ROOT, env=env,
    )
    assert result.returncode == 0, result.stderr
    assert "ORCHESTRATOR_REALTIME_MODEL=gpt-realtime-mini has an announced shutdown on 2027-01-20" in result.stdout
