"""CPU per message of the Realtime leg alone, `ws://` against `wss://` (the one thing TLS changes).

N connections of our client (`bridge.websocket.connect_websocket`, as the server opens them) to the echo
Realtime (`echo_realtime.py`, its own process; `--tls-cert` for wss:// with a test CA from `trustme`). Every
20 ms one task posts a 20 ms caller frame (`input_audio_buffer.append`) on each connection, and the echoed
deltas are taken in the read reactor's fast path, as a call takes agent audio. Figure: this process's CPU time
(`time.process_time`) per echoed delta over the measured window, legs alternating. CPU time is what a loaded
machine inflates least, so this separates TLS's cost from the shared machine's noise better than a capacity run.

    .venv/bin/python benchmarks/realtime_leg_cost.py --calls 100,200 --rounds 3
"""
from __future__ import annotations

import argparse
import json
import logging
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import trio
import trustme

from bridge.websocket import connect_websocket

HERE = Path(__file__).resolve().parent
FRAME = json.dumps({"type": "input_audio_buffer.append", "audio": "/" * 212})  # 160 µ-law bytes, base64


class FastPathsLost(logging.Handler):
    """Counts the sockets the reactor moved off its fast path (a preempted reactor looks slow: it happens
    on a loaded machine, and makes those sockets' messages cost a task wake-up)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += "fast path took" in record.getMessage()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def measure(url: str, context: ssl.SSLContext | None, calls: int, warm_s: float, window_s: float) -> float:
    """µs of this process's CPU per echoed delta."""
    taken = 0

    def take(message: str | bytes) -> bool:
        nonlocal taken
        taken += 1
        return True

    async with trio.open_nursery() as nursery:
        sockets = []
        for _ in range(calls):
            websocket = await connect_websocket(url, [("Authorization", "Bearer sk-fake")],
                                                max_message_bytes=1 << 20, ssl_context=context)
            assert (await websocket.receive()) is not None  # session.created
            websocket.take_messages(take)
            nursery.start_soon(websocket.receive)  # parked: the reactor hands it every message
            sockets.append(websocket)
        start = trio.current_time()
        tick = 0
        cpu0 = taken0 = None
        while trio.current_time() < start + warm_s + window_s:
            if cpu0 is None and trio.current_time() >= start + warm_s:
                cpu0, taken0 = time.process_time(), taken
            for websocket in sockets:
                websocket.post_text(FRAME)
            tick += 1
            await trio.sleep_until(start + 0.02 * tick)
        cpu, echoed = time.process_time() - (cpu0 or 0.0), taken - (taken0 or 0)
        for websocket in sockets:
            await websocket.close()
        nursery.cancel_scope.cancel()
    return 1e6 * cpu / max(1, echoed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", default="100,200")
    parser.add_argument("--rounds", type=int, default=3, help="ws/wss pairs per N (order alternating)")
    parser.add_argument("--warm", type=float, default=2.0)
    parser.add_argument("--window", type=float, default=10.0)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="realtime-leg-"))
    ca = trustme.CA()
    chain = folder / "cert.pem"
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(chain))
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    lost = FastPathsLost()
    logging.getLogger("bridge.websocket.read_reactor").addHandler(lost)
    logging.getLogger("bridge.websocket.read_reactor").propagate = False
    rows = []
    for calls in (int(n) for n in args.calls.split(",")):
        for round_number in range(args.rounds):
            legs = ("ws", "wss") if round_number % 2 == 0 else ("wss", "ws")
            for leg in legs:
                port = free_port()
                command = [sys.executable, str(HERE / "echo_realtime.py"), "--port", str(port)]
                model = subprocess.Popen(command + (["--tls-cert", str(chain)] if leg == "wss" else []),
                                         stdout=subprocess.DEVNULL)
                try:
                    time.sleep(1.0)
                    with open("/proc/loadavg") as file:
                        load = " ".join(file.read().split()[:3])
                    url = f"{leg}://127.0.0.1:{port}/v1/realtime"
                    lost.count = 0
                    us = trio.run(measure, url, trusting if leg == "wss" else None, calls, args.warm, args.window)
                finally:
                    model.terminate()
                    model.wait()
                row = {"leg": leg, "calls": calls, "round": round_number, "us_per_message": round(us, 2),
                       "fast_paths_lost": lost.count, "load": load}
                rows.append(row)
                print(json.dumps(row), flush=True)
    out = HERE / "results" / f"realtime-leg-cost-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.jsonl"
    out.write_text("".join(json.dumps(row) + "\n" for row in rows))
    for calls in sorted({row["calls"] for row in rows}):
        mean = {leg: sum(r["us_per_message"] for r in rows if r["calls"] == calls and r["leg"] == leg)
                / args.rounds for leg in ("ws", "wss")}
        print(f"{calls} calls: ws {mean['ws']:.1f} µs/message, wss {mean['wss']:.1f} (×{mean['wss'] / mean['ws']:.2f})")
    print(f"results: {out}")


if __name__ == "__main__":
    main()
