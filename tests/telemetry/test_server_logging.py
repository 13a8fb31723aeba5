"""A server started in-process (tests, an application embedding it) logs through the same pipeline as
`orchestrator serve`, never through structlog's development default (tracebacks with every frame's locals);
importing the server's modules configures nothing."""
from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Iterator

import pytest
import structlog

from tests.live_call_support import front_desk, triage_scenario


@pytest.fixture
def structlog_unconfigured() -> Iterator[None]:
    """structlog as a process that never called `configure_logging` has it; put back afterwards."""
    factory, handlers = logging.getLogRecordFactory(), list(logging.getLogger().handlers)
    structlog.reset_defaults()
    try:
        yield
    finally:
        structlog.reset_defaults()
        logging.setLogRecordFactory(factory)
        for handler in logging.getLogger().handlers:
            if handler not in handlers:
                logging.getLogger().removeHandler(handler)


def _fail_with_a_secret_in_a_local_variable() -> None:
    token_in_a_local = "local-value-9876543210"  # noqa: F841 (what a traceback with locals would show)
    raise RuntimeError("the engine is gone")


async def test_a_server_run_in_process_logs_tracebacks_without_locals(tmp_path, structlog_unconfigured, caplog, capfd):
    caplog.set_level(logging.INFO)
    async with front_desk(tmp_path, triage_scenario("billing")):
        try:
            _fail_with_a_secret_in_a_local_variable()
        except RuntimeError:
            structlog.get_logger("orchestrator.test").exception("call failed", caller="+14155550100")
    printed = caplog.text + "".join(capfd.readouterr())
    assert "RuntimeError: the engine is gone" in printed and "Traceback" in printed
    assert "local-value-9876543210" not in printed and "token_in_a_local" not in printed
    assert "+1415***0100" in printed and "+14155550100" not in printed


async def test_a_capture_in_progress_is_left_alone(tmp_path, structlog_unconfigured):
    with structlog.testing.capture_logs() as logs:
        async with front_desk(tmp_path, triage_scenario("billing")):
            structlog.get_logger("orchestrator.test").info("seen by the capture")
    assert [entry["event"] for entry in logs] == ["seen by the capture"]


def test_importing_the_server_configures_no_logging():
    probe = (
        "import logging, structlog\n"
        "import orchestrator.composition, orchestrator.server, orchestrator.commands.cli\n"
        "assert not structlog.is_configured()\n"
        "assert logging.getLogRecordFactory() is logging.LogRecord\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr

