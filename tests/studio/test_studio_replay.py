"""The migration chain on the taxi menu: `studio import`, then `orchestrator eval` replays the flow's
execution export against the imported config (offline engine), keys and words of one need as one intent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.studio.menu_shapes import taxi_execution, taxi_flow

BIN = Path(sys.executable).parent


def orchestrator(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY" and not k.startswith("ORCHESTRATOR_")}
    return subprocess.run([str(BIN / "orchestrator"), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)


def test_the_taxi_export_replays_against_the_imported_config_as_the_old_menu_routed_it(tmp_path: Path) -> None:
    flow = tmp_path / "taxi.json"
    flow.write_text(json.dumps(taxi_flow()), encoding="utf-8")
    imported = orchestrator("studio", "import", str(flow), "--out", "migration", "--flow-sid", "FW" + "ab" * 16,
                            cwd=tmp_path)
    assert imported.returncode == 0, imported.stdout + imported.stderr
    calls = [taxi_execution("FN1", said="taxi"), taxi_execution("FN2", said="cab"), taxi_execution("FN3", pressed="1"),
             taxi_execution("FN4", said="payment"), taxi_execution("FN5", said="bill"),
             taxi_execution("FN6", pressed="2")]
    export = tmp_path / "executions.json"
    export.write_text(json.dumps({"executions": calls}), encoding="utf-8")
    done = orchestrator("eval", str(export), "--studio-executions", "--flow", str(flow),
                        "--config", "migration/routing.toml", "--engine", "offline", "--summary", "s.json",
                        cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads((tmp_path / "s.json").read_text(encoding="utf-8"))
    # Every call, keys and words alike, reaches the intent of the widget the old menu sent it to.
    assert summary["calls"] == len(calls) and summary["parity"] == 1.0
    assert set(summary["per_intent"]) == {"taxi", "payment"}
