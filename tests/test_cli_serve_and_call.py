"""The main job as a user runs it: `orchestrator serve` with no accounts, then `orchestrator call` against it."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
ACCOUNT_VARIABLES = ("OPENAI_API_KEY", "TWILIO_AUTH_TOKEN", "TWILIO_ACCOUNT_SID")


def clean_environment() -> dict[str, str]:
    env = {name: value for name, value in os.environ.items()
           if name not in ACCOUNT_VARIABLES and not name.startswith("ORCHESTRATOR_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture
def served(tmp_path):
    """`orchestrator serve` on a free port in a fresh folder; yields (base URL, the lines it printed)."""
    server = subprocess.Popen(
        [str(BIN / "orchestrator"), "serve", "--port", "0"],
        cwd=tmp_path, env=clean_environment(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    printed: list[str] = []
    base_url = None
    try:
        for line in server.stdout:
            printed.append(line.rstrip())
            found = re.search(r"listening on (http://\S+)", line)
            base_url = found.group(1) if found else base_url
            if base_url and "Ctrl+C to stop" in line:
                yield base_url, printed
                break
        else:
            raise AssertionError("the server stopped before listening:\n" + "\n".join(printed))
    finally:
        server.send_signal(signal.SIGINT)
        try:
            rest, _ = server.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            raise
        printed.extend(rest.splitlines())
    assert server.returncode == 0, "\n".join(printed)
    assert any("finishing the calls in progress" in line for line in printed)


def test_serve_starts_with_no_account_and_says_which_engine_it_uses(served):
    base_url, printed = served
    text = "\n".join(printed)
    assert "engine: FAKE (no OPENAI_API_KEY)" in text
    assert "TWILIO_AUTH_TOKEN is not set" in text
    assert f"voice webhook: {base_url}/voice/incoming" in text


def test_orchestrator_call_prints_a_complete_call_against_the_server(served, tmp_path):
    base_url, _ = served
    done = subprocess.run(
        [str(BIN / "orchestrator"), "call", "--url", base_url, "--say", "my basement is flooding", "--speed", "4"],
        cwd=tmp_path, env=clean_environment(), capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    output = done.stdout
    assert "greeting → capture → classify → dispatch → teardown → ended" in output
    assert "caller: my basement is flooding" in output
    assert "decision: route emergency_desk (flex), reason accepted, intent emergency" in output
    assert "callback_number: +14155552671" in output
    assert '<Enqueue workflowSid="WW37efa99795cd582f2f4c31893159fe53">' in output


def test_orchestrator_call_without_a_token_explains_itself(tmp_path):
    done = subprocess.run(
        [str(BIN / "orchestrator"), "call", "--url", "http://127.0.0.1:9"],
        cwd=tmp_path, env=clean_environment(), capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 2
    assert "no auth token" in done.stderr and "Traceback" not in done.stderr
