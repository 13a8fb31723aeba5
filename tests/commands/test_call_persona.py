"""`orchestrator call --persona FILE`: a caller that converses, against `orchestrator serve` as the README runs
it; the report shows both sides, the server's record and the persona's verdict."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from orchestrator.engines.offline.speech import speech_support
from tests.cli_support import orchestrator, served  # noqa: F401 (fixtures)

PERSONA = Path(__file__).resolve().parents[2] / "benchmarks" / "outcomes" / "acme_billing_question.toml"


@pytest.mark.skipif(not speech_support().available, reason="a persona speaks and listens (speech extra)")
def test_a_persona_call_prints_both_sides_the_record_and_the_verdict(served, tmp_path):
    base_url, _ = served
    done = orchestrator(tmp_path, "call", "--url", base_url, "--persona", str(PERSONA), "--speed", "2",
                        "--save-heard", "heard.wav", timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    output = done.stdout
    transcript = output.split("Transcript\n")[1].split("\n\n")[0]
    assert re.search(r"^\s+\d+\.\d\d s  agent: \S", transcript, re.MULTILINE)  # the greeting, as heard
    assert "caller: I have a question about my invoice." in transcript
    decided = re.search(r"decision: route (\w+) ", output)
    assert decided is not None
    assert f"route: {decided.group(1)}, expected billing_desk:" in output
    assert "Verdict (persona acme_billing_question)" in output and "questions asked:" in output
    assert (tmp_path / "heard.wav").stat().st_size > 1000  # --save-heard works after the call


def test_a_broken_persona_file_is_refused_before_the_call(tmp_path):
    broken = tmp_path / "broken.toml"
    broken.write_text('config = "acme_plumbing"\n[need]\nlines = []\n')
    done = orchestrator(tmp_path, "call", "--url", "http://127.0.0.1:9", "--auth-token", "t", "--persona", str(broken))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "not a valid persona" in done.stderr and "need.lines" in done.stderr
