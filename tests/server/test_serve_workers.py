"""`orchestrator serve --workers 2`: two processes on one port, meeting in the call store.

Calls go through the real command (the scripted demo engine, so no account is needed); the kernel hands
each connection (webhook, stream, action URL) to whichever worker accepts it, so a call's action URL is
often answered by the worker that did not run its stream: every call must still get its decided TwiML.
"""
from __future__ import annotations

import errno
import os
import re
import signal
import subprocess
from concurrent.futures import ThreadPoolExecutor

from orchestrator.server.workers import use_batch_scheduling
from tests.cli_support import BIN, clean_environment, orchestrator, serving, wait_for

CALLS = 4
MAX_BATCHES = 4
# Not loading the offline engine for failover in every worker keeps the start quick.
NO_FAILOVER = {"ORCHESTRATOR_ENGINE__FAILOVER": "fallback-route"}


def test_two_workers_share_the_port_and_every_call_gets_its_decision(tmp_path):
    server = serving(tmp_path, "--engine", "fake", "--workers", "2", environment=NO_FAILOVER)
    base_url, printed = next(server)
    try:
        assert any("2 workers sharing" in line for line in printed)
        wait_for(lambda: len(_worker_pids(printed)) == 2, 60, "both workers to serve")
        assert [os.sched_getscheduler(pid) for pid in _worker_pids(printed)] == [os.SCHED_OTHER] * 2
        assert not any(line.startswith("scheduling:") for line in printed)

        def one_call(index: int) -> subprocess.CompletedProcess[str]:
            return orchestrator(tmp_path, "call", "--url", base_url, "--say", "my basement is flooding",
                                "--speed", "4", "--from", f"+1415555{index:04d}", timeout=90)

        done: list[subprocess.CompletedProcess[str]] = []
        # Which worker accepts is the kernel's choice: a few more calls if one worker has not had a stream yet.
        for batch in range(MAX_BATCHES):
            with ThreadPoolExecutor(CALLS) as pool:
                done += pool.map(one_call, range(batch * CALLS, (batch + 1) * CALLS))
            if all(count > 0 for count in _streams_by_worker(printed).values()):
                break
    finally:
        server.close()  # SIGINT to the supervisor, which stops the workers after their calls
    for call in done:
        assert call.returncode == 0, call.stdout + call.stderr
        assert "decision: route emergency_desk (flex), reason accepted, intent emergency" in call.stdout
        assert '<Enqueue workflowSid="WW37efa99795cd582f2f4c31893159fe53">' in call.stdout
    streams_by_worker = _streams_by_worker(printed)
    assert sum(streams_by_worker.values()) == len(done), printed
    assert all(count > 0 for count in streams_by_worker.values()), streams_by_worker


def _streams_by_worker(printed: list[str]) -> dict[str, int]:
    return {
        worker: sum(1 for line in printed if "triage started" in line and f"worker={worker}" in line)
        for worker in ("1/2", "2/2")
    }


def test_a_worker_that_dies_is_started_again_under_the_same_policy(tmp_path):
    environment = {**NO_FAILOVER, "ORCHESTRATOR_BATCH_SCHEDULING": "true"}
    server = serving(tmp_path, "--engine", "fake", "--workers", "2", environment=environment)
    base_url, printed = next(server)
    try:
        wait_for(lambda: len(_worker_pids(printed)) == 2, 60, "both workers to serve")
        assert [os.sched_getscheduler(pid) for pid in _worker_pids(printed)] == [os.SCHED_BATCH] * 2
        assert "scheduling: SCHED_BATCH (ORCHESTRATOR_BATCH_SCHEDULING)" in printed
        pids = _worker_pids(printed)
        subprocess.run(["kill", "-9", str(pids[0])], check=True)
        wait_for(lambda: len(_worker_pids(printed)) == 3, 60, "the worker to be started again")
        assert os.sched_getscheduler(_worker_pids(printed)[2]) == os.SCHED_BATCH
        call = orchestrator(tmp_path, "call", "--url", base_url, "--say", "my basement is flooding", "--speed", "4")
        assert call.returncode == 0, call.stdout + call.stderr
        assert any(f"status -{signal.SIGKILL.value}; starting it again" in line for line in printed), printed
    finally:
        server.close()


def test_a_refused_or_missing_batch_policy_is_announced_and_serving_goes_on(monkeypatch):
    def refuse(*_args):
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "sched_setscheduler", refuse)
    assert use_batch_scheduling() == "scheduling: default (SCHED_BATCH refused: Operation not permitted)"
    monkeypatch.delattr(os, "sched_setscheduler")
    assert use_batch_scheduling() == "scheduling: default (SCHED_BATCH is not available on this system)"


def _worker_pids(printed: list[str]) -> list[int]:
    return [int(found.group(1)) for line in printed if (found := re.search(r"\(pid (\d+)\) serving", line))]


def test_a_store_that_cannot_be_reached_stops_the_command_once_with_one_line(tmp_path):
    done = subprocess.run(
        [str(BIN / "orchestrator"), "serve", "--workers", "2", "--engine", "fake", "--port", "0"],
        cwd=tmp_path, env={**clean_environment(), "ORCHESTRATOR_STORE": "redis://127.0.0.1:1"},
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("error: call store redis://127.0.0.1:1: cannot reach Redis")
    assert "worker" not in done.stdout  # no worker was started
