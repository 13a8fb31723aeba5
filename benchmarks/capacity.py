"""Capacity of `orchestrator serve --engine realtime` as a Media Streams ⇄ Realtime bridge.

For each N: a fresh echo Realtime (`echo_realtime.py`) and a fresh server, then N simulated Twilio calls
(`load_callers.py`, spread over processes) ramped in, held, and ended by a route decision the fake
proposes. Per N it prints and records: round trip p50/p99 (frames sent while all calls were up), loss,
server CPU (% of one core, its whole process tree, from /proc), CPU per call, RSS and RSS growth per call,
teardown (the fake's route proposal → the action URL's TwiML answered, p99; the part after the handoff
line's end mark is echoed, line played → TwiML; and the server's whole part, the teardown less the wait for
the caller to play the agent audio still queued before that mark), and the Realtime sockets still open at
the fake once every call has ended. Capacity: the largest N with loss < 0.1 % and p99 < 50 ms, no smaller N
failing. JSON goes to benchmarks/results/.

With --model-tls the model leg is as in production: the echo Realtime serves wss:// with a certificate from
a test CA made by `trustme`, and the server trusts that CA through its CA-file setting
(ORCHESTRATOR_REALTIME_CA_FILE).

    benchmarks/capacity.sh                       # default sweep
    NS=200 HOLD=10 WORKERS=2 benchmarks/capacity.sh
    NS=25,50,100,200 WORKERS=1 benchmarks/capacity.sh --model-tls
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from server_processes import stop

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
TOKEN = "bench-auth-token"
MAX_LOSS_PCT = 0.1
MAX_P99_MS = 50.0
GENERATOR_CPU_MAX = 70.0  # a caller process busier than this (% of a core) makes the run invalid
GENERATOR_LAG_MAX_MS = 10.0
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


# --------------------------------------------------------------------------- /proc


def process_tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as children:
                    todo += [int(child) for child in children.read().split()]
        except OSError:
            continue
    return pids


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except OSError:
            continue
    return total / CLK_TCK


def rss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/statm") as statm:
                total += int(statm.read().split()[1]) * PAGE
        except OSError:
            continue
    return total / 2**20


def machine_busy() -> tuple[float, float]:
    with open("/proc/stat") as stat:
        fields = [int(value) for value in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields) - idle) / CLK_TCK, sum(fields) / CLK_TCK


def loadavg() -> str:
    with open("/proc/loadavg") as file:
        return " ".join(file.read().split()[:3])


# --------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def http_get_json(url: str, timeout: float = 5.0, context: ssl.SSLContext | None = None) -> Any:
    with urllib.request.urlopen(url, timeout=timeout, context=context) as response:
        return json.loads(response.read())


class ModelTls:
    """A test CA and the echo model's certificate, written to `folder` (for --model-tls)."""

    def __init__(self, folder: Path) -> None:
        import trustme  # the bench extra

        ca = trustme.CA()
        self.ca_file = folder / "test-ca.pem"
        self.chain_file = folder / "echo-realtime-cert.pem"
        ca.cert_pem.write_to_path(str(self.ca_file))
        ca.issue_cert("127.0.0.1", "localhost").private_key_and_cert_chain_pem.write_to_path(str(self.chain_file))
        self.client_context = ssl.create_default_context(cafile=str(self.ca_file))


def wait_until_up(url: str, process: subprocess.Popen, what: str, timeout: float = 60.0,
                  context: ssl.SSLContext | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode} before it was up")
        try:
            http_get_json(url, timeout=1.0, context=context)
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} not up after {timeout} s")



def serve_supports_workers(orchestrator: str) -> bool:
    help_text = subprocess.run([orchestrator, "serve", "--help"], capture_output=True, text=True).stdout
    return "--workers" in help_text


def top_functions(collapsed: Path, count: int = 25) -> str:
    """Self and total share of samples per function, from py-spy's collapsed stacks."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in collapsed.read_text().splitlines():
        stack, _, weight = line.rpartition(" ")
        frames = stack.split(";")
        samples += int(weight)
        own[frames[-1]] += int(weight)
        for frame in set(frames):
            total[frame] += int(weight)
    lines = [f"profile: {samples} samples ({collapsed})", "  self %  total %  function"]
    for frame, weight in own.most_common(count):
        lines.append(f"  {100 * weight / samples:6.1f}  {100 * total[frame] / samples:6.1f}  {frame}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- figures


def percentile(buckets: Counter[int], fraction: float) -> float | None:
    """From 0.1 ms buckets; None without samples."""
    total = sum(buckets.values())
    if total == 0:
        return None
    rank, seen = fraction * (total - 1), 0
    for bucket in sorted(buckets):
        seen += buckets[bucket]
        if seen > rank:
            return bucket / 10
    return max(buckets) / 10


def exact_percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


# --------------------------------------------------------------------------- one step


def run_step(n: int, args: argparse.Namespace, log_dir: Path) -> dict[str, Any]:
    python = str(REPO / ".venv" / "bin" / "python")
    orchestrator = str(REPO / ".venv" / "bin" / "orchestrator")
    model_port, port = free_port(), free_port()
    tls: ModelTls | None = args.model_tls
    model_log = open(log_dir / f"fake-{n}.log", "w")
    model_command = [python, str(HERE / "echo_realtime.py"), "--port", str(model_port)]
    if tls is not None:
        model_command += ["--tls-cert", str(tls.chain_file)]
    model = subprocess.Popen(model_command, stdout=model_log, stderr=subprocess.STDOUT)
    model_stats_url = f"{'https' if tls else 'http'}://127.0.0.1:{model_port}/__stats"
    model_context = tls.client_context if tls else None
    data_dir = tempfile.mkdtemp(prefix="capacity-data-")
    env = {
        **os.environ,
        "OPENAI_API_KEY": "sk-fake",
        "TWILIO_AUTH_TOKEN": TOKEN,
        "ORCHESTRATOR_REALTIME_URL": f"{'wss' if tls else 'ws'}://127.0.0.1:{model_port}/v1/realtime",
        "ORCHESTRATOR_PUBLIC_URL": f"http://127.0.0.1:{port}",
        # The echo model proposes a route only when told to: the budget never cuts a call short.
        "ORCHESTRATOR_TRIAGE__BUDGET_SECONDS": "3600",
        "ORCHESTRATOR_MAX_CONCURRENT_CALLS": str(max(500, 2 * n)),
    }
    if tls is not None:
        env["ORCHESTRATOR_REALTIME_CA_FILE"] = str(tls.ca_file)
    command = [orchestrator, "serve", "--port", str(port), "--engine", "realtime", "--data-dir", data_dir]
    if args.workers_supported:
        command += ["--workers", str(args.workers)]
    server_log = open(log_dir / f"server-{n}.log", "w")
    server = subprocess.Popen(command, env=env, stdout=server_log, stderr=subprocess.STDOUT)
    callers: list[subprocess.Popen] = []
    try:
        wait_until_up(model_stats_url, model, "echo realtime", context=model_context)
        wait_until_up(f"http://127.0.0.1:{port}/healthz", server, "server")
        time.sleep(0.5)
        server_pids = process_tree(server.pid)
        rss_idle = rss_mb(server_pids)

        processes = max(1, -(-n // args.calls_per_process))
        start_at = time.monotonic() + 1.0 + 0.2 * processes
        window_start = start_at + args.ramp + 1.0
        window_end = start_at + args.ramp + args.hold
        decide_at = window_end + 0.2
        result_files = [log_dir / f"callers-{n}-{p}.json" for p in range(processes)]
        for p in range(processes):
            callers.append(subprocess.Popen(
                [python, str(HERE / "load_callers.py"), "--base-url", f"http://127.0.0.1:{port}",
                 "--auth-token", TOKEN, "--indices", f"{p}:{n}:{processes}", "--total", str(n),
                 "--start-at", repr(start_at), "--ramp", str(args.ramp), "--decide-at", repr(decide_at),
                 "--stagger", str(args.stagger), "--window-start", repr(window_start),
                 "--window-end", repr(window_end), "--result-file", str(result_files[p])],
                stdout=subprocess.DEVNULL, stderr=open(log_dir / f"callers-{n}-{p}.log", "w"),
            ))

        time.sleep(max(0.0, window_start - time.monotonic()))
        server_pids = process_tree(server.pid)

        def start_profiler(seconds: float) -> subprocess.Popen:
            return subprocess.Popen(
                [str(REPO / ".venv" / "bin" / "py-spy"), "record", "--format", "raw",
                 "--rate", "100", "--duration", str(max(1, int(seconds))),
                 "--output", str(log_dir / f"profile-{n}.txt"), "--pid", str(server_pids[-1])],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )

        profiler = None
        if args.profile and args.profile_phase == "window":
            profiler = start_profiler(window_end - time.monotonic() - 1)
        caller_pids = [caller.pid for caller in callers]
        t0 = time.monotonic()
        server_cpu0, model_cpu0 = cpu_seconds(server_pids), cpu_seconds([model.pid])
        caller_cpu0 = [cpu_seconds([pid]) for pid in caller_pids]
        busy0, total0 = machine_busy()
        rss_peak = 0.0
        while time.monotonic() < window_end:
            rss_peak = max(rss_peak, rss_mb(server_pids))
            time.sleep(min(1.0, max(0.0, window_end - time.monotonic())))
        elapsed = time.monotonic() - t0
        server_cpu = 100 * (cpu_seconds(server_pids) - server_cpu0) / elapsed
        model_cpu = 100 * (cpu_seconds([model.pid]) - model_cpu0) / elapsed
        caller_cpu = [100 * (cpu_seconds([pid]) - c0) / elapsed for pid, c0 in zip(caller_pids, caller_cpu0)]
        busy1, total1 = machine_busy()
        machine_cpu = 200 * (busy1 - busy0) / max(1e-9, total1 - total0)
        rss_steady = max(rss_peak, rss_mb(server_pids))

        if args.profile and args.profile_phase == "teardown":  # the decisions, closes and action URL requests
            time.sleep(max(0.0, decide_at - time.monotonic()))
            profiler = start_profiler(args.stagger + 3)
        if profiler is not None:
            profiler.wait(30)
            print(top_functions(log_dir / f"profile-{n}.txt"), flush=True)
        outputs = []
        for p, (caller, result_file) in enumerate(zip(callers, result_files)):
            status = caller.wait(timeout=args.hold + args.ramp + 120)
            if status != 0 or not result_file.exists():
                raise SystemExit(f"caller process {p} failed (exit {status}): see {log_dir / f'callers-{n}-{p}.log'}")
            outputs.append(json.loads(result_file.read_bytes()))
        # Every call has ended (its action URL answered): no Realtime socket may still be open.
        deadline = time.monotonic() + 2.0
        model_stats = http_get_json(model_stats_url, context=model_context)
        while model_stats["open"] and time.monotonic() < deadline:
            time.sleep(0.1)
            model_stats = http_get_json(model_stats_url, context=model_context)
        health = http_get_json(f"http://127.0.0.1:{port}/healthz")
    finally:
        for caller in callers:
            if caller.poll() is None:
                caller.kill()
        stop(server)
        stop(model)
        server_log.close()
        model_log.close()

    return summarise(n, args, outputs, model_stats, health, {
        "server_cpu_pct": server_cpu, "model_cpu_pct": model_cpu, "caller_cpu_pct": caller_cpu,
        "machine_cpu_pct": machine_cpu, "rss_idle_mb": rss_idle, "rss_steady_mb": rss_steady,
        "caller_processes": len(callers),
    })


def summarise(n: int, args: argparse.Namespace, outputs: list[dict[str, Any]], model_stats: dict[str, Any],
              health: dict[str, Any], usage: dict[str, Any]) -> dict[str, Any]:
    latency: Counter[int] = Counter()
    lag: Counter[int] = Counter()
    expected = echoed = crosstalk = duplicates = 0
    failed: list[Any] = []
    per_call: list[dict[str, Any]] = []
    for output in outputs:
        latency.update({int(k): v for k, v in output["latency_buckets"].items()})
        lag.update({int(k): v for k, v in output["tick_lag_buckets"].items()})
        expected += output["expected"]
        echoed += output["echoed"]
        crosstalk += output["crosstalk"]
        duplicates += output["duplicates"]
        failed += output["failed"]
        per_call += output["per_call"]
    decisions = {int(k): v for k, v in model_stats["decisions"].items()}
    teardown_ms = [1000 * (call["action_answered_at"] - decisions[call["index"]])
                   for call in per_call if call["action_answered_at"] and call["index"] in decisions]
    # The server's own part: from the handoff line played (its end mark echoed) to the action TwiML.
    after_line_ms = [1000 * (call["action_answered_at"] - call["handoff_played_at"])
                     for call in per_call if call["action_answered_at"] and call["handoff_played_at"]]
    # The server's whole part: the teardown less the wait for the caller to play the audio queued before
    # the handoff line's end mark (agent audio already sent, which Twilio plays before it echoes the mark).
    server_teardown_ms = [
        1000 * (call["handoff_marked_at"] - decisions[call["index"]] + call["action_answered_at"] - call["handoff_played_at"])
        for call in per_call
        if call["action_answered_at"] and call["handoff_played_at"] and call["handoff_marked_at"]
        and call["index"] in decisions
    ]
    teardown_problems = [call for call in per_call if call["problem"] or not call["enqueued"]]
    loss_pct = 100 * (expected - echoed) / expected if expected else 100.0
    p50, p99 = percentile(latency, 0.5), percentile(latency, 0.99)
    lag_p99 = percentile(lag, 0.99) or 0.0
    verdict = "pass" if (loss_pct < MAX_LOSS_PCT and p99 is not None and p99 < MAX_P99_MS) else "fail"
    if max(usage["caller_cpu_pct"]) >= GENERATOR_CPU_MAX or lag_p99 >= GENERATOR_LAG_MAX_MS:
        verdict = "invalid" if verdict == "fail" else verdict
    return {
        "n": n,
        "verdict": verdict,
        "loss_pct": round(loss_pct, 4),
        "p50_ms": p50,
        "p99_ms": p99,
        "max_ms": max(latency) / 10 if latency else None,
        "frames_expected": expected,
        "frames_echoed": echoed,
        "crosstalk": crosstalk,
        "duplicates": duplicates,
        "failed_calls": len(failed),
        "failed_examples": failed[:5],
        "server_cpu_pct": round(usage["server_cpu_pct"], 1),
        "cpu_pct_per_call": round(usage["server_cpu_pct"] / n, 3),
        "rss_idle_mb": round(usage["rss_idle_mb"], 1),
        "rss_steady_mb": round(usage["rss_steady_mb"], 1),
        "rss_mb_per_call": round((usage["rss_steady_mb"] - usage["rss_idle_mb"]) / n, 3),
        "teardown_p50_ms": _round(exact_percentile(teardown_ms, 0.5)),
        "teardown_p99_ms": _round(exact_percentile(teardown_ms, 0.99)),
        "teardown_max_ms": _round(max(teardown_ms) if teardown_ms else None),
        "teardowns_timed": len(teardown_ms),
        "after_line_p50_ms": _round(exact_percentile(after_line_ms, 0.5)),
        "after_line_p99_ms": _round(exact_percentile(after_line_ms, 0.99)),
        "server_teardown_p50_ms": _round(exact_percentile(server_teardown_ms, 0.5)),
        "server_teardown_p99_ms": _round(exact_percentile(server_teardown_ms, 0.99)),
        "teardown_problems": len(teardown_problems),
        "teardown_problem_examples": [c["problem"] or "no <Enqueue> in the action TwiML" for c in teardown_problems][:5],
        "realtime_sockets_open_after": model_stats["open"],
        "realtime_connections": model_stats["connections"],
        "realtime_closed_by_client": model_stats["closed_by_client"],
        "realtime_dropped": model_stats["dropped"],
        "server_active_calls_after": health.get("active_calls"),
        "model_cpu_pct": round(usage["model_cpu_pct"], 1),
        "caller_cpu_pct": [round(c, 1) for c in usage["caller_cpu_pct"]],
        "caller_processes": usage["caller_processes"],
        "generator_tick_lag_p99_ms": lag_p99,
        "machine_cpu_pct_of_200": round(usage["machine_cpu_pct"], 1),
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


# --------------------------------------------------------------------------- the sweep


COLUMNS = [
    ("N", "n", "{}"), ("verdict", "verdict", "{}"), ("loss %", "loss_pct", "{:.3f}"), ("p50 ms", "p50_ms", "{:.1f}"),
    ("p99 ms", "p99_ms", "{:.1f}"), ("server CPU %", "server_cpu_pct", "{:.1f}"),
    ("CPU %/call", "cpu_pct_per_call", "{:.3f}"), ("RSS MB", "rss_steady_mb", "{:.1f}"),
    ("RSS MB/call", "rss_mb_per_call", "{:.3f}"), ("teardown p99 ms", "teardown_p99_ms", "{:.1f}"),
    ("line played → TwiML p99 ms", "after_line_p99_ms", "{:.1f}"),
    ("server's teardown p99 ms", "server_teardown_p99_ms", "{:.1f}"),
    ("RT open after", "realtime_sockets_open_after", "{}"), ("fake CPU %", "model_cpu_pct", "{:.1f}"),
    ("callers CPU %", "caller_cpu_pct", "{}"), ("lag p99 ms", "generator_tick_lag_p99_ms", "{:.1f}"),
    ("machine % /200", "machine_cpu_pct_of_200", "{:.1f}"), ("load", "loadavg_before", "{}"),
]


def table(rows: list[dict[str, Any]]) -> str:
    header = "| " + " | ".join(title for title, _, _ in COLUMNS) + " |"
    lines = [header, "|" + "|".join("--:" for _ in COLUMNS) + "|"]
    for row in rows:
        cells = []
        for _, key, form in COLUMNS:
            value = row.get(key)
            cells.append("-" if value is None else form.format(value) if not isinstance(value, list) else
                         "+".join(f"{v:.0f}" for v in value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def capacity(rows: list[dict[str, Any]]) -> int:
    best = 0
    for row in sorted(rows, key=lambda r: r["n"]):
        if row["verdict"] != "pass":
            break
        best = row["n"]
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ns", default="25,50,75,100,200,240,360", help="concurrent calls per step")
    parser.add_argument("--ramp", type=float, default=5.0, help="calls start evenly over this many seconds")
    parser.add_argument("--hold", type=float, default=20.0, help="seconds with every call up (measured)")
    parser.add_argument("--stagger", type=float, default=2.0, help="decisions spread over this many seconds")
    parser.add_argument("--workers", type=int, default=2, help="`serve --workers` when the option exists")
    parser.add_argument("--calls-per-process", type=int, default=120)
    parser.add_argument("--stop-after-fail", action="store_true", help="stop the sweep at the first failing N")
    parser.add_argument("--profile", action="store_true", help="py-spy one server worker (needs py-spy)")
    parser.add_argument("--profile-phase", choices=("window", "teardown"), default="window",
                        help="what --profile samples: the measured audio window, or the decisions and teardowns")
    parser.add_argument("--model-tls", action="store_true",
                        help="the echo model serves wss:// with a test CA, which the server trusts (production's shape)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    args.workers_supported = serve_supports_workers(str(REPO / ".venv" / "bin" / "orchestrator"))
    workers = args.workers if args.workers_supported else 1
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    leg = "-wss" if args.model_tls else ""
    out = args.out or HERE / "results" / f"capacity-w{workers}{leg}-{stamp}.json"
    log_dir = Path(tempfile.mkdtemp(prefix="capacity-logs-"))
    args.model_tls = ModelTls(log_dir) if args.model_tls else None
    print(f"workers: {workers}{'' if args.workers_supported else ' (serve has no --workers option)'}; "
          f"logs: {log_dir}", flush=True)
    rows = []
    for n in (int(part) for part in args.ns.split(",")):
        before = loadavg()
        row = run_step(n, args, log_dir)
        row["loadavg_before"] = before
        rows.append(row)
        print(json.dumps(row), flush=True)
        if args.stop_after_fail and row["verdict"] != "pass":
            break
    result = {
        "label": "orchestrator serve --engine realtime",
        "model_leg": "wss://" if args.model_tls else "ws://",
        "workers": workers,
        "ramp_s": args.ramp, "hold_s": args.hold, "stagger_s": args.stagger,
        "criteria": {"max_loss_pct": MAX_LOSS_PCT, "max_p99_ms": MAX_P99_MS},
        "capacity": capacity(rows),
        "steps": rows,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(table(rows))
    print(f"capacity: {result['capacity']} concurrent calls (loss < {MAX_LOSS_PCT} %, p99 < {MAX_P99_MS:g} ms); "
          f"results: {out}")
    sys.exit(0)


if __name__ == "__main__":
    main()
