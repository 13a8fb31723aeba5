"""200 concurrent simulated calls through one server against the fake Realtime: no call may fail; and what
each pass's engine cost (`engine_seconds`, the time an engine was connected, summed over failover).

Everything (callers, server, fake) shares one Trio thread here, so this checks correctness under
concurrency, not capacity; capacity is measured by `benchmarks/capacity.sh` against a server in its own
process.
"""
from __future__ import annotations

import base64
import json
import xml.etree.ElementTree as ElementTree

import httpx
import pytest
import trio

from bridge.openai_realtime.client import RealtimeSettings
from bridge.twilio.mulaw import tone
from orchestrator.config.routing import RoutingConfig
from orchestrator.engines.realtime import RealtimeConnector
from orchestrator.engines.tools import agent_instructions, realtime_tools
from orchestrator.store.records import PassOutcome
from orchestrator.testing.fake_realtime import (
    Drop,
    RecordedSession,
    Scenario,
    after_audio_frames,
    on,
    run_fake_realtime,
)
from orchestrator.testing.twilio_caller import CallResult, Say, WaitForAgent
from tests.live_call_support import CALLER_SPEAKS, FrontDesk, front_desk, greeting, metric, triage_scenario

pytestmark = pytest.mark.serial  # a load or timing-bound run: alone, after the rest of the suite

CALLS = 200
SPREAD_S = 2.0  # calls start evenly over this time


async def test_200_concurrent_calls_complete_with_no_failure(tmp_path):
    scenario = triage_scenario("billing", record_audio=False)
    results = []
    async with front_desk(tmp_path, scenario, max_concurrent_calls=CALLS) as desk:
        # A new connection per request, as Twilio's webhooks come (a reused idle one can race the server's
        # keep-alive close, which is a client-side failure that says nothing about the server).
        limits = httpx.Limits(max_connections=CALLS * 2, max_keepalive_connections=0)
        async with httpx.AsyncClient(limits=limits, timeout=30) as http:
            with trio.fail_after(120):
                async with trio.open_nursery() as nursery:
                    async def one_call(index: int) -> None:
                        await trio.sleep(index * SPREAD_S / CALLS)
                        caller = desk.caller((Say(tone(300)), WaitForAgent(quiet_ms=300)), http=http, speed=1,
                                             caller=f"+1415555{index:04d}", max_call_s=240)
                        results.append(await caller.run())

                    for index in range(CALLS):
                        nursery.start_soon(one_call, index)
        assert len(results) == CALLS
        failed = [r for r in results if r.webhook_status != 200 or r.action_status != 200
                  or r.media_closed_by != "server" or r.violations]
        assert failed == []
        for result in results:
            enqueue = ElementTree.fromstring(result.final_twiml).find("Enqueue")
            attributes = json.loads(enqueue.find("Task").text)
            assert attributes["intent"] == "billing" and attributes["call_sid"] == result.call_sid
        assert len({r.call_sid for r in results}) == CALLS
        assert len(desk.fake.sessions) == CALLS and desk.fake.violations == []
        for session in desk.fake.sessions:
            assert session.closed_by == "client"
        assert metric(desk, "dispatch_decisions_total", kind="flex", reason="accepted") == CALLS
        assert metric(desk, "calls_finished_total", outcome="flex") == CALLS
        assert metric(desk, "calls_by_arm_total", arm="ai", route="billing_desk", outcome="flex") == CALLS
        assert metric(desk, "decision_seconds_count", arm="ai") == CALLS
        assert metric(desk, "engine_minutes_total", arm="ai") > 0
        desk.assert_nothing_of_the_call_remains()


# --------------------------------------------------------------------------- engine seconds


async def outcome_of(desk: FrontDesk, result: CallResult) -> PassOutcome:
    record = await desk.server.state.store.call_record(result.call_sid)
    assert record is not None and len(record.passes) == 1
    outcome = record.passes[0].outcome
    assert outcome is not None
    return outcome


def connected_seconds(session: RecordedSession) -> float:
    """How long the fake saw the connection open."""
    assert session.closed_at is not None
    return session.closed_at - session.opened_at


async def test_a_pass_records_how_long_its_engine_was_connected(tmp_path):
    async with front_desk(tmp_path, triage_scenario("billing")) as desk:
        result = await desk.call(CALLER_SPEAKS)
        assert "<Enqueue" in (result.final_twiml or "")
        seconds = (await outcome_of(desk, result)).engine_seconds
        # Our interval holds the fake's (we start connecting before it sees the socket and finish closing
        # after it saw the close), and the engine is closed before the stream is.
        assert seconds >= connected_seconds(desk.fake.last_session) > 0
        assert result.media_opened_at is not None and result.media_closed_at is not None
        assert seconds <= result.media_closed_at - result.media_opened_at


async def test_engine_seconds_add_up_over_a_failover(tmp_path):
    # The first engine drops mid-triage; a second Realtime endpoint takes the call over and decides it.
    async with run_fake_realtime(triage_scenario("billing")) as second:
        def second_endpoint(config: RoutingConfig) -> RealtimeConnector:
            return RealtimeConnector(
                RealtimeSettings(url=second.url, api_key="sk-test", connect_timeout_s=2, configure_timeout_s=2),
                instructions=agent_instructions(config), tools=realtime_tools(config), label="second",
            )

        dropping = Scenario(steps=[greeting(), on(after_audio_frames(10), Drop())])
        async with front_desk(tmp_path, dropping, failover=second_endpoint) as desk:
            result = await desk.call(CALLER_SPEAKS)
            assert "<Enqueue" in (result.final_twiml or "")
            first_seconds = connected_seconds(desk.fake.last_session)
            second_seconds = connected_seconds(second.last_session)
            outcome = await outcome_of(desk, result)
            assert any(note.startswith("failover to second: engine_dropped") for note in outcome.notes)
            seconds = outcome.engine_seconds
            assert seconds >= first_seconds + second_seconds
            assert first_seconds > 0 and second_seconds > 0
            assert result.media_opened_at is not None and result.media_closed_at is not None
            assert seconds <= result.media_closed_at - result.media_opened_at


async def test_caller_audio_from_before_the_engine_opened_reaches_it(tmp_path):
    # Twilio streams from the first moment; the Realtime handshake here takes 0.2 s (1.6 s of caller audio).
    scenario = triage_scenario("billing", handshake_delay_s=0.2)
    async with front_desk(tmp_path, scenario) as desk:
        caller = desk.caller(CALLER_SPEAKS)
        result = await caller.run()
        assert "<Enqueue" in (result.final_twiml or "")
        sent = [base64.b64decode(frame.data["media"]["payload"]) for frame in caller.sent if frame.event == "media"]
        session = desk.fake.last_session
        appended = b"".join(base64.b64decode(event.data["audio"])
                            for event in session.events_of_type("input_audio_buffer.append"))
        # The engine heard the call from its first frame, in order, and nothing twice.
        assert session.opened_at + 0.2 <= session.received[0].at
        assert len(appended) >= 40 * len(sent[0]) and b"".join(sent).startswith(appended)
