"""Running `orchestrator` commands as a user does: subprocesses with no account variables."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests import suite_secrets

BIN = Path(sys.executable).parent
ACCOUNT_VARIABLES = ("OPENAI_API_KEY", "TWILIO_AUTH_TOKEN", "TWILIO_ACCOUNT_SID")


def clean_environment() -> dict[str, str]:
    env = {name: value for name, value in os.environ.items()
           if name not in ACCOUNT_VARIABLES and not name.startswith("ORCHESTRATOR_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture
def served(tmp_path):
    """`orchestrator serve` as the README runs it (no account: the offline engine); (base URL, lines printed)."""
    yield from serving(tmp_path)


@pytest.fixture
def served_fake(tmp_path):
    """`orchestrator serve --engine fake`: the scripted demo engine."""
    yield from serving(tmp_path, "--engine", "fake")


def orchestrator(tmp_path: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run an `orchestrator` command in `tmp_path` with no account variables."""
    return subprocess.run([str(BIN / "orchestrator"), *args], cwd=tmp_path, env=clean_environment(),
                          capture_output=True, text=True, timeout=timeout)


def serving(tmp_path: Path, *options: str, environment: dict[str, str] | None = None):
    """`orchestrator serve --port 0 OPTIONS` until the generator is closed: yields (base URL, the lines
    printed so far, kept up to date by a reader thread); then SIGINT, and a clean stop is checked. It runs
    with the suite's ops and handoff tokens (unless `environment` says otherwise), and what it prints is also
    written to `orchestrator-serve.log` in `tmp_path`, which the suite's log secret check reads."""
    tokens = {name: suite_secrets.SUITE_SECRETS[name]
              for name in ("ORCHESTRATOR_OPS_TOKEN", "ORCHESTRATOR_HANDOFF_TOKEN")}
    server = subprocess.Popen(
        [str(BIN / "orchestrator"), "serve", "--port", "0", *options],
        cwd=tmp_path, env={**clean_environment(), **tokens, **(environment or {})},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    printed: list[str] = []
    ready = threading.Event()
    log = (tmp_path / "orchestrator-serve.log").open("a", encoding="utf-8")

    def read() -> None:
        for line in server.stdout:
            log.write(line)
            printed.append(line.rstrip())
            if "Ctrl+C to stop" in line:
                ready.set()
        ready.set()  # the server stopped

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        ready.wait(timeout=120)
        urls = [found.group(1) for line in printed if (found := re.search(r"listening on (http://\S+)", line))]
        if server.poll() is not None or not urls or not any("Ctrl+C to stop" in line for line in printed):
            raise AssertionError("the server stopped before listening:\n" + "\n".join(printed))
        yield urls[0], printed
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            raise
        reader.join(timeout=5)
        log.close()
    assert server.returncode == 0, "\n".join(printed)
    assert any("finishing the calls in progress" in line for line in printed)


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout:g} s for {what}")
        time.sleep(0.1)
