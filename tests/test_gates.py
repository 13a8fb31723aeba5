"""The lint and type gates, run by the same command as every other test: ruff on the whole repository and
mypy (strict) on `machines/` and `bridge/`. Their settings are in pyproject.toml."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, timeout=600)


def test_ruff_finds_nothing() -> None:
    result = _run("ruff", "check", "--no-cache", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_on_machines_and_bridge() -> None:
    result = _run("mypy")
    assert result.returncode == 0, result.stdout + result.stderr
