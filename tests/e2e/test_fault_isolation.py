"""End to end, faults injected into one call among several concurrent ones: in its frame handler (run in the
read reactor), in the reactor's handling of its socket, or in the reactor's own loop (which would have ended
the reactor's task, and every call of the worker with it). That call ends with the fallback TwiML at the
action URL; the others route normally, and the worker serves the next call as usual."""
from __future__ import annotations

import time
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable

import pytest
import structlog
import trio

from bridge.twilio import TwilioMediaSocket
from bridge.twilio.mulaw import tone
from bridge.websocket import WebSocket
from bridge.websocket.read_reactor import FAST_PATH_BUDGET_S, FAST_PATH_STRIKES, ReadReactor
from orchestrator.telemetry import configure_logging
from orchestrator.testing.twilio_caller import CallResult, Say, SendFrame, WaitForAgent
from tests.live_call_support import front_desk, triage_scenario

CALLS = 20  # the measure: one faulty call among 20 live ones
POISON = "injected-fault"  # a frame carrying this is where the fault strikes
VOICEMAIL = ["Say", "Record", "Hangup"]  # Acme's fallback route


@pytest.fixture
def server_logging():
    """Logs as `orchestrator serve` writes them. structlog's development default renders a traceback with
    every local of every frame, which holds the one worker thread here for seconds (other calls' engines
    then time out): not what a server does."""
    configure_logging()
    structlog.configure(cache_logger_on_first_use=False)
    yield
    structlog.reset_defaults()


def tags(twiml: str | None) -> list[str]:
    assert twiml is not None
    return [child.tag for child in ElementTree.fromstring(twiml)]


def inject_fault(monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    """From the poisoned frame on, the fault strikes its call: its frame handler raises (`handler`), the
    reactor's handling of its socket does (`reactor`), or the reactor's own loop does while on its socket
    (`reactor loop`); or the handler is slow on FAST_PATH_STRIKES frames in a row (`slow`)."""
    serve = TwilioMediaSocket.serve
    doomed: set[WebSocket] = set()
    slow_frames_left = 0

    async def serve_with_fault(self: TwilioMediaSocket, on_frame: Callable[[str | bytes], None]) -> None:
        def handler(frame: str | bytes) -> None:
            nonlocal slow_frames_left
            if isinstance(frame, str) and POISON in frame:
                if where == "handler":
                    raise RuntimeError(POISON)
                if where == "slow":
                    slow_frames_left = FAST_PATH_STRIKES
                else:
                    doomed.add(self._websocket)
            if slow_frames_left:
                slow_frames_left -= 1
                time.sleep(4 * FAST_PATH_BUDGET_S)
            on_frame(frame)

        await serve(self, handler)

    on_readable_now = WebSocket._on_readable_now

    def on_readable_with_fault(self: WebSocket) -> bool:
        if self in doomed:
            raise RuntimeError(POISON)
        return on_readable_now(self)

    run_fast_path = ReadReactor._run_fast_path

    def run_fast_path_with_fault(self: ReadReactor, fd: int, on_readable: Callable[[], bool], task) -> bool:
        if getattr(on_readable, "__self__", None) in doomed:
            raise RuntimeError(POISON)  # out of the reactor's loop, past the fast path's own guard
        return run_fast_path(self, fd, on_readable, task)

    monkeypatch.setattr(TwilioMediaSocket, "serve", serve_with_fault)
    if where == "reactor loop":
        monkeypatch.setattr(ReadReactor, "_run_fast_path", run_fast_path_with_fault)
    else:
        monkeypatch.setattr(WebSocket, "_on_readable_now", on_readable_with_fault)


@pytest.mark.parametrize("where", ["handler", "reactor", "reactor loop"])
async def test_a_fault_in_one_calls_handling_ends_that_call_only_with_its_fallback(
    tmp_path, monkeypatch, server_logging, where
):
    inject_fault(monkeypatch, where)
    results: dict[int, CallResult] = {}
    async with front_desk(tmp_path, triage_scenario("billing"), max_concurrent_calls=CALLS + 1) as desk:
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:

                async def one_call(index: int) -> None:
                    poison = (SendFrame({"event": POISON}),) if index == 0 else ()
                    steps = (*poison, Say(tone(300), "I have a question about my bill"), WaitForAgent(quiet_ms=300))
                    results[index] = await desk.caller(steps, caller=f"+1415555{index:04d}").run()

                for index in range(CALLS):
                    nursery.start_soon(one_call, index)
            assert tags(results[0].final_twiml) == VOICEMAIL
            assert results[0].action_status == 200
            for index in range(1, CALLS):
                assert tags(results[index].final_twiml) == ["Enqueue"], index
            after = await desk.call((Say(tone(300), "and one more"), WaitForAgent(quiet_ms=300)))
            assert tags(after.final_twiml) == ["Enqueue"]
        desk.assert_nothing_of_the_call_remains()


async def test_a_slow_frame_handler_costs_its_call_the_fast_path_not_the_call(tmp_path, monkeypatch):
    inject_fault(monkeypatch, "slow")
    async with front_desk(tmp_path, triage_scenario("billing")) as desk:
        poison, speech = SendFrame({"event": POISON}), Say(tone(300), "I have a question about my bill")
        steps = (poison, speech, WaitForAgent(quiet_ms=300))
        result = await desk.call(steps)
        assert tags(result.final_twiml) == ["Enqueue"]
        desk.assert_nothing_of_the_call_remains()
