"""Stopping the servers and fakes a benchmark started, the way a user stops `orchestrator serve`."""
from __future__ import annotations

import signal
import subprocess


def stop(process: subprocess.Popen, timeout: float = 20.0) -> None:
    """Ctrl+C (so it finishes its calls and closes its sockets), then a kill if it is still up after `timeout`."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
