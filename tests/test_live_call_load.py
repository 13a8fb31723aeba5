"""200 concurrent simulated calls through one server against the fake Realtime: no call may fail.

Everything (callers, server, fake) shares one Trio thread here, so this checks correctness under
concurrency, not capacity; capacity is measured by `benchmarks/` against a server in its own process.
"""
from __future__ import annotations

import json
import xml.etree.ElementTree as ElementTree

import httpx
import trio

from orchestrator.caller_audio import tone
from orchestrator.testing.twilio_caller import Say, WaitForAgent
from tests.live_call_support import front_desk, metric, triage_scenario

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
        desk.assert_nothing_of_the_call_remains()
