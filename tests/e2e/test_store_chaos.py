"""Chaos on the call store, with calls in progress: Redis stopped and restarted, Redis slow (`DEBUG SLEEP`),
the SQLite file locked by another process. Every call still ends with its decided TwiML or the fallback
route within bounded time, none hangs, the errors are logged (without the store's password) and counted in
/metrics by kind, and once the store is back the same server records the next call in full.

The real server (the composition root `orchestrator serve` runs) over loopback, a real `redis-server`, the
fake Realtime and simulated Twilio callers. Each operation of the store is bounded by
`store_timeout_seconds` (1 s here). A webhook makes two store operations before it answers (it reads the
rollout setting, then opens a pass), so a store that does not answer gets the caller the fallback route
within twice that.
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import ExitStack, asynccontextmanager
from pathlib import Path

import pytest
import trio
from redis import Redis
from redis import exceptions as redis_errors
from redis.backoff import NoBackoff
from redis.retry import Retry

from orchestrator.testing.twilio_caller import CallRecordUnavailable, CallResult, fetch_call_record
from tests.live_call_support import DETAILS, FrontDesk, front_desk, metric, triage_scenario
from tests.redis_server import RedisServer, start_redis_server, stop_redis_server

pytestmark = pytest.mark.serial  # a load or timing-bound run: alone, after the rest of the suite

EMERGENCY_WORKFLOW = "WW37efa99795cd582f2f4c31893159fe53"  # Acme's emergency desk: the decided route
STORE_TIMEOUT_S = 1.0
SLACK_S = 0.7  # for a loaded machine
PASSWORD = "chaos-store-password-4d1c"


def decided(result: CallResult) -> bool:
    enqueue = ElementTree.fromstring(result.final_twiml or "<Response/>").find("Enqueue")
    return enqueue is not None and enqueue.get("workflowSid") == EMERGENCY_WORKFLOW


def fell_back(result: CallResult) -> bool:
    """Acme's fallback route is the voicemail: a <Record>."""
    return ElementTree.fromstring(result.final_twiml or "<Response/>").find("Record") is not None


@asynccontextmanager
async def desk_on(tmp_path: Path, store: str, timeout_s: float = STORE_TIMEOUT_S) -> AsyncIterator[FrontDesk]:
    async with front_desk(tmp_path, triage_scenario("emergency", details=DETAILS), store=store,
                          store_timeout_seconds=timeout_s) as desk:
        yield desk


async def call_while(desk: FrontDesk, trouble: Callable[[], Awaitable[None]], **options: object) -> CallResult:
    """A call; once its Media Stream runs (its session is live on the server), `trouble()` runs beside it. The
    caller streams in real time (not SPEED times faster), so the trouble lands before the call is decided
    even on a loaded machine."""
    result: list[CallResult] = []

    async def call() -> None:
        result.append(await desk.call(**{"speed": 1.0, **options}))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(call)
        with trio.fail_after(10):
            while not desk.server.state.sessions:
                await trio.sleep(0.002)
        await trouble()
    return result[0]


async def timed_call(desk: FrontDesk, **options: object) -> tuple[CallResult, float]:
    started = trio.current_time()
    result = await desk.call(**options)
    return result, trio.current_time() - started


async def assert_recorded_in_full(desk: FrontDesk) -> None:
    """The store is back: the next call is decided, answered and recorded, by the same server."""
    result = await desk.call()
    assert decided(result), result.final_twiml
    record = await fetch_call_record(desk.server.base_url, result.call_sid, desk.server.auth_token)
    (only,) = record["passes"]
    assert only["decision"]["route"] == "emergency_desk" and only["answered_route"] == "emergency_desk"
    assert only["outcome"] is not None


def assert_nothing_hangs(desk: FrontDesk) -> None:
    state = desk.server.state
    assert state.sessions == {}
    assert all(session.is_closed for session in desk.fake.sessions)


def logged_text(caplog, capfd) -> str:
    return caplog.text + "".join(capfd.readouterr())


# -- Redis -------------------------------------------------------------------------------------------------


async def test_redis_stopped_mid_call_gives_the_fallback_and_a_restarted_redis_is_used_without_a_restart(
    tmp_path, caplog, capfd
):
    with start_redis_server(password=PASSWORD) as redis:
        url = f"redis://:{PASSWORD}@127.0.0.1:{redis.port}/0"
        async with desk_on(tmp_path, url) as desk:

            async def stop_redis() -> None:
                await trio.to_thread.run_sync(stop_redis_server, redis)

            # Redis goes while the call runs and is still gone when Twilio requests the action URL.
            with trio.fail_after(20):
                during = await call_while(desk, stop_redis)
            assert fell_back(during), during.final_twiml
            assert during.action_status == 200

            # A call that arrives while Redis is down gets the fallback at once, from the webhook.
            arriving, took = await timed_call(desk)
            assert arriving.webhook_status == 200 and arriving.stream_url is None
            assert fell_back(arriving) and took < STORE_TIMEOUT_S + SLACK_S, took  # refused at once, not timed out

            # Its record cannot be read either: 503, not an error page.
            with pytest.raises(CallRecordUnavailable, match="503"):
                await fetch_call_record(desk.server.base_url, during.call_sid, desk.server.auth_token)

            assert metric(desk, "store_errors_total", kind="unavailable") >= 4
            assert metric(desk, "action_answers_total", source="store_error") >= 1  # the webhook's fallback
            assert metric(desk, "action_answers_total", source="error") >= 1  # the action URL's

            # Redis comes back on the same port (empty: this one keeps nothing on disk).
            with start_redis_server(password=PASSWORD, port=redis.port):
                await assert_recorded_in_full(desk)
            assert_nothing_hangs(desk)

    logged = logged_text(caplog, capfd)
    assert "cannot open a triage pass: fallback route" in logged
    assert "handing the call back failed: fallback route" in logged
    assert PASSWORD not in logged


async def test_redis_restarted_mid_call_with_its_data_ends_the_call_with_its_decision_or_the_fallback(
    tmp_path, caplog, capfd
):
    with tempfile.TemporaryDirectory(prefix="orchestrator-redis-aof-") as folder:
        # Kept on disk (append-only file, written through), in one folder both lives of the server use.
        keeps_its_data = ("--appendonly", "yes", "--appendfsync", "always", "--dir", folder)
        with start_redis_server(*keeps_its_data, password=PASSWORD) as redis, ExitStack() as restarted:
            port = redis.port
            url = f"redis://:{PASSWORD}@127.0.0.1:{port}/0"
            async with desk_on(tmp_path, url) as desk:

                async def restart_redis() -> None:
                    await trio.to_thread.run_sync(stop_redis_server, redis)
                    await trio.sleep(0.2)
                    again = start_redis_server(*keeps_its_data, password=PASSWORD, port=port)
                    await trio.to_thread.run_sync(restarted.enter_context, again)

                with trio.fail_after(20):
                    during = await call_while(desk, restart_redis)
                assert during.action_status == 200
                assert decided(during) or fell_back(during), during.final_twiml
                # The pass opened before the restart is still there, and the record says what was answered.
                record = await fetch_call_record(desk.server.base_url, during.call_sid, desk.server.auth_token)
                (only,) = record["passes"]
                assert only["answered_route"] in (None, "emergency_desk", "voicemail")
                if decided(during):
                    assert only["decision"]["route"] == "emergency_desk"
                await assert_recorded_in_full(desk)
                assert_nothing_hangs(desk)
    assert PASSWORD not in logged_text(caplog, capfd)


async def test_a_slow_redis_gives_timeouts_within_the_bound_not_hung_calls(tmp_path, caplog, capfd):
    bound_s = 0.5  # so that the webhook's two operations both give up while Redis sleeps (2 s)
    with start_redis_server("--enable-debug-command", "yes", password=PASSWORD) as redis:
        url = f"redis://:{PASSWORD}@127.0.0.1:{redis.port}/0"
        async with desk_on(tmp_path, url, bound_s) as desk:
            arriving: list[tuple[CallResult, float]] = []

            async def slow_redis() -> None:
                """Redis answers nothing for 2 s (twice the bound); a call arrives meanwhile."""
                client = redis.client()
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(trio.to_thread.run_sync, client.execute_command, "DEBUG", "SLEEP", "2")
                    await trio.to_thread.run_sync(wait_until_asleep, redis)
                    arriving.append(await timed_call(desk))
                client.close()

            with trio.fail_after(20):
                during = await call_while(desk, slow_redis)
            assert during.action_status == 200
            assert decided(during) or fell_back(during), during.final_twiml

            (late, took), = arriving
            assert late.webhook_status == 200 and late.stream_url is None
            assert fell_back(late) and 2 * bound_s <= took < 2 * bound_s + SLACK_S, took  # not the 2 s Redis slept
            assert metric(desk, "store_errors_total", kind="timeout") >= 1

            await assert_recorded_in_full(desk)
            assert_nothing_hangs(desk)

    logged = logged_text(caplog, capfd)
    assert "no answer within 0.5 s" in logged and PASSWORD not in logged


def wait_until_asleep(server: RedisServer) -> None:
    """Until a PING goes unanswered: the DEBUG SLEEP sent from another thread has begun."""
    probe = Redis(host="127.0.0.1", port=server.port, password=server.password, socket_timeout=0.05,
                  retry=Retry(NoBackoff(), 0))  # redis-py's own retries would wait the sleep out
    try:
        for _ in range(100):
            try:
                probe.ping()
            except redis_errors.TimeoutError:
                return
            time.sleep(0.01)
        raise AssertionError("Redis never went to sleep")
    finally:
        probe.close()


# -- SQLite --------------------------------------------------------------------------------------------------


LOCKER = """
import sqlite3, sys
connection = sqlite3.connect(sys.argv[1], isolation_level=None)
connection.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.read()  # held until the test closes our stdin
connection.execute("ROLLBACK")
"""


class SqliteLocker:
    """Another process holding `BEGIN EXCLUSIVE` on the file until `release()`."""

    def __init__(self, path: Path) -> None:
        self.process = subprocess.Popen([sys.executable, "-c", LOCKER, str(path)], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True)
        assert self.process.stdout.readline().strip() == "locked"

    def release(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()
            self.process.wait(timeout=10)


async def test_a_sqlite_file_locked_by_another_process_gives_the_fallback_within_the_bound(
    tmp_path, caplog, capfd
):
    path = tmp_path / "calls.sqlite3"
    async with desk_on(tmp_path, str(path)) as desk:
        lockers: list[SqliteLocker] = []

        async def lock_the_file() -> None:
            lockers.append(await trio.to_thread.run_sync(SqliteLocker, path))

        try:
            with trio.fail_after(20):
                during = await call_while(desk, lock_the_file)
            assert during.action_status == 200
            assert decided(during) or fell_back(during), during.final_twiml

            arriving, took = await timed_call(desk)  # opening a pass is a write: it waits for the lock, bounded
            assert arriving.webhook_status == 200 and arriving.stream_url is None
            assert fell_back(arriving) and took < 2 * STORE_TIMEOUT_S + SLACK_S, took
            assert metric(desk, "store_errors_total", kind="locked") >= 1
        finally:
            for locker in lockers:
                await trio.to_thread.run_sync(locker.release)

        await assert_recorded_in_full(desk)
        assert_nothing_hangs(desk)

    assert "database is locked (for 1 s)" in logged_text(caplog, capfd)
