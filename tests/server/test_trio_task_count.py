"""/healthz and /metrics count the worker's live Trio tasks (the soak benchmark's leak accounting): more while
a call is in progress, back to the idle count once it ended."""
from __future__ import annotations

import os

import httpx
import trio

from bridge.twilio.mulaw import tone
from orchestrator.testing.twilio_caller import Say, Wait
from tests.live_call_support import front_desk, metric, triage_scenario


async def _health(client: httpx.AsyncClient) -> dict:
    return (await client.get("/healthz")).json()


async def test_the_trio_task_count_rises_during_a_call_and_comes_back_after(tmp_path):
    async with front_desk(tmp_path, triage_scenario("billing")) as desk:
        async with httpx.AsyncClient(base_url=desk.server.base_url) as client:
            idle = await _health(client)
            assert idle["pid"] == os.getpid()
            caller = desk.caller((Say(tone(1200), "I was charged twice"), Wait(20_000)))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(caller.run)
                await caller.wait_until(lambda caller: desk.server.state.sessions != {})
                during = await _health(client)
                await caller.hang_up()
            with trio.move_on_after(10):  # the call's connections close a moment after its session
                while (after := await _health(client))["trio_tasks"] != idle["trio_tasks"]:
                    await trio.sleep(0.05)
            unscraped = metric(desk, "trio_tasks")
            await client.get("/metrics")
    assert (idle["calls_started"], after["calls_started"]) == (0, 1)
    assert during["trio_tasks"] > idle["trio_tasks"]
    assert after["trio_tasks"] == idle["trio_tasks"]
    assert unscraped == 0 and metric(desk, "trio_tasks") >= idle["trio_tasks"] > 0  # set as it is scraped
