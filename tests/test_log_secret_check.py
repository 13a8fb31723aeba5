"""The suite's log secret check (tests/log_secret_check.py) can fail: a planted leak in a test's log, its
output or a server's log file is found, a masked one is not, and a run with a leak fails."""
from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tests import suite_secrets
from tests.log_secret_check import SecretSearch, pass_tokens_under

REPO = Path(__file__).resolve().parents[1]
PASS_TOKEN = "Zm9vYmFyLWJhei1xdXV4LTEy"  # 24 characters, as the stores issue them


def test_the_search_finds_each_secret_its_url_encoded_form_and_pass_tokens_but_not_masked_forms():
    search = SecretSearch(suite_secrets.NEVER_LOGGED, [PASS_TOKEN])
    lines = [
        "INFO refused Authorization: Bearer [redacted] caller=+1501***2661",  # masked: fine
        f"WARNING ops page: token {suite_secrets.OPS_TOKEN}",
        f"From=%2B15017122661&Token={suite_secrets.TWILIO_AUTH_TOKEN}",
        f"<Parameter name=\"pass_token\" value=\"{PASS_TOKEN}\"/>",
        "CA0123456789abcdef0123456789abcdef and a token of another run: Zm9vYmFyLWJhei1xdXV4LTEz",
    ]
    found = {(leak.secret, leak.line) for leak in search.in_lines("planted", lines)}
    assert found == {
        ("ORCHESTRATOR_OPS_TOKEN", 2),
        ("the suite's caller number (URL-encoded)", 3),
        ("TWILIO_AUTH_TOKEN", 3),
        ("a pass token", 4),
    }


def test_pass_tokens_are_read_from_every_call_store_under_a_directory(tmp_path):
    store = tmp_path / "some-test" / "var" / "calls.sqlite3"
    store.parent.mkdir(parents=True)
    with sqlite3.connect(store) as db:
        db.execute("CREATE TABLE passes (token TEXT NOT NULL)")
        db.execute("INSERT INTO passes VALUES (?)", (PASS_TOKEN,))
    (tmp_path / "not-a-store.sqlite3").write_text("junk")
    assert pass_tokens_under(tmp_path) == {PASS_TOKEN}


PLANTED = f'''
import logging, structlog

# Logged while the file is collected, outside any test: only the session's record of every log line has it.
logging.getLogger("orchestrator.planted").info("collected with %s", "{suite_secrets.TWILIO_AUTH_TOKEN}")

def test_a_leak_in_a_log_record():
    logging.getLogger("orchestrator.planted").info("configured with %s", "{suite_secrets.HANDOFF_TOKEN}")

def test_a_leak_on_stdout():
    print("key {suite_secrets.OPENAI_API_KEY}")

def test_a_masked_line():
    logging.getLogger("orchestrator.planted").warning("caller +1501***2661, token [redacted]")
'''


@pytest.mark.parametrize("processes", [(), ("-n", "2")], ids=["one process", "two processes"])
@pytest.mark.parametrize("leak", [True, False])
def test_a_run_whose_logs_hold_a_secret_fails(pytester, monkeypatch, leak, processes):
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    pytester.makeconftest("pytest_plugins = ['tests.log_secret_check']")
    pytester.makepyfile(PLANTED if leak else PLANTED.replace(suite_secrets.HANDOFF_TOKEN, "x").replace(
        suite_secrets.OPENAI_API_KEY, "y").replace(suite_secrets.TWILIO_AUTH_TOKEN, "z"))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", *processes)
    output = result.stdout.str()
    if leak:
        assert result.ret == pytest.ExitCode.TESTS_FAILED, output
        assert "3 passed, 1 error" in output
        assert "ORCHESTRATOR_HANDOFF_TOKEN in" in output and "OPENAI_API_KEY in" in output
        assert "TWILIO_AUTH_TOKEN in" in output  # with two processes, in a worker's records
        assert suite_secrets.HANDOFF_TOKEN not in output  # the report names the secret, never shows it
    else:
        assert result.ret == pytest.ExitCode.OK, output
        assert "3 passed" in output and "error" not in output
