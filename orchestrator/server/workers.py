"""`orchestrator serve --workers N`: N server processes behind one port, so a call uses both cores.

The supervisor holds the port (a bound socket that does not listen) and each worker listens on its own
socket on that port (SO_REUSEPORT), so the kernel spreads new connections evenly over the workers. (One
inherited listening socket spread them badly: 85 and 155 of 240 calls, because the worker that wakes
first accepts the whole burst; the busier one then missed its latency target.) Workers share nothing in memory: the call store (the SQLite file
in the data dir, or Redis) is where `/voice/after` on one worker finds the decision another worker's
Media Stream made, and where a call coming back finds its history.

A worker that dies is started again (with a pause when they keep dying); SIGINT or SIGTERM is passed on
to every worker, which finishes its calls in progress, and the supervisor waits for them.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

WORKER_ENV = "ORCHESTRATOR_WORKER"  # "2/4": which worker this is; set only for workers, by the supervisor
_RESTART_PAUSE_S = (0.0, 0.5, 2.0, 5.0)  # after 1, 2, 3, 4+ deaths within a minute
_POLL_S = 0.2


@dataclass
class _Worker:
    index: int
    process: subprocess.Popen | None = None
    deaths: list[float] = field(default_factory=list)
    restart_at: float = 0.0


def run_workers(serve_args: Sequence[str], workers: int, *, grace_s: float) -> int:
    """Run `orchestrator serve <serve_args>` as `workers` processes (each listens on the port of
    `serve_args` with SO_REUSEPORT) until a signal; returns the exit status."""
    pool = [_Worker(index) for index in range(1, workers + 1)]
    stopping: list[int] = []

    def on_signal(received: int, _frame: object) -> None:
        stopping.append(received)

    previous = {number: signal.signal(number, on_signal) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stopping:
            now = time.monotonic()
            for worker in pool:
                _keep_running(worker, serve_args, workers, now)
            time.sleep(_POLL_S)
        print(f"{signal.Signals(stopping[0]).name}: stopping {workers} workers after their calls in progress",
              flush=True)
        return _stop_all(pool, grace_s)
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _keep_running(worker: _Worker, serve_args: Sequence[str], workers: int, now: float) -> None:
    process = worker.process
    if process is not None:
        status = process.poll()
        if status is None:
            return
        worker.process = None
        worker.deaths = [at for at in worker.deaths if now - at < 60] + [now]
        pause = _RESTART_PAUSE_S[min(len(worker.deaths), len(_RESTART_PAUSE_S)) - 1]
        worker.restart_at = now + pause
        print(f"worker {worker.index}/{workers} exited with status {status}; starting it again in {pause:g} s",
              file=sys.stderr, flush=True)
    if now < worker.restart_at:
        return
    environment = {**os.environ, WORKER_ENV: f"{worker.index}/{workers}"}
    worker.process = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.commands.cli", "serve", *serve_args],
        env=environment,
        # Ctrl+C in a terminal reaches the whole process group: the supervisor passes it on instead.
        start_new_session=True,
    )


def _stop_all(pool: list[_Worker], grace_s: float) -> int:
    running = [worker.process for worker in pool if worker.process is not None and worker.process.poll() is None]
    for process in running:
        process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s + 5.0
    for process in running:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return 0 if all(process.returncode == 0 for process in running) else 1


def this_worker() -> str | None:
    """In a worker: which one it is ("2/4"); None in a server that is not a worker."""
    return os.environ.get(WORKER_ENV) or None


def use_batch_scheduling() -> str:
    """Put this process under SCHED_BATCH (Linux); says what happened, for the start-up announcements.
    With the shared harness at 200 calls on 2 cores it once gave p99 23 ms instead of 140–200 ms; on
    another day on and off measured the same (README, Scale), so it is opt-in."""
    set_scheduler = getattr(os, "sched_setscheduler", None)
    if set_scheduler is None or not hasattr(os, "SCHED_BATCH"):
        return "scheduling: default (SCHED_BATCH is not available on this system)"
    try:
        set_scheduler(0, os.SCHED_BATCH, os.sched_param(0))
    except OSError as error:
        return f"scheduling: default (SCHED_BATCH refused: {error.strerror or error})"
    return "scheduling: SCHED_BATCH (ORCHESTRATOR_BATCH_SCHEDULING)"
