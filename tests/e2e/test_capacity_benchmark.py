"""The capacity benchmark (benchmarks/capacity.py) runs end to end on this checkout: a few calls through a
real `orchestrator serve`, the echo Realtime and the caller processes. Its figures are timings and are not
asserted; what it counts is: every frame echoed, every call torn down with the Flex TwiML, no Realtime
socket left open. The model leg is wss:// as in production (--model-tls: a test CA the server is told to
trust); the plain ws:// leg is the benchmark's default and is what every other live-call test runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.serial  # a load or timing-bound run: alone, after the rest of the suite

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("leg", ["wss://"])
def test_the_capacity_benchmark_runs_and_accounts_for_every_call(tmp_path: Path, leg: str):
    out = tmp_path / "capacity.json"
    tls = ["--model-tls"] if leg == "wss://" else []
    finished = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "capacity.py"), "--ns", "4", "--ramp", "1", "--hold", "3",
         "--stagger", "1", "--workers", "2", *tls, "--out", str(out)],
        capture_output=True, text=True, timeout=240,
    )
    assert finished.returncode == 0, finished.stdout[-2000:] + finished.stderr[-2000:]
    result = json.loads(out.read_text())
    (step,) = result["steps"]
    assert result["workers"] == 2 and result["model_leg"] == leg
    assert step["n"] == 4 and step["failed_calls"] == 0
    assert step["frames_expected"] > 4 * 100 and step["frames_echoed"] == step["frames_expected"]
    assert step["loss_pct"] == 0 and step["crosstalk"] == 0 and step["duplicates"] == 0
    assert step["teardowns_timed"] == 4 and step["teardown_problems"] == 0
    assert step["server_teardown_p99_ms"] is not None and step["after_line_p99_ms"] is not None
    assert step["realtime_connections"] == 4 and step["realtime_sockets_open_after"] == 0
    assert step["server_active_calls_after"] == 0
    assert "capacity:" in finished.stdout
