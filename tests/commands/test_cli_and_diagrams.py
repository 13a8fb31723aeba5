"""The `orchestrator` command as a user runs it, and the generated diagrams kept in step with code."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orchestrator.commands.diagram as diagrams
from machines.call_machine import STATES, TRANSITIONS
from machines.diagram import call_mermaid
from orchestrator.commands.cli import main
from orchestrator.config.routing import load_routing_config

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "acme_plumbing.toml"


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "orchestrator.commands.cli", *args], capture_output=True, text=True, cwd=ROOT)


def test_checked_in_call_diagram_matches_the_machine() -> None:
    checked_in = (ROOT / "diagrams" / "call.mmd").read_text(encoding="utf-8")
    assert checked_in == call_mermaid(), "diagrams/call.mmd is stale: run `orchestrator diagram`"


def test_call_diagram_shows_every_state_and_trigger() -> None:
    text = call_mermaid()
    for state in STATES:
        assert f'state "{state}" as {state}' in text
    for transition in TRANSITIONS:
        assert transition["trigger"] in text


def test_diagram_command_regenerates_call_mmd_byte_for_byte(tmp_path: Path) -> None:
    assert main(["diagram", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "call.mmd").read_bytes() == (ROOT / "diagrams" / "call.mmd").read_bytes()


def test_diagram_without_graphviz_says_how_to_get_the_svg(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(diagrams.shutil, "which", lambda _: None)
    assert main(["diagram", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "Graphviz 'dot' is not installed" in out
    assert (tmp_path / "call.mmd").exists() and not (tmp_path / "call.svg").exists()


def test_routing_diagram_draws_each_intent_to_its_target(tmp_path: Path) -> None:
    assert main(["diagram", "--config", str(EXAMPLE), "--out", str(tmp_path)]) == 0
    text = (tmp_path / "routing-acme_plumbing.mmd").read_text()
    config = load_routing_config(EXAMPLE)
    for intent in config.intents:
        assert f"intent_{intent.name}" in text and f"--> route_{intent.route}" in text
    assert "Studio FW5670575a869e4a142814c71a1217f9f0 / schedule_visit (resume)" in text
    assert "Flex WW37efa99795cd582f2f4c31893159fe53 priority 100" in text
    assert 'unclear(["anything else"]) --> route_voicemail' in text


def test_check_config_prints_a_summary_and_exits_0() -> None:
    result = run_cli("check-config", str(EXAMPLE))
    assert result.returncode == 0, result.stderr
    for intent in ("emergency", "schedule", "billing", "opening_hours"):
        assert intent in result.stdout
    assert result.stdout.rstrip().endswith("OK")


def test_broken_config_prints_one_line_naming_the_key_and_exits_2(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text(EXAMPLE.read_text().replace('workflow_sid = "WW37', 'workflow_sid = "WX37'))
    result = run_cli("check-config", str(broken))
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert "routes.emergency_desk.workflow_sid" in lines[0] and "broken.toml" in lines[0]


def test_missing_config_file_exits_2_without_traceback(tmp_path: Path) -> None:
    result = run_cli("check-config", str(tmp_path / "nowhere.toml"))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "nowhere.toml" in result.stderr
