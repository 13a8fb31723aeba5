"""`orchestrator serve --workers N`: N server processes behind one port, so a call uses both cores.

The supervisor opens the listening socket once and hands it to each worker (an inherited file
descriptor), so the kernel gives each new connection to whichever worker accepts first: a busy worker
accepts less, which balances by load. Workers share nothing in memory: the call store (the SQLite file
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

LISTEN_FD_ENV = "ORCHESTRATOR_LISTEN_FD"  # set only for workers, by the supervisor
WORKER_ENV = "ORCHESTRATOR_WORKER"  # "2/4": which worker this is
_RESTART_PAUSE_S = (0.0, 0.5, 2.0, 5.0)  # after 1, 2, 3, 4+ deaths within a minute
_POLL_S = 0.2


@dataclass
class _Worker:
    index: int
    process: subprocess.Popen | None = None
    deaths: list[float] = field(default_factory=list)
    restart_at: float = 0.0


def run_workers(serve_args: Sequence[str], listening_fd: int, workers: int, *, grace_s: float) -> int:
    """Run `orchestrator serve <serve_args>` as `workers` processes on the listening socket `listening_fd`
    until a signal; returns the exit status."""
    pool = [_Worker(index) for index in range(1, workers + 1)]
    stopping: list[int] = []

    def on_signal(received: int, _frame: object) -> None:
        stopping.append(received)

    previous = {number: signal.signal(number, on_signal) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stopping:
            now = time.monotonic()
            for worker in pool:
                _keep_running(worker, serve_args, listening_fd, workers, now)
            time.sleep(_POLL_S)
        print(f"{signal.Signals(stopping[0]).name}: stopping {workers} workers after their calls in progress",
              flush=True)
        return _stop_all(pool, grace_s)
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _keep_running(worker: _Worker, serve_args: Sequence[str], listening_fd: int, workers: int, now: float) -> None:
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
    environment = {**os.environ, LISTEN_FD_ENV: str(listening_fd), WORKER_ENV: f"{worker.index}/{workers}"}
    worker.process = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", "serve", *serve_args],
        env=environment,
        pass_fds=(listening_fd,),
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


def inherited_listening_fd() -> int | None:
    """In a worker: the listening socket's descriptor the supervisor passed on; None otherwise."""
    text = os.environ.get(LISTEN_FD_ENV)
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        return None
