"""The command (`orchestrator studio import`) and the options and environment `import_flow` is given."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.studio import StudioImportError, import_flow
from tests.studio.studio_flows import PUBLIC_URL, import_error, menu_flow, run_command


def test_command_errors_exit_2_with_one_line(tmp_path: Path, capsys) -> None:
    missing = tmp_path / "missing.json"
    assert run_command("studio", "import", str(missing), "--out", str(tmp_path / "out")) == 2
    assert capsys.readouterr().err.startswith(f"error: {missing}")
    binary = tmp_path / "flow.json"
    binary.write_bytes(b"\xff\xfe\x00")
    assert run_command("studio", "import", str(binary), "--out", str(tmp_path / "out")) == 2
    assert capsys.readouterr().err == f"error: {binary}: not UTF-8 text\n"


def test_command_writes_the_files_and_prints_the_report(tmp_path: Path, capsys) -> None:
    flow = tmp_path / "flow.json"
    flow.write_text(json.dumps(menu_flow()), encoding="utf-8")
    assert run_command("studio", "import", str(flow), "--out", str(tmp_path / "out"), "--public-url", PUBLIC_URL) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"# Studio import of {flow}") and f"wrote {tmp_path / 'out' / 'routing.toml'}" in out


def test_bad_options_are_refused() -> None:
    assert "'FW' followed by 32 hex" in import_error(menu_flow(), flow_sid="FW123")
    with pytest.raises(StudioImportError, match="public URL"):
        import_flow(json.dumps(menu_flow()), source="x", public_url="desk.example.com")


def test_an_environment_override_that_breaks_the_imported_config_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCHESTRATOR_TRIAGE__FALLBACK_ROUTE", "nowhere")
    assert "$ORCHESTRATOR_TRIAGE__FALLBACK_ROUTE" in import_error(menu_flow())
