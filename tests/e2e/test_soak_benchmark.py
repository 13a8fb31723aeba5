"""The soak benchmark (benchmarks/soak/run_soak.py) at a reduced count: 24 calls (mixed routes, hang-ups at
random moments, Realtime failures) through `orchestrator serve --workers 2`. What it counts is asserted, not
its timings: no descriptor and no Trio task more in any worker at the end than after warm-up, no worker
restarted, every call accounted for."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.serial  # a load or timing-bound run: alone, after the rest of the suite

REPO = Path(__file__).resolve().parents[2]


CALLS = 24  # the benchmark's own default is 1,000


def test_soak_calls_leak_nothing_and_each_is_accounted_for(tmp_path: Path):
    out = tmp_path / "soak.json"
    finished = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "soak" / "run_soak.py"), "--calls", str(CALLS), "--warmup", "8", "--settle", "4",
         "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    result = json.loads(out.read_text())
    leaks = result["leaks"]
    assert (leaks["fds"], leaks["trio_tasks"], leaks["restarted_workers"]) == (0, 0, []), finished.stdout
    assert result["accounted_for"] and sum(result["outcomes"].values()) == CALLS, result["outcomes"]
    assert result["outcomes"].get("unaccounted", 0) == 0
    # The mix happened: calls routed, calls whose Realtime leg failed, callers who hung up.
    assert result["outcomes"]["routed"] and result["outcomes"]["failed_over"] and result["outcomes"]["hung_up"]
    assert len(result["snapshots"]["end"]["workers"]) == 2 and result["snapshots"]["end"]["store"]["passes"] >= CALLS * 0.9
    assert "leaks after warm-up" in finished.stdout
