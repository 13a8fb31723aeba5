"""Debian packages the test suite needs (redis-server, chromium), installed by the suite itself.

The README's test command must work on a fresh machine, where only Python is set up; the machines this
project runs on (developers' and CI's) are Debian, as root, with the package registry reachable. So a
test that needs a system program asks `ensure_program` for it: found on PATH, it is used; otherwise it
is installed with apt-get once (under a file lock, since pytest-xdist workers or parallel sessions may
ask at the same time). Where that cannot work (not root, no apt-get), the test is skipped with the
reason, never failed for the wrong cause.
"""
from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

_LOCK = Path(tempfile.gettempdir()) / "orchestrator-tests-apt.lock"
_APT_TIMEOUT_S = 900
_updated = False


def ensure_program(program: str, package: str) -> str:
    """The path of `program`, installing Debian `package` first if it is missing; pytest.skip if it
    cannot be installed here."""
    found = shutil.which(program)
    if found:
        return found
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        pytest.skip(f"{program} is not installed and cannot be installed here (needs root and apt-get): "
                    f"apt-get install {package}")
    with _LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        found = shutil.which(program)
        if found:
            return found
        _apt_install(package)
    found = shutil.which(program)
    if not found:
        pytest.fail(f"apt-get installed {package} but {program} is still not on PATH")
    return found


def _apt_install(package: str) -> None:
    global _updated
    environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    commands = [] if _updated else [["apt-get", "update", "-q"]]
    commands.append(["apt-get", "install", "-y", "-q", "--no-install-recommends", package])
    for command in commands:
        done = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=_APT_TIMEOUT_S)
        if done.returncode != 0:
            pytest.fail(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    _updated = True
