"""How long the action URL's three store operations (read the pass, read its decision, mark it answered)
take on the Redis store while the worker is busy: many calls at once, and an event loop kept busy the way
calls keep it (CPU work in short slices, as audio frames and Realtime events are handled).

    .venv/bin/python benchmarks/store_latency.py                  # starts its own redis-server on loopback
    .venv/bin/python benchmarks/store_latency.py --url redis://127.0.0.1:6379/0 --calls 200 --seconds 20

Prints one JSON line, and writes it to `benchmarks/results/store-latency-<UTC time>.json`: the median, p90
and p99 of the three operations' time (ms), how many rounds ran, and the set-up. To compare two versions of the store, run the same command with each on PYTHONPATH, back to
back (the machine's load changes fast).
"""
from __future__ import annotations

import argparse
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import trio

from machines import DecisionReason, DispatchDecision, RouteKind
from orchestrator.store.redis_store import RedisCallStore

RESULTS = Path(__file__).resolve().parent / "results"
DECISION = DispatchDecision(
    route="front_desk", route_kind=RouteKind.FLEX, reason=DecisionReason.ACCEPTED, intent="other", confidence=0.9
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a Redis to use (default: start redis-server on a free loopback port)")
    parser.add_argument("--calls", type=int, default=200, help="calls at once (default 200)")
    parser.add_argument("--seconds", type=float, default=15.0, help="how long to measure (default 15)")
    parser.add_argument("--busy-tasks", type=int, default=10,
                        help="tasks keeping the event loop busy, 1 ms of CPU every 20 ms each: 10 keep it about half busy")
    args = parser.parse_args()
    with (nullcontext_url(args.url) if args.url else redis_server()) as url:
        rounds = trio.run(measure, url, args.calls, args.seconds, args.busy_tasks)
    ordered = sorted(rounds)
    line = json.dumps({
        "store": sys.modules[RedisCallStore.__module__].__file__, "calls": args.calls,
        "busy_tasks": args.busy_tasks, "seconds": args.seconds, "rounds": len(rounds),
        "median_ms": round(statistics.median(ordered) * 1000, 2),
        "p90_ms": round(ordered[int(len(ordered) * 0.9)] * 1000, 2),
        "p99_ms": round(ordered[int(len(ordered) * 0.99)] * 1000, 2),
    })
    print(line)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"store-latency-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json").write_text(line + "\n")
    return 0


async def measure(url: str, calls: int, seconds: float, busy_tasks: int) -> list[float]:
    rounds: list[float] = []
    prefix = f"bench-{uuid.uuid4().hex[:8]}:"
    separator = "&" if "?" in url else "?"
    async with await RedisCallStore.open(f"{url}{separator}key_prefix={prefix}", retention_seconds=600) as store:
        async with trio.open_nursery() as nursery:
            for _ in range(busy_tasks):
                nursery.start_soon(keep_the_loop_busy)
            with trio.move_on_after(seconds):
                async with trio.open_nursery() as callers:
                    for index in range(calls):
                        callers.start_soon(one_caller, store, index, rounds)
            nursery.cancel_scope.cancel()
        await store.purge_older_than(0)
    return rounds


async def one_caller(store: RedisCallStore, index: int, rounds: list[float]) -> None:
    """Call after call: a pass and its decision (not timed), then the action URL's three operations (timed)."""
    number = 0
    while True:
        number += 1
        call_sid = f"CA{index:08d}{number:024d}"
        triage_pass = await store.open_pass(call_sid, caller="+15551230000", called="+15557650000",
                                            account_sid="AC" + "0" * 32, entry_node=None, arm="ai")
        await store.save_decision(call_sid, triage_pass.number, DECISION)
        started = time.perf_counter()
        await store.get_pass(call_sid, triage_pass.number)
        await store.get_decision(call_sid, triage_pass.number)
        await store.mark_answered(call_sid, triage_pass.number, DECISION.route)
        rounds.append(time.perf_counter() - started)


async def keep_the_loop_busy() -> None:
    while True:
        until = time.perf_counter() + 0.001
        while time.perf_counter() < until:
            pass
        await trio.sleep(0.02)


@contextmanager
def nullcontext_url(url: str) -> Iterator[str]:
    yield url


@contextmanager
def redis_server() -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is not installed (apt-get install redis-server), or pass --url")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with tempfile.TemporaryDirectory(prefix="store-latency-") as folder:
        process = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                    "--appendonly", "no", "--dir", folder], stdout=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        sys.exit("redis-server did not start")
                    time.sleep(0.05)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            process.terminate()
            process.wait(timeout=10)


if __name__ == "__main__":
    sys.exit(main())
