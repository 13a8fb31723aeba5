"""A real `redis-server` for the tests: started by the suite on a free loopback port, with no persistence.

    from tests.redis_server import redis_server, redis_url  # noqa: F401 (fixtures)

`redis_server` (session) is the running server; `redis_url` (per test) is its URL with a key prefix of
the test's own, so tests never see each other's keys and need no FLUSHALL. `start_redis_server` starts
one more, for tests that stop it or give it options of its own.
"""
from __future__ import annotations

import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from tests.system_packages import ensure_program

START_TIMEOUT_S = 10.0
_TRIES = 3  # a free port can be taken between choosing it and redis-server binding it


@dataclass(frozen=True)
class RedisServer:
    port: int
    process: subprocess.Popen
    password: str | None = None

    @property
    def base_url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def url(self, key_prefix: str) -> str:
        return f"{self.base_url}?key_prefix={key_prefix}"

    def client(self) -> redis.Redis:
        """A plain client for looking at what the store wrote (TTLs, indexes)."""
        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password, decode_responses=True,
                           socket_timeout=2)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def start_redis_server(
    *options: str, password: str | None = None, port: int | None = None
) -> Iterator[RedisServer]:
    """A redis-server of its own for the block (on `port`, else a free one): no RDB snapshots, no AOF,
    loopback only."""
    binary = ensure_program("redis-server", "redis-server")
    with tempfile.TemporaryDirectory(prefix="orchestrator-redis-") as folder:
        server = _start(binary, Path(folder), options, password, port)
        try:
            yield server
        finally:
            stop_redis_server(server)


def stop_redis_server(server: RedisServer) -> None:
    if server.process.poll() is None:
        server.process.terminate()
        try:
            server.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()


def _start(
    binary: str, folder: Path, options: tuple[str, ...], password: str | None, wanted_port: int | None
) -> RedisServer:
    log = folder / "redis.log"
    for _ in range(1 if wanted_port else _TRIES):
        port = wanted_port or free_port()
        command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                   "--dir", str(folder), "--logfile", str(log), "--daemonize", "no", *options]
        if password is not None:
            command += ["--requirepass", password]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        server = RedisServer(port, process, password)
        if _answers_ping(server):
            return server
        stop_redis_server(server)
        printed = log.read_text(errors="replace") if log.exists() else ""
        if "Address already in use" not in printed or wanted_port:
            pytest.fail(f"redis-server did not start: {process.stderr.read()[-1000:]}{printed[-2000:]}")
    pytest.fail(f"redis-server found no free port in {_TRIES} tries")


def _answers_ping(server: RedisServer) -> bool:
    client = server.client()
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                return False
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                time.sleep(0.02)
        return False
    finally:
        client.close()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with start_redis_server() as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    """The shared server's URL, under a key prefix no other test uses; the test's keys go afterwards."""
    prefix = f"test-{uuid.uuid4().hex[:12]}:"
    yield redis_server.url(prefix)
    client = redis_server.client()
    try:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()
