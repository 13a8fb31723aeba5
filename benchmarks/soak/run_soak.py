"""Soak and leak accounting: many calls through `orchestrator serve --workers 2`, and what each worker holds
before, after warm-up and at the end.

The server runs as deployed (Realtime engine, Acme's routing) against the soak fake Realtime
(`soak_realtime.py`: mixed routes, and a share of calls whose Realtime handshake is refused, whose socket
drops mid-call or that get a fatal error: failovers, here to the fallback route). Simulated Twilio callers
(`orchestrator.testing.twilio_caller`) place the calls a few at a time; a share of them hang up at a random
moment (before the stream opens, during the greeting, while talking, after the decision).

At each idle moment (no call in progress) it records, per worker process: open file descriptors
(/proc/PID/fd), live Trio tasks (`/healthz`), RSS; and the call store's size (SQLite file and WAL bytes,
passes). Warm-up is `--warmup` calls, more if a worker has not carried two yet. Leaks are the end's figures
less the warm-up's. Every call's outcome is accounted for: `routed` (the AI's decision, its route answered at
the action URL), `failed_over` (decided when the engine failed or the budget ran out: that route answered),
`fallback` (no decision: the fallback route answered), `hung_up` (the caller hung up first),
`answered_at_once` (the webhook's TwiML had no stream: the legacy arm, or over capacity), else `unaccounted`
with what happened. The rollout brake is off: the failures are deliberate.

    .venv/bin/python benchmarks/soak/run_soak.py                     # 1,000 calls, result in benchmarks/results/
    .venv/bin/python benchmarks/soak/run_soak.py --calls 40 --warmup 10 --out /tmp/soak.json
"""
from __future__ import annotations

import argparse
import json
import os
import random
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import trio

from bridge.twilio.mulaw import tone
from orchestrator.testing.twilio_caller import (
    CallerOptions,
    CallResult,
    Say,
    SimulatedCaller,
    WaitForAgent,
    fetch_call_record,
)

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE.parent))  # the benchmarks' shared helpers
from server_processes import stop  # noqa: E402

TOKEN = "soak-auth-token"
PAGE = os.sysconf("SC_PAGE_SIZE")
SPEED = 8.0  # callers stream and play audio this much faster than real time
CALL_TIMEOUT_S = 60.0
MAX_RSS_GROWTH_MB = 10.0
READINGS = 5


# --------------------------------------------------------------------------- processes and /proc


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def children(pid: int) -> list[int]:
    found = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as listed:
            found += [int(child) for child in listed.read().split()]
    return found


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/statm") as statm:
        return int(statm.read().split()[1]) * PAGE / 2**20


def health(base_url: str) -> dict[str, Any]:
    """One /healthz on a new connection (the kernel picks the worker)."""
    request = urllib.request.Request(f"{base_url}/healthz", headers={"Connection": "close"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


def health_of_every_worker(base_url: str, workers: list[int]) -> dict[int, dict[str, Any]]:
    """/healthz as each worker answers it: asked until every worker answered (SO_REUSEPORT spreads them)."""
    answers: dict[int, dict[str, Any]] = {}
    for _ in range(400):
        answer = health(base_url)
        answers[answer["pid"]] = answer
        if set(workers) <= answers.keys():
            return answers
    raise RuntimeError(f"workers {sorted(set(workers) - answers.keys())} never answered /healthz")


def wait_until_up(base_url: str, process: subprocess.Popen, what: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode} before it was up")
        try:
            health(base_url)
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{what} not up after {timeout} s")



# --------------------------------------------------------------------------- snapshots


def store_size(data_dir: Path) -> dict[str, int]:
    path = data_dir / "calls.sqlite3"
    wal = path.with_name(path.name + "-wal")
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        passes = db.execute("SELECT COUNT(*) FROM passes").fetchone()[0]
    return {"file_bytes": path.stat().st_size, "wal_bytes": wal.stat().st_size if wal.exists() else 0,
            "passes": passes}


def snapshot(server: subprocess.Popen, base_url: str, data_dir: Path, settle_s: float) -> dict[str, Any]:
    """The figures at an idle moment: waits until no worker has a call in progress, then `settle_s` more
    (connections of the last calls close). Descriptors and tasks are the smallest of several readings a moment
    apart: the readings' own /healthz connections come and go, a leak stays."""
    workers = children(server.pid)
    deadline = time.monotonic() + 60
    while any(answer["active_calls"] for answer in health_of_every_worker(base_url, workers).values()):
        if time.monotonic() > deadline:
            raise RuntimeError("calls still in progress 60 s after the last caller finished")
        time.sleep(0.2)
    time.sleep(settle_s)
    fds = {pid: open_fds(pid) for pid in workers}
    tasks = {pid: answer["trio_tasks"] for pid, answer in health_of_every_worker(base_url, workers).items()}
    for _ in range(READINGS - 1):
        time.sleep(0.3)
        fds = {pid: min(fds[pid], open_fds(pid)) for pid in workers}
        answers = health_of_every_worker(base_url, workers)
        tasks = {pid: min(tasks[pid], answers[pid]["trio_tasks"]) for pid in workers}
    return {
        "at": time.time(),
        "supervisor": {"pid": server.pid, "fds": open_fds(server.pid), "rss_mb": round(rss_mb(server.pid), 2)},
        "workers": {str(pid): {"fds": fds[pid], "trio_tasks": tasks[pid], "rss_mb": round(rss_mb(pid), 2)}
                    for pid in workers},
        "store": store_size(data_dir),
    }


# --------------------------------------------------------------------------- the calls


async def place_call(index: int, base_url: str, draw: random.Random, hangup_share: float) -> dict[str, Any]:
    caller = SimulatedCaller(
        CallerOptions(base_url=base_url, auth_token=TOKEN, caller=f"+1555{index:07d}", speed=SPEED,
                      max_call_s=CALL_TIMEOUT_S * SPEED),
        (Say(tone(1200), "I need some help"), WaitForAgent(quiet_ms=400)),
    )
    hang_up_at = draw.uniform(0.0, 1.5) if draw.random() < hangup_share else None
    started = trio.current_time()
    with trio.fail_after(CALL_TIMEOUT_S + 30):
        async with trio.open_nursery() as nursery:
            if hang_up_at is not None:
                nursery.start_soon(_hang_up_after, caller, hang_up_at)
            result = await caller.run()
            nursery.cancel_scope.cancel()
    record = await fetch_call_record(base_url, result.call_sid, TOKEN) if result.webhook_status == 200 else None
    return {"index": index, "hang_up_at_s": hang_up_at, "seconds": round(trio.current_time() - started, 2),
            **classify(result, record, hang_up_at is not None)}


async def _hang_up_after(caller: SimulatedCaller, seconds: float) -> None:
    await trio.sleep(seconds)
    await caller.hang_up()


def classify(result: CallResult, record: dict[str, Any] | None, hung_up: bool) -> dict[str, Any]:
    facts: dict[str, Any] = {"call_sid": result.call_sid, "webhook_status": result.webhook_status,
                             "action_status": result.action_status}
    last = record["passes"][-1] if record and record["passes"] else None
    if last is not None:
        facts["answered_route"] = last["answered_route"]
        facts["decided_route"] = (last["decision"] or {}).get("route")
        facts["reason"] = (last["decision"] or {}).get("reason")
    if result.webhook_status == 200 and result.stream_url is None and result.final_twiml:
        return {**facts, "outcome": "answered_at_once"}  # the rollout's legacy arm, or over capacity
    if hung_up and (result.media_closed_by == "caller" or result.stream_url is None or result.media_opened_at is None):
        return {**facts, "outcome": "hung_up"}
    if result.action_status != 200 or last is None or last["answered_route"] is None:
        return {**facts, "outcome": "unaccounted",
                "violations": [f"{violation.kind}: {violation.excerpt}" for violation in result.violations][:5]}
    if last["decision"] is not None and last["answered_route"] == last["decision"]["route"]:
        # Decided by the AI, or by the machine when the engine failed or the budget ran out (a failover).
        return {**facts, "outcome": "routed" if last["decision"]["reason"] == "accepted" else "failed_over"}
    return {**facts, "outcome": "fallback"}


async def place_calls(indices: range, base_url: str, draw: random.Random, hangup_share: float,
                      concurrency: int, outcomes: list[dict[str, Any]]) -> None:
    pending = iter(indices)

    async def one_line() -> None:
        for index in pending:
            outcomes.append(await place_call(index, base_url, draw, hangup_share))

    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(one_line)


# --------------------------------------------------------------------------- the run


def leaks(warm: dict[str, Any], end: dict[str, Any]) -> dict[str, Any]:
    """Growth per process, never below 0: a long-lived task that was running at warm-up (a store pass, the
    reactor of a socket still closing) and ended since is not a leak, and must not hide one in the other worker."""
    workers = warm["workers"].keys() & end["workers"].keys()

    def grown(key: str) -> int:
        return sum(max(0, end["workers"][pid][key] - warm["workers"][pid][key]) for pid in workers)

    return {
        "restarted_workers": sorted(warm["workers"].keys() ^ end["workers"].keys()),
        "fds": grown("fds") + max(0, end["supervisor"]["fds"] - warm["supervisor"]["fds"]),
        "trio_tasks": grown("trio_tasks"),
        "rss_growth_mb": round(sum(end["workers"][pid]["rss_mb"] - warm["workers"][pid]["rss_mb"] for pid in workers), 2),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    python, orchestrator = str(REPO / ".venv" / "bin" / "python"), str(REPO / ".venv" / "bin" / "orchestrator")
    log_dir = Path(tempfile.mkdtemp(prefix="soak-logs-"))
    data_dir = Path(tempfile.mkdtemp(prefix="soak-data-"))
    model_port, port = free_port(), free_port()
    base_url = f"http://127.0.0.1:{port}"
    model = subprocess.Popen(
        [python, str(HERE / "soak_realtime.py"), "--port", str(model_port), "--seed", str(args.seed),
         "--failure-share", str(args.failure_share)],
        stdout=open(log_dir / "realtime.log", "w"), stderr=subprocess.STDOUT,
    )
    env = {
        **os.environ,
        "OPENAI_API_KEY": "sk-soak-fake-key",
        "TWILIO_AUTH_TOKEN": TOKEN,
        "ORCHESTRATOR_REALTIME_URL": f"ws://127.0.0.1:{model_port}/v1/realtime",
        "ORCHESTRATOR_PUBLIC_URL": base_url,
        "ORCHESTRATOR_ENGINE__FAILOVER": "fallback-route",
        "ORCHESTRATOR_MAX_CONCURRENT_CALLS": "500",
        # The failures are deliberate: the rollout brake would (rightly) send every later caller to legacy.
        "ORCHESTRATOR_ROLLOUT__BRAKE__ENABLED": "false",
    }
    server = subprocess.Popen(
        [orchestrator, "serve", "--port", str(port), "--engine", "realtime", "--data-dir", str(data_dir),
         "--workers", str(args.workers)],
        env=env, stdout=open(log_dir / "server.log", "w"), stderr=subprocess.STDOUT,
    )
    draw = random.Random(args.seed)
    outcomes: list[dict[str, Any]] = []
    started = time.monotonic()
    try:
        wait_until_up(base_url, server, "orchestrator serve")
        while len(children(server.pid)) < args.workers:
            time.sleep(0.2)
        time.sleep(1.0)
        snapshots = {"start": snapshot(server, base_url, data_dir, args.settle)}
        placed = args.warmup
        trio.run(place_calls, range(placed), base_url, draw, args.hangup_share, args.concurrency, outcomes)
        # Warm means every worker carried calls (its read reactor and caches start with its first).
        while placed < args.calls and min(answer["calls_started"] for answer in
                                          health_of_every_worker(base_url, children(server.pid)).values()) < 2:
            trio.run(place_calls, range(placed, placed + 2), base_url, draw, args.hangup_share, 2, outcomes)
            placed += 2
        snapshots["warm"] = snapshot(server, base_url, data_dir, args.settle)
        trio.run(place_calls, range(placed, args.calls), base_url, draw, args.hangup_share, args.concurrency,
                 outcomes)
        snapshots["end"] = snapshot(server, base_url, data_dir, args.settle)
    finally:
        stop(server, timeout=30.0)
        stop(model)
    outcomes.sort(key=lambda outcome: outcome["index"])
    counted = Counter(outcome["outcome"] for outcome in outcomes)
    found = leaks(snapshots["warm"], snapshots["end"])
    result = {
        "calls": args.calls, "warmup": args.warmup, "workers": args.workers, "concurrency": args.concurrency,
        "seed": args.seed, "failure_share": args.failure_share, "hangup_share": args.hangup_share,
        "seconds": round(time.monotonic() - started, 1), "logs": str(log_dir),
        "outcomes": dict(counted), "accounted_for": len(outcomes) == args.calls and not counted["unaccounted"],
        "routes": dict(Counter(outcome.get("answered_route") for outcome in outcomes)),
        "snapshots": snapshots, "leaks": found,
        "verdict": "pass" if (found["fds"] == 0 and found["trio_tasks"] == 0 and not found["restarted_workers"]
                              and found["rss_growth_mb"] < MAX_RSS_GROWTH_MB and not counted["unaccounted"]
                              and len(outcomes) == args.calls) else "fail",
        "realtime_log_tail": (log_dir / "realtime.log").read_text().splitlines()[-1:],
        "calls_detail": outcomes,
    }
    return result


def summary(result: dict[str, Any]) -> str:
    lines = [f"{result['calls']} calls ({result['warmup']} warm-up), {result['workers']} workers, "
             f"{result['concurrency']} at a time, {result['seconds']} s; outcomes {result['outcomes']}; "
             f"every call accounted for: {result['accounted_for']}"]
    for name, shot in result["snapshots"].items():
        workers = "; ".join(f"pid {pid}: {figures['fds']} fds, {figures['trio_tasks']} tasks, {figures['rss_mb']} MB"
                            for pid, figures in shot["workers"].items())
        lines.append(f"  {name:5} supervisor {shot['supervisor']['fds']} fds, {shot['supervisor']['rss_mb']} MB; "
                     f"{workers}; store {shot['store']}")
    lines.append(f"leaks after warm-up: {result['leaks']}  -> {result['verdict']}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=100, help="calls before the 'warm' snapshot")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=8, help="calls in progress at once")
    parser.add_argument("--failure-share", type=float, default=0.15, help="calls whose Realtime leg fails")
    parser.add_argument("--hangup-share", type=float, default=0.15, help="calls whose caller hangs up early")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--settle", type=float, default=6.0,
                        help="seconds idle before a snapshot (a finished call's connections close within ~5 s)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = args.out or REPO / "benchmarks" / "results" / f"soak-{args.calls}-{stamp}.json"
    result = run(args)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(summary(result))
    print(f"result: {out}")
    sys.exit(0 if result["verdict"] == "pass" else 1)


if __name__ == "__main__":
    main()
