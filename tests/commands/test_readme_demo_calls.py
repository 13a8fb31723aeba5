"""The README's demo lines, each played with `orchestrator call --say` against `orchestrator serve` on the
offline engine (no account), as a new user would: every one ends on its route on the first try, in the
budget. The lines are read from the README's table, so the README cannot drift from what works."""
from __future__ import annotations

import re
import shlex
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from orchestrator.config.routing import load_routing_config
from orchestrator.engines.offline.speech import speech_support
from tests.cli_support import orchestrator, served  # noqa: F401 (fixture)

REPO = Path(__file__).resolve().parents[2]
ACME = load_routing_config(REPO / "examples" / "acme_plumbing.toml")
# Where each demo call must end, by its first line.
DEMO_ROUTES = {
    "my basement is flooding": "emergency_desk",
    "I'd like to book someone to look at a dripping tap": "schedule_visit",
    "I have a question about my invoice": "billing_desk",
    "what time do you open on Saturday": "opening_hours",
    "do you sell garden furniture": "voicemail",
}


def readme_demo_calls() -> list[list[str]]:
    """The caller lines of each row of the README's demo table (`| `--say "..." ...` | ... |`)."""
    calls = []
    for line in (REPO / "README.md").read_text().splitlines():
        found = re.match(r"\| `(--say .+?)` \|", line)
        if found:
            words = shlex.split(found.group(1))
            calls.append([word for flag, word in zip(words[::2], words[1::2], strict=True) if flag == "--say"])
    return calls


def test_the_readme_lists_each_demo_call_once():
    assert sorted(call[0] for call in readme_demo_calls()) == sorted(DEMO_ROUTES)


@pytest.mark.skipif(not speech_support().available, reason="the speech extra is not installed")
def test_every_readme_demo_call_ends_on_its_route_in_the_budget(served, tmp_path):
    base_url, _ = served
    budget_s = ACME.triage.budget_seconds + ACME.triage.details_seconds

    def play(lines: list[str]) -> str:
        says = [argument for line in lines for argument in ("--say", line)]
        done = orchestrator(tmp_path, "call", "--url", base_url, *says, "--speed", "2", timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    calls = readme_demo_calls()
    with ThreadPoolExecutor(len(calls)) as pool:
        printed = dict(zip((call[0] for call in calls), pool.map(play, calls), strict=True))
    for first_line, output in printed.items():
        decision = re.search(r"decision: route (\w+) .*, after ([\d.]+) s", output)
        assert decision is not None, output
        assert decision.group(1) == DEMO_ROUTES[first_line], output
        assert float(decision.group(2)) <= budget_s, output
    assert "callback_number: +14155550100" in printed["my basement is flooding"]  # from caller ID
